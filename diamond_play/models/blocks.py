"""Building blocks shared by the denoiser U-Net, the reward/termination encoder and the actor-critic.

Submodule names match the official checkpoints' state-dict keys (e.g. `norm1.linear`, `attn.qkv_proj`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUP_SIZE = 32  # GroupNorm uses max(1, C // 32) groups
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8


def num_groups(channels: int) -> int:
    return max(1, channels // GROUP_SIZE)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar per sample: [cos 2πcw, sin 2πcw]; w is a saved buffer."""

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        assert cond_channels % 2 == 0
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, c: Tensor) -> Tensor:
        assert c.ndim == 1
        f = 2 * math.pi * c.unsqueeze(1) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class GroupNorm(nn.Module):
    """Affine GroupNorm kept as a submodule named `norm` (official key layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class AdaGroupNorm(nn.Module):
    """Non-affine GroupNorm whose scale and shift are predicted from the conditioning vector."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return F.group_norm(x, num_groups(self.channels), eps=GN_EPS) * (1 + scale) + shift


class NormConditioned(nn.Module):
    """A network whose ResBlocks all take the same conditioning vector, passed through `norm_conditioning`: the
    identity here (each AdaGroupNorm projects the vector itself), one matmul for all the norms at inference
    (`accel.inference.fuse_norm_conditioning` swaps it in). No parameters: state dicts are unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.norm_conditioning: nn.Module = nn.Identity()

    def norm_cond(self, cond: Tensor) -> Tensor:
        """What the ResBlocks get as `cond`."""
        return self.norm_conditioning(cond)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over pixels, heads of 8 channels."""

    def __init__(self, channels: int, head_dim: int = ATTN_HEAD_DIM) -> None:
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        assert channels % self.num_heads == 0
        self.norm = GroupNorm(channels)
        self.qkv_proj = conv1x1(channels, 3 * channels)
        self.out_proj = conv1x1(channels, channels)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # ⚠ The residual below is added to the *normalised* input, as in the official model.
        x = self.norm(x)
        qkv = self.qkv_proj(x).view(b, 3 * self.num_heads, c // self.num_heads, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(2, 3).reshape(b, c, h, w)
        return x + self.out_proj(y)


class ResBlock(nn.Module):
    """Pre-norm residual block with adaptive GroupNorm, optionally followed by self-attention."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj = conv1x1(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.attn = SelfAttention2d(out_channels) if attn else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as (almost) the identity

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.conv2(F.silu(self.norm2(x, cond)))
        return self.attn(x + r)


class ResBlocks(nn.Module):
    """A chain of ResBlocks; in the decoder each block first concatenates one skip tensor."""

    def __init__(self, in_channels: list[int], out_channels: list[int], cond_channels: int, attn: bool) -> None:
        super().__init__()
        assert len(in_channels) == len(out_channels)
        self.resblocks = nn.ModuleList(
            ResBlock(ci, co, cond_channels, attn) for ci, co in zip(in_channels, out_channels, strict=True)
        )

    def forward(self, x: Tensor, cond: Tensor, skips: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        outputs = []
        for i, block in enumerate(self.resblocks):
            if skips is not None:
                x = torch.cat((x, skips[i]), dim=1)
            x = block(x, cond)
            outputs.append(x)
        return x, outputs


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SmallResBlock(nn.Module):
    """Actor-critic block: skip + conv3x3(SiLU(GN(x)))."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(GroupNorm(in_channels), nn.SiLU(), conv3x3(in_channels, out_channels))
        self.skip_projection = nn.Identity() if in_channels == out_channels else conv1x1(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_projection(x) + self.f(x)


def init_lstm(lstm: nn.Module) -> None:
    """Xavier input weights, orthogonal recurrent weights, zero biases but a forget-gate bias of 1."""
    for name, p in lstm.named_parameters():
        if "weight_ih" in name:
            nn.init.xavier_uniform_(p.data)
        elif "weight_hh" in name:
            nn.init.orthogonal_(p.data)
        elif "bias" in name:
            p.data.zero_()
            if "bias_ih" in name:
                n = p.size(0)
                p.data[n // 4 : n // 2] = 1  # gates are ordered (input, forget, cell, output)
