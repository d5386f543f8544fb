"""Start states ("spawn points") for world models without an emulator, in the official DIAMOND layout:
`spawn/<name>/low_res.npy` (L, 3, h, w) uint8, `full_res.npy` (L, 3, H, W) or (3, H, W) uint8, `act.npy` (L, A)
and optionally `next_act.npy` (T, A), the recorded continuation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diamond_play.errors import UserError


@dataclass
class StartState:
    """L frames and the actions taken at them (oldest first) to seed the world model's buffers."""

    frames: np.ndarray  # uint8 (L, h, w, 3)
    actions: np.ndarray  # (L,) int or (L, A) multi-hot
    full_res_frame: np.ndarray | None = None  # uint8 (H, W, 3): the last frame at full resolution
    next_actions: np.ndarray | None = None  # recorded continuation (replay)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"spawn file {str(path)!r} is unreadable ({str(e).splitlines()[0]}): re-create the "
                        "spawn points") from None


def load_spawns(spawn_dir: str | Path) -> list[StartState]:
    spawn_dir = Path(spawn_dir)
    folders = sorted(p for p in spawn_dir.iterdir() if p.is_dir()) if spawn_dir.is_dir() else []
    spawns = []
    for folder in folders:
        low = _load(folder / "low_res.npy")
        full = _load(folder / "full_res.npy") if (folder / "full_res.npy").exists() else None
        act = _load(folder / "act.npy")
        nxt = _load(folder / "next_act.npy") if (folder / "next_act.npy").exists() else None
        if low.ndim != 4 or low.shape[1] != 3 or low.dtype != np.uint8 or len(act) != len(low):
            raise UserError(f"spawn {str(folder)!r} has low_res {low.shape} {low.dtype} and act {act.shape}: expected "
                            "uint8 (L, 3, h, w) frames and L actions")
        if full is not None and full.ndim == 4:
            full = full[-1]
        spawns.append(StartState(frames=low.transpose(0, 2, 3, 1).copy(), actions=act,
                                 full_res_frame=None if full is None else full.transpose(1, 2, 0).copy(),
                                 next_actions=nxt))
    if not spawns:
        raise UserError(f"no spawn points in {str(spawn_dir)!r}: the weights need a spawn/ folder (official layout) "
                        "or extract some from a dataset")
    return spawns


def save_spawn(folder: str | Path, state: StartState) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "low_res.npy", state.frames.transpose(0, 3, 1, 2).copy())
    if state.full_res_frame is not None:
        np.save(folder / "full_res.npy", state.full_res_frame.transpose(2, 0, 1)[None].copy())
    np.save(folder / "act.npy", state.actions)
    if state.next_actions is not None:
        np.save(folder / "next_act.npy", state.next_actions)
    return folder


def spawns_from_episodes(episodes, num_frames: int, count: int = 8, full_res: bool = False) -> list[StartState]:
    """Start states from the first `num_frames` steps of up to `count` episodes spread over the list."""
    usable = [e for e in episodes if len(e) >= num_frames]
    if not usable:
        return []
    picks = np.linspace(0, len(usable) - 1, min(count, len(usable))).round().astype(int)
    states = []
    for i in dict.fromkeys(picks.tolist()):
        e = usable[i]
        states.append(StartState(frames=e.frames[:num_frames].copy(), actions=e.actions[:num_frames].copy(),
                                 full_res_frame=e.full_res_frames[num_frames - 1].copy()
                                 if full_res and e.full_res_frames is not None else None,
                                 next_actions=e.actions[num_frames:].copy()))
    return states


def write_spawns(spawn_dir: str | Path, states: list[StartState]) -> Path:
    spawn_dir = Path(spawn_dir)
    for i, state in enumerate(states):
        save_spawn(spawn_dir / f"{i:03d}", state)
    return spawn_dir
