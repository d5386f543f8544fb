"""The Pearce & Zhu CS:GO Dust II dataset ("dataset_dm", 16 Hz, 1000 frames per HDF5 file) -> project episodes.

Original file layout: `frame_{i}_x` uint8 (150, 280, 3) BGR, `frame_{i}_y` (51,) action vector,
`frame_{i}_xaux` (54,) and `frame_{i}_helperarr` (2,) (unused). Each file becomes one episode holding the full-res
frames (RGB) and the 30x56 low-res frames the dynamics model sees, resized as the official script does.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from diamond_play.config import CSGO_FULL_RES, CSGO_LOW_RES
from diamond_play.data.episodes import DatasetInfo, Episode
from diamond_play.envs import csgo
from diamond_play.errors import UserError

FPS = 16.0
FILE_PATTERN = re.compile(r"hdf5_dm_july2021_(\d+)\.hdf5$")
TAR_PATTERN = re.compile(r"hdf5_dm_july2021_(\d+)_to_(\d+)\.tar$")


def held_out_file_names() -> set[str]:
    """The 500 held-out file names of the official split."""
    text = resources.files("diamond_play.data").joinpath("csgo_test_split.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip()}


def dataset_info(split: str) -> DatasetInfo:
    return DatasetInfo(game="csgo", num_actions=csgo.NUM_ACTIONS, action_type="multi_hot",
                       action_names=list(csgo.ACTION_NAMES), fps=FPS, frame_size=list(CSGO_LOW_RES),
                       full_res_size=list(CSGO_FULL_RES), source=f"Pearce & Zhu dataset_dm (Dust II), {split} split")


def to_low_res(full_res_rgb: np.ndarray) -> np.ndarray:
    """(T, 150, 280, 3) uint8 -> (T, 30, 56, 3) uint8: antialiased bicubic resize in [-1, 1] (what torchvision's
    resize does on tensors), then (x + 1) / 2 * 255 cast to uint8. ⚠ Like the official script there is no clamp
    before the cast, so bicubic overshoot past 255 wraps around exactly as it did when the official data was made."""
    x = torch.from_numpy(full_res_rgb).permute(0, 3, 1, 2).float().div(255).mul(2).sub(1)
    x = F.interpolate(x, size=CSGO_LOW_RES, mode="bicubic", antialias=True, align_corners=False)
    return x.add(1).div(2).mul(255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def validate_action(vec: np.ndarray, index: int) -> None:
    if vec.shape != (csgo.NUM_ACTIONS,) or not np.isin(vec, (0, 1)).all():
        raise ValueError(f"frame {index}: action is not a 51-dim 0/1 vector")
    if vec[csgo.MOUSE_X_OFFSET:csgo.MOUSE_Y_OFFSET].sum() != 1 or vec[csgo.MOUSE_Y_OFFSET:].sum() != 1:
        raise ValueError(f"frame {index}: action must have exactly one mouse-x and one mouse-y bin")


def read_dm_file(path: str | Path) -> Episode:
    """One original HDF5 file -> Episode. Raises ValueError/OSError on a corrupt, truncated or invalid file."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        count = sum(1 for k in f if k.endswith("_x") and k.startswith("frame_"))
        if count == 0:
            raise ValueError("no frame_{i}_x datasets")
        full, actions = [], []
        for i in range(count):
            if f"frame_{i}_x" not in f or f"frame_{i}_y" not in f:
                raise ValueError(f"frame {i} is missing (frames must be numbered 0..{count - 1})")
            img = f[f"frame_{i}_x"][()]
            if img.shape != (*CSGO_FULL_RES, 3) or img.dtype != np.uint8:
                raise ValueError(f"frame {i}: image is {img.dtype} {img.shape}, expected uint8 (150, 280, 3)")
            vec = np.asarray(f[f"frame_{i}_y"][()], dtype=np.float32)
            validate_action(vec, i)
            full.append(img[..., ::-1])  # BGR -> RGB
            actions.append(vec)
    full_res = np.ascontiguousarray(np.stack(full))
    t = len(full_res)
    truncations = np.zeros(t, dtype=bool)
    truncations[-1] = True  # the recording stops; the game goes on
    return Episode(frames=to_low_res(full_res), actions=np.stack(actions), rewards=np.zeros(t, np.float32),
                   terminations=np.zeros(t, dtype=bool), truncations=truncations, full_res_frames=full_res,
                   attrs={"game": "csgo", "source": path.name, "fps": FPS})


def write_dm_file(path: str | Path, frames_bgr: np.ndarray, actions: np.ndarray) -> Path:
    """Write a file in the original layout (used to make synthetic data for tests and demos)."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        for i, (img, vec) in enumerate(zip(frames_bgr, actions, strict=True)):
            f.create_dataset(f"frame_{i}_x", data=img)
            f.create_dataset(f"frame_{i}_y", data=vec.astype(np.float64))
            f.create_dataset(f"frame_{i}_xaux", data=np.zeros(54))
            f.create_dataset(f"frame_{i}_helperarr", data=np.zeros(2))
    return path


def episode_name(file_name: str) -> str:
    m = FILE_PATTERN.search(file_name)
    if m is None:
        raise UserError(f"{file_name!r} is not named like hdf5_dm_july2021_<n>.hdf5")
    return f"hdf5_dm_july2021_{int(m.group(1)):05d}"
