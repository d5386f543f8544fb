"""The U-Net backbone shared by the Atari denoiser, the CS:GO dynamics model and the CS:GO upsampler."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from diamond_play.models.blocks import Downsample, ResBlocks, Upsample


class UNet(nn.Module):
    """Level i maps channels[i-1] -> channels[i] with depths[i] ResBlocks; the decoder mirrors it with skips.

    Inputs are zero-padded (right/bottom) to a multiple of 2^(levels-1) and the output cropped back,
    so 30x56 and 150x280 frames work.
    """

    def __init__(self, cond_channels: int, depths: list[int], channels: list[int], attn_depths: list[bool]) -> None:
        super().__init__()
        assert len(depths) == len(channels) == len(attn_depths)
        self.num_downsamples = len(channels) - 1
        d_blocks, u_blocks = [], []
        for i, n in enumerate(depths):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            d_blocks.append(ResBlocks([c1] + [c2] * (n - 1), [c2] * n, cond_channels, attn_depths[i]))
            u_blocks.append(ResBlocks([2 * c2] * n + [c1 + c2], [c2] * n + [c1], cond_channels, attn_depths[i]))
        self.d_blocks = nn.ModuleList(d_blocks)
        self.u_blocks = nn.ModuleList(reversed(u_blocks))  # stored deepest first
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in channels[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(channels[:-1])])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        multiple = 2**self.num_downsamples
        x = F.pad(x, (0, math.ceil(w / multiple) * multiple - w, 0, math.ceil(h / multiple) * multiple - h))

        skips = []
        for block, down in zip(self.d_blocks, self.downsamples, strict=True):
            x_down = down(x)
            x, outputs = block(x_down, cond)
            skips.append([x_down, *outputs])

        x, _ = self.mid_blocks(x, cond)

        for block, up, level_skips in zip(self.u_blocks, self.upsamples, reversed(skips), strict=True):
            x, _ = block(up(x), cond, level_skips[::-1])

        return x[..., :h, :w]
