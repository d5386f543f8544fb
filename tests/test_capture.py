"""`diamond-play capture`: a real pygame game in its own process under Xvfb, real key presses and mouse moves from
xdotool, the real capture command; then `inspect`, `train engine` and `play` on what it wrote. Plus the pure parts:
how a frame's span of input becomes its action."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import find_window

from diamond_play.capture.actions import CSGOActions, KeymapActions, SeenCombinations
from diamond_play.capture.inputs import EventLog, Interval
from diamond_play.cli import main
from diamond_play.data.episodes import Dataset
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.play.controls import KeyMap

GAME = Path(__file__).with_name("capture_game.py")
TITLE = "diamond-play capture test game"
CAPTURE_EXTRA = all(importlib.util.find_spec(name) for name in ("Xlib", "mss"))  # the Linux capture extra
needs_capture_extra = pytest.mark.skipif(not CAPTURE_EXTRA and not os.environ.get("CI"),
                                         reason="capture needs its extra: pip install -e '.[capture]'")


def test_a_span_holds_every_key_down_in_it_and_the_motion_summed():
    log = EventLog()
    log.add(0.5, "key", "d", True)
    log.add(1.2, "key", "w", True)
    log.add(1.3, "key", "w", False)  # a tap inside one span still counts for it
    log.add(1.4, "move", (10.0, 10.0))
    log.add(1.6, "move", (25.0, 4.0))
    log.add(2.5, "key", "d", False)
    log.add(2.2, "key", "space", True)  # arrived late: placed by its time, not by its arrival
    first = log.interval(0.0, 1.0)
    second = log.interval(1.0, 2.0)
    third = log.interval(2.0, 3.0)
    fourth = log.interval(3.0, 4.0)
    assert first.down == ["d"] and second.down == ["d", "w"] and (second.dx, second.dy) == (15.0, -6.0)
    assert third.down == ["d", "space"] and fourth.down == ["space"]


def test_key_maps_with_combinations_and_every_combination_seen():
    keymap = KeyMap({"keys": {"a": 1, "d": 2, "d+space": 3, "mouse left": 4}, "default": 0}, 5)
    assert keymap.action_for([]) == 0 and keymap.action_for(["a"]) == 1 and keymap.action_for(["a", "d"]) == 2
    assert keymap.action_for(["space", "d"]) == 3 and keymap.action_for(["d", "a", "space"]) == 3
    assert keymap.action_for(["mouse left", "a"]) == 1 and keymap.action_for(["a", "mouse left"]) == 4
    with pytest.raises(UserError, match="unknown key name 'jump'"):
        KeyMap({"keys": {"jump": 1}}, 2)
    fixed = KeymapActions({"keys": {"a": 1, "d+space": 2}, "default": 0})
    assert fixed.num_actions == 3 and fixed.names == ["none", "a", "d+space"]
    seen = SeenCombinations(["w", "space", "mouse left"])
    spans = [["w"], [], ["space", "w"], ["w"], ["mouse left"]]

    assert [seen.action(Interval(down)) for down in spans] == [1, 0, 2, 1, 3]
    assert seen.names == ["none", "w", "w+space", "mouse left"]
    assert seen.keymap == {"keys": {"w": 1, "w+space": 2, "mouse left": 3}, "default": 0}
    again = SeenCombinations(["w", "space", "mouse left"], seen.keymap)  # appending to the same dataset
    assert again.action(Interval(["space"])) == 4 and again.action(Interval(["w", "space"])) == 2
    vec = CSGOActions().action(Interval(["w", "s", "mouse left"], dx=31.0, dy=-2.2))
    action = csgo.decode_action(vec)
    assert action.keys == ("w",) and action.l_click and (action.mouse_x, action.mouse_y) == (30, -2)


@pytest.fixture
def game(xvfb_display):
    if not CAPTURE_EXTRA:
        pytest.fail("capture needs its extra: pip install -e '.[capture]'")
    env = {**os.environ, "DISPLAY": xvfb_display, "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.Popen([sys.executable, str(GAME), "120"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    window = find_window(env, TITLE, proc)
    xdo(env, "windowfocus", "--sync", window)
    xdo(env, "mousemove", "--window", window, "80", "60")
    yield env, window, proc
    proc.terminate()
    proc.wait(10)


def xdo(env: dict, *args: str) -> float:
    """Run xdotool; the moment it acted (the middle of the call, on the shared monotonic clock)."""
    before = time.monotonic()
    subprocess.run(["xdotool", *args], env=env, check=True, timeout=10)
    return (before + time.monotonic()) / 2


def start_capture(env: dict, *args: str) -> subprocess.Popen:
    # Ctrl-C reaches it even where the test runner was started in the background (SIGINT ignored, and inherited).
    proc = subprocess.Popen([sys.executable, "-m", "diamond_play", "capture", "--window", "capture test game",
                             "--fps", "10", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # its status line says when it listens
        line = proc.stderr.readline()
        if "->" in line or proc.poll() is not None:
            break
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(1.0)  # the listeners are up once the status line is printed; give X a moment
    return proc


def held(times: list[tuple[float, float]], start: float, end: float) -> bool:
    return any(down < end and up >= start for down, up in times)


@needs_capture_extra
def test_capture_a_real_window_then_train_and_play_an_engine_on_it(game, tmp_path):
    env, window, _ = game
    keymap = tmp_path / "keys.yaml"
    keymap.write_text(yaml.safe_dump({"keys": {"a": 1, "d": 2, "mouse left": 3}, "default": 0}))
    data = tmp_path / "data"
    capture = start_capture(env, "--out", str(data), "--keymap", str(keymap), "--mouse", "continuous", "--idle", "0")
    xdo(env, "key", "F9")  # start (waits for the key by default)
    time.sleep(1.0)
    d_down = xdo(env, "keydown", "d")
    time.sleep(1.5)
    d_up = xdo(env, "keyup", "d")
    time.sleep(0.7)
    a_down = xdo(env, "keydown", "a")
    time.sleep(0.8)
    a_up = xdo(env, "keyup", "a")
    time.sleep(0.7)
    moved = xdo(env, "mousemove_relative", "--", "40", "-8")
    time.sleep(0.7)
    click_down = xdo(env, "mousedown", "1")
    time.sleep(0.6)
    click_up = xdo(env, "mouseup", "1")
    time.sleep(0.7)
    xdo(env, "key", "F10")  # stop
    out, err = capture.communicate(timeout=60)
    assert capture.returncode == 0, err
    assert "stop key" in out and "dropped" in out

    dataset = Dataset(data)
    assert len(dataset) == 1 and dataset.info.keymap["keys"]["d"] == 2
    episode = dataset[0]
    t, actions = episode.timestamps, episode.actions
    assert episode.frames.shape[1:] == (64, 64, 3) and len(t) >= 60
    assert np.all(np.diff(t) > 0.05) and np.all(np.diff(t) < 0.25)  # 10 fps: no copies, few drops
    period = 0.1
    presses = {2: [(d_down, d_up)], 1: [(a_down, a_up)], 3: [(click_down, click_up)]}
    wrong = []
    for i, start in enumerate(t):
        expected = [a for a, spans in presses.items() if held(spans, start, start + period)]
        near_edge = any(abs(start - edge) < period or abs(start + period - edge) < period
                        for spans in presses.values() for span in spans for edge in span)
        if not near_edge and int(actions[i]) != (expected[0] if expected else 0):
            wrong.append((i, int(actions[i]), expected))
    assert not wrong, wrong  # every frame's action is what was held then, to within one frame at the edges
    assert {1, 2, 3} <= set(actions.tolist())

    # The frames show the game: blue background, the yellow square moving right while D was held.
    frames = episode.frames.astype(int)
    assert abs(frames[..., 2].mean() - 120) < 25 and frames[..., 0].mean() < 60

    def square_x(frame: np.ndarray) -> float:
        yellow = (frame[..., 0] > 150) & (frame[..., 1] > 120) & (frame[..., 2] < 100)
        return float(np.nonzero(yellow)[1].mean())

    before_d, after_d = int(np.searchsorted(t, d_down)) - 1, int(np.searchsorted(t, d_up)) + 2
    assert square_x(episode.frames[after_d]) - square_x(episode.frames[before_d]) > 15
    # The mouse: one 40 px move, in the frame whose span holds it.
    motion = episode.mouse_motion
    frame_of_move = int(np.searchsorted(t, moved)) - 1
    assert motion[max(0, frame_of_move - 1):frame_of_move + 2].sum(0).tolist() == [40.0, -8.0]
    assert np.abs(motion).sum() == 48.0

    assert main(["inspect", str(data)]) == 0
    run = tmp_path / "run"
    assert main(["train", "engine", "--data", str(data), "--out", str(run), "--preset", "tiny", "epochs=1",
                 "steps_per_epoch=2", "rew_end_steps_per_epoch=1", "batch_size=2", "rew_end_batch_size=2",
                 "rew_end_seq_length=5"]) == 0
    assert main(["play", "--weights", str(run), "--headless", "--frames", "3", "--actions", "random"]) == 0
    from diamond_play.weights.loading import load_agent

    assert load_agent(run).config.keymap["keys"] == {"a": 1, "d": 2, "mouse left": 3}


@needs_capture_extra
def test_capture_csgo_actions_with_mouse_bins(game, tmp_path):
    env, _, _ = game
    data = tmp_path / "fps"
    capture = start_capture(env, "--out", str(data), "--mouse", "bins", "--start-now", "--seconds", "3",
                            "--resolution", "30", "56", "--full-resolution", "60", "112")
    time.sleep(0.8)
    moved = xdo(env, "mousemove_relative", "--", "30", "0")
    w_down = xdo(env, "keydown", "w")
    time.sleep(0.6)
    xdo(env, "keyup", "w")
    out, err = capture.communicate(timeout=60)
    assert capture.returncode == 0, err
    episode = Dataset(data)[0]
    assert episode.actions.shape[1] == csgo.NUM_ACTIONS and episode.full_res_frames.shape[1:] == (60, 112, 3)
    decoded = [csgo.decode_action(a) for a in episode.actions]
    moves = [(i, a.mouse_x) for i, a in enumerate(decoded) if a.mouse_x or a.mouse_y]
    assert len(moves) == 1 and moves[0][1] == 30
    assert abs(episode.timestamps[moves[0][0]] - moved) < 0.2
    w_frames = [i for i, a in enumerate(decoded) if "w" in a.keys]
    assert w_frames and abs(episode.timestamps[w_frames[0]] - w_down) < 0.2
    run = tmp_path / "fps_run"  # CS:GO's recipe takes it: dynamics at 30 x 56, upsampler to the full frames
    assert main(["train", "csgo", "--data", str(data), "--out", str(run), "--preset", "tiny", "epochs=1",
                 "steps_per_epoch=1", "upsampler_steps_per_epoch=1", "batch_size=2", "upsampler_batch_size=2"]) == 0
    assert main(["play", "--weights", str(run), "--headless", "--frames", "2", "--actions", "random"]) == 0


@needs_capture_extra
def test_a_window_closing_mid_capture_ends_it_and_keeps_the_episode(game, tmp_path):
    env, _, proc = game
    data = tmp_path / "closed"
    capture = start_capture(env, "--out", str(data), "--keys", "w,a,s,d", "--start-now")
    xdo(env, "key", "d")
    time.sleep(1.0)
    proc.terminate()
    proc.wait(10)
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err
    assert "the window closed" in out
    dataset = Dataset(data)
    assert len(dataset) == 1 and len(dataset[0]) >= 5 and dataset.info.action_names[:2] == ["none", "d"]


@needs_capture_extra
def test_ctrl_c_ends_the_capture_and_keeps_what_was_captured(game, tmp_path):
    env, _, _ = game
    data = tmp_path / "interrupted"
    capture = start_capture(env, "--out", str(data), "--keys", "w,a,s,d", "--start-now")
    time.sleep(1.0)
    capture.send_signal(signal.SIGINT)
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err
    assert "Ctrl-C" in out and len(Dataset(data)) == 1 and len(Dataset(data)[0]) >= 5
    capture = start_capture(env, "--out", str(data), "--keys", "w,a,s,d", "--start-now")  # appends
    time.sleep(1.0)
    capture.terminate()  # SIGTERM (a service manager, `kill`) ends it as cleanly
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err
    assert "terminated" in out and len(Dataset(data)) == 2


@needs_capture_extra
def test_capture_refuses_bad_targets_and_keys(xvfb_display, tmp_path, capsys):
    os.environ["DISPLAY"] = xvfb_display
    try:
        for args, message in [
            (["--window", "no such window", "--keys", "w"], "no window's title contains"),
            (["--region", "-5", "0", "100", "100", "--keys", "w"], "is not inside the screen"),
            (["--screen", "7", "--keys", "w"], "monitors 1..1"),
            (["--screen", "1"], "say how input becomes actions"),
            (["--screen", "1", "--keys", "w,f9"], "f9 is a hotkey and a game key"),
            (["--screen", "1", "--keys", "w,jump"], "unknown key name 'jump'"),
        ]:
            assert main(["capture", "--out", str(tmp_path / "d"), *args]) == 2, args
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "d" / "episodes").exists()  # nothing half-made
    finally:
        os.environ.pop("DISPLAY", None)
