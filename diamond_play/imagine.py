"""One imagined frame: the dynamics sampler (+ bicubic upsampling and the upsampler's sampler for two-stage
engines), as pure functions over a denoiser, the conditioning buffers and injected noise.

The denoiser argument is anything with `Denoiser.denoise` and `cfg`: the module itself (training, rollouts, eval)
or the execution mode's `accel.networks.AcceleratedDenoiser` (play).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from diamond_play.config import DenoiserConfig, SamplerConfig, SamplingConfig
from diamond_play.models.denoiser import Randn, bicubic_upsample
from diamond_play.sampling import sample


class DenoiserLike(Protocol):
    cfg: DenoiserConfig

    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor | float, obs: Tensor, act: Tensor | None,
                sigma_cond: Tensor | float | None = None) -> Tensor: ...


@dataclass
class ImaginedFrame:
    low_res: Tensor  # (B, C, h, w): what the dynamics model predicted (and conditions on next)
    full_res: Tensor | None  # (B, C, H, W): the upsampler's output, None for one-stage engines


class Cancelled(Exception):
    """Raised inside a step when the engine was asked to stop (the app is closing)."""


def denoise_fn(denoiser: DenoiserLike, act: Tensor | None, cancel: threading.Event | None = None):
    """Bind the actions so the sampler sees (x, sigma, cond_frames, sigma_cond); check `cancel` between calls."""

    def denoise(x: Tensor, sigma: Tensor, cond: Tensor, sigma_cond: Tensor | None) -> Tensor:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        return denoiser.denoise(x, sigma, cond, act, sigma_cond)

    return denoise


@torch.no_grad()
def predict_low_res(denoiser: DenoiserLike, sampler: SamplerConfig, obs: Tensor, act: Tensor, randn: Randn,
                    cancel: threading.Event | None = None) -> Tensor:
    """The dynamics model's next frame from obs (B, L, C, h, w), oldest first, and act (B, L) / (B, L, A) whose
    last slot holds the new action."""
    b, n, c, h, w = obs.shape
    x, _ = sample(denoise_fn(denoiser, act, cancel), obs.reshape(b, n * c, h, w), (b, c, h, w), sampler, randn)
    return x


@torch.no_grad()
def upsample_frame(upsampler: DenoiserLike, sampler: SamplerConfig, low_res: Tensor, prev_full_res: Tensor,
                   randn: Randn, cancel: threading.Event | None = None) -> Tensor:
    """Full-res frame conditioned on the previous full-res frame and the bicubic-upsampled low-res prediction."""
    factor = upsampler.cfg.upsampling_factor
    assert factor is not None
    b, c, h, w = low_res.shape
    cond = torch.cat((prev_full_res, bicubic_upsample(low_res, factor)), dim=1)
    x, _ = sample(denoise_fn(upsampler, None, cancel), cond, (b, c, h * factor, w * factor), sampler, randn)
    return x


def imagine_next_frame(denoiser: DenoiserLike, upsampler: DenoiserLike | None, sampling: SamplingConfig, obs: Tensor,
                       act: Tensor, randn: Randn, prev_full_res: Tensor | None = None) -> ImaginedFrame:
    """One imagined frame: dynamics, then (two-stage engines) the upsampler; prev_full_res (B, C, H, W)."""
    low_res = predict_low_res(denoiser, sampling.dynamics, obs, act, randn)
    if upsampler is None:
        return ImaginedFrame(low_res, None)
    if prev_full_res is None or sampling.upsampler is None:
        raise ValueError("a two-stage engine needs the previous full-res frame and an upsampler sampler config")
    return ImaginedFrame(low_res, upsample_frame(upsampler, sampling.upsampler, low_res, prev_full_res, randn))
