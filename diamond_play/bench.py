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

from diamond_play.accel.modes import EXECUTION_MODES, ExecutionMode, available_execution_modes, check_execution_mode
from diamond_play.config import (
    ATARI_SAMPLER,
    SamplingConfig,
)
from diamond_play.data.spawns import StartState
from diamond_play.devices import cpu_isa
from diamond_play.engine import WorldModelEngine
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.games import NAMED_GAMES
from diamond_play.models.agent import Agent
from diamond_play.threads import compute_threads


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
    # AOTInductor compiled modes: "built" when the warm-up compiled the networks, "cache" when it loaded them from disk
    compiled_from: str = ""


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
    threads = max(torch.get_num_threads(), compute_threads())  # serve benches compute off the main thread
    return f"{cpu} ({cpu_isa()}), {threads} threads, torch {torch.__version__}"


def random_agent(kind: str) -> Agent:
    """The paper-size engine of `kind` with random weights, the same for every call."""
    torch.manual_seed(0)
    return NAMED_GAMES[kind].random_engine()


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
    compilers = engine.networks.compilers()
    compiled_from = "" if not compilers else "built" if any(c.built for c in compilers) else "cache"
    result = ModeResult(name=mode.name, fps=float(1000 / ms.mean()), p50_ms=float(np.percentile(ms, 50)),
                        p95_ms=float(np.percentile(ms, 95)), max_abs_diff=0.0,
                        components_ms={k: round(v / frames * 1000, 2) for k, v in components.items()},
                        peak_memory_mb=round(_peak_memory_mb(device), 1), warmup_s=round(warmup_s, 2),
                        compiled_from=compiled_from)
    return result, first


MODEL_OF_PHASE = {"denoiser": "denoiser", "rew_end": "rew_end_model", "actor_critic": "actor_critic",
                  "upsampler": "upsampler"}


def load_bench_agent(kind: str, weights: Path | None) -> Agent:
    """Given weights (their architecture and values) or random ones at the paper's sizes."""
    if weights is None:
        return random_agent(kind)
    from diamond_play.weights.loading import load_agent

    agent = load_agent(weights)
    if agent.config.kind not in NAMED_GAMES[kind].bench_kinds:
        raise UserError(f"{weights} holds a {agent.config.kind} engine, not {kind}")
    return agent


def run_play_bench(kind: str, preset: str, device: torch.device, frames: int, modes: list[str],
                   weights: Path | None = None, warmup: int = 3) -> list[ModeResult]:
    unknown = [m for m in modes if m not in EXECUTION_MODES]
    if unknown:
        raise UserError(f"unknown mode(s) {unknown}: choose from {', '.join(available_execution_modes(device))}")
    for name in modes:
        check_execution_mode(EXECUTION_MODES[name], device)
    if "eager-fp32" not in modes:
        modes = ["eager-fp32", *modes]  # the reference every other mode is compared with
    agent = load_bench_agent(kind, weights)
    sampling = NAMED_GAMES[kind].sampling(preset, agent.config.sampling)
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
        cached = "*" if r.compiled_from == "cache" else " "
        lines.append(f"{r.name:22s} {r.fps:7.2f} {r.p50_ms:8.1f} {r.p95_ms:8.1f} {comps} {r.peak_memory_mb:8.0f} "
                     f"{r.warmup_s:8.1f}{cached} {r.max_abs_diff:9.4f}")
    if any(r.compiled_from == "cache" for r in results):
        lines.append("* compiled networks loaded from the on-disk cache (a first start compiles them)")
    return "\n".join(lines)


def write_json(path: Path, device: torch.device, results: list, what: str) -> None:
    isa = {"isa": cpu_isa()} if device.type == "cpu" else {}
    path.write_text(json.dumps({"machine": machine_description(device), **isa, "benchmark": what,
                                "modes": [asdict(r) for r in results]}, indent=2))


