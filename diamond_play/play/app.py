"""The pygame play app (window) and the headless runner, both driving a PlaySession."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame

from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.play.controls import AtariControls, CSGOControls
from diamond_play.play.session import Outcome, PlaySession
from diamond_play.play.video import VideoRecorder

VIEWS = ("world model", "side by side", "real emulator")
HUD_KEY = pygame.K_h


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

    def advance(self) -> None:
        self.next += self.period
        now = time.perf_counter()
        if self.next < now - self.period:
            self.next = now


class Renderer:
    """Draws the model frame (and the real emulator's, side by side) plus the HUD onto a surface."""

    GAP = 8

    def __init__(self, session: PlaySession, scale: int) -> None:
        self.session = session
        self.scale = scale
        self.smooth = session.kind == "csgo"
        h, w = session.frame.shape[:2]
        self.panel = (w * scale, h * scale)
        self.font: pygame.font.Font | None = None

    def screen_size(self, view: str) -> tuple[int, int]:
        w, h = self.panel
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
            box = pygame.Surface((max(r.get_width() for r in rendered) + 8, 16 * len(rendered) + 6), pygame.SRCALPHA)
            box.fill((0, 0, 0, 150))
            surface.blit(box, (0, 0))
            for i, r in enumerate(rendered):
                surface.blit(r, (4, 3 + 16 * i))


def screen_pixels(surface: pygame.Surface) -> np.ndarray:
    return pygame.surfarray.array3d(surface).transpose(1, 0, 2)


@dataclass
class Stats:
    latencies: list[float]

    def summary(self) -> str:
        if not self.latencies:
            return "no frames"
        ms = np.array(self.latencies) * 1000
        return (f"{len(ms)} frames: model latency p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} "
                f"ms, mean {ms.mean():.1f} ms ({1000 / ms.mean():.2f} fps)")


def action_label(session: PlaySession, action) -> str:
    if session.kind == "csgo":
        return csgo.describe_action(csgo.decode_action(np.asarray(action)))
    names = session.engine.config.action_names
    return names[int(action)] if int(action) < len(names) else str(int(action))


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
                 f"step {e.steps}/{e.horizon}"]
        if last is not None:
            lines.append(f"action {action_label(s, last.action)}")
            if last.reward is not None:
                lines.append(f"reward {last.reward:+.0f}  end {'yes' if last.end else 'no'}")
        return lines

    def record_outcome(self, outcome: Outcome) -> None:
        self.last = outcome
        self.shown_times.append(time.perf_counter())
        self.stats.latencies.append(outcome.latency_s)


def next_action(state: AppState, controls, scripted) -> int | np.ndarray:
    if state.policy:
        return state.session.policy_action()
    if scripted is not None:
        return scripted(state.session.engine.steps)
    return controls.action()


# ---------------------------------------------------------------------------------------------------------------
# Window


class StepWorker:
    """Runs engine steps off the UI thread so the window stays responsive while a frame is imagined."""

    def __init__(self, session: PlaySession) -> None:
        self.session = session
        self.result: Outcome | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    @property
    def idle(self) -> bool:
        return self.thread is None or not self.thread.is_alive()

    def submit(self, action) -> None:
        def work() -> None:
            try:
                self.result = self.session.step(action)
            except BaseException as e:  # re-raised on the UI thread
                self.error = e

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def take(self) -> Outcome | None:
        if self.error is not None:
            raise self.error
        result, self.result = self.result, None
        return result


def handle_app_key(state: AppState, key: int) -> None:
    s = state.session
    if key == pygame.K_RETURN:
        state.reset_requested = True
    elif key == pygame.K_PERIOD:
        state.paused = not state.paused
    elif key == pygame.K_e and state.paused:
        state.single_step = True
    elif key == HUD_KEY:
        state.hud = not state.hud
    elif key == pygame.K_m and s.policy is not None:
        state.policy = not state.policy
    elif key in (pygame.K_LEFT, pygame.K_RIGHT) and s.has_real_env:
        i = VIEWS.index(state.view) + (1 if key == pygame.K_RIGHT else -1)
        state.view = VIEWS[i % len(VIEWS)]
    elif key in (pygame.K_UP, pygame.K_DOWN) and s.kind != "csgo":
        h = s.engine.horizon
        s.engine.horizon = h + 10 if key == pygame.K_UP else max(1, h - 10)


