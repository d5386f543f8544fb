"""One browser tab's game: a `PlaySession` with the window's controls and app keys (`play.controls`,
`play.app.handle_app_key`, `AppState`), stepped by its own thread at the player's pace. The page sends the set of
held keys and buttons and the mouse motion; the thread turns changes into key presses and releases, steps, and
keeps only the newest encoded frame, so a slow connection never builds a queue of old frames."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from diamond_play.imagine import Cancelled
from diamond_play.play.app import VIEWS, AppState, Pacer, PlayOptions, default_scale, handle_app_key, next_action
from diamond_play.play.controls import Controls, controls_for
from diamond_play.play.session import PlaySession
from diamond_play.play.shared import Seat
from diamond_play.play.video import VideoRecorder
from diamond_play.threads import as_compute_thread, as_helper_thread

# Full-resolution colour (4:4:4): halved chroma smears pixel art's one-pixel colour rows (README, browser play).
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
VIEW_GAP = 2  # pixels between the world model's frame and the emulator's in the side-by-side view
MAX_RECORDING_S = 600.0  # a recording stops itself after this much play, so a forgotten one cannot fill the disk
VIDEO_NAME, DATASET_NAME = "play.mp4", "dataset.zip"


@dataclass
class FramePacket:
    """The newest frame a player has to show, encoded, with the HUD that goes with it."""

    seq: int
    jpeg: bytes
    hud: dict[str, object]


@dataclass
class PlayerInput:
    """What the page holds down now (key names as `pygame.key.name` gives them; mouse buttons 1 and 3) and the
    mouse motion summed since its last message."""

    keys: frozenset[str] = frozenset()
    buttons: frozenset[int] = frozenset()
    dx: int = 0
    dy: int = 0
    commands: list[str] = field(default_factory=list)  # app keys pressed through the page's buttons
    input_id: int | None = None
    """The client's number for this input, echoed in the HUD of the frames stepped with it (benchmarks time input
    to frame with it)."""


@dataclass
class Recording:
    """What one press of record made, in `folder`: VIDEO_NAME (what the page showed, at the size the page shows
    it) and DATASET_NAME (the session in the project's episode format, zipped). `id` is unguessable: it is the
    download's only key."""

    id: str
    folder: Path
    steps: int = 0
    episodes: int = 0

    def files(self) -> list[str]:
        return [name for name in (VIDEO_NAME, DATASET_NAME) if (self.folder / name).is_file()]


def zip_folder(folder: Path, out: Path) -> None:
    """`folder`'s files into the zip `out` (paths relative to `folder`), written to a temp file then renamed."""
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # HDF5 frames hardly compress
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    os.replace(tmp, out)


def compose_view(frame: np.ndarray, real: np.ndarray | None, view: str) -> np.ndarray:
    """The picture of a view: the world model's frame, the real emulator's, or both side by side."""
    if view == "real emulator" and real is not None:
        return real
    if view == "side by side" and real is not None:
        gap = np.zeros((frame.shape[0], VIEW_GAP, 3), dtype=np.uint8)
        return np.concatenate([frame, gap, real], axis=1)
    return frame


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), JPEG_PARAMS)
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


