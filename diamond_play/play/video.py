"""Writing what the app shows to a video file (OpenCV), atomically: a temp file renamed on close.

`.webm` is VP9, which browsers and common players open; `.mp4` is H.264 where OpenCV's FFmpeg has an encoder for
it (the PyPI wheels do not) and MPEG-4 Part 2 otherwise; `.avi` is Motion JPEG.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from diamond_play.errors import UserError

FOURCCS = {".webm": ("VP90",), ".mp4": ("avc1", "mp4v"), ".mkv": ("VP90", "mp4v"), ".avi": ("MJPG",)}
MAX_FPS = 60.0  # a video plays at most this fast; faster play is sampled on the wall clock


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what native code writes to file descriptor 2 to /dev/null for the duration."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class VideoRecorder:
    """`realtime`: frames are placed by the wall clock when they are written, so the video plays at the pace the
    window showed them (repeated while a frame stayed on screen, skipped when several came within one video frame);
    otherwise every frame is written once at `fps` (headless runs: one video frame per step)."""

    def __init__(self, path: str | Path, fps: float, realtime: bool = False) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCCS:
            raise UserError(f"cannot record to {str(self.path)!r}: use a .webm (VP9, plays in browsers), .mp4, .mkv "
                            "or .avi file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.fps = min(float(fps), MAX_FPS)
        self.realtime = realtime
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.fourcc = ""
        self.start: float | None = None
        self.last: np.ndarray | None = None  # the frame on screen, not yet written where it was skipped
        self.last_written = True

    def _open(self, w: int, h: int) -> None:
        self.size = (w - w % 2, h - h % 2)  # most codecs need even sizes
        for fourcc in FOURCCS[self.path.suffix.lower()]:
            with native_stderr_silenced():  # FFmpeg's note that WebM stores no codec tag, printed from C
                writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
            if writer.isOpened():
                self.writer, self.fourcc = writer, fourcc
                break
        if self.writer is None:
            raise UserError(f"OpenCV cannot write video {str(self.path)!r}: try a .webm or .avi file name")
        if self.fourcc == "mp4v":
            print(f"note: this OpenCV has no H.264 encoder, so {self.path.name} is MPEG-4 Part 2, which browsers do "
                  "not play: record to a .webm file for that", file=sys.stderr)

    def _emit(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self.writer is None:
            self._open(w, h)
        assert self.writer is not None and self.size is not None
        if (w, h) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_NEAREST)
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def write(self, rgb: np.ndarray, now: float | None = None) -> None:
        """rgb: uint8 (H, W, 3). The first frame fixes the size; later frames are resized to it. `now`: the
        monotonic time it was shown (default: the clock), used in realtime mode."""
        if not self.realtime:
            self._emit(rgb)
            return
        now = time.monotonic() if now is None else now
        if self.start is None:
            self.start = now
        due = int((now - self.start) * self.fps) + 1  # video frames whose time slot has begun
        if self.last is not None:
            while self.frames < due - 1:  # the previous frame stayed on screen until now
                self._emit(self.last)
                self.last_written = True
        self.last, self.last_written = rgb, False
        if self.frames < due:
            self._emit(rgb)
            self.last_written = True

    def close(self) -> None:
        if self.last is not None and not self.last_written:
            self._emit(self.last)
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)
