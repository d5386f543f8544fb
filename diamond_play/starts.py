"""Where imagined episodes start: the real game's first frames (Atari, with the emulator running beside the
world model) or spawn points shipped with the weights (CS:GO and recorded games)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from diamond_play.config import WeightsConfig
from diamond_play.data.spawns import StartState, load_spawns
from diamond_play.errors import UserError
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
        self.env = None

    def start_state(self) -> StartState:
        return self.spawns[self.index if self.index is not None else int(self.rng.integers(len(self.spawns)))]

    def close(self) -> None:
        pass




def start_states(config: WeightsConfig, weights_path: Path | None, num_frames: int, size: int, seed: int | None,
                 spawn: int | None, rng: np.random.Generator) -> AtariStarts | SpawnStarts:
    """Atari engines start from the real game (whose emulator then runs beside the world model); CS:GO and recorded
    games from the spawn points shipped with their weights (`spawn`: a fixed one, or None for a random one)."""
    if config.game_kind.real_game:
        return AtariStarts(config.game, num_frames, size, seed)
    if weights_path is None:
        raise UserError("these weights were not loaded from a weights directory, so they have no spawn points: "
                        "import them with `diamond-play import … --out DIR`")
    return SpawnStarts(load_spawns(Path(weights_path) / SPAWN_DIR), spawn, rng)