class Player:
    """Owns the session: only its thread steps it. `update` and `close` are called from the server's event loop."""

    def __init__(self, session: PlaySession, fps: float, on_frame: Callable[[], None], recordings: Path,
                 compute_share: int = 1) -> None:
        """`recordings`: the folder recordings are made in, one subfolder each. `compute_share`: how many players
        may compute at once (an engine of its own splits the CPU threads that many ways)."""
        self.session = session
        self.state = AppState(session, PlayOptions(fps=fps, actions="human"))
        self.controls: Controls = controls_for(session.engine.config)
        self.on_frame = on_frame
        self.fps = fps
        self.compute_share = compute_share
        self.pacer = Pacer(fps)
        self.lock = threading.Lock()
        self.pending = PlayerInput()
        self.held = PlayerInput()
        self.latest: FramePacket | None = None
        self.seq = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.recordings = recordings
        self.record_request: bool | None = None
        self.recording: Recording | None = None
        self.video: VideoRecorder | None = None
        self.finished: list[Recording] = []  # recordings done, not yet announced to the page
        self.announced: list[str] = []  # ids of the recordings the page was told of (the server's to remove)
        self.applied_input: int | None = None  # the newest input id applied
        self.frame_input: int | None = None  # the input id the shown frame was stepped with
        self.encode_s = 0.0
        self.publish()  # the start frame, before the first step
        self.thread = threading.Thread(target=self.run, name="diamond-play player", daemon=True)
        self.thread.start()

    def update(self, player_input: PlayerInput) -> None:
        """The page's latest input: held keys and buttons replace the previous ones, motion and commands add up."""
        with self.lock:
            pending = self.pending
            self.pending = PlayerInput(player_input.keys, player_input.buttons, pending.dx + player_input.dx,
                                       pending.dy + player_input.dy, pending.commands + player_input.commands,
                                       player_input.input_id if player_input.input_id is not None
                                       else pending.input_id)
        self.wake.set()

    def request_recording(self, on: bool) -> None:
        """Start or stop recording at the player thread's next turn."""
        with self.lock:
            self.record_request = on
        self.wake.set()

    def take_finished(self) -> list[Recording]:
        with self.lock:
            done, self.finished = self.finished, []
        return done

    def start_recording(self) -> None:
        rid = secrets.token_urlsafe(12)
        self.recording = Recording(rid, self.recordings / rid)
        self.recording.folder.mkdir(parents=True)
        self.session.start_recording(self.recording.folder / "dataset")
        self.video = VideoRecorder(self.recording.folder / VIDEO_NAME, self.fps, realtime=True)

    def stop_recording(self) -> Recording | None:
        recording, video, self.recording, self.video = self.recording, self.video, None, None
        if recording is None or video is None:
            return None
        video.close()
        dataset = self.session.stop_recording()
        if dataset is not None:
            recording.episodes = len(dataset)
            if recording.episodes:
                zip_folder(dataset.root, recording.folder / DATASET_NAME)
            shutil.rmtree(dataset.root)
        return recording

    def finish_recording(self) -> None:
        recording = self.stop_recording()
        if recording is not None:
            with self.lock:
                self.finished.append(recording)
            self.on_frame()

    def apply_input(self) -> None:
        with self.lock:
            new, self.pending = self.pending, PlayerInput(self.pending.keys, self.pending.buttons)
            record, self.record_request = self.record_request, None
        if record and self.recording is None:
            self.start_recording()
        elif record is False and self.recording is not None:
            self.finish_recording()
        for name in sorted(new.keys - self.held.keys):
            handle_app_key(self.state, name)
            self.controls.key_down(name)
        for name in sorted(self.held.keys - new.keys):
            self.controls.key_up(name)
        for button in sorted(new.buttons ^ self.held.buttons):
            self.controls.mouse_button(button, button in new.buttons)
        if new.dx or new.dy:
            self.controls.mouse_motion(new.dx, new.dy)
        for name in new.commands:
            handle_app_key(self.state, name)
        if new.input_id is not None:
            self.applied_input = new.input_id
        self.held = new

    def toggles(self) -> tuple[object, ...]:
        state = self.state
        return state.view, state.paused, state.policy, state.hud, self.session.engine.horizon, self.recording

    def hud(self) -> dict[str, object]:
        s, e = self.session, self.session.engine
        return {"lines": self.state.hud_lines() or [], "step": e.steps, "horizon": e.horizon,
                "paused": self.state.paused, "policy": self.state.policy, "view": self.state.view,
                "views": list(VIEWS) if s.has_real_env else [VIEWS[0]], "mode": e.mode.name,
                "compile": str(e.compile_status) if e.mode.compile else "",
                "fps": round(self.state.shown_fps(), 2),
                "latency_ms": round(self.state.last.latency_s * 1000, 1) if self.state.last else None,
                "batch": e.last_batch_size if isinstance(e, Seat) else 1,
                "recording": self.recording.steps if self.recording is not None else None,
                "input": self.frame_input, "encode_ms": round(self.encode_s * 1000, 2)}

    def publish(self) -> None:
        image = compose_view(self.session.frame, self.session.real_frame, self.state.view)
        if self.video is not None:
            kind = self.session.game_kind
            scale = default_scale(kind, self.session.frame.shape[:2])
            self.video.write(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR
                                        if kind.smooth_scaling else cv2.INTER_NEAREST))
        started = time.perf_counter()
        jpeg = encode_jpeg(image)
        self.encode_s = time.perf_counter() - started
        self.seq += 1
        self.latest = FramePacket(self.seq, jpeg, self.hud())
        self.on_frame()

    def run(self) -> None:
        if isinstance(self.session.engine, Seat):
            as_helper_thread()  # the shared engine's thread computes
        else:
            as_compute_thread(share=self.compute_share)
        state = self.state
        try:
            while not self.stop.is_set():
                before = self.toggles()
                self.apply_input()
                if state.reset_requested:
                    self.session.reset()
                    state.reset_requested = False
                    self.publish()
                elif (not state.paused and self.pacer.due()) or state.single_step:
                    self.frame_input = self.applied_input
                    state.record_outcome(self.session.step(next_action(state, self.controls, None)))
                    if self.recording is not None:
                        self.recording.steps += 1
                        if self.recording.steps >= MAX_RECORDING_S * self.fps:
                            self.finish_recording()
                    self.pacer.advance()
                    if isinstance(self.session.engine, Seat):
                        self.pacer.align(self.session.engine.last_batch_started)
                    state.single_step = False
                    self.publish()
                elif self.toggles() != before:
                    self.publish()  # a new view, or a toggle the HUD shows, while paused
                else:
                    self.wake.wait(max(0.0, min(0.05, self.pacer.next - time.perf_counter())))
                    self.wake.clear()
        except Cancelled:
            pass
        except BaseException as e:  # reported to the page; the server goes on
            self.error = e
            self.on_frame()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a step in progress stops at its next denoiser call) and free the session."""
        self.stop.set()
        self.wake.set()
        self.session.engine.cancel_event.set()
        self.thread.join(timeout)
        self.session.engine.cancel_event.clear()
        unannounced = [self.stop_recording(), *self.take_finished()]  # nobody is left to download these
        for recording in unannounced:
            if recording is not None:
                shutil.rmtree(recording.folder, ignore_errors=True)
        self.session.close()
