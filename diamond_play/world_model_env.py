"""The world model as a gymnasium environment: `make_env("Breakout")` or `WorldModelEnv(agent)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from diamond_play.accel.modes import ExecutionMode, execution_mode_named
from diamond_play.engine import WorldModelEngine
from diamond_play.errors import UserError
from diamond_play.games import NAMED_GAMES, game_of
from diamond_play.models.agent import Agent
from diamond_play.play.compile import NetworkCompiler


class WorldModelEnv(gym.Env):
    """Observations are the frames the world model imagines (uint8 RGB, full-res for two-stage engines); rewards
    and terminations come from the agent's reward/termination model (0 / False without one); episodes are truncated
    at `horizon`. Atari engines start from the real game's first frames, CS:GO engines from spawn points.

    `mode` is an execution mode name (see `diamond-play bench`), "auto" (the headless default of `diamond-play`)
    or an `ExecutionMode`; the default is eager fp32, the reference semantics. Compiled modes compile (or load
    from the disk cache) here, before the first step, so a seed reproduces an episode exactly."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, agent: Agent, device: torch.device | str = "cpu", horizon: int | None = None,
                 spawn: int | None = None, render_mode: str | None = None,
                 mode: str | ExecutionMode = "eager-fp32") -> None:
        cfg = agent.config
        if isinstance(mode, str):
            mode = execution_mode_named(mode, torch.device(device))
        self.engine = WorldModelEngine(agent, device=device, seed=0, mode=mode, defer_compile=mode.compile,
                                       horizon=horizon or cfg.game_kind.play_horizon)
        self.compiler = NetworkCompiler(self.engine)
        self.compiler.run()  # compiled modes: now, not mid-episode
        self.render_mode = render_mode
        h, w = cfg.frame_size
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.action_space = (gym.spaces.MultiBinary(cfg.num_actions) if self.engine.multi_hot
                             else gym.spaces.Discrete(cfg.num_actions))
        self.starts = game_of(cfg).start_states(cfg, agent.weights_path, self.engine.num_cond,
                                                self.engine.low_res_size[0], seed=0, spawn=spawn,
                                                rng=np.random.default_rng(0))
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.engine.generator.manual_seed(seed)
            self.starts.restart(seed)
        self._frame = self.engine.reset(self.starts.start_state())
        return self._frame, {}

    def step(self, action):
        if not self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)):
            raise UserError(f"action {action!r} is outside the action space {self.action_space}: "
                            + ("pass a 0/1 vector of that length" if self.engine.multi_hot
                               else f"pass an int in 0..{self.action_space.n - 1}"))
        if self.engine.multi_hot:
            action = np.asarray(action, dtype=np.float32)
        result = self.engine.step(action)
        self._frame = result.frame
        self.last_latency_s = result.latency_s  # not in info: info must be deterministic for a seed
        return result.frame, float(result.reward or 0.0), bool(result.end), bool(result.truncated), {}

    def render(self) -> np.ndarray | None:
        return self._frame if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.compiler.close()
        self.starts.close()


def make_env(game: str, weights: str | Path | None = None, device: str = "cpu", threads: int | None = None,
             **kwargs: Any) -> WorldModelEnv:
    """A world-model environment for an Atari game (or "csgo") with the given or the default weights; `threads`
    sets torch's CPU threads (default: the idle cores, at least 1)."""
    from diamond_play.threads import use_threads

    use_threads(threads)
    from gymnasium.envs.registration import EnvSpec

    from diamond_play.weights.loading import default_weights, load_agent

    named = NAMED_GAMES["csgo"] if game.lower() == "csgo" else NAMED_GAMES["atari"]  # "csgo" or an Atari game
    name = named.engine_game(game)
    agent = load_agent(weights or default_weights(named.traits.name, name), device=device)
    env = WorldModelEnv(agent, device=device, **kwargs)
    # What gymnasium.make("diamond_play/GAME-v0") would record (it replaces this with its own when used).
    env.spec = EnvSpec(named.env_id(name),
                       entry_point="diamond_play.world_model_env:make_env",
                       kwargs={"game": name, "weights": None if weights is None else str(weights), "device": device,
                               **kwargs})
    return env
