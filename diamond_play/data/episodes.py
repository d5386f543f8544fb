"""The project's episode format.

A dataset is a folder: `dataset.yaml` (game, action space, fps, resolution) and `episodes/episode_NNNNNN.h5`, one
HDF5 file per episode so each write is atomic (temp file + rename) and a killed run loses at most the episode in
progress. An episode file holds, for T steps:

- `frames` uint8 (T, H, W, 3) RGB: the observation at step t
- `actions` int64 (T,) discrete, or float32 (T, A) multi-hot (CS:GO): the action taken at frame t
- `rewards` float32 (T,), `terminations` uint8 (T,), `truncations` uint8 (T,): outcome of action t
- optional `full_res_frames` uint8 (T, H2, W2, 3) (two-stage engines), optional `final_frame` (H, W, 3): the frame
  after the last action
- optional (captured gameplay) `timestamps` float64 (T,): when frame t was grabbed, seconds on the capturing
  machine's monotonic clock; `mouse_motion` float32 (T, 2): pointer motion (dx, dy) in screen pixels during step t
- attributes: `format`, `version`, `game`, `source`, `fps`
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diamond_play.config import dump_yaml, from_dict, read_yaml
from diamond_play.errors import UserError

FORMAT = "diamond_play.episode"
VERSION = 1


@dataclass
class Episode:
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    full_res_frames: np.ndarray | None = None
    final_frame: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    timestamps: np.ndarray | None = None
    mouse_motion: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def validate(self, where: str = "episode") -> None:
        t = len(self.frames)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise UserError(f"{where}: frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        for name in ("actions", "rewards", "terminations", "truncations", "full_res_frames", "timestamps",
                     "mouse_motion"):
            value = getattr(self, name)
            if value is not None and len(value) != t:
                raise UserError(f"{where}: {name} has {len(value)} steps but frames has {t}")
        if self.actions.ndim not in (1, 2):
            raise UserError(f"{where}: actions must be (T,) or (T, A), got {self.actions.shape}")


class EpisodeBuilder:
    """Accumulates steps (frame, action, outcome) and turns them into an Episode when the episode stops."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        self.attrs = dict(attrs or {})
        self._clear()

    def _clear(self) -> None:
        self.frames: list[np.ndarray] = []
        self.full_res: list[np.ndarray] = []
        self.actions: list = []
        self.rewards: list[float] = []
        self.ends: list[bool] = []
        self.truncs: list[bool] = []
        self.timestamps: list[float] = []
        self.mouse_motion: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self.frames)

    def restore(self, episode: Episode | None) -> None:
        """Continue an episode in progress (from `snapshot`)."""
        self._clear()
        if episode is None:
            return
        self.frames, self.actions = list(episode.frames), list(episode.actions)
        self.full_res = list(episode.full_res_frames) if episode.full_res_frames is not None else []
        self.rewards = [float(r) for r in episode.rewards]
        self.ends, self.truncs = [bool(e) for e in episode.terminations], [bool(t) for t in episode.truncations]
        self.timestamps = [float(t) for t in episode.timestamps] if episode.timestamps is not None else []
        self.mouse_motion = [tuple(m) for m in episode.mouse_motion] if episode.mouse_motion is not None else []

    def add(self, frame: np.ndarray, action, reward: float | None = 0.0, end: bool | None = False,
            truncated: bool = False, full_res: np.ndarray | None = None, timestamp: float | None = None,
            mouse_motion: tuple[float, float] | None = None) -> None:
        """`timestamp` and `mouse_motion`: captured gameplay, given for every step or none."""
        self.frames.append(frame)
        if timestamp is not None:
            self.timestamps.append(timestamp)
        if mouse_motion is not None:
            self.mouse_motion.append(mouse_motion)
        if full_res is not None:
            self.full_res.append(full_res)
        self.actions.append(action)
        self.rewards.append(float(reward or 0.0))
        self.ends.append(bool(end))
        self.truncs.append(bool(truncated))

    def build(self, final_frame: np.ndarray | None = None, stopped_early: bool = True) -> Episode | None:
        """The episode so far (None if empty), then start afresh. An episode that did not end by termination is
        marked truncated at its last step when `stopped_early`."""
        episode = self.snapshot(final_frame, stopped_early)
        self._clear()
        return episode

    def snapshot(self, final_frame: np.ndarray | None = None, stopped_early: bool = False) -> Episode | None:
        """The episode so far without clearing it (an episode in progress, e.g. for training or a checkpoint)."""
        if not self.frames:
            return None
        truncs = list(self.truncs)
        truncs[-1] = truncs[-1] or (stopped_early and not self.ends[-1])
        actions = np.stack(self.actions) if isinstance(self.actions[0], np.ndarray) else np.array(self.actions)
        episode = Episode(frames=np.stack(self.frames), actions=actions,
                          rewards=np.array(self.rewards, dtype=np.float32), terminations=np.array(self.ends),
                          truncations=np.array(truncs), full_res_frames=np.stack(self.full_res) if self.full_res
                          else None, final_frame=final_frame, attrs=dict(self.attrs),
                          timestamps=np.array(self.timestamps, dtype=np.float64) if self.timestamps else None,
                          mouse_motion=np.array(self.mouse_motion, dtype=np.float32) if self.mouse_motion else None)
        return episode


