"""World-model runtime. This module holds the frame-level step shared by play, training rollouts, eval and bench:
one imagined frame = the dynamics sampler (+ the upsampler sampler for two-stage engines)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diamond_play.config import SamplingConfig
from diamond_play.models.denoiser import Denoiser, Randn, bicubic_upsample
from diamond_play.sampling import sample


@dataclass
class ImaginedFrame:
    low_res: Tensor  # (B, C, h, w): what the dynamics model predicted (and conditions on next)
    full_res: Tensor | None  # (B, C, H, W): the upsampler's output, None for one-stage engines


def denoise_fn(denoiser: Denoiser, act: Tensor | None):
    """Bind the actions so the sampler sees (x, sigma, cond_frames, sigma_cond)."""
    return lambda x, sigma, cond, sigma_cond: denoiser.denoise(x, sigma, cond, act, sigma_cond)


@torch.no_grad()
def imagine_next_frame(denoiser: Denoiser, upsampler: Denoiser | None, sampling: SamplingConfig, obs: Tensor,
                       act: Tensor, randn: Randn, prev_full_res: Tensor | None = None) -> ImaginedFrame:
    """obs (B, L, C, h, w) oldest first, act (B, L) or (B, L, A) with the new action in the last slot;
    prev_full_res (B, C, H, W) is the last full-res frame, needed when there is an upsampler."""
    b, n, c, h, w = obs.shape
    low_res, _ = sample(denoise_fn(denoiser, act), obs.reshape(b, n * c, h, w), (b, c, h, w), sampling.dynamics,
                        randn)
    if upsampler is None:
        return ImaginedFrame(low_res, None)
    if prev_full_res is None or sampling.upsampler is None:
        raise ValueError("a two-stage engine needs the previous full-res frame and an upsampler sampler config")
    factor = upsampler.cfg.upsampling_factor
    assert factor is not None
    cond = torch.cat((prev_full_res, bicubic_upsample(low_res, factor)), dim=1)
    full_res, _ = sample(denoise_fn(upsampler, None), cond, (b, c, h * factor, w * factor), sampling.upsampler,
                         randn)
    return ImaginedFrame(low_res, full_res)
