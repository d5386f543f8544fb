"""The world-model networks prepared for an execution mode: memory layout, bf16 weight storage, inference
rewrites, and the compiled callables that stand in for the paper modules' calls.

`prepare_networks` changes the modules in place (inference only: module swaps from `accel.inference`, bf16 weights,
memory layout) and returns `Networks`: the callables the engine runs per frame. Compiled callables wrap the modules'
own methods (`Denoiser.denoise_batch`, `OneStepRewEnd.forward`); the modules themselves carry no compiled code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from diamond_play.accel.compile_cache import AOTCompiled
from diamond_play.accel.inference import OneStepRewEnd, fuse_norm_conditioning, use_parallel_group_norm
from diamond_play.accel.modes import ExecutionMode
from diamond_play.models.agent import Agent
from diamond_play.models.blocks import NormConditioned
from diamond_play.models.denoiser import Denoiser, as_batch_sigma
from diamond_play.models.rew_end import RewEndModel

DenoiseBatch = Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor | None], Tensor]
RewEndStep = Callable[..., tuple[Tensor, Tensor, tuple[Tensor, Tensor]]]


class AcceleratedDenoiser:
    """A denoiser as the execution mode runs it: `denoise` (the module's arguments and results) with the
    per-sample maths run by `batch_fn`, the module's own `denoise_batch` or a compiled version of it. The frame
    functions (`imagine.predict_low_res`, `imagine.upsample_frame`) take it where they take a `Denoiser`."""

    def __init__(self, denoiser: Denoiser, batch_fn: DenoiseBatch | None = None) -> None:
        self.module = denoiser
        self.cfg = denoiser.cfg
        self.batch_fn = batch_fn or denoiser.denoise_batch

    @torch.no_grad()
    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor | float, obs: Tensor, act: Tensor | None,
                sigma_cond: Tensor | float | None = None) -> Tensor:
        b = noisy_next_obs.shape[0]
        sigma = as_batch_sigma(sigma, b, noisy_next_obs)
        if sigma_cond is not None:
            sigma_cond = as_batch_sigma(sigma_cond, b, noisy_next_obs)
        return self.batch_fn(noisy_next_obs, sigma, obs, act, sigma_cond)


@dataclass
class CompileStatus:
    """Where a compiled mode's networks are: `eager` (not a compiled mode), `compiling` (running eagerly until the
    compiled networks are swapped in), `compiled` (`seconds`: how long the compile took when it ran after the
    engine was made), `cancelled` or `failed` (`reason`; both keep playing eagerly)."""

    state: str = "eager"
    seconds: float | None = None
    reason: str = ""

    @property
    def compiling(self) -> bool:
        return self.state == "compiling"

    def __str__(self) -> str:
        if self.state == "compiled" and self.seconds is not None:
            return f"compiled in {self.seconds:.0f} s"
        if self.state == "cancelled":
            return "eager (compile cancelled)"
        if self.state == "failed":
            return f"eager (compile failed: {self.reason})"
        return self.state


@dataclass
class Networks:
    """What the engine calls per frame: the dynamics denoiser, the upsampler (two-stage engines) and the
    reward/termination model's one-step call, each as the execution mode runs it."""

    dynamics: AcceleratedDenoiser
    upsampler: AcceleratedDenoiser | None
    rew_end_step: RewEndStep | None
    status: CompileStatus = field(default_factory=CompileStatus)

    def compilers(self) -> list[AOTCompiled]:
        """The AOTInductor callables among them (their build or load times are reported by `bench`)."""
        fns = [self.dynamics.batch_fn, self.upsampler.batch_fn if self.upsampler else None, self.rew_end_step]
        return [f for f in fns if isinstance(f, AOTCompiled)]


