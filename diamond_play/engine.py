"""The world model as play, bench and the gymnasium env drive it: one environment, reset from a start state of
numpy frames, stepped with one action, returning the frame to show and the sampled reward and end, with the
imagination horizon. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diamond_play.accel.frames import Timer
from diamond_play.accel.modes import ExecutionMode
from diamond_play.accel.networks import Networks
from diamond_play.config import SamplingConfig
from diamond_play.data.spawns import StartState
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor, tensor_to_frames
from diamond_play.models.agent import Agent
from diamond_play.world_model import WorldModel


@dataclass
class StepResult:
    frame: np.ndarray  # uint8 (H, W, 3): what to show (full-res for two-stage engines)
    reward: float | None  # sampled clipped reward -1/0/+1, None without a reward/termination model
    end: bool | None
    truncated: bool  # the imagination horizon was reached
    latency_s: float
    component_s: dict[str, float] = field(default_factory=dict)


class WorldModelEngine(WorldModel):
    """The batched core (`world_model.WorldModel`) at B = 1, on its own seeded generator."""

    def __init__(self, agent: Agent, sampling: SamplingConfig | None = None, device: torch.device | str = "cpu",
                 seed: int | None = None, horizon: int = 1000, mode: ExecutionMode | None = None,
                 defer_compile: bool = False, networks: Networks | None = None) -> None:
        """`networks`: the agent's networks already prepared for `mode` (seats of a `play.shared` engine)."""
        device = torch.device(device)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ()).item()))
        super().__init__(agent.to(device).eval(), 1, sampling, device, mode, generator, defer_compile, networks)
        self.horizon = horizon
        self.steps = 0
        self.started = False

    @torch.no_grad()
    def reset(self, start: StartState) -> np.ndarray:
        """Fill the buffers from a start state; returns the frame to show."""
        n = self.num_cond
        if len(start.frames) < n or len(start.actions) < n:
            raise UserError(f"a start state needs {n} frames and actions, got {len(start.frames)}")
        frames = frames_to_tensor(start.frames[-n:], self.device)
        if tuple(frames.shape[-2:]) != self.low_res_size:
            raise UserError(f"start frames are {tuple(frames.shape[-2:])} but the model expects {self.low_res_size}")
        actions = torch.as_tensor(np.asarray(start.actions[-n:]), device=self.device)
        full_res = None
        if start.full_res_frame is not None and self.full_res is not None:
            full_res = frames_to_tensor(start.full_res_frame, self.device)[None]
        self.fill(frames[None], actions[None], full_res)
        self.steps = 0
        self.started = True
        return self.current_frame()

    def current_frame(self) -> np.ndarray:
        return tensor_to_frames(self.full_res[0] if self.full_res is not None else self.obs[0, -1])

    def current_low_res(self) -> torch.Tensor:
        return self.obs[:, -1]

    @torch.no_grad()
    def step(self, action: int | np.ndarray | torch.Tensor) -> StepResult:
        if not self.started:
            raise RuntimeError("call reset() before step()")
        timer = Timer(self.device)
        out = self.step_batch(torch.as_tensor(action)[None], timer)
        reward = float(out.reward[0]) if out.reward is not None else None
        end = bool(out.end[0]) if out.end is not None else None
        self.steps += 1
        return StepResult(self.current_frame(), reward, end, self.steps >= self.horizon, timer.total(),
                          out.component_s)
