"""The batched world-model core: B imagined environments' frame-stacked buffers, filled from real frames (the
reward/termination LSTM burned in on them) and stepped one imagined frame at a time, without gradients.

Used at B = 1 by play, bench and the gymnasium env (`engine.WorldModelEngine`, which adds start states as numpy
frames, the horizon and the shown frame) and at B = N by the imagination rollouts (`train.rl.ImaginedEnvs`, which
adds truncation and restarts). How the networks run is the execution mode's business (`accel`): the core asks it
for the per-frame callables and calls them the same way in every mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diamond_play.accel.frames import Frame, FrameBuffers, Timer, frame_function
from diamond_play.accel.modes import ExecutionMode, check_execution_mode
from diamond_play.accel.networks import CompileStatus, Networks, autocast, prepare_networks
from diamond_play.config import SamplingConfig
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import make_randn

HiddenState = tuple[Tensor, Tensor]


@dataclass
class WorldModelStep:
    """One imagined step of every environment."""

    low_res: Tensor  # (B, C, h, w): the dynamics model's frame, now the newest in the buffers
    full_res: Tensor | None  # (B, C, H, W): the upsampler's frame (two-stage engines)
    reward: Tensor | None  # (B,) float: sampled clipped reward -1/0/+1; None without a reward/termination model
    end: Tensor | None  # (B,) int64: sampled termination
    end_probability: Tensor | None = None  # (B,) float: the model's P(end), what `end` was sampled from
    component_s: dict[str, float] = field(default_factory=dict)


def class_probabilities(logits: Tensor) -> Tensor:
    """Logits (B, ..., K) with one time step -> probabilities (B, K) in fp32."""
    return logits.float().softmax(-1).reshape(logits.shape[0], -1)


def sample_classes(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One class per row of probs (B, K) -> (B,), from `generator` (None: torch's global generator)."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class WorldModel:
    """B environments' buffers — frames (B, L, C, h, w) oldest first, actions (B, L) or multi-hot (B, L, A), the
    last full-res frame (B, C, H, W) of two-stage engines, the reward/termination LSTM state — allocated once and
    shifted in place by each `step_batch`.

    `mode` prepares the agent's networks in place (`accel.prepare_networks`): pass a copy where the modules must
    stay as they are, and a mode that changes nothing (`eager-fp32`, `accel.modes.AUTOCAST_BF16`) for networks
    that are still training. Noise and sampled rewards/ends come from `generator` (None: the global generator, so
    a run that saves torch's RNG state continues the same random stream).
    """

    def __init__(self, agent: Agent, num_envs: int = 1, sampling: SamplingConfig | None = None,
                 device: torch.device | str = "cpu", mode: ExecutionMode | None = None,
                 generator: torch.Generator | None = None, defer_compile: bool = False,
                 networks: Networks | None = None) -> None:
        """`defer_compile`: a compiled mode's networks stay eager until the play layer's `NetworkCompiler`
        compiles them (in the background, or before the first step). `networks`: the agent's networks already
        prepared for `mode` by another world model (`shared_engine`), used as they are."""
        self.device = torch.device(device)
        self.agent = agent
        self.mode = mode or ExecutionMode()
        check_execution_mode(self.mode, self.device)
        # A whole-frame graph is captured around the networks: their compile is deferred only where the build
        # runs in a child process (AOTInductor), else it happens at the first frame, before the capture.
        defer_compile = defer_compile and (not self.mode.cuda_graph or self.mode.compiles_ahead_of_time(self.device))
        self.networks: Networks = networks or prepare_networks(agent, self.mode, self.device,
                                                               compile_now=not defer_compile)
        self.config = agent.config
        self.sampling = sampling or agent.config.sampling
        if agent.upsampler is not None and self.sampling.upsampler is None:
            raise UserError("these weights have an upsampler but their config has no sampling.upsampler settings: "
                            "add them to config.yaml or pass a sampling preset")
        self.num_envs = num_envs
        if generator is None and self.mode.cuda_graph:  # a graph replay draws its noise from a generator
            generator = torch.Generator(self.device).manual_seed(int(torch.randint(0, 2**31, ()).item()))
        self.generator = generator
        self.randn = make_randn(self.device, generator=generator)
        self.num_cond = agent.denoiser.num_steps_conditioning
        self.low_res_size = self._low_res_size()
        h, w = self.low_res_size
        self.multi_hot = self.config.game_kind.multi_hot_actions
        self.obs = torch.zeros(num_envs, self.num_cond, 3, h, w, device=self.device)
        act_shape = (num_envs, self.num_cond) + ((self.config.num_actions,) if self.multi_hot else ())
        self.act = torch.zeros(act_shape, device=self.device, dtype=torch.float32 if self.multi_hot else torch.long)
        self.full_res: Tensor | None = None
        if agent.upsampler is not None:
            fh, fw = self.config.frame_size
            self.full_res = torch.zeros(num_envs, 3, fh, fw, device=self.device)
        self.rew_end_state: HiddenState | None = None
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
    def fill(self, obs: Tensor, act: Tensor, full_res: Tensor | None = None, rows: Tensor | None = None) -> None:
        """Put real frames obs (n, L, C, h, w) and actions (n, L[, A]) into `rows` (None: every environment) and
        burn the reward/termination LSTM in on their transitions, as the official world-model env does."""
        index = slice(None) if rows is None else rows
        self.obs[index] = obs.to(self.obs.dtype)
        self.act[index] = act.to(self.act.dtype)
        if self.full_res is not None:
            if full_res is None:
                raise UserError("this two-stage engine needs a full-res start frame (spawn point)")
            self.full_res[index] = full_res
        model = self.agent.rew_end_model
        if model is None:
            return
        if self.num_cond > 1:
            with self.autocast():
                _, _, (h, c) = model.predict_rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
            # fp32 like the per-frame steps' state (autocast may run the burn-in LSTM in bf16): one compiled graph
            h, c = h.float(), c.float()
        else:
            h = c = torch.zeros(1, len(obs), model.lstm.hidden_size, device=self.device)
        if rows is None:
            self.rew_end_state = (h, c)
            return
        if self.rew_end_state is None:
            zeros = torch.zeros(1, self.num_envs, model.lstm.hidden_size, device=self.device)
            self.rew_end_state = (zeros, zeros.clone())
        self.rew_end_state[0][:, rows], self.rew_end_state[1][:, rows] = h, c

    @torch.no_grad()
    def step_batch(self, act: Tensor, timer: Timer | None = None) -> WorldModelStep:
        """Imagine the next frame of every environment after actions act (B,) or (B, A), sample reward and end,
        and shift the buffers. Runs in the mode's autocast."""
        timer = timer or Timer(self.device, wait_for_gpu=False)
        with self.autocast():
            self.act[:, -1] = act.to(self.device, self.act.dtype)
            low_res, full_res, components = self.frame(timer)
            reward = end = end_probability = None
            rew_end_step = self.networks.rew_end_step
            if rew_end_step is not None:
                rew_logits, end_logits, (h, c) = rew_end_step(self.obs[:, -1:], self.act[:, -1:], low_res[:, None],
                                                              self.rew_end_state)
                self.rew_end_state = (h.float(), c.float())
                end_probs = class_probabilities(end_logits)
                reward = sample_classes(class_probabilities(rew_logits), self.generator).float() - 1
                end = sample_classes(end_probs, self.generator)
                end_probability = end_probs[:, 1]
                components["rew_end"] = timer.lap()
        for i in range(self.num_cond - 1):  # shift in place: no per-frame allocation
            self.obs[:, i].copy_(self.obs[:, i + 1])
            self.act[:, i].copy_(self.act[:, i + 1])
        self.obs[:, -1].copy_(low_res)
        if self.full_res is not None and full_res is not None:
            self.full_res.copy_(full_res)
        return WorldModelStep(low_res, full_res, reward, end, end_probability, components)
