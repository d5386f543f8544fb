"""Where a frame's GPU time goes: a torch.profiler table of one engine mode's frames plus raw conv/matmul rates,
to tell a slow kernel from a slow card. Usage: python scripts/gpu_profile.py [csgo|atari] [mode] [frames]."""

from __future__ import annotations

import sys
import time
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from diamond_play.bench import random_agent, synthetic_start
from diamond_play.config import csgo_sampling
from diamond_play.engine import EXECUTION_MODES, WorldModelEngine
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
    blocks.PARALLEL_GN_MIN_GROUP_ELEMENTS."""
    dev = torch.device("cuda")
    print(f"adaptive group norm, ms per call in a CUDA graph (threshold now {blocks.PARALLEL_GN_MIN_GROUP_ELEMENTS})")
    default = blocks.PARALLEL_GN_MIN_GROUP_ELEMENTS
    for c, h, w in ((64, 64, 64), (64, 32, 32), (64, 150, 280), (64, 75, 140), (128, 38, 70), (256, 19, 35),
                    (256, 30, 56), (512, 15, 28)):
        x = torch.randn(1, c, h, w, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        norm = blocks.AdaGroupNorm(c, 16).to(dev)
        cond = torch.randn(1, 16, device=dev)
        times = []
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            for min_elements in (2**62, 1):  # native, then parallel
                blocks.PARALLEL_GN_MIN_GROUP_ELEMENTS = min_elements
                norm.inference_stats = True
                times.append(graphed_ms(partial(norm, x, cond)))
        blocks.PARALLEL_GN_MIN_GROUP_ELEMENTS = default
        per_group = c * h * w // blocks.num_groups(c)
        print(f"  {c:4d}x{h:3d}x{w:3d} ({per_group:8d} per group): native {times[0]:.4f}  parallel {times[1]:.4f}")


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "csgo"
    mode = EXECUTION_MODES[sys.argv[2] if len(sys.argv) > 2 else "eager-bf16-cl"]
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cudnn = torch.backends.cudnn
    print(f"cudnn {cudnn.version()} enabled={cudnn.enabled} benchmark={cudnn.benchmark} "
          f"deterministic={cudnn.deterministic} tf32 conv={cudnn.allow_tf32} "
          f"matmul={torch.backends.cuda.matmul.allow_tf32}")
    raw_rates()
    agent = random_agent(kind)  # used once: the engine may change it in place
    sampling = csgo_sampling("quality") if kind == "csgo" else None
    engine = WorldModelEngine(agent, sampling=sampling, device=torch.device("cuda"), seed=0, mode=mode)
    start = synthetic_start(engine)
    engine.reset(start)
    for _ in range(3):
        engine.step(start.actions[-1])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(frames):
            engine.step(start.actions[-1])
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
    print(table)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=70))


if __name__ == "__main__":
    main()
