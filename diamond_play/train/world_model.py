"""World-model training pieces shared by the recipes (`train engine`, `train atari`, `train csgo`): model size
presets, the loss functions the training core steps, batch streams and TensorBoard sample strips."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diamond_play.data.segments import Batch, SegmentSampler
from diamond_play.models.agent import Agent

# Denoiser sizes. "paper" is DIAMOND's Atari U-Net (4.4M parameters); "small" is 4x narrower and trains ~10x faster on
# a CPU; "tiny" is for tests.
DENOISER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"cond_channels": 256, "channels": [64, 64, 64, 64], "depths": [2, 2, 2, 2]},
    "small": {"cond_channels": 128, "channels": [32, 32, 32, 32], "depths": [2, 2, 2, 2]},
    # Three levels keep the always-on attention of the middle blocks at 16x16 for 64x64 frames.
    "tiny": {"cond_channels": 32, "channels": [8, 16, 16], "depths": [1, 1, 1]},
}
UPSAMPLER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"cond_channels": 2048, "channels": [64, 64, 128, 256], "depths": [2, 2, 2, 2],
              "attn_depths": [0, 0, 0, 1]},  # CS:GO's upsampler
    "small": {"cond_channels": 128, "channels": [32, 32, 64, 64], "depths": [2, 2, 2, 2], "attn_depths": [0, 0, 0, 1]},
    "tiny": {"cond_channels": 32, "channels": [8, 8, 8, 16], "depths": [1, 1, 1, 1], "attn_depths": [0, 0, 0, 1]},
}
# CS:GO's dynamics U-Net (paper: 330M parameters at 30x56, attention on the two deepest levels) and smaller ones.
CSGO_DYNAMICS_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"cond_channels": 2048, "channels": [128, 256, 512, 1024], "depths": [2, 2, 2, 2],
              "attn_depths": [False, False, True, True]},
    "small": {"cond_channels": 256, "channels": [32, 64, 128, 128], "depths": [2, 2, 2, 2],
              "attn_depths": [False, False, True, True]},
    "tiny": {"cond_channels": 32, "channels": [8, 8, 16, 16], "depths": [1, 1, 1, 1],
             "attn_depths": [False, False, True, True]},
}
REW_END_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {"lstm_dim": 256, "cond_channels": 64, "channels": [16, 16, 16, 16]},
    # Four levels: the encoder's final attention blocks then run at 8x8 for 64x64 frames.
    "tiny": {"lstm_dim": 16, "cond_channels": 16, "channels": [8, 8, 8, 8], "depths": [1, 1, 1, 1]},
}


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


