"""`diamond-play bench serve`: the real server on 127.0.0.1 and real WebSocket clients on this machine, each client
playing as a person would (a key change every `INPUT_PERIOD_S`), measured per number of sessions with and without
cross-session batching."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from websockets.sync.client import connect

from diamond_play.accel.modes import ExecutionMode
from diamond_play.errors import UserError
from diamond_play.serve.app import ServeOptions, create_app
from diamond_play.serve.catalog import build_catalog
from diamond_play.serve.server import serve_in_thread

INPUT_PERIOD_S = 0.25  # a key change four times a second, alternating RIGHT and LEFT
WARMUP_TIMEOUT_S = 600.0  # a compiled mode compiles (every batch size) before its figures count


@dataclass
class ClientLog:
    """What one client saw while measured."""

    frames: int = 0
    bytes: int = 0
    latencies_s: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    error: str = ""


@dataclass
class ServeBenchResult:
    sessions: int
    batch: bool
    fps: list[float]
    """Frames received per second, per session."""
    latency_p50_ms: float
    latency_p95_ms: float
    """From sending a key change to receiving the first frame stepped with it."""
    encode_ms: float
    kb_per_frame: float
    cpu_ms_per_frame: float
    """The whole process's CPU time (server, engines and clients) per frame delivered."""
    model_ms: float
    """The median world-model step as the HUD reports it (a batched step serves every seat in it)."""
    mean_batch: float
    errors: list[str]


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def play_client(host: str, engine_id: str, ready: threading.Barrier, measure: threading.Event, stop: threading.Event,
                log: ClientLog) -> None:
    """Start a session, wait out the warm-up (the engine compiled, every client playing), then play and log."""
    try:
        with connect(f"ws://{host}/ws", max_size=2**22) as ws:
            ws.send(json.dumps({"type": "start", "engine": engine_id}))
            message = json.loads(ws.recv(WARMUP_TIMEOUT_S))
            if message.get("type") != "ready":
                raise RuntimeError(f"no session: {message}")
            ws.send(json.dumps({"type": "input", "keys": ["space"]}))  # launch the ball
            hud: dict = {}
            while not hud.get("step") or hud.get("compile") == "compiling":
                data = ws.recv(WARMUP_TIMEOUT_S)
                hud = json.loads(data) if isinstance(data, str) else hud
            ready.wait(WARMUP_TIMEOUT_S)
            measure.wait(WARMUP_TIMEOUT_S)
            sent: dict[int, float] = {}
            next_input, input_id, timed = time.perf_counter(), 0, set()
            while not stop.is_set():
                now = time.perf_counter()
                if now >= next_input:
                    input_id += 1
                    ws.send(json.dumps({"type": "input", "keys": ["d" if input_id % 2 else "a"], "id": input_id}))
                    sent[input_id] = now
                    next_input += INPUT_PERIOD_S
                try:
                    data = ws.recv(max(0.001, next_input - time.perf_counter()))
                except TimeoutError:
                    continue
                if isinstance(data, str):
                    hud = json.loads(data)
                    continue
                arrived = time.perf_counter()
                log.frames += 1
                log.bytes += len(data)
                log.encode_ms.append(hud.get("encode_ms", 0.0))
                if hud.get("latency_ms") is not None:
                    log.model_ms.append(hud["latency_ms"])
                log.batch.append(hud.get("batch", 1))
                shown = hud.get("input")
                if shown in sent and shown not in timed:
                    timed.add(shown)
                    log.latencies_s.append(arrived - sent[shown])
    except Exception as e:  # reported in the table; the other clients go on
        log.error = f"{type(e).__name__}: {e}"
        ready.abort()


def bench_sessions(weights: Path, device: torch.device, mode: ExecutionMode, sessions: int, batch: bool, fps: float,
                   seconds: float) -> ServeBenchResult:
    options = ServeOptions(device=device, mode=mode, fps=fps, max_sessions=sessions, seed=0, batch=batch)
    app = create_app(build_catalog([], [weights]), options)
    with serve_in_thread(app) as host:
        engine_id = next(iter(app.state.server.catalog))
        logs = [ClientLog() for _ in range(sessions)]
        ready, measure, stop = threading.Barrier(sessions + 1), threading.Event(), threading.Event()
        clients = [threading.Thread(target=play_client, args=(host, engine_id, ready, measure, stop, log),
                                    name=f"bench client {i}", daemon=True) for i, log in enumerate(logs)]
        for client in clients:
            client.start()
        with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: its error is in the table
            ready.wait(WARMUP_TIMEOUT_S)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        measure.set()
        time.sleep(seconds)
        stop.set()
        for client in clients:
            client.join(30)
        cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    frames = sum(log.frames for log in logs)
    latencies = [x for log in logs for x in log.latencies_s]
    pooled = {name: [x for log in logs for x in getattr(log, name)] for name in ("encode_ms", "model_ms", "batch")}
    return ServeBenchResult(
        sessions=sessions, batch=batch, fps=[round(log.frames / wall_s, 2) for log in logs],
        latency_p50_ms=percentile_ms(latencies, 50), latency_p95_ms=percentile_ms(latencies, 95),
        encode_ms=float(np.median(pooled["encode_ms"])) if pooled["encode_ms"] else float("nan"),
        kb_per_frame=sum(log.bytes for log in logs) / max(frames, 1) / 1024,
        cpu_ms_per_frame=cpu_s * 1000 / max(frames, 1),
        model_ms=float(np.median(pooled["model_ms"])) if pooled["model_ms"] else float("nan"),
        mean_batch=float(np.mean(pooled["batch"])) if pooled["batch"] else float("nan"),
        errors=[log.error for log in logs if log.error])


def run_serve_bench(weights: Path, device: torch.device, mode: ExecutionMode, sessions: list[int],
                    batching: list[bool], fps: float, seconds: float) -> list[ServeBenchResult]:
    if not sessions or min(sessions) < 1 or seconds <= 0:
        raise UserError("--sessions takes counts of 1 or more (e.g. 1,2,4), --seconds a positive time")
    results = []
    for n in sessions:
        for batch in batching:
            result = bench_sessions(weights, device, mode, n, batch, fps, seconds)
            print(format_serve_table([result], header=not results), flush=True)
            results.append(result)
    return results


def format_serve_table(results: list[ServeBenchResult], header: bool = True) -> str:
    head = (f"{'sessions':>8s} {'batched':>7s} {'fps/session (min-max)':>22s} {'p50 ms':>7s} {'p95 ms':>7s} "
            f"{'model ms':>8s} {'batch':>5s} {'encode ms':>9s} {'KB/frame':>8s} {'CPU ms/frame':>12s}")
    lines = [head, "-" * len(head)] if header else []
    for r in results:
        spread = f"{np.mean(r.fps):.1f} ({min(r.fps):.1f}-{max(r.fps):.1f})"
        lines.append(f"{r.sessions:8d} {'yes' if r.batch else 'no':>7s} {spread:>22s} {r.latency_p50_ms:7.0f} "
                     f"{r.latency_p95_ms:7.0f} {r.model_ms:8.0f} {r.mean_batch:5.2f} {r.encode_ms:9.2f} "
                     f"{r.kb_per_frame:8.1f} {r.cpu_ms_per_frame:12.0f}")
        lines.extend(f"         error: {e}" for e in r.errors)
    return "\n".join(lines)