# ---------------------------------------------------------------------------------------------------------------
# Training steps


@dataclass(frozen=True)
class TrainMode:
    name: str
    bf16: bool = False
    compile: bool = False


TRAIN_MODES = {m.name: m for m in (TrainMode("eager-fp32"), TrainMode("eager-bf16", bf16=True),
                                   TrainMode("compiled-fp32", compile=True),
                                   TrainMode("compiled-bf16", bf16=True, compile=True))}


@dataclass
class TrainResult:
    name: str  # the mode
    phase: str  # which model's step
    s_per_step: float  # median over the timed steps
    steps_per_s: float
    p50_ms: float
    p95_ms: float
    max_abs_diff: float  # |loss − eager fp32's loss| on the first step (same batch and noise)
    samples_per_s: float
    peak_memory_mb: float = 0.0
    warmup_s: float = 0.0


@dataclass
class TrainPhase:
    """One model's optimiser step at the paper's batch size (micro-batch for CS:GO's accumulated steps)."""

    name: str
    batch_size: int
    make: object  # (agent, device, mode) -> (model, micro_batches, loss_fn)


def synthetic_episodes(kind: str, n: int = 4, length: int = 60):
    """Random episodes in the project's format (random frames keep every step's cost realistic)."""
    from diamond_play.data.episodes import Episode

    rng = np.random.default_rng(0)
    eps = []
    for _ in range(n):
        if kind == "atari":
            frames, full = rng.integers(0, 256, (length, 64, 64, 3), dtype=np.uint8), None
            actions = rng.integers(0, 4, length)
        else:
            frames = rng.integers(0, 256, (length, 30, 56, 3), dtype=np.uint8)
            full = rng.integers(0, 256, (length, 150, 280, 3), dtype=np.uint8)
            actions = np.stack([csgo.encode_action(csgo.CSGOAction(keys=("w",))) for _ in range(length)])
        ends = np.zeros(length, dtype=bool)
        eps.append(Episode(frames=frames, actions=actions, rewards=rng.integers(-1, 2, length).astype(np.float32),
                           terminations=ends, truncations=ends.copy(), full_res_frames=full))
    return eps


def train_phases(kind: str, batch_size: int | None = None) -> list[TrainPhase]:
    from diamond_play.data.segments import SegmentSampler
    from diamond_play.train.world_model import batches, denoiser_loss, rew_end_loss, upsampler_loss

    episodes = synthetic_episodes(kind)

    def segment_phase(name: str, model_attr: str, loss, seq: int, batch: int, **kw) -> TrainPhase:
        batch = batch_size or batch

        def make(agent: Agent, device: torch.device, mode: TrainMode):
            return getattr(agent, model_attr), batches(SegmentSampler(episodes, seq, batch, seed=0, **kw), device), loss

        return TrainPhase(name, batch, make)

    if kind == "csgo":  # micro-batches of the paper's accumulated steps (x8 per optimiser step)
        return [segment_phase("denoiser", "denoiser", denoiser_loss, 4 + 1 + 4, 16),
                segment_phase("upsampler", "upsampler", upsampler_loss, 3, 4)]

    def actor_critic(agent: Agent, device: torch.device, mode: TrainMode):
        from diamond_play.accel.modes import training_mode
        from diamond_play.train.atari import AtariTrainConfig, forever
        from diamond_play.train.rl import ImaginedEnvs, RolloutRunner, imagination_loss_fn, imagination_world_model

        cfg = AtariTrainConfig()

        starts = SegmentSampler(episodes, 4, batch_size or 32, seed=0, recency=True)
        world_model = imagination_world_model(agent, starts.batch_size, ATARI_SAMPLER, device,
                                              training_mode(mode.bf16))
        envs = ImaginedEnvs(world_model, starts, 15)
        runner = RolloutRunner(envs, agent.actor_critic.cfg.lstm_dim)
        return agent.actor_critic, forever(), imagination_loss_fn(runner, cfg.backup_every, cfg.rl)

    return [segment_phase("denoiser", "denoiser", denoiser_loss, 6, 32),
            segment_phase("rew_end", "rew_end_model", rew_end_loss, 19, 32, beyond_end=True),
            TrainPhase("actor_critic", batch_size or 32, actor_critic)]


