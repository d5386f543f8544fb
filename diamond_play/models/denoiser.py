"""EDM denoiser with DIAMOND's preconditioning (offset noise, 8-bit output), its inner U-Net, and its training loss.

Each equation is a small function named after it; `Denoiser` wires them around `InnerModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_play.config import DenoiserConfig, InnerModelConfig, SigmaDistributionConfig
from diamond_play.models.blocks import FourierFeatures, GroupNorm, NormConditioned, conv3x3
from diamond_play.models.unet import UNet

Randn = Callable[[Sequence[int]], Tensor]
"""A source of N(0, 1) noise of a given shape: lets samplers be seeded, or replay recorded draws."""


def make_randn(device: torch.device | str, dtype: torch.dtype = torch.float32,
               generator: torch.Generator | None = None) -> Randn:
    return lambda shape: torch.randn(tuple(shape), device=device, dtype=dtype, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# Equations

@dataclass
class Conditioners:
    c_in: Tensor  # (B, 1, 1, 1)
    c_out: Tensor
    c_skip: Tensor
    c_noise: Tensor  # (B,)
    c_noise_cond: Tensor  # (B,)


def effective_sigma(sigma: Tensor, sigma_offset_noise: float) -> Tensor:
    """⚠ DIAMOND preconditions on σ_e = √(σ² + σ_off²): the offset noise counts as noise."""
    return (sigma**2 + sigma_offset_noise**2).sqrt()


def edm_conditioners(sigma: Tensor, sigma_cond: Tensor | None, sigma_data: float,
                     sigma_offset_noise: float) -> Conditioners:
    """EDM (Karras et al. 2022, Table 1) c_in, c_skip, c_out, c_noise, evaluated at the effective sigma."""
    sigma = effective_sigma(sigma, sigma_offset_noise)
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * c_skip.sqrt()
    c_noise = sigma.log() / 4
    # No offset term for the conditioning noise; 0 when the conditioning frames are clean.
    c_noise_cond = sigma_cond.log() / 4 if sigma_cond is not None else torch.zeros_like(c_noise)
    expand = (-1, 1, 1, 1)
    return Conditioners(c_in.view(expand), c_out.view(expand), c_skip.view(expand), c_noise, c_noise_cond)


def quantize_to_uint8_levels(x: Tensor) -> Tensor:
    """⚠ Official output rounding: clamp to [-1, 1], scale to 0..255, *truncate* to uint8, map back."""
    return x.clamp(-1, 1).add(1).div(2).mul(255).byte().div(255).mul(2).sub(1)


def add_noise(x: Tensor, sigma: Tensor, sigma_offset_noise: float, randn: Randn) -> Tensor:
    """x + σ_off·ε(B, C, 1, 1) + σ·ε(B, C, H, W).

    The offset draw happens even when σ_off = 0 (the samplers' conditioning noise) so a seeded run
    consumes the random stream exactly as the official code does.
    """
    b, c = x.shape[:2]
    offset = sigma_offset_noise * randn((b, c, 1, 1)).to(x.dtype)
    return x + offset + randn(x.shape).to(x.dtype) * sigma.view(-1, *([1] * (x.ndim - 1)))


def sample_training_sigma(batch_size: int, dist: SigmaDistributionConfig, device: torch.device | str,
                          generator: torch.Generator | None = None) -> Tensor:
    """Log-normal training noise levels: exp(N(loc, scale²)) clipped to [sigma_min, sigma_max]."""
    s = torch.randn(batch_size, device=device, generator=generator) * dist.scale + dist.loc
    return s.exp().clip(dist.sigma_min, dist.sigma_max)


def bicubic_upsample(frames: Tensor, factor: int) -> Tensor:
    """Low-res -> full-res input of the upsampler (torch bicubic, default align_corners, no clamping)."""
    return F.interpolate(frames, scale_factor=factor, mode="bicubic")


def as_batch_sigma(sigma: Tensor | float, batch_size: int, like: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.expand(batch_size) if sigma.ndim == 0 else sigma.reshape(batch_size)


# ---------------------------------------------------------------------------------------------------------------
# Networks

class InnerModel(NormConditioned):
    """F in D = c_skip·x + c_out·F(c_in·x, c_noise, cond frames, actions): a U-Net with stacked frames on channels."""

    def __init__(self, cfg: InnerModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Registration order = official state-dict order.
        self.noise_emb = FourierFeatures(cfg.cond_channels)
        self.noise_cond_emb = FourierFeatures(cfg.cond_channels) if cfg.noise_cond_embedding else None
        if cfg.num_actions is not None:
            self.act_emb = nn.Sequential(
                nn.Embedding(cfg.num_actions, cfg.cond_channels // cfg.num_steps_conditioning),
                nn.Flatten(),  # (B, L, E) -> (B, L·E), oldest action first
            )
        else:
            self.act_emb = None
        self.cond_proj = nn.Sequential(
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
            nn.SiLU(),
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
        )
        in_frames = cfg.num_steps_conditioning + int(cfg.is_upsampler) + 1
        self.conv_in = conv3x3(in_frames * cfg.img_channels, cfg.channels[0])
        self.unet = UNet(cfg.cond_channels, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = conv3x3(cfg.channels[0], cfg.img_channels)
        nn.init.zeros_(self.conv_out.weight)

    def embed_actions(self, act: Tensor) -> Tensor:
        """Atari: int indices (B, L). ⚠ CS:GO: multi-hot (B, L, A) floats times the embedding matrix."""
        assert self.act_emb is not None
        embedding, flatten = self.act_emb
        if act.ndim == 2:
            return flatten(embedding(act))
        return flatten(act.to(embedding.weight.dtype) @ embedding.weight)

    def conditioning(self, c_noise: Tensor, c_noise_cond: Tensor, act: Tensor | None) -> Tensor:
        emb = self.noise_emb(c_noise)
        if self.noise_cond_emb is not None:
            emb = emb + self.noise_cond_emb(c_noise_cond)
        if self.act_emb is not None:
            if act is None:
                raise ValueError("this model is action-conditioned: pass act")
            emb = emb + self.embed_actions(act)
        return self.cond_proj(emb)

    def forward(self, noisy_next_obs: Tensor, c_noise: Tensor, c_noise_cond: Tensor, obs: Tensor,
                act: Tensor | None) -> Tensor:
        cond = self.conditioning(c_noise, c_noise_cond, act)
        x = self.conv_in(torch.cat((obs, noisy_next_obs), dim=1))
        x = self.unet(x, self.norm_cond(cond))
        return self.conv_out(F.silu(self.norm_out(x)))


class Denoiser(nn.Module):
    """EDM denoiser D(x; σ) predicting the next frame from L past frames (and actions), or the full-res frame."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inner_model = InnerModel(cfg.inner_model)

    @property
    def is_upsampler(self) -> bool:
        return self.cfg.upsampling_factor is not None

    @property
    def num_steps_conditioning(self) -> int:
        return self.cfg.inner_model.num_steps_conditioning

    def conditioners(self, sigma: Tensor, sigma_cond: Tensor | None) -> Conditioners:
        return edm_conditioners(sigma, sigma_cond, self.cfg.sigma_data, self.cfg.sigma_offset_noise)

    def model_output(self, noisy_next_obs: Tensor, obs: Tensor, act: Tensor | None, cs: Conditioners) -> Tensor:
        """F(c_in·x, c_noise, [c_noise_cond], obs/σ_data, act)."""
        return self.inner_model(noisy_next_obs * cs.c_in, cs.c_noise, cs.c_noise_cond, obs / self.cfg.sigma_data, act)

    @staticmethod
    def denoised_raw(noisy_next_obs: Tensor, model_output: Tensor, cs: Conditioners) -> Tensor:
        """D = c_skip·x + c_out·F, before quantisation."""
        return cs.c_skip * noisy_next_obs + cs.c_out * model_output

    @torch.no_grad()
    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor | float, obs: Tensor, act: Tensor | None,
                sigma_cond: Tensor | float | None = None) -> Tensor:
        """Denoised next frame in [-1, 1], quantised to 256 levels like the official model.

        noisy_next_obs (B, C, H, W); sigma scalar or (B,); obs (B, L·C, H, W) oldest first (for the upsampler:
        previous full-res frames then the bicubic-upsampled low-res frame); act (B, L) int, (B, L, A) multi-hot
        or None; sigma_cond: noise level of the conditioning frames (CS:GO), None when they are clean.
        """
        b = noisy_next_obs.shape[0]
        sigma = as_batch_sigma(sigma, b, noisy_next_obs)
        if sigma_cond is not None:
            sigma_cond = as_batch_sigma(sigma_cond, b, noisy_next_obs)
        return self.denoise_batch(noisy_next_obs, sigma, obs, act, sigma_cond)

    def denoise_batch(self, noisy_next_obs: Tensor, sigma: Tensor, obs: Tensor, act: Tensor | None,
                      sigma_cond: Tensor | None) -> Tensor:
        """`denoise` with sigma (and sigma_cond) already per sample (B,): the maths, what compiled modes compile.
        Sigma is a tensor input, so every sampler step reuses one compiled graph (`accel.networks`)."""
        cs = self.conditioners(sigma, sigma_cond)
        out = self.model_output(noisy_next_obs, obs, act, cs)
        return quantize_to_uint8_levels(self.denoised_raw(noisy_next_obs, out, cs))

    def loss(self, obs: Tensor, act: Tensor | None, mask_padding: Tensor, full_res: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """EDM training loss over a segment of T = L + K frames, predicting K frames autoregressively.

        obs (B, T, C, h, w) in [-1, 1]; act (B, T) / (B, T, A) / None; mask_padding (B, T) True where the frame
        is real. The upsampler also takes full_res (B, T, C, H, W): targets and previous frames, while its
        low-res input is the bicubic upsampling of obs.
        """
        b, t, c, h, w = obs.shape
        n = self.num_steps_conditioning
        device = obs.device
        randn = make_randn(device, obs.dtype, generator)
        if self.is_upsampler:
            if full_res is None:
                raise ValueError("the upsampler's loss needs full_res frames")
            factor = self.cfg.upsampling_factor
            assert factor is not None
            low_res_up = bicubic_upsample(obs.reshape(b * t, c, h, w), factor).reshape(b, t, c, h * factor, w * factor)
            all_obs = full_res.clone()
        else:
            low_res_up = None
            all_obs = obs.clone()
        height, width = all_obs.shape[-2:]

        num_predictions = t - n
        total = obs.new_zeros(())
        for i in range(num_predictions):
            prev_obs = all_obs[:, i : n + i].reshape(b, n * c, height, width)
            prev_act = None if act is None or self.is_upsampler else act[:, i : n + i]
            target = all_obs[:, n + i]
            mask = mask_padding[:, n + i]

            sigma_cond = None
            if self.cfg.noise_previous_obs:
                sigma_cond = sample_training_sigma(b, self.cfg.sigma_distribution, device, generator)
                prev_obs = add_noise(prev_obs, sigma_cond, self.cfg.sigma_offset_noise, randn)
            if low_res_up is not None:
                prev_obs = torch.cat((prev_obs, low_res_up[:, n + i]), dim=1)

            sigma = sample_training_sigma(b, self.cfg.sigma_distribution, device, generator)
            noisy = add_noise(target, sigma, self.cfg.sigma_offset_noise, randn)
            cs = self.conditioners(sigma, sigma_cond)
            out = self.model_output(noisy, prev_obs, prev_act, cs)
            scaled_target = (target - cs.c_skip * noisy) / cs.c_out
            # MSE over the real samples (no boolean indexing: a host sync would break compiled graphs)
            per_sample = (out.float() - scaled_target.float()).pow(2).mean(dim=(1, 2, 3))
            weight = mask.float()
            total = total + (per_sample * weight).sum() / weight.sum().clamp(min=1)
            # The next iteration conditions on this prediction, as at play time.
            with torch.no_grad():
                all_obs[:, n + i] = quantize_to_uint8_levels(self.denoised_raw(noisy, out.detach(), cs))

        loss = total / num_predictions
        return loss, {"loss_denoising": loss.detach()}

    def forward(self, obs: Tensor, act: Tensor | None, mask_padding: Tensor, full_res: Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss (what DistributedDataParallel calls); see `loss`."""
        return self.loss(obs, act, mask_padding, full_res, generator)
