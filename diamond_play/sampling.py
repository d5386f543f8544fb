"""Sampling the next frame: Karras sigma schedule and Euler/Heun steps with churn (EDM, Karras et al. 2022).

Pure functions over a `denoise(x, sigma, cond_frames, sigma_cond)` callable, so they serve the Atari world model,
the CS:GO dynamics model and the upsampler alike. Random draws come from a `Randn` source and follow the
official code's order, so a seeded run matches it draw for draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from diamond_play.config import SamplerConfig
from diamond_play.models.denoiser import Randn, add_noise

DenoiseFn = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]
"""(x, sigma (0-d), conditioning frames (B, L·C, H, W), sigma_cond or None) -> denoised x."""


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float,
                  device: torch.device | str = "cpu") -> Tensor:
    """EDM eq. (5): σ_i = (σ_max^(1/ρ) + i/(N-1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i < N, then σ_N = 0."""
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    ramp = torch.linspace(0, 1, num_steps, device=device)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


def sampler_sigmas(cfg: SamplerConfig, device: torch.device | str = "cpu") -> Tensor:
    return karras_sigmas(cfg.num_steps_denoising, cfg.sigma_min, cfg.sigma_max, cfg.rho, device)


_SCHEDULES: dict[tuple, tuple[Tensor, list[float]]] = {}


def cached_sigma_schedule(cfg: SamplerConfig, device: torch.device) -> tuple[Tensor, list[float]]:
    """The σ schedule on `device` and as Python floats, computed once per (settings, device): reading the floats
    back from a GPU tensor is a host sync, which would stall every frame and cannot happen inside a CUDA graph."""
    key = (dataclasses.astuple(cfg), str(device))
    if key not in _SCHEDULES:
        sigmas = sampler_sigmas(cfg, device)
        _SCHEDULES[key] = (sigmas, sigmas.tolist())
    return _SCHEDULES[key]


def churn_gamma(sigma: float, cfg: SamplerConfig) -> float:
    """EDM Algorithm 2: γ = min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax], else 0."""
    if cfg.s_tmin <= sigma <= cfg.s_tmax:
        return min(cfg.s_churn / cfg.num_steps_denoising, math.sqrt(2) - 1)
    return 0.0


def sample(denoise: DenoiseFn, cond_frames: Tensor, shape: tuple[int, ...], cfg: SamplerConfig, randn: Randn,
           sigmas: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """Draw one frame: start from x ~ N(0, I) (⚠ not scaled by σ_max) and step down the schedule.

    Returns the sample (not clamped) and the trajectory [x_0, ..., x_N].
    """
    if sigmas is None:
        sigmas, sigma_values = cached_sigma_schedule(cfg, cond_frames.device)
    else:
        sigma_values = sigmas.tolist()
    x = randn(shape).to(cond_frames.dtype)
    trajectory = [x]
    for i in range(len(sigma_values) - 1):
        x, cond_frames = sampler_step(denoise, x, cond_frames, sigmas[i], sigmas[i + 1], sigma_values[i],
                                      sigma_values[i + 1], cfg, randn)
        trajectory.append(x)
    return x, trajectory


def sampler_step(denoise: DenoiseFn, x: Tensor, cond_frames: Tensor, sigma: Tensor, next_sigma: Tensor,
                 sigma_value: float, next_sigma_value: float, cfg: SamplerConfig,
                 randn: Randn) -> tuple[Tensor, Tensor]:
    """One step σ -> σ': optional churn, optional conditioning noise, then Euler (or Heun unless σ' = 0).

    Returns the new x and the (possibly further noised) conditioning frames.
    """
    gamma = churn_gamma(sigma_value, cfg)
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + randn(x.shape).to(x.dtype) * cfg.s_noise * (sigma_hat**2 - sigma**2) ** 0.5
    sigma_cond = None
    if cfg.s_cond > 0:
        # ⚠ The noise accumulates on the conditioning frames across steps, as in the official sampler.
        sigma_cond = torch.full((cond_frames.shape[0],), cfg.s_cond, device=x.device, dtype=x.dtype)
        cond_frames = add_noise(cond_frames, sigma_cond, 0.0, randn)
    # ⚠ The denoiser sees σ, not σ̂, while the slope uses σ̂ (official behaviour).
    denoised = denoise(x, sigma, cond_frames, sigma_cond)
    d = (x - denoised) / sigma_hat
    dt = next_sigma - sigma_hat
    if cfg.order == 1 or next_sigma_value == 0:
        return x + d * dt, cond_frames
    x_euler = x + d * dt
    d_next = (x_euler - denoise(x_euler, next_sigma, cond_frames, sigma_cond)) / next_sigma
    return x + (d + d_next) / 2 * dt, cond_frames
