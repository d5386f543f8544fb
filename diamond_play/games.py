"""The kinds of game an engine plays, as objects. `config.GameKind` is what a weights file records about its kind
(real game or not, action encoding, window and horizon defaults); a `Game` does what differs: where imagined episodes
start (the real game's first frames, or spawn points shipped with the weights) and what a random action is. The two
kinds with a command-line word (`diamond-play atari GAME`, `diamond-play csgo`) are `NamedGame`s that also name,
fetch, check and build their engines, so the CLI, play, the bench and the gymnasium env ask the game instead of
comparing kind strings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path

import numpy as np

from diamond_play.config import (
    ATARI_SAMPLER,
    FAST_DYNAMICS_STEPS,
    GAME_KINDS,
    GameKind,
    SamplingConfig,
    WeightsConfig,
    atari_agent_config,
    csgo_agent_config,
    csgo_sampling,
    fewer_steps,
)
from diamond_play.data.spawns import StartState, load_spawns
from diamond_play.envs import csgo
from diamond_play.envs.atari import action_meanings, canonical_game
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.weights.format import SPAWN_DIR


class AtariStarts:
    """Start states from the real game: reset the emulator and take its first L frames (no-op actions). The
    emulator then keeps running with the player's actions, so it can be shown beside the world model."""

    def __init__(self, game: str, num_frames: int, size: int, seed: int | None) -> None:
        from diamond_play.envs.atari import AtariEnv

        self.env = AtariEnv(game, size=size, seed=seed)
        self.num_frames = num_frames
        self.history: deque[tuple[np.ndarray, int]] = deque(maxlen=num_frames)
        self.frame: np.ndarray | None = None
        self.restart()

    def restart(self, seed: int | None = None) -> None:
        self.frame, _ = self.env.reset(seed)
        self.history.clear()
        while len(self.history) < self.num_frames:
            self.history.append((self.frame, 0))
            self.frame, _, end, trunc, _ = self.env.step(0)
            if end or trunc:
                self.frame, _ = self.env.reset()
                self.history.clear()

    def start_state(self) -> StartState:
        """The emulator's last L frames and actions."""
        frames = np.stack([f for f, _ in self.history][1:] + [self.frame])
        actions = np.array([a for _, a in self.history][1:] + [0])
        return StartState(frames=frames, actions=actions)

    def step(self, action: int) -> np.ndarray:
        assert self.frame is not None
        action = int(action)
        self.history.append((self.frame, action))
        self.frame, _, end, trunc, _ = self.env.step(action)
        if end or trunc:
            self.restart()
        return self.frame

    def close(self) -> None:
        self.env.close()


