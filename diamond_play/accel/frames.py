"""The world model's per-frame function for an execution mode: eager (one network call after another) or graphed (the
whole frame replayed as one CUDA graph). Both read the world model's fixed buffers and return the next low-res frame,
the full-res frame of two-stage engines, and the time of each part."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diamond_play.accel.frame_graph import FrameGraph
from diamond_play.accel.modes import ExecutionMode
from diamond_play.accel.networks import Networks
from diamond_play.config import SamplingConfig
from diamond_play.imagine import imagine_next_frame, predict_low_res, upsample_frame
from diamond_play.models.denoiser import Randn


class Timer:
    """Wall-clock laps that wait for the GPU (`wait_for_gpu`), so component times are real."""

    def __init__(self, device: torch.device, wait_for_gpu: bool = True) -> None:
        self.sync = wait_for_gpu and device.type == "cuda"
        self.device = device
        self.restart()

    def restart(self) -> None:
        self.start = self.last = self._now()

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        lap, self.last = now - self.last, now
        return lap

    def total(self) -> float:
        return self._now() - self.start


@dataclass
class FrameBuffers:
    """The world model's buffers a frame reads: frame stack (B, L, C, h, w), actions (B, L[, A]) whose last slot
    holds the new action, and the previous full-res frame (two-stage engines)."""

    obs: Tensor
    act: Tensor
    full_res: Tensor | None


FrameOutput = tuple[Tensor, Tensor | None, dict[str, float]]


class EagerFrame:
    """Runs the sampler's network calls one by one, drawing noise from `randn`; `cancel` abandons a frame between
    two calls (raises `imagine.Cancelled`)."""

    def __init__(self, networks: Networks, sampling: SamplingConfig, buffers: FrameBuffers, randn: Randn,
                 cancel: threading.Event) -> None:
        self.networks, self.sampling, self.buffers = networks, sampling, buffers
        self.randn, self.cancel = randn, cancel

    def __call__(self, timer: Timer) -> FrameOutput:
        b = self.buffers
        low_res = predict_low_res(self.networks.dynamics, self.sampling.dynamics, b.obs, b.act, self.randn,
                                  self.cancel)
        components = {"dynamics": timer.lap()}
        full_res = None
        if self.networks.upsampler is not None and b.full_res is not None:
            assert self.sampling.upsampler is not None
            full_res = upsample_frame(self.networks.upsampler, self.sampling.upsampler, low_res, b.full_res,
                                      self.randn, self.cancel)
            components["upsampler"] = timer.lap()
        return low_res, full_res, components

    def networks_changed(self) -> None:
        """Nothing to do: the next frame calls the new networks."""


class GraphedFrame:
    """Captures the frame as a CUDA graph at its first call (and again after `networks_changed`) and replays it,
    its noise drawn from `generator` into the graph's buffers. `after_first_capture`, when set, is called once
    after the first capture (the background compile waits for it: a capture must not overlap other GPU work)."""

    def __init__(self, networks: Networks, sampling: SamplingConfig, buffers: FrameBuffers,
                 generator: torch.Generator, device: torch.device) -> None:
        self.networks, self.sampling, self.buffers = networks, sampling, buffers
        self.generator, self.device = generator, device
        self.graph: FrameGraph | None = None
        self.captures = 0
        self.after_first_capture: Callable[[], None] | None = None

    def imagine(self, randn: Randn) -> tuple[Tensor, Tensor | None]:
        """The frame the graph captures: the next frame from the buffers and `randn`."""
        b = self.buffers
        frame = imagine_next_frame(self.networks.dynamics, self.networks.upsampler, self.sampling, b.obs, b.act,
                                   randn, b.full_res)
        return frame.low_res, frame.full_res

    def __call__(self, timer: Timer) -> FrameOutput:
        graph = self.graph  # read once: `networks_changed` may clear it from the compile thread
        if graph is None:
            graph = self.graph = FrameGraph(self.imagine, self.device)
            self.captures += 1
            if self.after_first_capture is not None:
                callback, self.after_first_capture = self.after_first_capture, None
                callback()
            timer.restart()  # capture time is start-up, not frame latency
        low_res, full_res = graph.replay(self.generator)
        return low_res, full_res, {"frame graph": timer.lap()}

    def networks_changed(self) -> None:
        """Compiled networks were swapped in: free the old graph; the next frame captures the new one."""
        self.graph = None


Frame = EagerFrame | GraphedFrame


def frame_function(mode: ExecutionMode, networks: Networks, sampling: SamplingConfig, buffers: FrameBuffers,
                   randn: Randn, generator: torch.Generator, cancel: threading.Event,
                   device: torch.device) -> Frame:
    if mode.cuda_graph:
        return GraphedFrame(networks, sampling, buffers, generator, device)
    return EagerFrame(networks, sampling, buffers, randn, cancel)
