"""Record -> train -> play for any game, and importing gameplay videos with action logs."""

from __future__ import annotations

import cv2
import numpy as np
import pygame
import pytest

import diamond_play
from diamond_play.cli import main
from diamond_play.data.episodes import Dataset
from diamond_play.play.app import Renderer
from diamond_play.play.controls import KeymapControls, default_keymap

TINY = ["--preset", "tiny", "epochs=1", "steps_per_epoch=2", "rew_end_steps_per_epoch=1", "batch_size=2",
        "rew_end_batch_size=2", "rew_end_seq_length=5"]


@pytest.mark.parametrize("env_id,size", [("Breakout", (64, 64)), ("CartPole-v1", (48, 64))])
def test_record_train_play(env_id, size, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["record", env_id, "--out", str(data), "--frames", "120", "--policy", "random",
                 "--resolution", str(size[0]), str(size[1])]) == 0
    ds = Dataset(data)
    assert sum(len(ds[i]) for i in range(len(ds))) == 120
    assert ds[0].frames.shape[1:] == (*size, 3)
    extra = ["train_rew_end=false"] if size[0] != size[1] else []
    assert main(["train", "engine", "--data", str(data), "--out", str(run), *TINY, *extra]) == 0
    agent = diamond_play.load_agent(run)
    assert agent.config.kind == ("atari" if env_id == "Breakout" else "custom")
    if env_id == "CartPole-v1":
        assert agent.config.keymap["keys"]["right"] == 1
    shot = tmp_path / "shot.png"
    assert main(["play", "--weights", str(run), "--headless", "--frames", "3", "--actions", "random",
                 "--screenshot", str(shot)]) == 0
    scale = 512 // max(size)
    assert cv2.imread(str(shot)).shape[:2] == (size[0] * scale + Renderer.HUD_PANEL, size[1] * scale)


def test_keymap_controls_and_default_keymap():
    km = default_keymap(3)
    assert km["default"] == 1 and km["keys"]["left"] == 0 and km["keys"]["right"] == 2
    controls = KeymapControls(km, 3)
    assert controls.action() == 1
    controls.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT, mod=0, unicode="", scancode=0))
    controls.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT, mod=0, unicode="", scancode=0))
    assert controls.action() == 2  # the most recent key wins
    controls.handle_event(pygame.event.Event(pygame.KEYUP, key=pygame.K_RIGHT, mod=0, unicode="", scancode=0))
    assert controls.action() == 0
    for name in ("", "no such key", "x"):  # keys pygame cannot name, or the map lacks (e.g. from the browser page)
        controls.key_down(name)
    assert controls.action() == 0


def test_record_with_a_yaml_keymap_and_bad_inputs(tmp_path, capsys):
    keymap = tmp_path / "keys.yaml"
    keymap.write_text("keys: {a: 0, d: 1}\ndefault: 0\n")
    assert main(["record", "CartPole-v1", "--out", str(tmp_path / "d"), "--frames", "5", "--policy", "random",
                 "--keymap", str(keymap)]) == 0
    assert Dataset(tmp_path / "d").info.keymap == {"keys": {"a": 0, "d": 1}, "default": 0}
    capsys.readouterr()
    assert main(["record", "Pendulum-v1", "--out", str(tmp_path / "p"), "--frames", "5", "--policy", "random"]) == 2
    assert "only discrete action spaces" in capsys.readouterr().err
    assert main(["record", "NoSuchEnv-v0", "--out", str(tmp_path / "n"), "--frames", "5", "--policy", "random"]) == 2
    assert "cannot make" in capsys.readouterr().err

    # An action file: the same reader and rules as play's (comment lines, integers in range), cycled.
    actions = tmp_path / "actions.txt"
    actions.write_text("# pole left, right\n0\n1\n1\n")
    assert main(["record", "CartPole-v1", "--out", str(tmp_path / "f"), "--frames", "6", "--policy",
                 str(actions)]) == 0
    recorded = np.concatenate([np.asarray(e.actions) for e in Dataset(tmp_path / "f").lazy_episodes()])
    assert recorded.tolist()[:6] == [0, 1, 1, 0, 1, 1]
    actions.write_text("0\n2\n")
    assert main(["record", "CartPole-v1", "--out", str(tmp_path / "g"), "--frames", "5", "--policy",
                 str(actions)]) == 2
    assert "integers in 0..1" in capsys.readouterr().err


