"""CS:GO dataset tools on synthetic files written in the original Pearce & Zhu HDF5 layout."""

from __future__ import annotations

import tarfile

import numpy as np
import pygame
import pytest

from data_tools.csgo import main as csgo_tool
from diamond_play.data.csgo_dataset import held_out_file_names, read_dm_file, to_low_res, write_dm_file
from diamond_play.data.episodes import Dataset
from diamond_play.data.spawns import load_spawns
from diamond_play.envs import csgo


def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([csgo.encode_action(csgo.CSGOAction(keys=("w",) if rng.random() < 0.5 else (),
                                                        mouse_x=int(rng.choice(csgo.MOUSE_X_BINS)),
                                                        mouse_y=int(rng.choice(csgo.MOUSE_Y_BINS))))
                     for _ in range(n)])


@pytest.fixture(scope="module")
def tar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("csgo_src")
    rng = np.random.default_rng(0)
    files = {}
    for n in (1, 2, 3, 4, 6, 7):  # 3 is in the official test split
        frames = rng.integers(0, 256, (6, 150, 280, 3), dtype=np.uint8)
        actions = random_actions(rng, 6)
        if n == 7:
            actions[2, csgo.MOUSE_X_OFFSET:csgo.MOUSE_Y_OFFSET] = 1  # every mouse-x bin at once: invalid
        files[n] = write_dm_file(root / f"hdf5_dm_july2021_{n}.hdf5", frames, actions)
    data = files[4].read_bytes()
    files[4].write_bytes(data[: len(data) // 3])  # truncated
    files[6].write_bytes(b"not an hdf5 file at all" * 100)  # corrupt
    tars = root / "tars"
    tars.mkdir()
    with tarfile.open(tars / "hdf5_dm_july2021_1_to_7.tar", "w") as tar:
        for path in files.values():
            tar.add(path, arcname=f"dataset_dm_scraped_dust2/{path.name}")
    return tars


def test_reader_converts_bgr_and_makes_low_res(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 150, 280, 3), dtype=np.uint8)
    actions = random_actions(rng, 3)
    ep = read_dm_file(write_dm_file(tmp_path / "hdf5_dm_july2021_9.hdf5", frames, actions))
    assert np.array_equal(ep.full_res_frames, frames[..., ::-1])  # BGR on disk, RGB in episodes
    assert ep.frames.shape == (3, 30, 56, 3) and ep.actions.shape == (3, 51)
    assert np.array_equal(ep.actions, actions) and ep.truncations[-1] and not ep.terminations.any()
    flat = np.full((1, 150, 280, 3), 200, np.uint8)
    low = to_low_res(flat).astype(int)
    assert ((low >= 199) & (low <= 200)).all()  # flat stays flat, up to the official truncation to uint8
    assert "hdf5_dm_july2021_3.hdf5" in held_out_file_names() and len(held_out_file_names()) == 500


def test_prepare_splits_reports_and_resumes(tar_dir, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert csgo_tool(["prepare", str(tar_dir), str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "converted 3, already done 0, failed 3" in printed
    assert printed.count("failed: ") == 3  # each failure is named on the console, not only in the report
    train, test = Dataset(out / "train"), Dataset(out / "test")
    assert [p.stem for p in train.episode_paths()] == ["hdf5_dm_july2021_00001", "hdf5_dm_july2021_00002"]
    assert [p.stem for p in test.episode_paths()] == ["hdf5_dm_july2021_00003"]
    ep = test[0]
    assert ep.frames.shape == (6, 30, 56, 3) and ep.full_res_frames.shape == (6, 150, 280, 3)
    assert train.info.action_type == "multi_hot" and train.info.fps == 16.0
    report = (out / "prepare_report.txt").read_text()
    for n in ("00004", "00006", "00007"):
        assert f"hdf5_dm_july2021_{n}:" in report
    assert "mouse-x" in report
    assert not list(out.glob(".extract-*"))  # temporary extraction folders are cleaned up
    assert csgo_tool(["prepare", str(tar_dir), str(out)]) == 0  # resumable: the finished archive is skipped
    assert "converted 0, already done 0, failed 0" in capsys.readouterr().out
    (out / "prepare_done.txt").unlink()  # a restart inside an archive skips converted files
    assert csgo_tool(["prepare", str(tar_dir), str(out), "--workers", "1"]) == 0
    assert "already done 3" in capsys.readouterr().out

    spawn_dir = tmp_path / "spawn"
    assert csgo_tool(["spawns", str(out), str(spawn_dir), "--count", "5"]) == 0
    spawns = load_spawns(spawn_dir)
    assert len(spawns) == 1 and spawns[0].full_res_frame.shape == (150, 280, 3)
    assert spawns[0].frames.shape == (4, 30, 56, 3) and spawns[0].actions.shape == (4, 51)

    capsys.readouterr()
    assert csgo_tool(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 2 episodes, 12 frames" in text and "hours" in text and "mouse x" in text


def test_viewer_scrubs_episodes(tar_dir, tmp_path):
    from data_tools.csgo import view

    out = tmp_path / "prepared"
    assert csgo_tool(["prepare", str(tar_dir), str(out)]) == 0
    pygame.display.init()
    for key in (pygame.K_RIGHT, pygame.K_PAGEDOWN, pygame.K_DOWN):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
    view(out, max_ticks=10)


def test_prepare_without_archives_is_a_clear_error(tmp_path, capsys):
    assert csgo_tool(["prepare", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no hdf5_dm_july2021" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared(tar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("csgo_prepared") / "dataset"
    assert csgo_tool(["prepare", str(tar_dir), str(out)]) == 0
    return out


def test_train_csgo_tiny_resumes_and_plays_from_its_spawns(prepared, tmp_path, capsys):
    from diamond_play.cli import main
    from diamond_play.weights.loading import load_agent

    run = tmp_path / "run"
    assert main(["train", "csgo", "--data", str(prepared), "--out", str(run), "--preset", "tiny", "epochs=1"]) == 0
    cfg = (run / "config.yaml").read_text()
    assert "recipe: csgo" in cfg and "spawn_data:" in cfg and str(prepared / "test") in cfg
    assert main(["train", "csgo", "--resume", str(run), "epochs=2"]) == 0
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "upsampler/loss_denoising" in rows[0]
    agent = load_agent(run)
    assert agent.config.kind == "csgo" and agent.upsampler is not None and agent.rew_end_model is None
    assert agent.denoiser.cfg.noise_previous_obs and agent.denoiser.cfg.num_autoregressive_steps == 4
    assert agent.config.frame_size == [150, 280]
    spawns = load_spawns(run / "checkpoints" / "last" / "spawn")
    assert len(spawns) == 1  # the one test-split episode
    capsys.readouterr()
    assert main(["csgo", "--weights", str(run), "--headless", "--frames", "10", "--actions", "random"]) == 0
    assert "10 frames" in capsys.readouterr().out
    # Test-split quality of dynamics + upsampler against the real full-res frames.
    assert main(["eval", str(run), "--data", str(prepared / "test"), "--max-horizon", "1",
                 "--strip", str(tmp_path / "strip.png")]) == 0
    table = capsys.readouterr().out
    assert "one-step PSNR" in table and "open-loop PSNR h=1" in table
    import cv2
    assert cv2.imread(str(tmp_path / "strip.png")).shape[0] == 2 * 150 * 3  # full-res rows, scaled x3
    assert main(["eval", str(run)]) == 2  # CS:GO weights need held-out data


def test_loader_workers_draw_the_same_windows_as_the_training_process(prepared):
    import torch

    from diamond_play.data.segments import SegmentStream, segment_batches

    episodes = Dataset(prepared / "train").lazy_episodes()
    stream = SegmentStream(episodes, 9, 2, seed=(0, 0, 0, 0))
    inline = next(segment_batches(stream, torch.device("cpu"), workers=0))
    spawned = next(segment_batches(stream, torch.device("cpu"), workers=1))
    assert inline.obs.shape == (2, 9, 3, 30, 56) and inline.full_res.shape == (2, 9, 3, 150, 280)
    assert inline.act.shape == (2, 9, 51)
    assert torch.equal(inline.obs, spawned.obs) and torch.equal(inline.act, spawned.act)


def test_loader_speed_command(prepared, capsys):
    assert csgo_tool(["loader", str(prepared), "--workers", "0", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "dynamics" in out and "upsampler" in out and "samples/s" in out


def test_train_csgo_refuses_discrete_data(tmp_path, capsys):
    from diamond_play.cli import main
    from diamond_play.data.episodes import DatasetInfo, EpisodeBuilder

    builder = EpisodeBuilder()
    for _ in range(5):
        builder.add(np.zeros((64, 64, 3), np.uint8), 1)
    Dataset(tmp_path / "d", DatasetInfo(game="Breakout", num_actions=4)).append(builder.build())
    assert main(["train", "csgo", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "train engine" in err


def test_ddp_upsampler_step_keeps_ranks_in_sync(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from helpers import free_port

    tests = Path(__file__).parent
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                             str(free_port()), str(tests / "ddp_worker.py"), str(out), "csgo_upsampler"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["changed"] and verdict["digests"][0] == verdict["digests"][1]


def test_synth_writes_archives_that_prepare_accepts(tmp_path, capsys):
    tars = tmp_path / "tars"
    assert csgo_tool(["synth", str(tars), "--files", "2", "--frames", "5", "--first", "11"]) == 0
    assert [p.name for p in tars.iterdir()] == ["hdf5_dm_july2021_11_to_12.tar"]
    assert csgo_tool(["prepare", str(tars), str(tmp_path / "out"), "--workers", "1"]) == 0
    assert "converted 2, already done 0, failed 0" in capsys.readouterr().out
    ep = Dataset(tmp_path / "out" / "train")[0]
    assert ep.frames.shape == (5, 30, 56, 3) and ep.actions.shape == (5, 51)
