"""Atari games through gymnasium + ale-py: game names and their minimal action sets."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache

from diamond_play.errors import UserError

# The Atari 100k benchmark, in the official order.
ATARI_100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout", "ChopperCommand",
    "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull",
    "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)


def canonical_game(name: str, known: tuple[str, ...] = ATARI_100K_GAMES) -> str:
    """'breakout' -> 'Breakout'; an unknown name is a user error that suggests the closest one."""
    by_lower = {g.lower(): g for g in known}
    key = name.strip().lower().removesuffix("noframeskip-v4")
    if key in by_lower:
        return by_lower[key]
    close = difflib.get_close_matches(key, list(by_lower), n=1)
    hint = f"did you mean {by_lower[close[0]]!r}? " if close else ""
    others = " (or another ALE game name)" if len(by_lower) > len(ATARI_100K_GAMES) else ""
    raise UserError(f"unknown Atari game {name!r}: {hint}use one of the Atari 100k games: "
                    f"{', '.join(ATARI_100K_GAMES)}{others}")


def env_id(game: str) -> str:
    return f"{game}NoFrameskip-v4"


@cache
def quiet_ale() -> None:
    """Register the ALE environments with gymnasium and silence ALE's start-up banner."""
    import ale_py
    import gymnasium as gym

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


@cache
def action_meanings(game: str) -> tuple[str, ...]:
    """The game's minimal ALE action set, e.g. ('NOOP', 'FIRE', 'RIGHT', 'LEFT') for Breakout."""
    import gymnasium as gym

    quiet_ale()
    env = gym.make(env_id(game))
    try:
        return tuple(env.unwrapped.get_action_meanings())
    finally:
        env.close()


class AtariEnv:
    """An ALE game with DIAMOND's preprocessing, returning RGB uint8 (size, size, 3) frames.

    {Game}NoFrameskip-v4 without sticky actions, minimal action set; each step repeats the action `frame_skip`
    times, sums the rewards and max-pools the last two raw frames; reset plays 1..noop_max random no-ops.
    With `end_on_life_loss` (training envs) a lost life is reported as `terminated` without resetting the game.
    """

    def __init__(self, game: str, size: int = 64, frame_skip: int = 4, noop_max: int = 30,
                 end_on_life_loss: bool = False, seed: int | None = None) -> None:
        import gymnasium as gym
        import numpy as np

        quiet_ale()
        self.game = canonical_game(game, known=ATARI_100K_GAMES + tuple(ale_games()))
        self.env = gym.make(env_id(self.game), repeat_action_probability=0.0, full_action_space=False)
        self.size, self.frame_skip, self.noop_max = size, frame_skip, noop_max
        self.end_on_life_loss = end_on_life_loss
        self.action_meanings = tuple(self.env.unwrapped.get_action_meanings())
        self.num_actions = len(self.action_meanings)
        self.rng = np.random.default_rng(seed)
        self._seed = seed
        self._lives = 0
        self._game_over = True
        self._last_frame = None

    def _resize(self, raw):
        import cv2

        return cv2.resize(raw, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def reset(self, seed: int | None = None):
        """Start a new game -> (frame, info). A seed (or the constructor's, on the first reset) makes it repeatable.

        After a life loss reported as an end (`end_on_life_loss`), the game is not over: the episode boundary is
        only in the data, and play continues from the current frame, as in the official training env.
        """
        import numpy as np

        if seed is None and self._seed is None and not self._game_over and self._last_frame is not None:
            return self._last_frame, {"lives": self._lives}
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        elif self._seed is not None:
            seed = self._seed
        self._seed = None
        raw, info = self.env.reset(seed=seed)
        for _ in range(int(self.rng.integers(1, self.noop_max + 1))):
            raw, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                raw, info = self.env.reset()
        self._lives = info.get("lives", 0)
        self._game_over = False
        self._last_frame = self._resize(raw)
        return self._last_frame, {"lives": self._lives}

    def step(self, action: int):
        """-> (frame, reward, terminated, truncated, info) with info["life_loss"] and info["game_over"]."""
        import numpy as np

        reward, terminated, truncated = 0.0, False, False
        last_two = []
        info: dict = {}
        for i in range(self.frame_skip):
            raw, r, terminated, truncated, info = self.env.step(int(action))
            reward += float(r)
            if i >= self.frame_skip - 2:
                last_two.append(raw)
            if terminated or truncated:
                break
        frame = np.maximum(last_two[0], last_two[1]) if len(last_two) == 2 else raw
        lives = info.get("lives", 0)
        life_loss = lives < self._lives
        self._lives = lives
        self._game_over = terminated or truncated
        end = terminated or (self.end_on_life_loss and life_loss)
        self._last_frame = self._resize(frame)
        return self._last_frame, reward, end, truncated, {"lives": lives, "life_loss": life_loss,
                                                          "game_over": self._game_over}

    def ram(self):
        return self.env.unwrapped.ale.getRAM()

    def get_state(self) -> dict:
        """Everything needed to continue this env exactly (emulator incl. its RNG, no-op RNG, lives), as plain
        types and tensors, so a training checkpoint can carry it and load with weights_only=True."""
        import numpy as np
        import torch

        ale_state = self.env.unwrapped.ale.cloneState(include_rng=True)
        frame = None if self._last_frame is None else torch.from_numpy(np.ascontiguousarray(self._last_frame))
        return {"ale": torch.frombuffer(bytearray(ale_state.serialize()), dtype=torch.uint8),
                "rng": self.rng.bit_generator.state, "lives": self._lives, "game_over": self._game_over,
                "last_frame": frame, "seed": self._seed}

    def set_state(self, state: dict) -> None:
        import ale_py
        import numpy as np

        if self._game_over and self._last_frame is None:
            self.env.reset(seed=0)  # gymnasium refuses step() before a first reset
        self.env.unwrapped.ale.restoreState(ale_py.ALEState(state["ale"].numpy().tobytes()))
        self.rng.bit_generator.state = state["rng"]
        self._lives, self._game_over = int(state["lives"]), bool(state["game_over"])
        frame = state["last_frame"]
        self._last_frame = None if frame is None else np.asarray(frame.numpy())
        self._seed = state["seed"]

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class ReferenceScores:
    random: float
    human: float
    diamond: float  # the paper's Atari 100k result (mean of 5 seeds)


@cache
def reference_scores() -> dict[str, ReferenceScores]:
    """Random, human and DIAMOND scores of the 26 Atari 100k games, from the package's atari_scores.csv."""
    import csv
    from importlib.resources import files

    text = files("diamond_play.data").joinpath("atari_scores.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["game"]: ReferenceScores(float(r["random"]), float(r["human"]), float(r["diamond"])) for r in rows}


def human_normalized_score(game: str, score: float) -> float | None:
    """(score − random) / (human − random); None for games outside the Atari 100k table."""
    ref = reference_scores().get(game)
    return None if ref is None else (score - ref.random) / (ref.human - ref.random)


def ale_games() -> list[str]:
    """Every other ALE game gymnasium knows as {Game}NoFrameskip-v4, so play and record work beyond Atari 100k."""
    import gymnasium as gym

    quiet_ale()
    return sorted(k.removesuffix("NoFrameskip-v4") for k in gym.registry
                  if k.endswith("NoFrameskip-v4") and "-ram" not in k and "/" not in k)
