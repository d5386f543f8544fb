"""The pygame play app (window) and the headless runner, both driving a PlaySession."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame

from diamond_play.config import GameKind
from diamond_play.errors import UserError
from diamond_play.imagine import Cancelled
from diamond_play.play.controls import controls_for, read_action_file
from diamond_play.play.display import init_window_display, init_windowless_display
from diamond_play.play.session import Outcome, PlaySession
from diamond_play.play.video import VideoRecorder
from diamond_play.threads import as_compute_thread

VIEWS = ("world model", "side by side", "real emulator")
HUD_KEY = "h"


@dataclass
class PlayOptions:
    fps: float = 10.0
    size: int | None = None  # window scale over the model resolution
    headless: bool = False
    frames: int | None = None  # stop after this many frames
    actions: str = "human"  # human | random | policy | path to an action file (headless)
    record: Path | None = None  # video of what is shown
    mouse_multiplier: float = 10.0
    hud: bool = True
    screenshot: Path | None = None  # save the last shown screen as PNG on exit


class Pacer:
    """Ticks at a fixed rate on an absolute schedule (no drift); when the model is slower it never bursts."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.next = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() >= self.next

    def align(self, tick: float) -> None:
        """Follow a shared tick (players batched on one engine): the next frame is one period after it."""
        self.next = tick + self.period

    def advance(self) -> None:
        self.next += self.period
        now = time.perf_counter()
        if self.next < now - self.period:
            self.next = now