def compile_denoise(den: Denoiser, mode: ExecutionMode, device: torch.device,
                    per_call_cuda_graphs: bool = True) -> DenoiseBatch:
    """One compiled graph per denoiser call (preconditioning, U-Net and output rounding), reused by every sampler
    step. AOTInductor with frozen weights cached on disk (`compile_cache`) where the mode compiles ahead of time,
    so a restart loads it in milliseconds; else torch.compile, whose CUDA graphs replay each call with one launch
    (reduce-overhead) unless the whole frame is captured as one graph around the compiled kernels."""
    if mode.compiles_ahead_of_time(device) and not (device.type == "cuda" and per_call_cuda_graphs):
        return AOTCompiled(den, "denoise_batch")
    inductor_mode = mode.inductor_mode or ("reduce-overhead" if per_call_cuda_graphs else None)
    return torch.compile(den.denoise_batch, dynamic=False, mode=inductor_mode)


def rew_end_step_module(model: RewEndModel, mode: ExecutionMode) -> nn.Module | RewEndModel:
    """What runs the reward/termination model's per-frame call in `mode`: the one-step rewrite with inference
    kernels (weights in bf16 in bf16 modes), else the model itself."""
    if mode.inference_kernels:
        return OneStepRewEnd(model, torch.bfloat16 if mode.bf16 else torch.float32)
    return model


def compile_rew_end_step(model: RewEndModel, mode: ExecutionMode) -> RewEndStep:
    step = rew_end_step_module(model, mode)
    method = "forward" if isinstance(step, OneStepRewEnd) else "predict_rew_end"
    if mode.compiles_ahead_of_time(next(model.parameters()).device):
        return AOTCompiled(step, method)
    return torch.compile(getattr(step, method), dynamic=False)


def rew_end_step_fn(model: RewEndModel, mode: ExecutionMode, compile_now: bool = True) -> RewEndStep:
    """The reward/termination model's per-frame call (T = 1) for `mode`, compiled in compiled modes."""
    if mode.compile and compile_now:
        return compile_rew_end_step(model, mode)
    step = rew_end_step_module(model, mode)
    return step if isinstance(step, OneStepRewEnd) else model.predict_rew_end


def store_autocast_weights_in_bf16(model: nn.Module) -> None:
    """Keep convolution and linear weights in bf16, the dtype bf16 autocast casts them to on every call anyway:
    the outputs stay bit-identical while each call stops re-reading and converting all fp32 weights. Norms,
    embeddings and LSTMs keep fp32, as autocast treats them. Inference only: the modules are changed in place."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(torch.bfloat16)


def prepare_networks(agent: Agent, mode: ExecutionMode, device: torch.device, compile_now: bool = True) -> Networks:
    """Prepare the agent's world-model networks for `mode` (in place) and return the per-frame callables.
    Without `compile_now` compiled modes stay eager until the play layer's background compile swaps compiled
    callables in."""
    if mode.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for model in (agent.denoiser, agent.upsampler, agent.rew_end_model):
        if model is None:
            continue
        if mode.channels_last:
            model.to(memory_format=torch.channels_last)
        if mode.bf16_weights:
            store_autocast_weights_in_bf16(model)
        if mode.inference_kernels:
            parallel_stats = device.type == "cuda"  # on CPUs the native group norm is as fast or faster
            for part in [m for m in model.modules() if isinstance(m, NormConditioned)]:
                fuse_norm_conditioning(part, parallel_stats)
            if parallel_stats:
                use_parallel_group_norm(model)

    def accelerated(den: Denoiser) -> AcceleratedDenoiser:
        compiled = mode.compile and compile_now
        return AcceleratedDenoiser(den, compile_denoise(den, mode, device, not mode.cuda_graph) if compiled else None)

    return Networks(
        dynamics=accelerated(agent.denoiser),
        upsampler=accelerated(agent.upsampler) if agent.upsampler is not None else None,
        rew_end_step=(rew_end_step_fn(agent.rew_end_model, mode, compile_now)
                      if agent.rew_end_model is not None else None),
        status=CompileStatus("eager" if not mode.compile else "compiled" if compile_now else "compiling"))


def autocast(mode: ExecutionMode, device: torch.device) -> torch.autocast:
    """The mode's autocast context: every call into the networks runs inside it (bf16 modes store weights in
    bf16). No cast cache under CUDA-graph capture: cached casts would live in the graph's private memory."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.bf16, cache_enabled=not mode.cuda_graph)
