"""Where a frame's GPU time goes: per-frame GPU time by kernel family and a torch.profiler table of one engine mode's
frames, plus raw conv/matmul rates to tell a slow kernel from a slow card.

Usage: python scripts/gpu_profile.py [--kind csgo|atari] [--mode MODE] [--frames N] [--no-rates]

Compiled modes are profiled without CUDA graphs (inductor mode "default" unless DIAMOND_PLAY_INDUCTOR_MODE
says otherwise): the profiler cannot see the kernels inside a graph replay, and they are the same kernels the
compiled-graph mode replays."""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from diamond_play.accel import inference
from diamond_play.accel.modes import EXECUTION_MODES, with_levers
from diamond_play.bench import random_agent, synthetic_start
from diamond_play.config import csgo_sampling
from diamond_play.engine import WorldModelEngine
from diamond_play.models import blocks


def rate(fn, flops: float, reps: int = 20) -> str:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / reps
    return f"{dt * 1e3:.3f} ms, {flops / dt / 1e12:.1f} TFLOP/s"


def raw_rates() -> None:
    dev = torch.device("cuda")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    print("matmul 8192 bf16:", rate(lambda: a @ a, 2 * 8192**3))
    # cudnn.benchmark (autotuned algorithms for fixed shapes) is off in every mode so far: does it pay at batch 1?
    for c, h, w in ((64, 150, 280), (64, 75, 140), (128, 38, 70), (256, 30, 56)):
        for dtype, cl, tuned in ((torch.float32, False, False), (torch.bfloat16, True, False),
                                 (torch.bfloat16, True, True)):
            torch.backends.cudnn.benchmark = tuned
            conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dev, dtype)
            x = torch.randn(1, c, h, w, device=dev, dtype=dtype)
            if cl:
                conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            with torch.no_grad():
                print(f"conv3x3 {c}->{c} {h}x{w} {dtype} channels-last={cl} cudnn.benchmark={tuned}:",
                      rate(partial(conv, x), 2 * h * w * c * c * 9))
    torch.backends.cudnn.benchmark = False
    group_norm_paths()


def graphed_ms(fn, calls: int = 20, reps: int = 20) -> float:
    """GPU time of one call, `calls` calls captured in a CUDA graph (as play runs them), launch cost excluded."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps / calls * 1e3


def group_norm_paths() -> None:
    """Native vs parallel-statistics adaptive GroupNorm per map size (bf16 channels-last input, batch 1): sets
    inference.PARALLEL_GN_MIN_GROUP_ELEMENTS."""
    dev = torch.device("cuda")
    default = inference.PARALLEL_GN_MIN_GROUP_ELEMENTS
    print(f"adaptive group norm, ms per call in a CUDA graph (threshold now {default})")
    for c, h, w in ((64, 64, 64), (64, 32, 32), (64, 150, 280), (64, 75, 140), (128, 38, 70), (256, 19, 35),
                    (256, 30, 56), (512, 15, 28)):
        x = torch.randn(1, c, h, w, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        norm = inference.InferenceAdaGroupNorm(blocks.AdaGroupNorm(c, 16), None, parallel_stats=True).to(dev)
        cond = torch.randn(1, 16, device=dev)
        times = []
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            for min_elements in (2**62, 1):  # native, then parallel
                inference.PARALLEL_GN_MIN_GROUP_ELEMENTS = min_elements
                times.append(graphed_ms(partial(norm, x, cond)))
        inference.PARALLEL_GN_MIN_GROUP_ELEMENTS = default
        per_group = c * h * w // blocks.num_groups(c)
        print(f"  {c:4d}x{h:3d}x{w:3d} ({per_group:8d} per group): native {times[0]:.4f}  parallel {times[1]:.4f}")


KERNEL_FAMILIES = (  # (family, substrings of the lower-cased kernel name), first match wins
    ("convolution", ("fprop", "implicit_gemm", "conv", "dgrad", "wgrad", "winograd")),
    ("attention", ("sdpa", "flash", "fmha", "attention")),
    ("group norm", ("group_norm", "groupnorm", "rowwisemoments", "var_mean", "native_batch_norm")),
    ("inductor reduction", ("triton_red", "triton_per")),
    ("inductor pointwise", ("triton_poi", "triton_")),
    ("matmul", ("gemm", "cublas", "cutlass", "matmul")),
    ("copy / cast", ("copy", "cast", "cat_")),
)


def kernel_family(name: str) -> str:
    lowered = name.lower()
    for family, keys in KERNEL_FAMILIES:
        if any(key in lowered for key in keys):
            return family
    return "other element-wise"


def family_summary(prof: profile, frames: int) -> None:
    """GPU ms per frame and kernel launches per frame by kernel family: what to attack next."""
    totals: dict[str, list[float]] = {}
    for event in prof.key_averages():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        self_us = getattr(event, "self_device_time_total", None)
        if self_us is None:
            self_us = event.self_cuda_time_total
        entry = totals.setdefault(kernel_family(event.key), [0.0, 0])
        entry[0] += self_us / 1e3 / frames
        entry[1] += event.count / frames
    frame_ms = sum(ms for ms, _ in totals.values())
    print(f"GPU time per frame by kernel family (sum {frame_ms:.2f} ms; kernels run back to back in a CUDA graph):")
    for family, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"  {family:22s} {ms:8.3f} ms  {100 * ms / max(frame_ms, 1e-9):5.1f}%  {count:7.0f} kernels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("csgo", "atari"), default="csgo")
    parser.add_argument("--mode", choices=sorted(EXECUTION_MODES), default="eager-bf16-cl")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--no-rates", action="store_true", help="skip the raw conv/matmul/group-norm rates")
    args = parser.parse_args()
    mode = EXECUTION_MODES[args.mode]
    if mode.cuda_graph:
        parser.error("the profiler cannot see inside a CUDA graph: profile the mode without -graph")
    if mode.compile:
        mode = with_levers(mode, inductor_mode=mode.inductor_mode or "default")  # no per-call CUDA graphs
    cudnn = torch.backends.cudnn
    print(f"cudnn {cudnn.version()} enabled={cudnn.enabled} benchmark={cudnn.benchmark} "
          f"deterministic={cudnn.deterministic} tf32 conv={cudnn.allow_tf32} "
          f"matmul={torch.backends.cuda.matmul.allow_tf32}")
    if not args.no_rates:
        raw_rates()
    agent = random_agent(args.kind)  # used once: the engine may change it in place
    sampling = csgo_sampling("quality") if args.kind == "csgo" else None
    engine = WorldModelEngine(agent, sampling=sampling, device=torch.device("cuda"), seed=0, mode=mode)
    start = synthetic_start(engine)
    engine.reset(start)
    started = time.perf_counter()
    for _ in range(3):  # compiles in compiled modes
        engine.step(start.actions[-1])
    torch.cuda.synchronize()
    print(f"{args.kind} {mode.name}: warm-up {time.perf_counter() - started:.1f} s")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.frames):
            engine.step(start.actions[-1])
        torch.cuda.synchronize()
    family_summary(prof, args.frames)
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
    print(table)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=70))


if __name__ == "__main__":
    main()