def default_scale(kind: GameKind, frame_hw: tuple[int, ...]) -> int:
    """Window scale: the kind's own (CS:GO's 280x150 doubles), or small frames grow to about 512 pixels."""
    return kind.window_scale or max(1, 512 // max(frame_hw))


class Renderer:
    """Draws the model frame (and the real emulator's, side by side) plus the HUD onto a surface."""

    GAP = 8
    LINE = 16
    HUD_PANEL = LINE * 7 + 6  # the HUD's own strip below the frames, so it never hides the game (e.g. a score row)

    def __init__(self, session: PlaySession, scale: int, hud_panel: bool = True) -> None:
        """`hud_panel`: reserve the strip below the frames for the HUD (else it is drawn over the frame's top)."""
        self.session = session
        self.scale = scale
        self.hud_panel = hud_panel
        self.smooth = session.game_kind.smooth_scaling
        h, w = session.frame.shape[:2]
        self.panel = (w * scale, h * scale)
        self.font: pygame.font.Font | None = None

    def screen_size(self, view: str) -> tuple[int, int]:
        w, h = self.panel
        h += self.HUD_PANEL if self.hud_panel else 0
        return (2 * w + self.GAP, h) if view == "side by side" else (w, h)

    def _blit_frame(self, surface: pygame.Surface, frame: np.ndarray, x: int) -> None:
        img = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        img = (pygame.transform.smoothscale if self.smooth else pygame.transform.scale)(img, self.panel)
        surface.blit(img, (x, 0))

    def draw(self, surface: pygame.Surface, view: str, hud_lines: list[str] | None) -> None:
        surface.fill((0, 0, 0))
        real = self.session.real_frame
        if view == "real emulator" and real is not None:
            self._blit_frame(surface, real, 0)
        else:
            self._blit_frame(surface, self.session.frame, 0)
            if view == "side by side" and real is not None:
                self._blit_frame(surface, real, self.panel[0] + self.GAP)
        if hud_lines:
            if self.font is None:
                self.font = pygame.font.Font(None, 18)
            rendered = [self.font.render(line, True, (255, 255, 255)) for line in hud_lines]
            top = self.panel[1] if self.hud_panel else 0
            if not self.hud_panel:
                width = max(r.get_width() for r in rendered) + 8
                box = pygame.Surface((width, self.LINE * len(rendered) + 6), pygame.SRCALPHA)
                box.fill((0, 0, 0, 150))
                surface.blit(box, (0, 0))
            for i, r in enumerate(rendered):
                surface.blit(r, (4, top + 3 + self.LINE * i))


def centred_window(size: tuple[int, int]) -> pygame.Surface:
    """The window at `size`, put (back) in the middle of the screen: SDL would keep its top-left corner on a
    resize. Asked through SDL's own hint, which pygame applies on every set_mode; `pygame._sdl2.video.Window.
    from_display_module()` would do it too, but in pygame 2.6 freeing that borrowed window corrupts the heap."""
    os.environ.setdefault("SDL_VIDEO_CENTERED", "1")
    return pygame.display.set_mode(size)


def screen_pixels(surface: pygame.Surface) -> np.ndarray:
    return pygame.surfarray.array3d(surface).transpose(1, 0, 2)


@dataclass
class Stats:
    latencies: list[float]
    predicted_reward: float | None = None  # summed over the whole session (engines with a reward model)

    def summary(self) -> str:
        if not self.latencies:
            return "no frames"
        ms = np.array(self.latencies) * 1000
        reward = "" if self.predicted_reward is None else f", predicted reward {self.predicted_reward:+.0f}"
        return (f"{len(ms)} frames: model latency p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} "
                f"ms, mean {ms.mean():.1f} ms ({1000 / ms.mean():.2f} fps){reward}")


def action_label(session: PlaySession, action) -> str:
    return session.game.describe_action(session.engine.config, action)


NOTICE_SECONDS = 4.0


class AppState:
    """Everything the HUD shows and the keys change."""

    def __init__(self, session: PlaySession, opts: PlayOptions) -> None:
        self.session = session
        self.opts = opts
        self.view = VIEWS[0]
        self.paused = False
        self.single_step = False
        self.policy = opts.actions == "policy"
        self.hud = opts.hud
        self.last: Outcome | None = None
        self.shown_times: list[float] = []
        self.stats = Stats([])
        self.quit = False
        self.reset_requested = False
        self.notice = ""  # a one-line answer to a key that could not act, shown for NOTICE_SECONDS
        self.notice_until = 0.0

    def show_notice(self, text: str) -> None:
        self.notice, self.notice_until = text, time.perf_counter() + NOTICE_SECONDS

    def shown_fps(self) -> float:
        t = self.shown_times[-11:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def hud_lines(self) -> list[str] | None:
        if not self.hud:
            return None
        s, e = self.session, self.session.engine
        last = self.last
        mode = "policy" if self.policy else ("human" if self.opts.actions == "human" else
                                             f"{Path(self.opts.actions).name} actions")
        lines = [f"{e.config.game}  {self.view}  {mode}{'  PAUSED' if self.paused else ''}",
                 f"fps {self.shown_fps():.1f}  model {last.latency_s * 1000 if last else 0:.0f} ms",
                 f"step {e.steps}/{e.horizon}  {e.mode.name}" + (f" ({e.compile_status})" if e.mode.compile else "")]
        if last is not None:
            lines.append(f"action {action_label(s, last.action)}")
            if last.reward is not None:
                lines.append(f"reward {last.reward:+.0f}  return {last.episode_return:.0f}  "
                             f"end {'yes' if last.end else 'no'}" + ("  (ignored)" if s.ignore_end else ""))
        source = "real game" if s.has_real_env else "spawn point"
        reseed = f"re-seeded from the {source}: {s.reseeds['end']} by predicted end, {s.reseeds['horizon']} at horizon"
        if last is not None and last.reset_by == "end":
            reseed += "  << END"
        lines.append(reseed)
        if self.notice and time.perf_counter() < self.notice_until:
            lines.append(self.notice)
        return lines

    def record_outcome(self, outcome: Outcome) -> None:
        self.last = outcome
        self.shown_times.append(time.perf_counter())
        self.stats.latencies.append(outcome.latency_s)
        if outcome.reward is not None:
            self.stats.predicted_reward = (self.stats.predicted_reward or 0.0) + outcome.reward


def next_action(state: AppState, controls, scripted) -> int | np.ndarray:
    if state.policy:
        return state.session.policy_action()
    if scripted is not None:
        return scripted(state.session.engine.steps)
    return controls.action()


# ---------------------------------------------------------------------------------------------------------------
# Window


class StepWorker:
    """Runs engine steps off the UI thread so the window stays responsive while a frame is imagined: one thread for
    the whole session, the only one that computes with several CPU threads (`threads.as_compute_thread`)."""

    def __init__(self, session: PlaySession) -> None:
        self.session = session
        self.result: Outcome | None = None
        self.error: BaseException | None = None
        self.pending: queue.Queue = queue.Queue()
        self.busy = threading.Event()  # a step is submitted and not finished
        self.thread = threading.Thread(target=self._run, name="diamond-play step", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        as_compute_thread()
        while True:
            action = self.pending.get()
            if action is STOP:
                return
            try:
                self.result = self.session.step(action)
            except Cancelled:
                pass
            except BaseException as e:  # re-raised on the UI thread
                self.error = e
            finally:
                self.busy.clear()

    @property
    def idle(self) -> bool:
        return not self.busy.is_set()

    def submit(self, action) -> None:
        self.busy.set()
        self.pending.put(action)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while self.busy.is_set() and time.perf_counter() < deadline:
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """Abandon the step in progress (the sampler stops at its next denoiser call) and end the thread."""
        if self.busy.is_set():
            self.session.engine.cancel_event.set()
            self.wait_idle(timeout)
            self.session.engine.cancel_event.clear()
        self.pending.put(STOP)
        self.thread.join(timeout)

    def take(self) -> Outcome | None:
        if self.error is not None:
            raise self.error
        result, self.result = self.result, None
        return result


STOP = object()  # tells a StepWorker's thread to end


def handle_app_key(state: AppState, key: str) -> None:
    """The app's own keys (named as `pygame.key.name` names them), the same in the window and the browser."""
    s = state.session
    if key == "return":
        state.reset_requested = True
    elif key == ".":
        state.paused = not state.paused
    elif key == "e" and state.paused:
        state.single_step = True
    elif key == HUD_KEY:
        state.hud = not state.hud
    elif key == "m":
        if s.policy is None:
            state.show_notice("m: no policy - these weights have no actor-critic (train one: diamond-play train "
                              "agent)")
        else:
            state.policy = not state.policy
    elif key in ("left", "right") and s.has_real_env:
        i = VIEWS.index(state.view) + (1 if key == "right" else -1)
        state.view = VIEWS[i % len(VIEWS)]
    elif key in ("up", "down") and s.game_kind.horizon_keys:
        h = s.engine.horizon
        s.engine.horizon = h + 10 if key == "up" else max(1, h - 10)


class WindowApp:
    """The pygame window. `tick()` handles events, starts a step when one is due, draws; `run()` loops it."""

    def __init__(self, session: PlaySession, opts: PlayOptions) -> None:
        init_window_display()
        pygame.display.set_caption(f"diamond-play: {session.engine.config.game}")
        self.session, self.opts = session, opts
        self.renderer = Renderer(session, opts.size or default_scale(session.game_kind, session.frame.shape[:2]),
                                 hud_panel=opts.hud)
        self.state = AppState(session, opts)
        self.mouse = session.game_kind.mouse
        self.controls = controls_for(session.engine.config, opts.mouse_multiplier)
        self.scripted = scripted_actions(session, opts.actions) if opts.actions not in ("human", "policy") else None
        self.view = self.state.view
        self.screen = centred_window(self.renderer.screen_size(self.view))
        self.grabbed = False
        if self.mouse:
            self.set_grab(True)
        self.worker = StepWorker(session)
        self.pacer = Pacer(opts.fps)
        self.video = VideoRecorder(opts.record, opts.fps, realtime=True) if opts.record else None
        self.clock = pygame.time.Clock()

    def set_grab(self, grab: bool) -> None:
        pygame.event.set_grab(grab)
        pygame.mouse.set_visible(not grab)
        self.grabbed = grab
        if not grab:
            self.controls.release_all()

    def handle_event(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.state.quit = True
        elif event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE:
            if self.mouse and self.grabbed:
                self.set_grab(False)  # first Esc frees the mouse, the second quits
            else:
                self.state.quit = True
        elif self.mouse and not self.grabbed and event.type == pygame.MOUSEBUTTONDOWN:
            self.set_grab(True)
        else:
            if event.type == pygame.KEYDOWN:
                handle_app_key(self.state, pygame.key.name(event.key))
            if not self.mouse or self.grabbed:
                self.controls.handle_event(event)

    def tick(self) -> bool:
        """One UI iteration; False once the app should close."""
        state = self.state
        for event in pygame.event.get():
            self.handle_event(event)
        if self.worker.idle:
            outcome = self.worker.take()
            if outcome is not None:
                state.record_outcome(outcome)
                if self.video is not None:
                    self.renderer.draw(self.screen, state.view, state.hud_lines())
                    self.video.write(screen_pixels(self.screen))
                if self.opts.frames is not None and len(state.stats.latencies) >= self.opts.frames:
                    state.quit = True
            if state.reset_requested:
                self.session.reset()
                state.reset_requested = False
            elif not state.quit and ((not state.paused and self.pacer.due()) or state.single_step):
                self.worker.submit(next_action(state, self.controls, self.scripted))
                self.pacer.advance()
                state.single_step = False
        if state.view != self.view:
            self.view = state.view
            self.screen = centred_window(self.renderer.screen_size(self.view))
        self.renderer.draw(self.screen, state.view, state.hud_lines())
        pygame.display.flip()
        self.clock.tick(120)
        return not state.quit

    def wait_idle(self, timeout: float = 60.0) -> None:
        self.worker.wait_idle(timeout)

    def close(self) -> None:
        if self.opts.screenshot is not None:
            pygame.image.save(self.screen, str(self.opts.screenshot))
        if self.video is not None:
            self.video.close()
        self.worker.stop()
        self.session.close()
        pygame.quit()

    def run(self) -> Stats:
        try:
            while self.tick():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.close()
        return self.state.stats


def run_window(session: PlaySession, opts: PlayOptions) -> Stats:
    return WindowApp(session, opts).run()


# ---------------------------------------------------------------------------------------------------------------
# Headless


def scripted_actions(session: PlaySession, source: str):
    """random or a file -> a function of the step index giving the action."""
    rng = np.random.default_rng(0)
    if source == "random":
        n = session.engine.config.num_actions
        return lambda _step: session.game.random_action(n, rng)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"action file {str(path)!r} not found: pass random, policy or an existing file")
    actions = read_action_file(path, session.engine.config.num_actions, session.engine.multi_hot)
    counter = iter(range(10**12))
    return lambda _step: actions[next(counter) % len(actions)]


def run_headless(session: PlaySession, opts: PlayOptions) -> Stats:
    """No window: step `opts.frames` times with random, policy or file actions; optionally record the video."""
    if opts.actions == "human":
        raise UserError("--headless needs --actions random, policy or FILE: there is no keyboard")
    if opts.frames is None:
        raise UserError("--headless needs --frames N")
    init_windowless_display()
    state = AppState(session, opts)
    scripted = None if opts.actions == "policy" else scripted_actions(session, opts.actions)
    renderer = Renderer(session, opts.size or default_scale(session.game_kind, session.frame.shape[:2]),
                        hud_panel=opts.hud)
    surface = pygame.Surface(renderer.screen_size(state.view))
    video = VideoRecorder(opts.record, opts.fps) if opts.record else None
    try:
        for _ in range(opts.frames):
            state.record_outcome(session.step(next_action(state, None, scripted)))
            if video is not None:
                renderer.draw(surface, state.view, state.hud_lines())
                video.write(screen_pixels(surface))
    except KeyboardInterrupt:
        pass
    finally:
        if video is not None:
            video.close()
        if opts.screenshot is not None:
            renderer.draw(surface, state.view, state.hud_lines())
            pygame.image.save(surface, str(opts.screenshot))
        session.close()
        pygame.quit()
    return state.stats
