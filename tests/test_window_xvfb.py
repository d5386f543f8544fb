"""A real window on a virtual X server (Xvfb): the app opens, takes keys from xdotool, and shows frames."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
from helpers import find_window

from diamond_play.play.app import Renderer


def send_key(env: dict, name: str, app: subprocess.Popen, key: str) -> None:
    """Type `key` into the window titled `name`, looked up just before: an id found earlier can have gone stale
    (X answers BadWindow), so a failed send looks the window up and tries again."""
    for _ in range(3):
        window = find_window(env, name, app)
        if subprocess.run(["xdotool", "key", "--window", window, key], env=env, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"xdotool could not send {key} to the window")


def window_left_and_width(env: dict, name: str) -> tuple[int, int]:
    """Left edge and width of the window titled `name` (looked up by title: SDL may re-create it on a resize)."""
    tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
    for line in tree.splitlines():
        if f'"{name}' in line:
            size, x = line.split()[-2].split("+")[:2]  # WxH+X+Y
            return int(x), int(size.split("x")[0])
    return -1, -1


def test_real_window_under_xvfb(xvfb_display, atari_weights, tmp_path):
    env = {**os.environ, "DISPLAY": xvfb_display, "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy"}
    final = tmp_path / "final.png"
    app = subprocess.Popen([sys.executable, "-m", "diamond_play", "atari", "Breakout", "--weights", str(atari_weights),
                            "--fps", "10", "--size", "4", "--frames", "1000", "--screenshot", str(final)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = find_window(env, "diamond-play", app)
        time.sleep(2.0)  # let a few frames through
        shot = tmp_path / "shot.png"
        subprocess.run(["import", "-window", window, str(shot)], env=env, check=True, timeout=30)
        image = cv2.imread(str(shot))
        assert image.shape == (256 + Renderer.HUD_PANEL, 256, 3)  # 64x64 frames at --size 4, the HUD strip below
        assert image.std() > 5  # not blank
        # Keys typed into the real window reach the app: Right widens it to the side-by-side view, which stays
        # centred on the screen; Escape closes it.
        send_key(env, "diamond-play", app, "Right")
        left, width = window_left_and_width(env, "diamond-play")
        deadline = time.time() + 20
        while (width != 2 * 256 + 8 or abs(left + width / 2 - 1024 / 2) > 2) and time.time() < deadline:
            time.sleep(0.2)
            left, width = window_left_and_width(env, "diamond-play")
        assert width == 2 * 256 + 8 and abs(left + width / 2 - 1024 / 2) <= 2, (left, width)
        send_key(env, "diamond-play", app, "Escape")
        out, err = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, err
    assert "frames" in out and final.is_file()
