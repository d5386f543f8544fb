"""World-model runtime for play, bench and the gymnasium env: the frame-stacked buffers around one imagined
frame per step, at batch 1, without gradients.

How the networks run (eager, bf16, compiled, CUDA-graphed) is the execution mode's business (`accel`): the engine
asks it for the per-frame callables and calls them the same way in every mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from diamond_play.accel.frames import Frame, FrameBuffers, Timer, frame_function
from diamond_play.accel.modes import ExecutionMode, check_execution_mode
from diamond_play.accel.networks import CompileStatus, Networks, autocast, prepare_networks
from diamond_play.config import SamplingConfig
from diamond_play.data.spawns import StartState
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor, tensor_to_frames
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import make_randn


@dataclass
class StepResult:
    frame: np.ndarray  # uint8 (H, W, 3): what to show (full-res for two-stage engines)
    reward: float | None  # sampled clipped reward -1/0/+1, None without a reward/termination model
    end: bool | None
    truncated: bool  # the imagination horizon was reached
    latency_s: float
    component_s: dict[str, float] = field(default_factory=dict)


class WorldModelEngine:
    """Keeps the frame-stacked buffers and imagines one frame per `step(action)`.

    Buffers are allocated once; a step shifts them in place. Deterministic for a given seed.
    """

    def __init__(self, agent: Agent, sampling: SamplingConfig | None = None, device: torch.device | str = "cpu",
                 seed: int | None = None, horizon: int = 1000, mode: ExecutionMode | None = None,
                 defer_compile: bool = False) -> None:
        """`defer_compile`: a compiled mode's networks stay eager until the play layer's `NetworkCompiler`
        compiles them (in the background, or before the first step)."""
        self.device = torch.device(device)
        self.agent = agent.to(self.device).eval()
        self.mode = mode or ExecutionMode()
        check_execution_mode(self.mode, self.device)
        # A whole-frame graph is captured around the networks: their compile is deferred only where the build
        # runs in a child process (AOTInductor), else it happens at the first frame, before the capture.
        defer_compile = defer_compile and (not self.mode.cuda_graph or self.mode.compiles_ahead_of_time(self.device))
        self.networks: Networks = prepare_networks(self.agent, self.mode, self.device, compile_now=not defer_compile)
        self.config = agent.config
        self.sampling = sampling or agent.config.sampling
        if agent.upsampler is not None and self.sampling.upsampler is None:
            raise UserError("these weights have an upsampler but their config has no sampling.upsampler settings: "
                            "add them to config.yaml or pass a sampling preset")
        self.horizon = horizon
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ()).item()))
        self.randn = make_randn(self.device, generator=self.generator)
        self.num_cond = agent.denoiser.num_steps_conditioning
        self.low_res_size = self._low_res_size()
        h, w = self.low_res_size
        self.multi_hot = self.config.kind == "csgo"
        self.obs = torch.zeros(1, self.num_cond, 3, h, w, device=self.device)
        act_shape = (1, self.num_cond, self.config.num_actions) if self.multi_hot else (1, self.num_cond)
        self.act = torch.zeros(act_shape, device=self.device, dtype=torch.float32 if self.multi_hot else torch.long)
        self.full_res: Tensor | None = None
        if agent.upsampler is not None:
            fh, fw = self.config.frame_size
            self.full_res = torch.zeros(1, 3, fh, fw, device=self.device)
        self.rew_end_state: tuple[Tensor, Tensor] | None = None
        self.steps = 0
        self.started = False
        self.cancel_event = threading.Event()  # set from another thread to abandon a step in progress
        self.frame: Frame = frame_function(self.mode, self.networks, self.sampling,
                                           FrameBuffers(self.obs, self.act, self.full_res), self.randn,
                                           self.generator, self.cancel_event, self.device)

    @property
    def compile_status(self) -> CompileStatus:
        return self.networks.status

    def _low_res_size(self) -> tuple[int, int]:
        h, w = self.config.frame_size
        if self.agent.upsampler is not None:
            factor = self.agent.upsampler.cfg.upsampling_factor or 1
            return h // factor, w // factor
        return h, w

    def autocast(self) -> torch.autocast:
        return autocast(self.mode, self.device)

    @torch.no_grad()
    def reset(self, start: StartState) -> np.ndarray:
        """Fill the buffers from a start state; returns the frame to show."""
        n = self.num_cond
        if len(start.frames) < n or len(start.actions) < n:
            raise UserError(f"a start state needs {n} frames and actions, got {len(start.frames)}")
        frames = frames_to_tensor(start.frames[-n:], self.device)
        if tuple(frames.shape[-2:]) != self.low_res_size:
            raise UserError(f"start frames are {tuple(frames.shape[-2:])} but the model expects {self.low_res_size}")
        self.obs[0].copy_(frames)
        self.act[0].copy_(torch.as_tensor(np.asarray(start.actions[-n:]), device=self.device).to(self.act.dtype))
        if self.full_res is not None:
            if start.full_res_frame is None:
                raise UserError("this two-stage engine needs a full-res start frame (spawn point)")
            self.full_res[0].copy_(frames_to_tensor(start.full_res_frame, self.device))
        self.rew_end_state = None
        if self.agent.rew_end_model is not None and n > 1:
            # Burn the LSTM in on the conditioning frames, as the official world-model env does.
            with self.autocast():
                _, _, state = self.agent.rew_end_model.predict_rew_end(
                    self.obs[:, :-1], self.act[:, :-1], self.obs[:, 1:])
            # fp32 like the per-frame steps' state (autocast may run the burn-in LSTM in bf16): one compiled graph
            self.rew_end_state = (state[0].float(), state[1].float())
        self.steps = 0
        self.started = True
        return self.current_frame()

    def current_frame(self) -> np.ndarray:
        return tensor_to_frames(self.full_res[0] if self.full_res is not None else self.obs[0, -1])

    def current_low_res(self) -> Tensor:
        return self.obs[:, -1]

    def _sample_categorical(self, logits: Tensor) -> int:
        return int(torch.multinomial(logits.softmax(-1).reshape(1, -1), 1, generator=self.generator).item())

    @torch.no_grad()
    def step(self, action: int | np.ndarray | Tensor) -> StepResult:
        if not self.started:
            raise RuntimeError("call reset() before step()")
        with self.autocast():
            return self._step(action)

    def _step(self, action: int | np.ndarray | Tensor) -> StepResult:
        timer = Timer(self.device)
        self.act[0, -1] = torch.as_tensor(action, device=self.device).to(self.act.dtype)
        low_res, full_res, components = self.frame(timer)
        reward = end = None
        rew_end_step = self.networks.rew_end_step
        if rew_end_step is not None:
            rew_logits, end_logits, self.rew_end_state = rew_end_step(
                self.obs[:, -1:], self.act[:, -1:], low_res[:, None], self.rew_end_state)
            reward = float(self._sample_categorical(rew_logits) - 1)
            end = bool(self._sample_categorical(end_logits))
            components["rew_end"] = timer.lap()
        for i in range(self.num_cond - 1):  # shift in place: no per-frame allocation
            self.obs[:, i].copy_(self.obs[:, i + 1])
            self.act[:, i].copy_(self.act[:, i + 1])
        self.obs[:, -1].copy_(low_res)
        if self.full_res is not None and full_res is not None:
            self.full_res.copy_(full_res)
        self.steps += 1
        shown = self.current_frame()
        return StepResult(shown, reward, end, self.steps >= self.horizon, timer.total(), components)
