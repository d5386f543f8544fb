"""Whole-frame CUDA graphs (GPU only; scripts/gpu_check.sh runs these on a lent GPU, CPUs skip them)."""

from __future__ import annotations

import pytest
import torch
from helpers import ONE_LEVEL, tiny_agent

import diamond_play
from diamond_play.accel.compile_cache import AOTCompiled
from diamond_play.accel.modes import EXECUTION_MODES, with_levers
from diamond_play.bench import synthetic_start
from diamond_play.engine import WorldModelEngine
from diamond_play.play.compile import NetworkCompiler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def frames(agent, mode: str, steps: int = 3, **levers) -> list[torch.Tensor]:
    engine = WorldModelEngine(agent, device="cuda", seed=0, mode=with_levers(EXECUTION_MODES[mode], **levers))
    engine.reset(synthetic_start(engine))
    out = []
    for _ in range(steps):
        engine.step(1 if engine.config.kind == "atari" else engine.act[0, -1].cpu().numpy())
        out.append((engine.full_res if engine.full_res is not None else engine.obs[:, -1]).float().cpu().clone())
    return out


@pytest.mark.parametrize("kind", ["atari", "csgo"])
def test_graph_replay_matches_the_same_kernels_run_eagerly(kind):
    """Same kernels, same noise stream: the captured frame is the eager one (a few pixels may differ by a level
    where cuDNN picks another algorithm under capture)."""
    eager = frames(tiny_agent(kind), "eager-bf16-cl")
    graph = frames(tiny_agent(kind), "graph-bf16-cl")
    for e, g in zip(eager, graph, strict=True):
        assert ((e - g).abs() <= ONE_LEVEL).float().mean() >= 0.99


def test_compiled_graph_within_tolerance_of_eager_fp32(conformance_dir):
    load = lambda: diamond_play.load_agent(conformance_dir / "atari" / "agent.pt")  # noqa: E731
    ref = frames(load(), "eager-fp32", steps=1)[0]
    out = frames(load(), "compiled-graph-bf16-cl", steps=1)[0]
    assert ((out - ref).abs() <= ONE_LEVEL).float().mean() >= 0.99


def test_aot_compiled_frame_graph_within_tolerance_of_eager_fp32(conformance_dir):
    """gpu_compiler="aoti": AOTInductor packages (cached on disk) captured in the whole-frame graph."""
    load = lambda: diamond_play.load_agent(conformance_dir / "atari" / "agent.pt")  # noqa: E731
    ref = frames(load(), "eager-fp32", steps=1)[0]
    out = frames(load(), "compiled-graph-bf16-cl", steps=1, gpu_compiler="aoti")[0]
    assert ((out - ref).abs() <= ONE_LEVEL).float().mean() >= 0.99


def test_graph_mode_plays_at_once_and_captures_the_compiled_frame_when_the_background_build_is_done():
    mode = with_levers(EXECUTION_MODES["compiled-graph-bf16-cl"], gpu_compiler="aoti")
    engine = WorldModelEngine(tiny_agent("csgo"), device="cuda", seed=0, mode=mode, defer_compile=True)
    reference = WorldModelEngine(tiny_agent("csgo"), device="cuda", seed=0, mode=EXECUTION_MODES["graph-bf16-cl"])
    assert str(engine.compile_status) == "compiling"
    compiler = NetworkCompiler(engine)
    compiler.start()
    assert compiler.thread is None  # waits for the first capture: no GPU work may overlap it

    def step_both() -> float:
        for e in (engine, reference):
            e.step(e.act[0, -1].cpu().numpy())
        return ((engine.full_res - reference.full_res).abs() <= ONE_LEVEL).float().mean().item()

    for e in (engine, reference):
        e.reset(synthetic_start(e))
    assert step_both() >= 0.99  # the eager frame graph, captured at once
    assert compiler.thread is not None and engine.frame.captures == 1
    compiler.thread.join(timeout=600)
    assert str(engine.compile_status).startswith("compiled"), engine.compile_status
    assert engine.networks.upsampler is not None and isinstance(engine.networks.upsampler.batch_fn, AOTCompiled)
    assert step_both() >= 0.99  # captured again, around the compiled networks
    assert engine.frame.captures == 2
    compiler.close()