def write_video(path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 15, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_and_csv_import_round_trip(tmp_path):
    from data_tools.video_import import main as video_import

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    clips = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (12, 7)]
    for i, clip in enumerate(clips):
        write_video(src / f"clip{i}.avi", clip)
    (src / "clip0.csv").write_text("frame,action\n0,1\n3,2\n9,0\n")
    (src / "clip1.jsonl").write_text('{"frame": 0, "action": 2}\n{"frame": 5, "action": 1}\n')
    assert video_import([str(src), "--out", str(tmp_path / "ds"), "--num-actions", "3", "--resolution", "32",
                         "32"]) == 0
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 2
    assert np.array_equal(ds[0].frames, clips[0]) and np.array_equal(ds[1].frames, clips[1])  # lossless codec
    assert ds[0].actions.tolist() == [1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0, 0]
    assert ds[1].actions.tolist() == [2, 2, 2, 2, 2, 1, 1]


def test_import_rejects_an_action_outside_the_space_and_keeps_existing_episodes(tmp_path, capsys):
    from data_tools.video_import import main as video_import

    src = tmp_path / "src"
    src.mkdir()
    frames = np.zeros((5, 16, 16, 3), np.uint8)
    write_video(src / "a.avi", frames)
    (src / "a.csv").write_text("0,1\n")
    assert video_import([str(src), "--out", str(tmp_path / "ds"), "--num-actions", "2", "--resolution", "16",
                         "16"]) == 0
    write_video(src / "b.avi", frames)
    (src / "b.csv").write_text("0,1\n2,5\n")
    (src / "a.avi").unlink()
    capsys.readouterr()
    assert video_import([str(src), "--out", str(tmp_path / "ds"), "--num-actions", "2", "--resolution", "16",
                         "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("video_import: error: b.csv line 2: action 5 is outside 0..1")
    assert len(Dataset(tmp_path / "ds")) == 1  # what was imported before is still there


def test_two_stage_engine_with_upsampler(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["record", "CartPole-v1", "--out", str(data), "--frames", "40", "--policy", "random",
                 "--resolution", "40", "60"]) == 0
    assert main(["train", "engine", "--data", str(data), "--out", str(run), "--resolution", "20", "30",
                 "--upsampler", *TINY, "train_rew_end=false", "upsampler_steps_per_epoch=2",
                 "upsampler_batch_size=2"]) == 0
    agent = diamond_play.load_agent(run)
    assert agent.upsampler is not None and agent.upsampler.cfg.upsampling_factor == 2
    assert agent.config.frame_size == [40, 60] and agent.config.kind == "custom"
    assert "upsampler/loss_denoising" in (run / "log.csv").read_text().splitlines()[0]
    shot = tmp_path / "shot.png"
    assert main(["play", "--weights", str(run), "--headless", "--frames", "2", "--actions", "random", "--size", "2",
                 "--screenshot", str(shot)]) == 0
    assert cv2.imread(str(shot)).shape[:2] == (80 + Renderer.HUD_PANEL, 120)
    capsys.readouterr()
    assert main(["train", "engine", "--data", str(data), "--out", str(tmp_path / "r2"), "--resolution", "15",
                 "25", "--upsampler", *TINY]) == 2
    assert "integer multiple" in capsys.readouterr().err


def test_lower_resolution_atari_engine(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["record", "Breakout", "--out", str(data), "--frames", "60", "--policy", "random"]) == 0
    assert main(["train", "engine", "--data", str(data), "--out", str(run), "--resolution", "32", "32", *TINY]) == 0
    agent = diamond_play.load_agent(run)
    assert agent.config.frame_size == [32, 32] and agent.config.kind == "atari"
    assert main(["atari", "Breakout", "--weights", str(run), "--headless", "--frames", "2", "--actions",
                 "random"]) == 0


def test_human_recording_window_with_posted_keys(tmp_path):
    """The keyboard path: a real pygame window (dummy driver); a held key is what gets recorded."""
    from diamond_play.play.record import RecordOptions, record

    pygame.display.init()
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT, mod=0, unicode="", scancode=0))
    ds = record(RecordOptions(env_id="CartPole-v1", out=tmp_path / "d", frames=8, fps=200))
    actions = np.concatenate([ds[i].actions for i in range(len(ds))])
    assert len(actions) == 8 and (actions == 1).all()  # right arrow = the last action, held throughout
