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
# Inference on GPUs: reductions of at least this many elements per (sample, group) take the parallel-statistics
# path (`group_norm_as_channel_affine`); smaller ones keep the native kernel, whose one block per group is quick
# enough there while the parallel path's dozen tiny kernels are not (H100: the Atari 64x64 frame graph took 8.2 ms
# native and 10.4 ms with every norm on the parallel path; CS:GO quality 148 -> 76 ms with the top two upsampler
# levels, 1.3M and 336k elements per group, parallel).
PARALLEL_GN_MIN_GROUP_ELEMENTS = 2**18
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


def group_norm_as_channel_affine(
    x: Tensor, groups: int, eps: float, weight: Tensor | None = None, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """GroupNorm (then its optional affine) as one per-sample, per-channel `x * a + b`, statistics in fp32.

    Same maths as `F.group_norm`, computed for speed at batch 1: with C // 32 groups a 64-channel map has two
    groups, and the native CUDA kernel reduces each (sample, group) in one thread block, which leaves an H100
    almost idle (about 150 µs per norm at 280x150). Per-channel `var_mean` spreads the reduction over the whole
    card and reads channels-last maps in place; the law of total variance combines channels into groups."""
    n, c = x.shape[:2]
    var_c, mean_c = torch.var_mean(x.float(), dim=(2, 3), correction=0)  # (N, C) each
    var_c, mean_c = var_c.view(n, groups, c // groups), mean_c.view(n, groups, c // groups)
    mean_g = mean_c.mean(dim=2, keepdim=True)
    var_g = var_c.mean(dim=2, keepdim=True) + (mean_c - mean_g).square().mean(dim=2, keepdim=True)
    scale = torch.rsqrt(var_g + eps).expand(n, groups, c // groups).reshape(n, c)
    shift = -mean_g.expand(n, groups, c // groups).reshape(n, c) * scale
    if weight is not None:
        scale, shift = scale * weight.float(), shift * weight.float()
    if bias is not None:
        shift = shift + bias.float()
    return scale[:, :, None, None], shift[:, :, None, None]


def parallel_group_norm_pays(x: Tensor, groups: int) -> bool:
    return x[0].numel() // groups >= PARALLEL_GN_MIN_GROUP_ELEMENTS


class GroupNorm(nn.Module):
    """Affine GroupNorm kept as a submodule named `norm` (official key layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)
        self.inference_stats = False  # set by `use_inference_group_norm`

    def forward(self, x: Tensor) -> Tensor:
        if not (self.inference_stats and parallel_group_norm_pays(x, self.norm.num_groups)):
            return self.norm(x)
        scale, shift = group_norm_as_channel_affine(x, self.norm.num_groups, GN_EPS, self.norm.weight, self.norm.bias)
        return torch.addcmul(shift, x, scale)


class AdaGroupNorm(nn.Module):
    """Non-affine GroupNorm whose scale and shift are predicted from the conditioning vector."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(cond_channels, 2 * channels)
        # Set by `fuse_norm_conditioning`: `cond` then holds every norm's precomputed linear(cond) side by side.
        self.fused_columns: slice | None = None
        self.inference_stats = False  # set by `use_inference_group_norm`

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        params = self.linear(cond) if self.fused_columns is None else cond[:, self.fused_columns]
        scale, shift = params[:, :, None, None].chunk(2, dim=1)
        if not (self.inference_stats and parallel_group_norm_pays(x, num_groups(self.channels))):
            x = F.group_norm(x, num_groups(self.channels), eps=GN_EPS)
            return x * (1 + scale) + shift
        # Normalise and modulate in one pass: (x * a + b) * (1 + scale) + shift.
        a, b = group_norm_as_channel_affine(x, num_groups(self.channels), GN_EPS)
        gain = 1 + scale
        return torch.addcmul(b * gain + shift, x, a * gain)


class NormConditioned(nn.Module):
    """A network whose ResBlocks all take the same conditioning vector. For inference with frozen weights,
    `fuse_norm_conditioning()` makes `norm_cond(cond)` compute every adaptive norm's scale/shift in one matmul
    (dozens of small matmuls, each re-reading its weights, become one). The fused weights are non-persistent
    buffers: state dicts are unchanged, while `.to()` and tracing (torch.export) see them."""

    norm_conditioning_weight: Tensor | None
    norm_conditioning_bias: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("norm_conditioning_weight", None, persistent=False)
        self.register_buffer("norm_conditioning_bias", None, persistent=False)

    @property
    def norm_conditioning_fused(self) -> bool:
        return self.norm_conditioning_weight is not None

    def fuse_norm_conditioning(self) -> None:
        self.norm_conditioning_weight, self.norm_conditioning_bias = fuse_norm_conditioning(self)

    def norm_cond(self, cond: Tensor) -> Tensor:
        """What the ResBlocks get as `cond`."""
        if self.norm_conditioning_weight is None:
            return cond
        return F.linear(cond, self.norm_conditioning_weight, self.norm_conditioning_bias)


def use_inference_group_norm(model: nn.Module) -> None:
    """Let every GroupNorm in `model` use `group_norm_as_channel_affine` on maps large enough for it to pay
    (inference only: not meant for training, where the native kernel's backward is the tested one)."""
    for m in model.modules():
        if isinstance(m, (GroupNorm, AdaGroupNorm)):
            m.inference_stats = True


def fuse_norm_conditioning(model: nn.Module) -> tuple[Tensor, Tensor]:
    """Weight and bias of one linear layer computing the scale/shift of every AdaGroupNorm in `model` at once;
    apply it to the conditioning vector and pass its output where `cond` went. Same maths; the weights are
    copied, not moved."""
    norms = [m for m in model.modules() if isinstance(m, AdaGroupNorm)]
    if not norms:
        raise ValueError("the model has no adaptive group norms to fuse")
    weight = torch.cat([n.linear.weight.detach() for n in norms])
    bias = torch.cat([n.linear.bias.detach() for n in norms])
    start = 0
    for n in norms:
        n.fused_columns = slice(start, start + 2 * n.channels)
        start += 2 * n.channels
    return weight, bias


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
