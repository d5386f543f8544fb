"""Whole-frame CUDA graphs: every network call of one imagined frame captured once and replayed with one launch,
with the frame's noise drawn beforehand into fixed buffers so the random stream stays the eager one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from diamond_play.models.denoiser import Randn


class PredrawnNoise:
    """A frame's N(0, 1) draws made ahead of it, into fixed buffers, in the order and shapes the frame takes them.

    A replayed CUDA graph cannot call the random generator (each replay would reuse the captured draws), so the
    engine draws into these buffers from its own generator before every replay: the random stream, and so the
    frame, stays the one eager execution would give for the same seed."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.taken = 0

    @classmethod
    def laid_out_by(cls, frame: Callable[[Randn], object], device: torch.device) -> PredrawnNoise:
        """Buffers for every draw `frame(randn)` makes, found by running it once on a throwaway generator."""
        noise = cls()
        throwaway = torch.Generator(device).manual_seed(0)

        def record(shape: Sequence[int]) -> Tensor:
            noise.buffers.append(torch.randn(tuple(shape), device=device, generator=throwaway))
            return noise.buffers[-1]

        frame(record)
        return noise

    def __call__(self, shape: Sequence[int]) -> Tensor:
        if self.taken == len(self.buffers) or tuple(self.buffers[self.taken].shape) != tuple(shape):
            raise RuntimeError(f"draw {self.taken} of shape {tuple(shape)} does not match the frame's noise layout")
        self.taken += 1
        return self.buffers[self.taken - 1]

    def rewind(self) -> None:
        self.taken = 0

    def draw(self, generator: torch.Generator) -> None:
        """New noise for the next frame, as the eager frame would draw it from `generator`."""
        for buf in self.buffers:
            torch.randn(buf.shape, generator=generator, out=buf)
        self.taken = 0


class FrameGraph:
    """One imagined frame (every dynamics and upsampler sampler step) captured as a CUDA graph: a replay is one
    launch and no host sync, instead of hundreds of kernel launches. The frame reads the engine's fixed buffers
    (frame stack, actions, previous full-res frame) and returns tensors the graph owns, valid until the next
    replay."""

    def __init__(self, frame: Callable[[Randn], tuple[Tensor, Tensor | None]], device: torch.device) -> None:
        self.noise = PredrawnNoise.laid_out_by(frame, device)
        side = torch.cuda.Stream(device)  # warm-up (allocator, cuBLAS/cuDNN choices) off the capturing stream
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.noise.rewind()
                frame(self.noise)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.noise.rewind()
        with torch.cuda.graph(self.graph):
            self.outputs = frame(self.noise)

    def replay(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        self.noise.draw(generator)
        self.graph.replay()
        return self.outputs
