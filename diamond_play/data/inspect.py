"""`diamond-play inspect DATASET`: what a dataset holds, and whether its actions were captured (the histogram shows
at a glance a key that never registered before hours of training are spent on it)."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np

from diamond_play.data.episodes import Dataset, corrupt_episode

BAR_WIDTH = 40


def action_counts(dataset: Dataset) -> tuple[Counter, int, list[np.ndarray]]:
    """Discrete: count per action id. Multi-hot: count per set entry (a step may set several). Also the number of
    steps and the mouse motion arrays of captured episodes."""
    counts: Counter = Counter()
    steps = 0
    motion = []
    for path in dataset.episode_paths():
        try:
            with h5py.File(path, "r") as f:
                actions = f["actions"][()]
                if "mouse_motion" in f:
                    motion.append(f["mouse_motion"][()])
        except (OSError, KeyError) as e:
            raise corrupt_episode(path, e) from None
        steps += len(actions)
        if actions.ndim == 1:
            counts.update(int(a) for a in actions)
        else:
            counts.update({i: int(n) for i, n in enumerate(actions.sum(0)) if n})
    return counts, steps, motion


def describe_dataset(dataset: Dataset) -> str:
    info = dataset.info
    counts, steps, motion = action_counts(dataset)
    lengths = [len(e) for e in dataset.lazy_episodes()]
    size = f"{info.frame_size[0]}x{info.frame_size[1]}" + (
        f" (+ full resolution {info.full_res_size[0]}x{info.full_res_size[1]})" if info.full_res_size else "")
    lines = [f"{dataset.root}: {info.game}, {info.source or 'unknown source'}",
             f"{len(lengths)} episode(s), {steps} steps ({steps / info.fps:.0f} s at {info.fps:g} fps), frames "
             f"{size}" + (f", episode length {min(lengths)}-{max(lengths)}" if lengths else ""),
             f"{info.num_actions} {info.action_type} actions" + (" (a step may set several)"
                                                                 if info.action_type == "multi_hot" else "") + ":"]
    names = list(info.action_names) + [f"action {i}" for i in range(len(info.action_names), info.num_actions)]
    top = max(counts.values(), default=1)
    for i in range(info.num_actions):
        n = counts.get(i, 0)
        bar = "#" * round(BAR_WIDTH * n / top)
        lines.append(f"  {i:3d} {names[i][:18]:18s} {n:8d} {100 * n / max(steps, 1):6.1f}%  {bar}")
    unused = [names[i] for i in range(info.num_actions) if not counts.get(i)]
    if unused:
        lines.append(f"never taken: {', '.join(unused[:12])}" + (" ..." if len(unused) > 12 else ""))
    if motion:
        m = np.concatenate(motion)
        moving = np.abs(m).sum(1) > 0
        lines.append(f"mouse motion: {100 * moving.mean():.1f}% of steps move, |dx| mean {np.abs(m[:, 0]).mean():.1f}, "
                     f"|dy| mean {np.abs(m[:, 1]).mean():.1f} pixels per step")
    if info.keymap:
        lines.append(f"key map: {info.keymap}")
    return "\n".join(lines)
