"""World-model training pieces shared by the recipes (`train engine`, `train atari`, `train csgo`): the loss functions
the training core steps, batch streams and TensorBoard sample strips (model sizes: `config.*_SIZES`)."""

from __future__ import annotations

import numpy as np
import torch

from diamond_play.data.segments import Batch, SegmentSampler
from diamond_play.models.agent import Agent


def denoiser_loss(module, batch: Batch):
    return module(batch.obs, batch.act, batch.mask_padding)


def upsampler_loss(module, batch: Batch):
    return module(batch.obs, None, batch.mask_padding, batch.full_res)


def rew_end_loss(module, batch: Batch):
    return module(batch.obs, batch.act, batch.rew, batch.end, batch.mask_padding)


def batches(sampler: SegmentSampler, device: torch.device):
    while True:
        yield sampler.sample().to(device)


@torch.no_grad()
def sample_strip(agent: Agent, sampler: SegmentSampler, device: torch.device, seed: int) -> np.ndarray:
    """Real next frames (top row) vs the world model's one-step predictions (bottom row), as uint8 HWC."""
    from diamond_play.frames import real_above_imagined
    from diamond_play.imagine import predict_low_res
    from diamond_play.models.denoiser import make_randn

    agent.eval()
    n = agent.denoiser.num_steps_conditioning
    batch = sampler.sample().to(device)
    obs = batch.obs[:, :n]
    pred = predict_low_res(agent.denoiser, agent.config.sampling.dynamics, obs, batch.act[:, :n],
                           make_randn(device, generator=torch.Generator(device).manual_seed(seed)))
    real = batch.obs[:, n]
    return real_above_imagined(list(real[:8]), list(pred[:8]))


