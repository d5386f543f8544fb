"""Execution modes: how the world-model networks run (eager fp32 is the reference; the others trade exactness,
within the tolerance the README documents, for speed) and which mode each device gets by default.

Benchmarking levers that used to be environment variables are fields of the mode; the variables still set their
defaults, read here and nowhere else: DIAMOND_PLAY_GPU_COMPILER (torch.compile | aoti),
DIAMOND_PLAY_INDUCTOR_MODE (a torch.compile mode) and DIAMOND_PLAY_CUDNN_BENCHMARK (1: autotuned convolutions).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from dataclasses import dataclass, field

import torch

from diamond_play.errors import UserError
from diamond_play.threads import as_helper_thread


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class ExecutionMode:
    """One way of running the networks; the named modes are in `EXECUTION_MODES`."""

    name: str = "eager-fp32"
    bf16: bool = False
    """bf16 autocast (CPUs with AVX-512 bf16 / AMX, and GPUs)."""
    bf16_weights: bool = False
    """Convolution and linear weights stored in bf16 (inference only; what autocast casts them to anyway)."""
    channels_last: bool = False
    """NHWC memory layout for the convolutions."""
    compile: bool = False
    """Inductor kernels for the networks (CPU: AOTInductor packages, cached on disk)."""
    inference_kernels: bool = False
    """Inference-only rewrites of the reference modules: one matmul for all the adaptive norms' scales/shifts per
    network call; GroupNorm as a per-channel affine from parallel statistics (GPUs); the reward/termination LSTM as
    a single-step cell."""
    cuda_graph: bool = False
    """GPUs only: the whole frame (every dynamics and upsampler step) captured as one CUDA graph and replayed with
    one launch per frame, its noise drawn beforehand into fixed buffers (`accel.frame_graph`)."""
    gpu_compiler: str = field(default_factory=lambda: _env("DIAMOND_PLAY_GPU_COMPILER", "torch.compile"))
    """GPU compiled modes: torch.compile in the playing process, or aoti (AOTInductor packages cached on disk, as
    on CPUs). CPUs always use AOTInductor."""
    inductor_mode: str = field(default_factory=lambda: _env("DIAMOND_PLAY_INDUCTOR_MODE", ""))
    """torch.compile mode on GPUs (e.g. max-autotune-no-cudagraphs); empty: reduce-overhead, or the default mode
    inside a whole-frame CUDA graph."""
    cudnn_benchmark: bool = field(default_factory=lambda: _env("DIAMOND_PLAY_CUDNN_BENCHMARK", "0") == "1")
    """GPUs: let cuDNN autotune the convolution algorithms for the fixed play shapes."""

    def compiles_ahead_of_time(self, device: torch.device) -> bool:
        """Whether compiled networks are AOTInductor packages built in a child process (which a quit can stop)
        rather than torch.compile in this process."""
        return device.type == "cpu" or self.gpu_compiler == "aoti"


EXECUTION_MODES = {
    m.name: m for m in (
        ExecutionMode("eager-fp32"),
        ExecutionMode("eager-bf16", bf16=True, bf16_weights=True, inference_kernels=True),
        ExecutionMode("eager-bf16-cl", bf16=True, bf16_weights=True, channels_last=True, inference_kernels=True),
        ExecutionMode("compiled-fp32", compile=True, inference_kernels=True),
        ExecutionMode("compiled-bf16-cl", bf16=True, bf16_weights=True, channels_last=True, compile=True,
                      inference_kernels=True),
        ExecutionMode("graph-bf16-cl", bf16=True, bf16_weights=True, channels_last=True, inference_kernels=True,
                      cuda_graph=True),
        ExecutionMode("compiled-graph-bf16-cl", bf16=True, bf16_weights=True, channels_last=True, compile=True,
                      inference_kernels=True, cuda_graph=True),
    )
}


# bf16 autocast over the modules as they are: for networks that are still training (the Atari 100k loop's
# imagination), which no inference mode may change in place.
AUTOCAST_BF16 = ExecutionMode("autocast-bf16", bf16=True)


def training_mode(amp: bool) -> ExecutionMode:
    """The mode for networks that are still training: bf16 autocast with `amp`, else eager fp32; neither changes
    the modules."""
    return AUTOCAST_BF16 if amp else EXECUTION_MODES["eager-fp32"]


def with_levers(mode: ExecutionMode, **levers: object) -> ExecutionMode:
    """`mode` with some lever fields changed (gpu_compiler, inductor_mode, cudnn_benchmark)."""
    return dataclasses.replace(mode, **levers)  # type: ignore[arg-type]


def available_execution_modes(device: torch.device) -> list[str]:
    """The modes that run on `device` (CUDA-graph modes need a GPU)."""
    return [name for name, m in EXECUTION_MODES.items() if device.type == "cuda" or not m.cuda_graph]


def check_execution_mode(mode: ExecutionMode, device: torch.device) -> None:
    if mode.cuda_graph and device.type != "cuda":
        raise UserError(f"mode {mode.name} captures CUDA graphs and needs a GPU: on {device.type} use one of "
                        f"{', '.join(available_execution_modes(device))}")


def time_convolution(dtype: torch.dtype, repeats: int = 5) -> float:
    """Seconds for one 3×3 convolution of the Atari U-Net's widest shape (64 → 64 channels on a 64×64 map,
    batch 1, channels-last) in `dtype` on this thread: the best of `repeats` after two warm-up calls."""
    x = torch.randn(1, 64, 64, 64).to(dtype=dtype, memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 2):
            started = time.perf_counter()
            conv(x)
            if i >= 2:
                best = min(best, time.perf_counter() - started)
    return best


BF16_MIN_SPEEDUP = 1.2  # bf16 modes also round: they are chosen only where they are clearly faster


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster this CPU runs the U-Net's convolutions in bf16 than in fp32 (one thread; timed once per
    process, under 0.3 s). AMX and AMD's AVX-512 bf16 cores are several times faster in bf16; Intel's AVX-512
    bf16 without AMX was slower than fp32, and CPUs without bf16 instructions (AVX-512 without bf16, AVX2) only
    emulate it, 4-10× slower (docs/PERFORMANCE.md has the figures)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0.0
    timings: dict[torch.dtype, float] = {}

    def probe() -> None:
        as_helper_thread()  # a thread of its own at one thread: the caller's OpenMP team stays as it is
        timings[torch.float32] = time_convolution(torch.float32)
        timings[torch.bfloat16] = time_convolution(torch.bfloat16)

    thread = threading.Thread(target=probe, name="diamond-play-bf16-probe")
    thread.start()
    thread.join()
    return timings[torch.float32] / timings[torch.bfloat16]


def default_execution_mode(device: torch.device, interactive: bool = False) -> ExecutionMode:
    """bf16 + channels_last where the hardware runs bf16 fast; fp32 elsewhere. On bf16 GPUs the whole frame is
    also replayed as one CUDA graph (eager play there is bound by kernel launches, and a capture takes seconds,
    not a compile's minute). On CPUs the choice is measured (`cpu_bf16_speedup`), and `interactive` play (a
    window, serve) takes the compiled variant: it starts eagerly, compiles in the background (once; later starts
    load the cached compile in seconds) and runs faster after. Not for headless runs: the switch point depends on
    timing, so a seed would no longer reproduce them exactly. docs/PERFORMANCE.md has the figures."""
    if device.type == "cuda":
        return EXECUTION_MODES["graph-bf16-cl"] if torch.cuda.is_bf16_supported() else EXECUTION_MODES["eager-fp32"]
    if device.type != "cpu":
        return EXECUTION_MODES["eager-fp32"]
    if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP:
        return EXECUTION_MODES["compiled-bf16-cl" if interactive else "eager-bf16-cl"]
    return EXECUTION_MODES["compiled-fp32" if interactive else "eager-fp32"]


def execution_mode_named(name: str, device: torch.device, interactive: bool = False) -> ExecutionMode:
    """A mode by name, or "auto" for `default_execution_mode`."""
    if name == "auto":
        return default_execution_mode(device, interactive)
    if name not in EXECUTION_MODES:
        raise UserError(f"unknown mode {name!r}: use auto or one of {', '.join(EXECUTION_MODES)}")
    return EXECUTION_MODES[name]
