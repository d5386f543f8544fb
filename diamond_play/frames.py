"""Frames between their stored form and the models' form: uint8 (..., H, W, 3) RGB <-> float (..., 3, H, W) in
[-1, 1], with the official rounding back (truncation of (x + 1) / 2 * 255, clamped). Every path uses these."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def frames_to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return t.movedim(-1, -3).float().div(255).mul(2).sub(1)


def tensor_to_frames(x: Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3): the official (x + 1) / 2 * 255 truncation, clamped."""
    return x.clamp(-1, 1).add(1).div(2).mul(255).byte().movedim(-3, -1).cpu().numpy()


def real_above_imagined(real: list[Tensor], imagined: list[Tensor]) -> np.ndarray:
    """Real frames (3, H, W) in a row above the imagined ones, as one uint8 (2H, N·W, 3) image."""
    return tensor_to_frames(torch.cat([torch.cat(real, dim=-1), torch.cat(imagined, dim=-1)], dim=-2))