def write_episode(path: str | Path, episode: Episode) -> Path:
    """Write atomically: a reader never sees a half-written file, and a crash leaves the old file intact."""
    episode.validate(str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            for key, value in episode.attrs.items():
                f.attrs[key] = value
            f.create_dataset("frames", data=episode.frames, chunks=(1, *episode.frames.shape[1:]),
                             compression="gzip", compression_opts=1)
            if episode.full_res_frames is not None:
                f.create_dataset("full_res_frames", data=episode.full_res_frames,
                                 chunks=(1, *episode.full_res_frames.shape[1:]), compression="gzip",
                                 compression_opts=1)
            if episode.final_frame is not None:
                f.create_dataset("final_frame", data=episode.final_frame)
            if episode.timestamps is not None:
                f.create_dataset("timestamps", data=episode.timestamps.astype(np.float64))
            if episode.mouse_motion is not None:
                f.create_dataset("mouse_motion", data=episode.mouse_motion.astype(np.float32))
            actions = episode.actions.astype(np.int64 if episode.actions.ndim == 1 else np.float32)
            f.create_dataset("actions", data=actions)
            f.create_dataset("rewards", data=episode.rewards.astype(np.float32))
            f.create_dataset("terminations", data=episode.terminations.astype(np.uint8))
            f.create_dataset("truncations", data=episode.truncations.astype(np.uint8))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def corrupt_episode(path: str | Path, error: Exception) -> UserError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"episode file {str(path)!r} is corrupt or incomplete ({first}): delete it or restore it from a "
                     "backup")


def read_episode(path: str | Path) -> Episode:
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise UserError(f"{str(path)!r} is not a diamond_play episode file (no format attribute)")
            episode = Episode(
                frames=f["frames"][()],
                actions=f["actions"][()],
                rewards=f["rewards"][()],
                terminations=f["terminations"][()].astype(bool),
                truncations=f["truncations"][()].astype(bool),
                full_res_frames=f["full_res_frames"][()] if "full_res_frames" in f else None,
                final_frame=f["final_frame"][()] if "final_frame" in f else None,
                attrs={k: v for k, v in f.attrs.items() if k not in ("format", "version")},
                timestamps=f["timestamps"][()] if "timestamps" in f else None,
                mouse_motion=f["mouse_motion"][()] if "mouse_motion" in f else None,
            )
    except (OSError, KeyError) as e:
        raise corrupt_episode(path, e) from None
    episode.validate(str(path))
    return episode


