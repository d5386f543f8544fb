"""`diamond-play capture`: any program on the screen -> a dataset in the project's episode format.

Every 1/fps seconds the loop grabs the target and stamps it with the monotonic clock; the action stored with frame
t is the input of [t, t+1) (`InputLog.interval`: keys and buttons down at any moment of it, pointer motion summed),
so a tap between two frames is kept and late-arriving events still land on their own frame. A frame the loop could
not grab on time is counted as dropped, never filled with a copy of another.

Hotkeys (not part of any action): `start_key` starts and pauses, `episode_key` starts a new episode, `stop_key`
ends the capture (as Ctrl-C does). Pausing, a new episode, idle time, a hidden window or a full episode each end
the episode in progress, which is written at once as its own file (atomic), so a crash loses at most that one.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from diamond_play.capture.actions import ActionSource, CSGOActions, KeymapActions, SeenCombinations
from diamond_play.capture.inputs import open_input
from diamond_play.capture.screen import ScreenGrabber, WindowClosed, WindowHidden
from diamond_play.config import dump_yaml
from diamond_play.data.episodes import Dataset, DatasetInfo, EpisodeBuilder, write_text_atomically
from diamond_play.errors import UserError
from diamond_play.play.controls import canonical_key_name
from diamond_play.play.record import load_keymap

MOUSE_MODES = ("none", "bins", "continuous")
STATUS_EVERY_S = 0.5


@dataclass
class CaptureOptions:
    out: Path
    """The dataset folder (made, or appended to when it holds the same kind of capture)."""
    window: str | None = None
    """Capture the window whose title contains this (followed as it moves)."""
    region: tuple[int, int, int, int] | None = None
    """Or this screen rectangle: left, top, width, height."""
    screen: int | None = None
    """Or this whole monitor (1 = the first)."""
    fps: float = 15.0
    resolution: tuple[int, int] = (64, 64)
    """Stored frames, height and width (the engine's resolution)."""
    full_resolution: tuple[int, int] | None = None
    """Also store frames at this size (height, width), for a two-stage engine's upsampler."""
    keymap: Path | None = None
    """Key map YAML: keys (or combinations, `w+space`) -> action ids, and the default action."""
    keys: list[str] | None = None
    """Or: watch these keys; every combination seen becomes an action."""
    mouse: str = "none"
    """none; bins: CS:GO's multi-hot actions (its keys, clicks, binned motion); continuous: raw motion is stored
    beside the key actions."""
    mouse_scale: float = 1.0
    """Pointer pixels -> the CS:GO bins' units (bins mode)."""
    seconds: float | None = None
    """Stop after this much captured time."""
    start_key: str = "f9"
    episode_key: str = "f8"
    stop_key: str = "f10"
    start_now: bool = False
    """Capture from the start instead of waiting for `start_key`."""
    idle_s: float = 60.0
    """With no input for this long the episode ends and capture waits for the next input (0: never)."""
    max_episode_s: float = 120.0
    """A longer episode is written and continued as a new one (bounds memory and what a crash can lose)."""
    game: str | None = None
    """The dataset's game name (default: from the window title)."""


@dataclass
class CaptureStats:
    frames: int = 0
    dropped: int = 0
    episodes: int = 0
    captured_s: float = 0.0
    cpu_s: float = 0.0
    ended_by: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.captured_s if self.captured_s else 0.0


class Terminated(Exception):
    """SIGTERM arrived: end as Ctrl-C does, keeping what was captured."""


def stop_on_sigterm(signum, frame) -> None:
    raise Terminated()


class Hotkeys:
    """Presses of the hotkeys, seen by the input listener's thread, taken by the capture loop."""

    def __init__(self, opts: CaptureOptions) -> None:
        self.names = {canonical_key_name(opts.start_key): "toggle", canonical_key_name(opts.episode_key): "episode",
                      canonical_key_name(opts.stop_key): "stop"}
        if len(self.names) != 3:
            raise UserError("--start-key, --episode-key and --stop-key must be three different keys")
        self.lock = threading.Lock()
        self.pressed: list[str] = []

    def on_key(self, name: str, down: bool) -> None:
        if down and name in self.names:
            with self.lock:
                self.pressed.append(self.names[name])

    def take(self) -> list[str]:
        with self.lock:
            out, self.pressed = self.pressed, []
        return out


def action_source(opts: CaptureOptions, existing: DatasetInfo | None) -> ActionSource:
    chosen = [opts.keymap is not None, opts.keys is not None, opts.mouse == "bins"]
    if opts.mouse not in MOUSE_MODES:
        raise UserError(f"--mouse {opts.mouse!r}: use one of {', '.join(MOUSE_MODES)}")
    if sum(chosen) != 1:
        raise UserError("say how input becomes actions: --keymap K.yaml, --keys w,a,s,d,space (every combination "
                        "seen is an action), or --mouse bins (CS:GO's keys, clicks and mouse bins)")
    if opts.mouse == "bins":
        return CSGOActions(opts.mouse_scale)
    if opts.keys is not None:
        return SeenCombinations(opts.keys, existing.keymap if existing is not None else None)
    assert opts.keymap is not None
    return KeymapActions(load_keymap(opts.keymap, 10**6), existing.num_actions if existing is not None else None)


def game_name(opts: CaptureOptions, grabber: ScreenGrabber) -> str:
    if opts.game:
        return opts.game
    return re.sub(r"[^A-Za-z0-9_-]+", "_", grabber.name).strip("_")[:40] or "capture"


def open_dataset(opts: CaptureOptions) -> DatasetInfo | None:
    """What an existing dataset at `opts.out` holds (None: a new one), checked against this capture."""
    if not (opts.out / Dataset.INFO_FILE).is_file():
        if opts.out.exists() and any(opts.out.iterdir()):
            raise UserError(f"{str(opts.out)!r} exists and is not a dataset: capture into a new folder")
        return None
    info = Dataset(opts.out).info
    if list(info.frame_size) != list(opts.resolution) or info.source != "diamond-play capture":
        raise UserError(f"{str(opts.out)!r} holds other data ({info.source or 'unknown source'}, "
                        f"{info.frame_size[0]}x{info.frame_size[1]}): capture into a new folder")
    return info


def resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


class Capture:
    """One capture run; `run` returns when it ends (stop key, Ctrl-C, --seconds, or the window closing)."""

    def __init__(self, opts: CaptureOptions) -> None:
        if opts.fps <= 0 or opts.fps > 120:
            raise UserError("--fps takes a rate in (0, 120]")
        self.opts = opts
        existing = open_dataset(opts)
        self.source = action_source(opts, existing)
        self.hotkeys = Hotkeys(opts)
        clash = set(self.hotkeys.names) & set(self.source.watched)
        if clash:
            raise UserError(f"{', '.join(sorted(clash))} is a hotkey and a game key: choose other --start-key / "
                            "--episode-key / --stop-key")
        self.grabber = ScreenGrabber(opts.window, opts.region, opts.screen)
        watch_mouse = opts.mouse != "none" or any(k.startswith("mouse ") for k in self.source.watched)
        self.inputs = open_input(watch_mouse, self.hotkeys.on_key)
        self.info = existing or DatasetInfo(
            game=game_name(opts, self.grabber), num_actions=self.source.num_actions,
            action_type="multi_hot" if self.source.multi_hot else "discrete", action_names=self.source.names,
            fps=opts.fps, frame_size=list(opts.resolution),
            full_res_size=list(opts.full_resolution) if opts.full_resolution else None,
            source="diamond-play capture", keymap=self.source.keymap)
        self.dataset = Dataset(opts.out, self.info)
        self.bytes_on_disk = sum(p.stat().st_size for p in self.dataset.episode_paths())  # grows per append
        self.stats = CaptureStats(episodes=0)
        self.builder = self.new_builder()
        self.previous: tuple[float, np.ndarray, np.ndarray | None] | None = None  # (time, frame, full-res frame)

    def new_builder(self) -> EpisodeBuilder:
        return EpisodeBuilder({"game": self.info.game, "source": f"capture of {self.grabber.name}",
                               "fps": self.opts.fps})

    def grab(self) -> tuple[float, np.ndarray, np.ndarray | None]:
        now = time.monotonic()
        image = self.grabber.grab()
        full = resize(image, self.opts.full_resolution) if self.opts.full_resolution else None
        return now, resize(image, self.opts.resolution), full

    def add_frame(self, grabbed: tuple[float, np.ndarray, np.ndarray | None]) -> None:
        """The new frame closes the previous one's span: store the previous frame with that span's action."""
        if self.previous is not None:
            t0, frame, full = self.previous
            span = self.inputs.interval(t0, grabbed[0])
            motion = (span.dx, span.dy) if self.opts.mouse == "continuous" else None
            self.builder.add(frame, self.source.action(span), full_res=full, timestamp=t0, mouse_motion=motion)
            self.stats.frames += 1
        self.previous = grabbed

    def end_episode(self) -> None:
        """Write the episode in progress (the pending frame is its final frame) and start afresh."""
        final = self.previous[1] if self.previous is not None else None
        if self.previous is not None:
            self.inputs.interval(self.previous[0], time.monotonic())  # input after the last frame belongs to none
        self.previous = None
        episode = self.builder.build(final, stopped_early=True)
        self.builder = self.new_builder()
        if episode is None:
            return
        if isinstance(self.source, SeenCombinations) and self.source.num_actions != self.info.num_actions:
            self.info.num_actions, self.info.action_names = self.source.num_actions, self.source.names
            self.info.keymap = self.source.keymap
            write_text_atomically(self.dataset.root / Dataset.INFO_FILE, dump_yaml(self.info))
        self.bytes_on_disk += self.dataset.append(episode).stat().st_size
        self.stats.episodes += 1

    def status(self, state: str) -> str:
        return (f"capture {self.grabber.name}: {state} | {self.stats.fps:.1f} fps | dropped "
                f"{self.stats.dropped} | episode {self.stats.episodes + 1}, {len(self.builder)} frames | "
                f"{self.stats.frames} frames in all | {self.bytes_on_disk / 2**20:.1f} MB written")

    def run(self) -> CaptureStats:
        opts, period = self.opts, 1.0 / self.opts.fps
        capturing, idle = opts.start_now, False
        keys = f"{opts.start_key.upper()} start/pause, {opts.episode_key.upper()} new episode, " \
               f"{opts.stop_key.upper()} (or Ctrl-C) stop"
        print(f"capture {self.grabber.name} -> {self.dataset.root} at {opts.fps:g} fps, "
              f"{opts.resolution[0]}x{opts.resolution[1]}: {keys}", file=sys.stderr, flush=True)
        cpu0, last_status = time.process_time(), 0.0
        previous_term = signal.signal(signal.SIGTERM, stop_on_sigterm)
        next_tick = time.monotonic()
        try:
            while True:
                if self.inputs.error is not None:
                    raise UserError(f"the keyboard listener stopped ({self.inputs.error}): the episodes so far are "
                                    "kept; capture again")
                for key in self.hotkeys.take():
                    if key == "stop":
                        self.stats.ended_by = "stop key"
                        return self.stats
                    if key == "episode" and capturing:
                        self.end_episode()
                    if key == "toggle":
                        capturing = not capturing
                        if not capturing:
                            self.end_episode()
                        idle = False
                        next_tick = time.monotonic()
                if capturing and opts.idle_s and self.inputs.idle_s() > opts.idle_s and not idle:
                    idle = True
                    self.end_episode()
                elif idle and self.inputs.idle_s() < opts.idle_s:
                    idle = False
                    next_tick = time.monotonic()
                now = time.monotonic()
                if now - last_status > STATUS_EVERY_S:
                    state = "capturing" if capturing and not idle else (
                        "idle: waiting for input" if idle else f"paused: {opts.start_key.upper()} to capture")
                    print("\r" + self.status(state), end="", file=sys.stderr, flush=True)
                    last_status = now
                if not capturing or idle:
                    time.sleep(0.02)
                    continue
                if now < next_tick:
                    time.sleep(min(next_tick - now, 0.02))
                    continue
                late = int((now - next_tick) / period)  # whole frames the loop could not grab in time
                self.stats.dropped += late
                next_tick += (late + 1) * period
                try:
                    self.add_frame(self.grab())
                except WindowHidden:
                    self.end_episode()
                    time.sleep(0.1)
                    continue
                self.stats.captured_s += period * (late + 1)
                if len(self.builder) >= opts.max_episode_s * opts.fps:
                    self.end_episode()
                if opts.seconds is not None and self.stats.captured_s >= opts.seconds:
                    self.stats.ended_by = "--seconds"
                    return self.stats
        except WindowClosed:
            self.stats.ended_by = "the window closed"
            return self.stats
        except KeyboardInterrupt:
            self.stats.ended_by = "Ctrl-C"
            return self.stats
        except Terminated:
            self.stats.ended_by = "terminated"
            return self.stats
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            self.end_episode()
            self.stats.cpu_s = time.process_time() - cpu0
            print("\r" + self.status("done"), file=sys.stderr, flush=True)
            self.inputs.close()
            self.grabber.close()


def capture(opts: CaptureOptions) -> CaptureStats:
    return Capture(opts).run()
