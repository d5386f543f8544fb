"""Writing what the app shows to a video file (OpenCV), atomically: a temp file renamed on close."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from diamond_play.errors import UserError

FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class VideoRecorder:
    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise UserError(f"cannot record to {str(self.path)!r}: use a .mp4, .avi or .mkv file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """rgb: uint8 (H, W, 3). The first frame fixes the size; later frames are resized to it."""
        h, w = rgb.shape[:2]
        if self.writer is None:
            self.size = (w - w % 2, h - h % 2)  # most codecs need even sizes
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()]),
                                          self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"OpenCV cannot write video {str(self.path)!r}: try an .avi file name")
        assert self.size is not None
        if (w, h) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_NEAREST)
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)
