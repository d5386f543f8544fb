"""Inference rewrites of the paper modules, applied as module swaps (frozen weights, same maths up to float
rounding; the modules in `models/` stay the reference):

- `fuse_norm_conditioning`: every AdaGroupNorm of a network projects the shared conditioning vector with its own
  small linear layer; fused, one matmul at the top of the network computes all of them and each norm reads its
  columns (dozens of small matmuls, each re-reading its weights, become one).
- `use_parallel_group_norm` (GPUs): GroupNorm as one per-channel affine from parallel statistics on maps large
  enough for it to pay (the native CUDA kernel reduces each (sample, group) in one thread block, which leaves a big
  card almost idle at batch 1).
- `OneStepRewEnd`: the reward/termination model's per-frame call with its LSTM as one matmul over [input, h].

Swapped modules hold their fused weights as non-persistent buffers and keep the originals' parameters, so state
dicts keep their keys, and `.to()` and tracing (torch.export) see everything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_play.models.blocks import GN_EPS, AdaGroupNorm, GroupNorm, NormConditioned, num_groups
from diamond_play.models.rew_end import HiddenState, RewEndModel

# Reductions of at least this many elements per (sample, group) take the parallel-statistics path; smaller ones
# keep the native kernel, whose one block per group is quick enough there while the parallel path's dozen tiny
# kernels are not (docs/PERFORMANCE.md has the GPU figures behind the threshold).
PARALLEL_GN_MIN_GROUP_ELEMENTS = 2**18


def group_norm_as_channel_affine(
    x: Tensor, groups: int, eps: float, weight: Tensor | None = None, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """GroupNorm (then its optional affine) as one per-sample, per-channel `x * a + b`, statistics in fp32.

    Same maths as `F.group_norm`: per-channel `var_mean` spreads the reduction over the whole card and reads
    channels-last maps in place; the law of total variance combines channels into groups."""
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


class ParallelStatsGroupNorm(nn.Module):
    """`blocks.GroupNorm` with parallel statistics on large maps (same `norm` submodule and parameters)."""

    def __init__(self, original: GroupNorm) -> None:
        super().__init__()
        self.norm = original.norm

    def forward(self, x: Tensor) -> Tensor:
        if not parallel_group_norm_pays(x, self.norm.num_groups):
            return self.norm(x)
        scale, shift = group_norm_as_channel_affine(x, self.norm.num_groups, GN_EPS, self.norm.weight, self.norm.bias)
        return torch.addcmul(shift, x, scale)


class InferenceAdaGroupNorm(nn.Module):
    """`blocks.AdaGroupNorm` reading its scale and shift from `columns` of a fused conditioning (None: its own
    linear layer, as the reference), normalising with parallel statistics on large maps when `parallel_stats`."""

    def __init__(self, original: AdaGroupNorm, columns: slice | None, parallel_stats: bool) -> None:
        super().__init__()
        self.channels, self.linear = original.channels, original.linear
        self.columns, self.parallel_stats = columns, parallel_stats

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        params = self.linear(cond) if self.columns is None else cond[:, self.columns]
        scale, shift = params[:, :, None, None].chunk(2, dim=1)
        groups = num_groups(self.channels)
        if not (self.parallel_stats and parallel_group_norm_pays(x, groups)):
            return F.group_norm(x, groups, eps=GN_EPS) * (1 + scale) + shift
        # Normalise and modulate in one pass: (x * a + b) * (1 + scale) + shift.
        a, b = group_norm_as_channel_affine(x, groups, GN_EPS)
        gain = 1 + scale
        return torch.addcmul(b * gain + shift, x, a * gain)


class FusedNormConditioning(nn.Module):
    """Every AdaGroupNorm's linear(cond) of a network at once, side by side: what `NormConditioned` passes its
    blocks instead of `cond`."""

    weight: Tensor
    bias: Tensor

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, cond: Tensor) -> Tensor:
        return F.linear(cond, self.weight, self.bias)


def replace_modules(model: nn.Module, kind: type[nn.Module], make) -> int:
    """Replace every submodule of type `kind` by `make(old)`, in module order; -> how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is kind:
                setattr(parent, name, make(child))
                count += 1
    return count


def fuse_norm_conditioning(network: NormConditioned, parallel_stats: bool = False) -> None:
    """One linear layer for all of `network`'s adaptive norms (in place); `parallel_stats` as in
    `use_parallel_group_norm`. The weights are copied, not moved."""
    norms = [m for m in network.modules() if type(m) is AdaGroupNorm]
    if not norms:
        raise ValueError("the network has no adaptive group norms to fuse")
    weight = torch.cat([n.linear.weight.detach() for n in norms])
    bias = torch.cat([n.linear.bias.detach() for n in norms])
    columns, start = {}, 0
    for n in norms:
        columns[id(n)] = slice(start, start + 2 * n.channels)
        start += 2 * n.channels
    replace_modules(network, AdaGroupNorm, lambda old: InferenceAdaGroupNorm(old, columns[id(old)], parallel_stats))
    network.norm_conditioning = FusedNormConditioning(weight, bias)


def use_parallel_group_norm(model: nn.Module) -> None:
    """Every GroupNorm and (not yet fused) AdaGroupNorm of `model` with parallel statistics on large maps."""
    replace_modules(model, GroupNorm, ParallelStatsGroupNorm)
    replace_modules(model, AdaGroupNorm, lambda old: InferenceAdaGroupNorm(old, None, parallel_stats=True))


def is_fused(network: NormConditioned) -> bool:
    return isinstance(network.norm_conditioning, FusedNormConditioning)


class OneStepRewEnd(nn.Module):
    """`RewEndModel.predict_rew_end` for one time step (T = 1) at inference: the LSTM as one matmul over
    [input, h] with its weights in `dtype` (bf16 in bf16 modes: the LSTM's weights are most of the per-frame
    memory traffic) and fp32 gate maths, several times faster than the sequence kernel for one step."""

    weight: Tensor
    bias: Tensor

    def __init__(self, model: RewEndModel, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model, self.cfg = model, model.cfg
        lstm = model.lstm
        self.register_buffer("weight", torch.cat((lstm.weight_ih_l0, lstm.weight_hh_l0), dim=1).detach().to(dtype),
                             persistent=False)
        self.register_buffer("bias", (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().float(), persistent=False)

    def forward(self, obs: Tensor, act: Tensor, next_obs: Tensor,
                hx_cx: HiddenState | None = None) -> tuple[Tensor, Tensor, HiddenState]:
        if obs.shape[1] != 1:
            raise ValueError(f"OneStepRewEnd takes one time step, got {obs.shape[1]}")
        x = self.model.encode(obs, act, next_obs)[:, 0]
        if hx_cx is None:
            zeros = x.new_zeros(1, len(x), self.model.lstm.hidden_size, dtype=torch.float32)
            hx_cx = (zeros, zeros)
        hx, cx = hx_cx[0][0], hx_cx[1][0]
        gates = F.linear(torch.cat((x.to(self.weight.dtype), hx.to(self.weight.dtype)), dim=1), self.weight)
        in_gate, forget_gate, cell_gate, out_gate = (gates.float() + self.bias).chunk(4, dim=1)  # nn.LSTM's order
        cx = forget_gate.sigmoid() * cx.float() + in_gate.sigmoid() * cell_gate.tanh()
        hx = out_gate.sigmoid() * cx.tanh()
        return *self.model.rew_end_logits(hx[:, None]), (hx[None], cx[None])
