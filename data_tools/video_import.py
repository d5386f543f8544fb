"""Turn gameplay videos + action logs into the project's dataset format.

    python -m data_tools.video_import SRC_DIR --out DATASET --num-actions N [--resolution H W] [--game NAME]

SRC_DIR holds videos (.mp4, .avi, .mkv, .mov), each with an action log of the same name: `NAME.csv` (rows
`frame,action`, header optional) or `NAME.jsonl` (lines `{"frame": 12, "action": 3}`). Frame indices start at 0;
an action holds until the next entry, and frame 0 must have one. Each video becomes one episode (frames resized with
INTER_AREA, RGB). Rewards are 0 and the last step is marked truncated. An action outside 0..N-1 stops the import
with a message naming the file and line; episodes imported before it stay in the dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data_tools import run_tool
from diamond_play.data.episodes import Dataset, DatasetInfo, Episode
from diamond_play.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


def read_video(path: Path, size: tuple[int, int]) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"cannot open video {str(path)!r}: is it a video file OpenCV can read?")
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frames.append(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    cap.release()
    if not frames:
        raise UserError(f"video {str(path)!r} has no readable frames")
    return np.stack(frames)


def read_action_log(path: Path) -> list[tuple[int, int, int]]:
    """-> [(line number, frame, action)]"""
    rows = []
    try:
        if path.suffix == ".jsonl":
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    item = json.loads(line)
                    rows.append((i, int(item["frame"]), int(item["action"])))
        else:
            with path.open(newline="") as f:
                for i, row in enumerate(csv.reader(f), 1):
                    if not row or row[0].strip().lower() == "frame":
                        continue
                    rows.append((i, int(row[0]), int(float(row[1]))))
    except (ValueError, KeyError, IndexError, json.JSONDecodeError) as e:
        raise UserError(f"action log {str(path)!r} is malformed ({e}): use rows 'frame,action'") from None
    return rows


def actions_per_frame(log: list[tuple[int, int, int]], num_frames: int, num_actions: int, path: Path) -> np.ndarray:
    actions = np.full(num_frames, -1, dtype=np.int64)
    for line, frame, action in sorted(log, key=lambda r: r[1]):
        if not 0 <= action < num_actions:
            raise UserError(f"{path.name} line {line}: action {action} is outside 0..{num_actions - 1} (the declared "
                            "--num-actions); fix the log or the action count")
        if not 0 <= frame < num_frames:
            raise UserError(f"{path.name} line {line}: frame {frame} is outside the video's {num_frames} frames")
        actions[frame] = action
    if actions[0] < 0:
        raise UserError(f"{path.name}: frame 0 has no action; the log must start at frame 0")
    for t in range(1, num_frames):  # an action holds until the next entry
        if actions[t] < 0:
            actions[t] = actions[t - 1]
    return actions


def import_videos(src: Path, out: Path, num_actions: int, size: tuple[int, int], game: str, fps: float) -> Dataset:
    videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if src.is_dir() else []
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {str(src)!r}")
    dataset = Dataset(out, DatasetInfo(game=game, num_actions=num_actions,
                                       action_names=[f"action_{i}" for i in range(num_actions)], fps=fps,
                                       frame_size=list(size), source=f"data_tools.video_import {src}"))
    for video in tqdm(videos, desc="import", unit="video"):
        log_path = next((video.with_suffix(s) for s in (".csv", ".jsonl") if video.with_suffix(s).is_file()), None)
        if log_path is None:
            raise UserError(f"{video.name} has no action log ({video.stem}.csv or {video.stem}.jsonl)")
        frames = read_video(video, size)
        actions = actions_per_frame(read_action_log(log_path), len(frames), num_actions, log_path)
        truncs = np.zeros(len(frames), dtype=bool)
        truncs[-1] = True
        dataset.append(Episode(frames=frames, actions=actions, rewards=np.zeros(len(frames), np.float32),
                               terminations=np.zeros(len(frames), dtype=bool), truncations=truncs,
                               attrs={"game": game, "source": video.name, "fps": fps}))
    return dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.video_import", description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-actions", type=int, required=True)
    p.add_argument("--resolution", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    p.add_argument("--game", default="custom")
    p.add_argument("--fps", type=float, default=15.0)
    args = p.parse_args(argv)

    def body() -> None:
        ds = import_videos(args.src, args.out, args.num_actions, tuple(args.resolution), args.game, args.fps)
        print(f"{len(ds)} episode(s) in {args.out}")

    return run_tool("video_import", body)


if __name__ == "__main__":
    sys.exit(main())
