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
    assert "converted 3, already done 0, failed 3" in capsys.readouterr().out
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
