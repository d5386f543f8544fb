"""Episode files (HDF5, atomic) and the segment sampler's windows and padding masks."""

from __future__ import annotations

import numpy as np
import pytest

from diamond_play.data.episodes import Dataset, DatasetInfo, Episode, read_episode, write_episode
from diamond_play.data.segments import SegmentSampler
from diamond_play.errors import UserError


def make_episode(length: int, value: int = 0, final: bool = True) -> Episode:
    frames = np.full((length, 8, 8, 3), value, dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(length)  # frame index stored in a pixel
    ends = np.zeros(length, bool)
    ends[-1] = True
    return Episode(frames=frames, actions=np.arange(length) % 3, rewards=np.ones(length, np.float32),
                   terminations=ends, truncations=np.zeros(length, bool),
                   final_frame=np.full((8, 8, 3), 255, np.uint8) if final else None)


def test_episode_round_trip_and_atomic_write(tmp_path):
    ep = make_episode(7)
    path = write_episode(tmp_path / "e.h5", ep)
    back = read_episode(path)
    assert np.array_equal(back.frames, ep.frames) and np.array_equal(back.actions, ep.actions)
    assert back.terminations.tolist() == ep.terminations.tolist() and back.final_frame is not None
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]  # no temp file left


def test_broken_episode_file_is_reported(tmp_path):
    path = write_episode(tmp_path / "e.h5", make_episode(5))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="corrupt or incomplete"):
        read_episode(path)


def test_dataset_rejects_actions_outside_the_space_and_keeps_what_was_written(tmp_path):
    ds = Dataset(tmp_path / "ds", DatasetInfo(game="Test", num_actions=3))
    ds.append(make_episode(5))
    bad = make_episode(4)
    bad.actions[2] = 7
    with pytest.raises(UserError, match="outside the dataset's 3 discrete actions"):
        ds.append(bad)
    assert len(Dataset(tmp_path / "ds")) == 1 and len(ds[0]) == 5
    with pytest.raises(UserError, match="holds Test"):
        Dataset(tmp_path / "ds", DatasetInfo(game="Other", num_actions=3))


def test_segments_pad_on_the_left_at_episode_starts():
    sampler = SegmentSampler([make_episode(3)], seq_length=6, batch_size=64, seed=0)
    batch = sampler.sample()
    assert batch.obs.shape == (64, 6, 3, 8, 8) and batch.act.shape == (64, 6)
    real = batch.mask_padding.sum(1)
    assert set(real.tolist()) == {1, 2, 3}  # stop = min(len, t + 1 + U[0, L)): windows may hold 1..3 real steps
    for i in range(64):  # always padding first, then the real steps ending the window
        assert batch.mask_padding[i].tolist() == [False] * (6 - real[i]) + [True] * real[i]
    assert (batch.obs[~batch.mask_padding] == 0).all()  # padding is mid-grey (0 in [-1, 1])


def test_segments_cover_windows_inside_long_episodes():
    sampler = SegmentSampler([make_episode(50)], seq_length=6, batch_size=64, seed=1)
    batch = sampler.sample()
    full = batch.mask_padding.all(1)
    assert full.float().mean() > 0.8  # only windows ending in the first L steps are padded
    index = ((batch.obs[full][:, :, 0, 0, 0] + 1) / 2 * 255).round()
    assert (index[:, 1:] - index[:, :-1] == 1).all()  # consecutive frames
    assert index[:, -1].max() == 49  # windows may end at the last frame


def test_beyond_end_segments_carry_the_final_frame_for_the_terminal_step():
    sampler = SegmentSampler([make_episode(4)], seq_length=6, batch_size=32, seed=2, beyond_end=True)
    batch = sampler.sample()
    for i in range(32):
        real = batch.mask_padding[i].nonzero().flatten().tolist()
        last = real[-1]
        if last + 1 < 6:  # the window runs past the episode's end
            assert batch.end[i, last] == 1
            assert not batch.mask_padding[i, last + 1]
            assert (batch.obs[i, last + 1] == 1).all()  # the final frame (255) sits in the first padded slot


def test_recency_weights_favour_the_newest_episodes():
    episodes = [make_episode(10, value=i) for i in range(8)]
    sampler = SegmentSampler(episodes, seq_length=2, batch_size=2000, seed=3, recency=True)
    batch = sampler.sample()
    values = ((batch.obs[:, -1, 0, 4, 4] + 1) / 2 * 255).round()
    newest = (values >= 6).float().mean().item()
    assert 0.62 < newest < 0.78  # the newest of four chunks gets 70%
