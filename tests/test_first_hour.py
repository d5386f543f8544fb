"""What a new user hits in their first hour: no display, names, pipes, one-line errors, videos, the gym registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from helpers import save_official, tiny_agent

import diamond_play
from diamond_play.cli import main
from diamond_play.errors import UserError
from diamond_play.play.app import AppState, PlayOptions, handle_app_key
from diamond_play.play.session import PlaySession
from diamond_play.play.video import VideoRecorder

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diamond_play", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def no_display_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}


def test_no_display_is_one_line_exit_2_and_writes_nothing(atari_weights, tmp_path):
    env = no_display_env()
    out = tmp_path / "recorded"
    for args in (["atari", "Breakout", "--weights", str(atari_weights), "--record-dataset", str(out)],
                 ["record", "Breakout", "--out", str(out), "--frames", "5"],
                 ["play", "--weights", str(atari_weights)]):
        r = cli(*args, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no display" in lines[0] and "--headless" in lines[0], r.stderr
        assert not out.exists()
    # Windowless commands print nothing of SDL's (no XDG_RUNTIME_DIR complaint).
    r = cli("atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "2", "--actions",
            "random", env={k: v for k, v in env.items() if k != "XDG_RUNTIME_DIR"})
    assert r.returncode == 0 and "XDG_RUNTIME_DIR" not in r.stderr + r.stdout


def test_an_official_checkpoint_imported_under_another_name_plays_as_the_named_game(tmp_path, capsys):
    ckpt, cfg = save_official(tiny_agent("atari"), tmp_path, "agent")
    out = tmp_path / "imported"
    assert main(["import", str(ckpt), "--config", str(cfg), "--out", str(out)]) == 0
    assert "could not be inferred" in capsys.readouterr().err
    assert main(["atari", "Breakout", "--weights", str(out), "--headless", "--frames", "2", "--actions",
                 "random"]) == 0
    assert main(["play", "--weights", str(out), "--headless", "--frames", "2", "--actions", "random"]) == 2
    assert "atari GAME" in capsys.readouterr().err
    assert main(["atari", "Pong", "--weights", str(out), "--headless", "--frames", "2", "--actions", "random"]) == 2
    assert "actions" in capsys.readouterr().err  # Pong has 6 actions, the checkpoint 4
    named = tmp_path / "named"
    assert main(["import", str(ckpt), "--config", str(cfg), "--out", str(named), "--game", "breakout"]) == 0
    assert diamond_play.load_agent(named).config.game == "Breakout"


def test_play_without_weights_and_unknown_games_are_one_line(capsys):
    assert main(["play"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["atari", "Breakot", "--headless", "--frames", "1", "--actions", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'Breakout'" in err and err.count("Breakout") == 2


def test_info_prints_actions_and_metrics_and_survives_a_closed_pipe():
    shipped = REPO / "diamond_play" / "shipped" / "atari" / "Breakout"
    r = cli("info", str(shipped))
    assert r.returncode == 0 and "actions: 0 NOOP, 1 FIRE, 2 RIGHT, 3 LEFT" in r.stdout
    assert "one_step_psnr" in r.stdout
    pipe = subprocess.run(f"{sys.executable} -m diamond_play info {shipped} | head -1", shell=True,
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert pipe.stdout.startswith("game: Breakout") and "Traceback" not in pipe.stderr, pipe.stderr


def test_policy_key_without_an_actor_critic_says_so(atari_weights):
    agent = diamond_play.load_agent(atari_weights)
    agent.actor_critic = None
    session = PlaySession(agent, seed=0)
    try:
        state = AppState(session, PlayOptions())
        handle_app_key(state, "m")
        assert not state.policy
        assert any("no policy" in line for line in state.hud_lines() or [])
    finally:
        session.close()


def test_reseeds_are_counted_in_the_hud_and_predicted_ends_can_be_ignored(atari_weights):
    agent = diamond_play.load_agent(atari_weights)
    for ignore in (False, True):
        session = PlaySession(agent, seed=0, horizon=1000, ignore_end=ignore)
        try:
            state = AppState(session, PlayOptions())
            ends = 0
            for i in range(30):
                outcome = session.step(i % 4)
                state.record_outcome(outcome)
                ends += bool(outcome.end)
            assert ends > 0  # the tiny random model predicts ends often
            assert session.reseeds["end"] == (0 if ignore else ends)
            assert any(line.startswith("re-seeded from the real game") for line in state.hud_lines() or [])
        finally:
            session.close()


def test_gym_registry_and_out_of_range_actions(atari_weights):
    env = gym.make("diamond_play/Breakout-v0", weights=str(atari_weights))
    try:
        assert env.spec is not None and env.spec.id == "diamond_play/Breakout-v0"
        env.reset(seed=0)
        with pytest.raises(UserError, match="outside the action space"):
            env.step(7)
    finally:
        env.close()


def test_realtime_video_plays_at_the_pace_shown(tmp_path):
    path = tmp_path / "v.webm"
    rec = VideoRecorder(path, fps=1000, realtime=True)
    assert rec.fps == 60
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]
    for frame, t in zip(frames, (0.0, 0.5, 0.505, 1.0), strict=True):  # the third comes within one video frame
        rec.write(frame, now=t)
    rec.close()
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(60, rel=0.01)
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 61  # one second of video at 60 fps, plus the frame shown at its end
    assert rec.fourcc == "VP90"


def test_threads_option_sets_torch_threads(atari_weights, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "1",
                     "--actions", "random", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["eval", str(atari_weights), "--threads", "-1"]) == 2
    finally:
        torch.set_num_threads(before)