class LazyEpisode:
    """An episode file read on demand: the arrays are h5py datasets, so slicing reads only that window from disk
    (datasets far larger than memory, e.g. CS:GO's). The file opens on first access, in the process that uses it
    (loader workers each open their own handle)."""

    ARRAYS = ("frames", "actions", "rewards", "terminations", "truncations", "full_res_frames", "final_frame")

    def __init__(self, path: str | Path, length: int | None = None) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._length = length

    def _open(self) -> h5py.File:
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise corrupt_episode(self.path, e) from None
        return self._file

    def __len__(self) -> int:
        if self._length is None:
            self._length = len(self._open()["frames"])
        return self._length

    def __getattr__(self, name: str):
        if name in LazyEpisode.ARRAYS:
            f = self._open()
            return f.get(name)
        raise AttributeError(name)

    def __getstate__(self) -> dict[str, Any]:  # picklable for loader workers: the handle is not sent
        return {"path": self.path, "_length": self._length, "_file": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class DatasetInfo:
    """dataset.yaml: what every episode in the folder shares."""

    game: str
    num_actions: int
    action_type: str = "discrete"  # discrete | multi_hot
    action_names: list[str] = field(default_factory=list)
    fps: float = 15.0
    frame_size: list[int] = field(default_factory=lambda: [64, 64])
    full_res_size: list[int] | None = None
    source: str = ""
    keymap: dict[str, Any] = field(default_factory=dict)  # keys used when recording (custom games)
    format_version: int = VERSION


class Dataset:
    """A folder of episode files plus dataset.yaml; new episodes are appended with increasing indices."""

    INFO_FILE = "dataset.yaml"

    def __init__(self, root: str | Path, info: DatasetInfo | None = None) -> None:
        self.root = Path(root)
        info_path = self.root / self.INFO_FILE
        if info_path.is_file():
            existing = from_dict(DatasetInfo, read_yaml(info_path), "dataset")
            if info is not None and (existing.game, existing.num_actions, existing.action_type) != (
                info.game, info.num_actions, info.action_type
            ):
                raise UserError(f"dataset {str(self.root)!r} holds {existing.game} with {existing.num_actions} "
                                f"{existing.action_type} actions: record into a new folder")
            self.info = existing
        elif info is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.info = info
            write_text_atomically(info_path, dump_yaml(info))
        else:
            raise UserError(f"{str(self.root)!r} is not a diamond_play dataset (no {self.INFO_FILE}): check the path")

    @property
    def episode_dir(self) -> Path:
        return self.root / "episodes"

    def episode_paths(self) -> list[Path]:
        return sorted(self.episode_dir.glob("*.h5"))

    def __len__(self) -> int:
        return len(self.episode_paths())

    def __getitem__(self, index: int) -> Episode:
        return read_episode(self.episode_paths()[index])

    def lazy_episodes(self) -> list[LazyEpisode]:
        """Every episode as a LazyEpisode (lengths read once here, frames read when sampled)."""
        out = []
        for path in self.episode_paths():
            try:
                with h5py.File(path, "r") as f:
                    length = len(f["frames"])
            except (OSError, KeyError) as e:
                raise corrupt_episode(path, e) from None
            out.append(LazyEpisode(path, length))
        return out

    def check_actions(self, episode: Episode) -> None:
        a = episode.actions
        if self.info.action_type == "discrete":
            if a.ndim != 1 or (len(a) and (a.min() < 0 or a.max() >= self.info.num_actions)):
                bad = a[(a < 0) | (a >= self.info.num_actions)][:1] if a.ndim == 1 else a.shape
                raise UserError(f"action {bad} is outside the dataset's {self.info.num_actions} discrete actions: "
                                "fix the action log or the declared action space")
        elif a.ndim != 2 or a.shape[1] != self.info.num_actions or not np.isin(a, (0, 1)).all():
            raise UserError(f"actions must be multi-hot 0/1 vectors of length {self.info.num_actions}, "
                            f"got shape {a.shape}")

    def append(self, episode: Episode, name: str | None = None) -> Path:
        """Write the episode as episodes/episode_NNNNNN.h5 (next index), or episodes/<name>.h5 when named
        (datasets converted from named source files, so a re-run can skip what is done)."""
        self.check_actions(episode)
        if name is None:
            numbered = sorted(self.episode_dir.glob("episode_*.h5"))
            index = int(numbered[-1].stem.split("_")[1]) + 1 if numbered else 0
            name = f"episode_{index:06d}"
        return write_episode(self.episode_dir / f"{name}.h5", episode)

    def has(self, name: str) -> bool:
        return (self.episode_dir / f"{name}.h5").is_file()


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
