"""`diamond-play bench`: frame latency of the real play engine in every execution mode, side by side.

Each mode gets its own copy of the same weights, the same start state, the same actions and the same seed, so the
first frame of every mode sees identical inputs and noise: its max |difference| from eager fp32 is the deviation
reported (in [-1, 1] pixel units).
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from diamond_play.config import (
    ATARI_SAMPLER,
    SamplingConfig,
    WeightsConfig,
    atari_agent_config,
    csgo_agent_config,
    csgo_sampling,
)
from diamond_play.data.spawns import StartState
from diamond_play.engine import EXECUTION_MODES, ExecutionMode, WorldModelEngine
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent


@dataclass
class ModeResult:
    name: str
    fps: float
    p50_ms: float
    p95_ms: float
    max_abs_diff: float
    components_ms: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    warmup_s: float = 0.0


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def random_agent(kind: str) -> Agent:
    torch.manual_seed(0)
    if kind == "atari":
        return Agent(WeightsConfig(agent=atari_agent_config(4), game="Breakout", num_actions=4,
                                   sampling=SamplingConfig(dynamics=ATARI_SAMPLER)))
    return Agent(WeightsConfig(agent=csgo_agent_config(), game="csgo", kind="csgo", num_actions=csgo.NUM_ACTIONS,
                               frame_size=[150, 280], sampling=csgo_sampling("quality")))


def synthetic_start(engine: WorldModelEngine) -> StartState:
    rng = np.random.default_rng(0)
    h, w = engine.low_res_size
    frames = rng.integers(0, 256, (engine.num_cond, h, w, 3), dtype=np.uint8)
    if engine.multi_hot:
        actions = np.stack([csgo.encode_action(csgo.CSGOAction(keys=("w",))) for _ in range(engine.num_cond)])
    else:
        actions = np.zeros(engine.num_cond, dtype=np.int64)
    full = None
    if engine.full_res is not None:
        fh, fw = engine.config.frame_size
        full = rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8)
    return StartState(frames=frames, actions=actions, full_res_frame=full)


def _peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_mode(agent: Agent, mode: ExecutionMode, sampling: SamplingConfig | None, device: torch.device,
               frames: int, warmup: int) -> tuple[ModeResult, torch.Tensor]:
    engine = WorldModelEngine(copy.deepcopy(agent), sampling=sampling, device=device, seed=0, mode=mode)
    start = synthetic_start(engine)
    actions = [start.actions[-1]] * (warmup + frames)
    engine.reset(start)
    _peak_memory_reset(device)
    t0 = time.perf_counter()
    engine.step(actions[0])
    first = (engine.full_res if engine.full_res is not None else engine.obs[:, -1]).float().clone()
    for a in actions[1:warmup]:
        engine.step(a)
    warmup_s = time.perf_counter() - t0
    latencies, components = [], {}
    for a in actions[warmup:]:
        r = engine.step(a)
        latencies.append(r.latency_s)
        for k, v in r.component_s.items():
            components[k] = components.get(k, 0.0) + v
    ms = np.array(latencies) * 1000
    result = ModeResult(name=mode.name, fps=float(1000 / ms.mean()), p50_ms=float(np.percentile(ms, 50)),
                        p95_ms=float(np.percentile(ms, 95)), max_abs_diff=0.0,
                        components_ms={k: round(v / frames * 1000, 2) for k, v in components.items()},
                        peak_memory_mb=round(_peak_memory_mb(device), 1), warmup_s=round(warmup_s, 2))
    return result, first


def run_play_bench(kind: str, preset: str, device: torch.device, frames: int, modes: list[str],
                   weights: Path | None = None, warmup: int = 3) -> list[ModeResult]:
    unknown = [m for m in modes if m not in EXECUTION_MODES]
    if unknown:
        raise UserError(f"unknown mode(s) {unknown}: choose from {', '.join(EXECUTION_MODES)}")
    if "eager-fp32" not in modes:
        modes = ["eager-fp32", *modes]  # the reference every other mode is compared with
    if weights is not None:
        from diamond_play.weights.loading import load_agent

        agent = load_agent(weights)
        if agent.config.kind != kind and not (kind == "atari" and agent.config.kind == "custom"):
            raise UserError(f"{weights} holds a {agent.config.kind} engine, not {kind}")
    else:
        agent = random_agent(kind)
    sampling = csgo_sampling(preset) if kind == "csgo" else None
    results, reference = [], None
    for name in modes:
        result, first = bench_mode(agent, EXECUTION_MODES[name], sampling, device, frames, warmup)
        if reference is None:
            reference = first
        result.max_abs_diff = float((first - reference).abs().max())
        results.append(result)
    return results


def format_table(results: list[ModeResult]) -> str:
    comp_names = sorted({k for r in results for k in r.components_ms})
    head = f"{'mode':22s} {'fps':>7s} {'p50 ms':>8s} {'p95 ms':>8s} " + " ".join(
        f"{c + ' ms':>13s}" for c in comp_names) + f" {'peak MB':>8s} {'warm-up s':>9s} {'max|diff|':>9s}"
    lines = [head, "-" * len(head)]
    for r in results:
        comps = " ".join(f"{r.components_ms.get(c, 0):13.1f}" for c in comp_names)
        lines.append(f"{r.name:22s} {r.fps:7.2f} {r.p50_ms:8.1f} {r.p95_ms:8.1f} {comps} {r.peak_memory_mb:8.0f} "
                     f"{r.warmup_s:9.1f} {r.max_abs_diff:9.4f}")
    return "\n".join(lines)


def write_json(path: Path, device: torch.device, results: list[ModeResult], what: str) -> None:
    path.write_text(json.dumps({"machine": machine_description(device), "benchmark": what,
                                "modes": [asdict(r) for r in results]}, indent=2))
