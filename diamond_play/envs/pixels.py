"""Any gymnasium environment with a discrete action space, observed through its rendered pixels."""

from __future__ import annotations

import cv2
import numpy as np

from diamond_play.errors import UserError


def is_atari_id(env_id: str) -> bool:
    from diamond_play.envs.atari import ATARI_100K_GAMES, ale_games

    name = env_id.removeprefix("ALE/").split("-v")[0].removesuffix("NoFrameskip")
    return name.lower() in {g.lower() for g in (*ATARI_100K_GAMES, *ale_games())}


def atari_name(env_id: str) -> str:
    return env_id.removeprefix("ALE/").split("-v")[0].removesuffix("NoFrameskip")


class PixelEnv:
    """gym.make(env_id, render_mode="rgb_array"); frames are the rendering resized (INTER_AREA) to (h, w)."""

    def __init__(self, env_id: str, size: tuple[int, int] = (64, 64), seed: int | None = None) -> None:
        import gymnasium as gym

        try:
            self.env = gym.make(env_id, render_mode="rgb_array")
        except gym.error.Error as e:
            raise UserError(f"gymnasium cannot make {env_id!r} ({str(e).splitlines()[0]}): check the id "
                            "(e.g. CartPole-v1, Breakout)") from None
        if not isinstance(self.env.action_space, gym.spaces.Discrete):
            self.env.close()
            raise UserError(f"{env_id} has a {type(self.env.action_space).__name__} action space: only discrete "
                            "action spaces can be recorded")
        self.game = env_id
        self.size = size
        self.num_actions = int(self.env.action_space.n)
        meanings = getattr(self.env.unwrapped, "get_action_meanings", None)
        self.action_meanings = tuple(meanings()) if meanings else tuple(f"action_{i}" for i in range(self.num_actions))
        self._seed = seed

    def _frame(self) -> np.ndarray:
        rgb = self.env.render()
        if rgb is None:
            raise UserError(f"{self.game} renders no pixels: it needs render_mode='rgb_array' support")
        return cv2.resize(np.asarray(rgb, dtype=np.uint8), (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)

    def reset(self, seed: int | None = None):
        seed = seed if seed is not None else self._seed
        self._seed = None
        self.env.reset(seed=seed)
        return self._frame(), {}

    def step(self, action: int):
        _, reward, terminated, truncated, info = self.env.step(int(action))
        return self._frame(), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


def make_pixel_env(env_id: str, size: tuple[int, int] = (64, 64), seed: int | None = None):
    """ALE games get DIAMOND's Atari preprocessing (frame skip 4, max-pool, square frames); others PixelEnv."""
    if is_atari_id(env_id):
        from diamond_play.envs.atari import AtariEnv

        return AtariEnv(atari_name(env_id), size=size[0], seed=seed)
    return PixelEnv(env_id, size, seed)