def run_window(session: PlaySession, opts: PlayOptions) -> Stats:
    pygame.display.init()
    pygame.font.init()
    pygame.display.set_caption(f"diamond-play: {session.engine.config.game}")
    scale = opts.size or (8 if session.kind != "csgo" else 2)
    renderer = Renderer(session, scale)
    state = AppState(session, opts)
    controls = AtariControls(session.engine.config.action_names) if session.kind != "csgo" else CSGOControls(
        opts.mouse_multiplier)
    scripted = scripted_actions(session, opts.actions) if opts.actions not in ("human", "policy") else None
    screen = pygame.display.set_mode(renderer.screen_size(state.view))
    csgo_mode = session.kind == "csgo"
    grabbed = False
    if csgo_mode:
        pygame.event.set_grab(True)
        pygame.mouse.set_visible(False)
        grabbed = True
    worker = StepWorker(session)
    pacer = Pacer(opts.fps)
    video = VideoRecorder(opts.record, opts.fps) if opts.record else None
    clock = pygame.time.Clock()
    view = state.view
    try:
        while not state.quit:
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    state.quit = True
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE:
                    if csgo_mode and grabbed:
                        pygame.event.set_grab(False)
                        pygame.mouse.set_visible(True)
                        grabbed = False
                        controls.release_all()
                    else:
                        state.quit = True
                elif csgo_mode and not grabbed and event.type == pygame.MOUSEBUTTONDOWN:
                    pygame.event.set_grab(True)
                    pygame.mouse.set_visible(False)
                    grabbed = True
                else:
                    if event.type == pygame.KEYDOWN:
                        handle_app_key(state, event.key)
                    if not csgo_mode or grabbed:
                        controls.handle_event(event)
            if worker.idle:
                outcome = worker.take()
                if outcome is not None:
                    state.record_outcome(outcome)
                    if video is not None:
                        renderer.draw(screen, state.view, state.hud_lines())
                        video.write(screen_pixels(screen))
                    if opts.frames is not None and len(state.stats.latencies) >= opts.frames:
                        state.quit = True
                if state.reset_requested:
                    session.reset()
                    state.reset_requested = False
                elif not state.quit and ((not state.paused and pacer.due()) or state.single_step):
                    worker.submit(next_action(state, controls, scripted))
                    pacer.advance()
                    state.single_step = False
            if state.view != view:
                view = state.view
                screen = pygame.display.set_mode(renderer.screen_size(view))
            renderer.draw(screen, state.view, state.hud_lines())
            pygame.display.flip()
            clock.tick(120)
    except KeyboardInterrupt:
        pass
    finally:
        if opts.screenshot is not None:
            pygame.image.save(screen, str(opts.screenshot))
        if video is not None:
            video.close()
        if worker.idle:
            session.close()
        elif session.recorder is not None:
            session.recorder.flush()
        pygame.quit()
    return state.stats


# ---------------------------------------------------------------------------------------------------------------
# Headless


def random_csgo_action(rng: np.random.Generator) -> np.ndarray:
    keys = [k for k in csgo.KEYS if rng.random() < 0.15]
    return csgo.encode_action(csgo.CSGOAction(
        keys=tuple(k for k in csgo.KEYS if k in csgo.resolve_forbidden(keys)), l_click=bool(rng.random() < 0.1),
        mouse_x=int(rng.choice(csgo.MOUSE_X_BINS)), mouse_y=int(rng.choice(csgo.MOUSE_Y_BINS))))


def read_action_file(path: Path, session: PlaySession) -> list:
    """Actions from a .npy file or a text file: one integer per line (Atari) or 51 comma-separated 0/1 (CS:GO)."""
    if not path.is_file():
        raise UserError(f"action file {str(path)!r} not found: pass random, policy or an existing file")
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            rows = [line.strip() for line in path.read_text().splitlines() if line.strip()
                    and not line.startswith("#")]
            data = np.array([[float(v) for v in row.replace(",", " ").split()] for row in rows])
    except (ValueError, OSError) as e:
        raise UserError(f"action file {str(path)!r} is unreadable ({e}): see `diamond-play atari --help`") from None
    n = session.engine.config.num_actions
    if session.engine.multi_hot:
        if data.ndim != 2 or data.shape[1] != n or not np.isin(data, (0, 1)).all():
            raise UserError(f"action file {str(path)!r} must hold rows of {n} 0/1 values, got shape {data.shape}")
        return [row.astype(np.float32) for row in data]
    data = data.reshape(-1)
    if len(data) == 0 or data.min() < 0 or data.max() >= n or not np.all(data == data.astype(int)):
        raise UserError(f"action file {str(path)!r} must hold integers in 0..{n - 1}")
    return [int(a) for a in data]


def scripted_actions(session: PlaySession, source: str):
    """random or a file -> a function of the step index giving the action."""
    rng = np.random.default_rng(0)
    if source == "random":
        n = session.engine.config.num_actions
        if session.engine.multi_hot:
            return lambda _step: random_csgo_action(rng)
        return lambda _step: int(rng.integers(n))
    actions = read_action_file(Path(source), session)
    counter = iter(range(10**12))
    return lambda _step: actions[next(counter) % len(actions)]


def run_headless(session: PlaySession, opts: PlayOptions) -> Stats:
    """No window: step `opts.frames` times with random, policy or file actions; optionally record the video."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    if opts.actions == "human":
        raise UserError("--headless needs --actions random, policy or FILE: there is no keyboard")
    if opts.frames is None:
        raise UserError("--headless needs --frames N")
    pygame.display.init()
    pygame.font.init()
    state = AppState(session, opts)
    scripted = None if opts.actions == "policy" else scripted_actions(session, opts.actions)
    renderer = Renderer(session, opts.size or (8 if session.kind != "csgo" else 2))
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