class SpawnStarts:
    """Start states shipped with the weights (CS:GO spawn points): a fixed one or a random one each time."""

    def __init__(self, spawns: list[StartState], index: int | None, rng: np.random.Generator) -> None:
        if index is not None and not 0 <= index < len(spawns):
            raise UserError(f"--spawn {index} is out of range: these weights have {len(spawns)} spawn points "
                            f"(0..{len(spawns) - 1})")
        self.spawns, self.index, self.rng = spawns, index, rng
        self.frame: np.ndarray | None = None  # no real game runs beside the world model

    def restart(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def start_state(self) -> StartState:
        return self.spawns[self.index if self.index is not None else int(self.rng.integers(len(self.spawns)))]

    def step(self, action: object) -> None:
        return None

    def close(self) -> None:
        pass


Starts = AtariStarts | SpawnStarts


class Game:
    """A kind of game whose imagined episodes start from the spawn points shipped with the weights and whose
    actions are indices (the engines trained on recorded gameplay)."""

    sampling_presets: tuple[str, ...] = ("quality", "fast")
    """Sampler presets play, `serve`, `bench` and `eval` offer for the kind: quality, the weights' own settings;
    fast, the same with one Euler step for the dynamics model (results differ from quality: `eval --fast` measures
    by how much)."""

    def __init__(self, traits: GameKind) -> None:
        self.traits = traits

    def sampling(self, preset: str | None, own: SamplingConfig) -> SamplingConfig | None:
        """The sampler settings of `preset` for weights whose own are `own`, or None for `own` itself."""
        if preset is None or preset == "quality":
            return None
        if preset == "fast":
            return fewer_steps(own, FAST_DYNAMICS_STEPS)
        raise UserError(f"unknown sampler preset {preset!r}: use one of {', '.join(self.sampling_presets)}")

    def start_states(self, config: WeightsConfig, weights_path: Path | None, num_frames: int, size: int,
                     seed: int | None, spawn: int | None, rng: np.random.Generator) -> Starts:
        """`spawn`: a fixed spawn point, or None for a random one at each start."""
        if weights_path is None:
            raise UserError("these weights were not loaded from a weights directory, so they have no spawn points: "
                            "import them with `diamond-play import … --out DIR`")
        return SpawnStarts(load_spawns(Path(weights_path) / SPAWN_DIR), spawn, rng)

    def random_action(self, num_actions: int, rng: np.random.Generator) -> int | np.ndarray:
        return int(rng.integers(num_actions))

    def describe_action(self, config: WeightsConfig, action: int | np.ndarray) -> str:
        """The action's name for the HUD."""
        names = config.action_names
        return names[int(action)] if int(action) < len(names) else str(int(action))


class NamedGame(Game, ABC):
    """A kind of game the command line names (`diamond-play WORD ...`), with official engines on the hub."""

    bench_kinds: tuple[str, ...] = ()
    """Kinds of engine `diamond-play bench WORD --weights W` measures as this one's play."""

    @abstractmethod
    def engine_game(self, game: str | None) -> str:
        """The canonical name of the game the user asked for."""

    def official_game(self, game: str) -> str | None:
        """The game name an official checkpoint of this kind is imported under (None: the config says)."""
        return None

    def holds(self, agent: Agent, game: str) -> bool:
        """Whether `agent` is an engine of `game`."""
        return agent.config.kind == self.traits.name

    def check_engine(self, agent: Agent, game: str, path: Path) -> None:
        """Refuse weights that are not an engine of `game`."""
        if not self.holds(agent, game):
            raise UserError(f"{path} holds a {agent.config.game} ({agent.config.kind}) engine, not {game}: pass "
                            "matching --weights")

    @abstractmethod
    def download(self, game: str | None, out_dir: Path | None, source_dir: Path | None, overwrite: bool) -> Path:
        """Fetch the official engine of `game` from the hub (or `source_dir`) and import it."""

    @abstractmethod
    def random_engine(self) -> Agent:
        """An engine with the paper's architecture and random weights (benchmarks)."""

    @abstractmethod
    def env_id(self, game: str) -> str:
        """The gymnasium id of the world-model env of `game`."""


class AtariGame(NamedGame):
    """Atari: imagined episodes start from the real game's first frames, whose emulator then runs beside the world
    model; one engine per game."""

    bench_kinds = ("atari", "custom")  # engines trained on recordings play like Atari ones: one stage, indices

    def start_states(self, config: WeightsConfig, weights_path: Path | None, num_frames: int, size: int,
                     seed: int | None, spawn: int | None, rng: np.random.Generator) -> Starts:
        return AtariStarts(config.game, num_frames, size, seed)

    def engine_game(self, game: str | None) -> str:
        return canonical_game(game or "")

    def official_game(self, game: str) -> str | None:
        return game

    def holds(self, agent: Agent, game: str) -> bool:
        return super().holds(agent, game) and agent.config.game == game

    def check_engine(self, agent: Agent, game: str, path: Path) -> None:
        if agent.config.kind == self.traits.name and agent.config.game == "unknown":
            name_unknown_game(agent, game)  # an official checkpoint imported under another file name
        super().check_engine(agent, game, path)

    def download(self, game: str | None, out_dir: Path | None, source_dir: Path | None, overwrite: bool) -> Path:
        from diamond_play.weights.hub import download_atari

        if not game:
            raise UserError("which game? usage: diamond-play download atari GAME (e.g. Breakout)")
        return download_atari(game, out_dir=out_dir, source_dir=source_dir, overwrite=overwrite)

    def random_engine(self) -> Agent:
        return Agent(WeightsConfig(agent=atari_agent_config(4), game="Breakout", num_actions=4,
                                   sampling=SamplingConfig(dynamics=ATARI_SAMPLER)))

    def env_id(self, game: str) -> str:
        return f"diamond_play/{game}-v0"


class CSGOGame(NamedGame):
    """CS:GO Dust II: starts from the official spawn points; actions are multi-hot keys, clicks and mouse bins."""

    bench_kinds = ("csgo",)

    def random_action(self, num_actions: int, rng: np.random.Generator) -> np.ndarray:
        keys = [k for k in csgo.KEYS if rng.random() < 0.15]
        return csgo.encode_action(csgo.CSGOAction(
            keys=tuple(k for k in csgo.KEYS if k in csgo.resolve_forbidden(keys)), l_click=bool(rng.random() < 0.1),
            mouse_x=int(rng.choice(csgo.MOUSE_X_BINS)), mouse_y=int(rng.choice(csgo.MOUSE_Y_BINS))))

    def describe_action(self, config: WeightsConfig, action: int | np.ndarray) -> str:
        return csgo.describe_action(csgo.decode_action(np.asarray(action)))

    def engine_game(self, game: str | None) -> str:
        return "csgo"

    def download(self, game: str | None, out_dir: Path | None, source_dir: Path | None, overwrite: bool) -> Path:
        from diamond_play.weights.hub import download_csgo

        if game:
            raise UserError("`diamond-play download csgo` takes no game name")
        return download_csgo(out_dir=out_dir, source_dir=source_dir, overwrite=overwrite)

    def random_engine(self) -> Agent:
        return Agent(WeightsConfig(agent=csgo_agent_config(), game="csgo", kind="csgo", num_actions=csgo.NUM_ACTIONS,
                                   frame_size=[150, 280], sampling=csgo_sampling("quality")))

    def sampling(self, preset: str | None, own: SamplingConfig) -> SamplingConfig | None:
        """The official presets (quality: the paper's 3 + 10 steps; fast: 1 + 1), whatever the weights hold."""
        return csgo_sampling(preset) if preset is not None else None

    def env_id(self, game: str) -> str:
        return "diamond_play/CSGO-v0"


NAMED_GAMES: dict[str, NamedGame] = {"atari": AtariGame(GAME_KINDS["atari"]), "csgo": CSGOGame(GAME_KINDS["csgo"])}
GAMES: dict[str, Game] = {**NAMED_GAMES, "custom": Game(GAME_KINDS["custom"])}


def game_of(config: WeightsConfig) -> Game:
    """The game of an engine's config."""
    return GAMES[config.game_kind.name]


def name_unknown_game(agent: Agent, game: str) -> None:
    """Give an engine imported without a game name the game the user named, if its actions fit."""
    names = list(action_meanings(game))
    if len(names) != agent.config.num_actions:
        raise UserError(f"these weights have {agent.config.num_actions} actions but {game} has {len(names)}: "
                        "name the game they were trained on")
    agent.config.game, agent.config.action_names = game, names
