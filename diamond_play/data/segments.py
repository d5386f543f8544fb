"""Fixed-length training windows drawn from episodes, with padding masks, as the official batch sampler does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from diamond_play.data.episodes import Dataset, Episode
from diamond_play.frames import frames_to_tensor

RECENCY_WEIGHTS = (0.1, 0.1, 0.1, 0.7)  # four chunks of episode indices, the newest sampled most


@dataclass
class Batch:
    obs: Tensor  # (B, T, 3, H, W) float in [-1, 1]; padding is 0 (mid-grey)
    act: Tensor  # (B, T) int64 or (B, T, A) float
    rew: Tensor  # (B, T) float
    end: Tensor  # (B, T) int64
    trunc: Tensor  # (B, T) int64
    mask_padding: Tensor  # (B, T) bool: True where the step is real
    full_res: Tensor | None = None  # (B, T, 3, H', W')

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(**{f.name: None if getattr(self, f.name) is None
                        else getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).pin_memory()
                        for f in fields(self)})


class SegmentSampler:
    """Draws `batch_size` windows of `seq_length` steps.

    Episode choice: with `recency` and at least 4 episodes, one of four contiguous chunks of episode indices with
    weights (.1, .1, .1, .7), then uniform inside it; otherwise proportional to episode length. Window: a step t is
    drawn uniformly, then stop = min(len, t + 1 + U[0, L)) and start = stop − L, so windows near an episode start
    are left-padded; with `beyond_end`, start = t − U[0, L) and windows may run past the end (right padding).
    """

    def __init__(self, episodes: Sequence[Episode], seq_length: int, batch_size: int, seed: int = 0,
                 recency: bool = False, beyond_end: bool = False, full_res: bool = True) -> None:
        self.episodes = episodes
        self.seq_length, self.batch_size = seq_length, batch_size
        self.rng = np.random.default_rng(seed)
        self.recency, self.beyond_end = recency, beyond_end
        self.full_res = full_res  # read full-res frames when episodes have them (only the upsampler needs them)
        self._lengths: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset, seq_length: int, batch_size: int, **kwargs) -> SegmentSampler:
        return cls([dataset[i] for i in range(len(dataset))], seq_length, batch_size, **kwargs)

    def _episode_index(self) -> int:
        n = len(self.episodes)
        if self.recency and n >= len(RECENCY_WEIGHTS):
            chunks = np.array_split(np.arange(n), len(RECENCY_WEIGHTS))
            chunk = chunks[self.rng.choice(len(chunks), p=RECENCY_WEIGHTS)]
            return int(self.rng.choice(chunk))
        if self._lengths is None or len(self._lengths) != n:  # episodes may be appended while training
            self._lengths = np.array([len(e) for e in self.episodes], dtype=np.float64)
        return int(self.rng.choice(n, p=self._lengths / self._lengths.sum()))

    def _window(self, length: int) -> tuple[int, int]:
        t = int(self.rng.integers(length))
        if self.beyond_end:
            start = t - int(self.rng.integers(self.seq_length))
        else:
            start = min(length, t + 1 + int(self.rng.integers(self.seq_length))) - self.seq_length
        return start, start + self.seq_length

    def sample(self, batch_size: int | None = None) -> Batch:
        if not self.episodes:
            raise ValueError("no episodes to sample from")
        b, seq = batch_size or self.batch_size, self.seq_length
        first = self.episodes[0]
        h, w = first.frames.shape[1:3]
        frames = np.zeros((b, seq, h, w, 3), dtype=np.uint8)
        act_shape = (b, seq) + first.actions.shape[1:]
        act = np.zeros(act_shape, dtype=first.actions.dtype)
        rew = np.zeros((b, seq), dtype=np.float32)
        end = np.zeros((b, seq), dtype=np.int64)
        trunc = np.zeros((b, seq), dtype=np.int64)
        mask = np.zeros((b, seq), dtype=bool)
        filled = np.zeros((b, seq), dtype=bool)  # slots holding a frame (real steps + a final frame)
        full = None
        if self.full_res and first.full_res_frames is not None:
            full = np.zeros((b, seq) + first.full_res_frames.shape[1:], dtype=np.uint8)
        for i in range(b):
            ep = self.episodes[self._episode_index()]
            start, stop = self._window(len(ep))
            lo, hi = max(start, 0), min(stop, len(ep))
            dst = slice(lo - start, hi - start)
            frames[i, dst] = ep.frames[lo:hi]
            act[i, dst] = ep.actions[lo:hi]
            rew[i, dst] = ep.rewards[lo:hi]
            end[i, dst] = ep.terminations[lo:hi]
            trunc[i, dst] = ep.truncations[lo:hi]
            mask[i, dst] = True
            filled[i, dst] = True
            if full is not None and ep.full_res_frames is not None:
                full[i, dst] = ep.full_res_frames[lo:hi]
            if stop > len(ep) and ep.final_frame is not None:
                # The frame after the last step goes in the first padded slot (still masked): it is the next
                # observation of the terminal transition, which the reward/termination model learns from.
                frames[i, len(ep) - start] = ep.final_frame
                filled[i, len(ep) - start] = True
        obs = frames_to_tensor(frames)
        empty = torch.from_numpy(~filled)
        obs[empty] = 0  # padding is 0 in [-1, 1] (mid-grey), as the official sampler pads float tensors
        full_res = None
        if full is not None:
            full_res = frames_to_tensor(full)
            full_res[empty] = 0
        return Batch(obs=obs, act=torch.from_numpy(act), rew=torch.from_numpy(rew),
                     end=torch.from_numpy(end), trunc=torch.from_numpy(trunc), mask_padding=torch.from_numpy(mask),
                     full_res=full_res)


class SegmentStream(torch.utils.data.IterableDataset):
    """Endless batches from a SegmentSampler, one independent sampler per loader worker (seeded from the run's seed,
    the rank, the worker and the epoch), so file reads and decoding overlap training."""

    def __init__(self, episodes: Sequence, seq_length: int, batch_size: int, seed: int | Sequence[int],
                 **sampler_kwargs) -> None:
        self.episodes, self.seq_length, self.batch_size = episodes, seq_length, batch_size
        self.seed, self.sampler_kwargs = seed, sampler_kwargs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        sampler = SegmentSampler(self.episodes, self.seq_length, self.batch_size, **self.sampler_kwargs)
        seed = list(self.seed) if isinstance(self.seed, Sequence) else [self.seed]
        sampler.rng = np.random.default_rng([*seed, worker])
        while True:
            yield sampler.sample()


def segment_batches(stream: SegmentStream, device: torch.device, workers: int):
    """Batches on `device`; with workers > 0, drawn by that many processes (spawned: forking after torch has
    started its thread pools can hang) with prefetching and pinned memory on CUDA."""
    if workers == 0:
        source = iter(stream)
    else:
        source = iter(torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=workers, multiprocessing_context="spawn", persistent_workers=True,
            prefetch_factor=4, pin_memory=device.type == "cuda", worker_init_fn=_one_thread_per_worker))
    try:
        for batch in source:
            yield batch.to(device, non_blocking=True)
    finally:  # stop the workers now (closing the generator), not at interpreter exit
        shutdown = getattr(source, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _one_thread_per_worker(_worker_id: int) -> None:
    import atexit
    import os

    torch.set_num_threads(1)  # the workers are the parallelism; thread pools inside them only oversubscribe
    # A spawned worker finalises a full interpreter on exit, where a native library's static destructors can
    # abort ("terminate called without an active exception"), which the parent reports as a dead worker. The
    # worker has nothing to flush (errors reach the parent through the result queue), so it leaves directly.
    atexit.register(os._exit, 0)