def bench_train_step(agent: Agent, phase: TrainPhase, mode: TrainMode, device: torch.device, steps: int,
                     warmup: int) -> tuple[TrainResult, float]:
    """Time `steps` optimiser steps after `warmup` ones; -> result and the first step's loss."""
    from diamond_play.train.core import ModelTrainer, OptimConfig

    agent = copy.deepcopy(agent).to(device)
    torch.manual_seed(0)
    model, micro_batches, loss_fn = phase.make(agent, device, mode)
    trainer = ModelTrainer(phase.name, model, OptimConfig(), device, amp=mode.bf16, compile_model=mode.compile)
    timer_sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    _peak_memory_reset(device)
    first_loss = float("nan")
    t0 = time.perf_counter()
    for i in range(max(1, warmup)):
        metrics = trainer.step(micro_batches, loss_fn)
        if i == 0:
            first_loss = next(v for k, v in metrics.items() if "loss" in k)
    timer_sync()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step(micro_batches, loss_fn)
        timer_sync()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    med = float(np.median(ms)) / 1000
    return TrainResult(name=mode.name, phase=phase.name, s_per_step=round(med, 3), steps_per_s=round(1 / med, 3),
                       p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)), max_abs_diff=0.0,
                       samples_per_s=round(phase.batch_size / med, 2),
                       peak_memory_mb=round(_peak_memory_mb(device), 1), warmup_s=round(warmup_s, 2)), first_loss


def run_train_bench(kind: str, device: torch.device, modes: list[str], steps: int, phases: list[str] | None = None,
                    warmup: int = 1, batch_size: int | None = None, weights: Path | None = None) -> list[TrainResult]:
    unknown = [m for m in modes if m not in TRAIN_MODES]
    if unknown:
        raise UserError(f"unknown training mode(s) {unknown}: choose from {', '.join(TRAIN_MODES)}")
    if "eager-fp32" not in modes:
        modes = ["eager-fp32", *modes]
    available = train_phases(kind, batch_size)
    if phases:
        bad = [p for p in phases if p not in {ph.name for ph in available}]
        if bad:
            raise UserError(f"unknown phase(s) {bad} for {kind}: choose from {', '.join(p.name for p in available)}")
        available = [p for p in available if p.name in phases]
    agent = load_bench_agent(kind, weights)
    missing = [p.name for p in available if getattr(agent, MODEL_OF_PHASE[p.name]) is None]
    if missing:
        raise UserError(f"these weights have no model for phase(s) {missing}: pass --phases without them")
    results = []
    for phase in available:
        reference = None
        for name in modes:
            result, loss = bench_train_step(agent, phase, TRAIN_MODES[name], device, steps, warmup)
            reference = loss if reference is None else reference
            result.max_abs_diff = round(abs(loss - reference), 6)
            results.append(result)
    return results


def format_train_table(results: list[TrainResult]) -> str:
    head = (f"{'phase':13s} {'mode':15s} {'s/step':>8s} {'steps/s':>8s} {'samples/s':>10s} {'p95 ms':>9s} "
            f"{'peak MB':>8s} {'warm-up s':>9s} {'|loss diff|':>11s}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.phase:13s} {r.name:15s} {r.s_per_step:8.3f} {r.steps_per_s:8.3f} {r.samples_per_s:10.2f} "
                     f"{r.p95_ms:9.0f} {r.peak_memory_mb:8.0f} {r.warmup_s:9.1f} {r.max_abs_diff:11.5f}")
    return "\n".join(lines)
