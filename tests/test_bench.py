"""Execution modes stay within the documented tolerance of eager fp32; the bench command reports them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from helpers import ONE_LEVEL, tiny_agent

import diamond_play
from diamond_play.accel.frame_graph import PredrawnNoise
from diamond_play.accel.inference import fuse_norm_conditioning, is_fused
from diamond_play.accel.modes import EXECUTION_MODES
from diamond_play.bench import synthetic_start
from diamond_play.cli import main
from diamond_play.engine import WorldModelEngine
from diamond_play.errors import UserError
from diamond_play.imagine import imagine_next_frame, predict_low_res
from diamond_play.models.denoiser import make_randn


def first_step(agent, mode_name: str) -> torch.Tensor:
    engine = WorldModelEngine(agent, seed=0, mode=EXECUTION_MODES[mode_name])
    engine.reset(synthetic_start(engine))
    engine.step(1)
    return engine.obs[0, -1].clone()


@pytest.mark.parametrize("mode", ["eager-bf16", "eager-bf16-cl"])
def test_bf16_modes_within_tolerance_on_official_weights(conformance_dir, mode):
    """Documented tolerance: after one 3-step frame, >= 99% of pixels within one 8-bit level of eager fp32."""
    ref = first_step(diamond_play.load_agent(conformance_dir / "atari" / "agent.pt"), "eager-fp32")
    out = first_step(diamond_play.load_agent(conformance_dir / "atari" / "agent.pt"), mode)
    diff = (out - ref).abs()
    assert (diff <= ONE_LEVEL).float().mean() >= 0.99 and diff.mean() < 2e-3


def test_bf16_weight_storage_is_bit_identical_to_autocast(conformance_dir):
    """bf16 modes store conv/linear weights in bf16; autocast over the fp32 weights (same fused conditioning)
    gives the very same frame."""
    agent = diamond_play.load_agent(conformance_dir / "atari" / "agent.pt")
    engine = WorldModelEngine(agent, seed=0, mode=EXECUTION_MODES["eager-bf16"])
    engine.reset(synthetic_start(engine))
    obs, act = engine.obs.clone(), engine.act.clone()
    act[0, -1] = 1
    engine.step(1)
    assert agent.denoiser.inner_model.conv_in.weight.dtype == torch.bfloat16
    assert engine.agent.rew_end_model.lstm.weight_ih_l0.dtype == torch.float32
    assert is_fused(agent.denoiser.inner_model)  # optimised modes fuse the norm conditioning
    assert is_fused(agent.rew_end_model.encoder)

    ref = diamond_play.load_agent(conformance_dir / "atari" / "agent.pt")
    fuse_norm_conditioning(ref.denoiser.inner_model)
    randn = make_randn("cpu", generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = predict_low_res(ref.denoiser, ref.config.sampling.dynamics, obs, act, randn)
    assert torch.equal(engine.obs[0, -1], expected[0].float())


@pytest.mark.slow
def test_compiled_mode_within_tolerance(conformance_dir):
    ref = first_step(diamond_play.load_agent(conformance_dir / "atari" / "agent.pt"), "eager-fp32")
    for mode in ("compiled-fp32", "compiled-bf16-cl"):
        out = first_step(diamond_play.load_agent(conformance_dir / "atari" / "agent.pt"), mode)
        diff = (out - ref).abs()
        assert (diff <= ONE_LEVEL).float().mean() >= 0.99, mode


def test_bench_command_json(atari_weights, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "atari", "--weights", str(atari_weights), "--modes", "eager-bf16-cl", "--frames", "2",
                 "--device", "cpu", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "eager-fp32" in table and "eager-bf16-cl" in table and "dynamics ms" in table
    data = json.loads(out.read_text())
    assert isinstance(data["machine"], str) and [m["name"] for m in data["modes"]] == ["eager-fp32", "eager-bf16-cl"]
    assert "ATen" in data["isa"] and data["isa"] in table  # which vector ISA the kernels used, printed too
    for m in data["modes"]:
        assert {"name", "fps", "p50_ms", "p95_ms", "max_abs_diff"} <= set(m) and m["fps"] > 0
    assert data["modes"][0]["max_abs_diff"] == 0.0
    assert main(["bench", "atari", "--modes", "warp-speed"]) == 2


def test_bench_train_reports_every_phase_and_mode(atari_weights, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "atari", "--weights", str(atari_weights), "--batch-size", "2", "--steps", "1",
                 "--modes", "eager-bf16", "--device", "cpu", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "actor_critic" in table and "rew_end" in table and "s/step" in table
    data = json.loads(out.read_text())
    rows = [(m["phase"], m["name"]) for m in data["modes"]]
    assert rows == [(p, m) for p in ("denoiser", "rew_end", "actor_critic") for m in ("eager-fp32", "eager-bf16")]
    for m in data["modes"]:
        assert m["s_per_step"] > 0 and m["samples_per_s"] > 0
        assert m["max_abs_diff"] < 0.05  # bf16 autocast keeps the loss close to fp32's
    assert main(["bench", "train"]) == 2
    assert main(["bench", "train", "atari", "--phases", "upsampler", "--weights", str(atari_weights)]) == 2


def test_compiled_play_starts_eager_and_switches_when_the_background_compile_is_done(atari_weights):
    from diamond_play.play.session import PlaySession

    agent = diamond_play.load_agent(atari_weights)
    session = PlaySession(agent, seed=0, mode=EXECUTION_MODES["compiled-bf16-cl"])
    engine = session.engine
    status = str(engine.compile_status)
    assert status == "compiling" or status.startswith("compiled in")  # cache: fast
    engine.reset(session.starts.start_state())
    engine.step(1)  # plays at once, eagerly if the compile is still running
    assert session.compiler.thread is not None
    session.compiler.thread.join(timeout=600)
    assert str(engine.compile_status).startswith("compiled"), engine.compile_status
    assert engine.networks.dynamics.batch_fn is not engine.agent.denoiser.denoise_batch
    before = engine.obs[0, -1].clone()
    result = engine.step(1)
    assert result.frame.shape == (64, 64, 3) and not torch.equal(engine.obs[0, -1], before)


def test_headless_compiled_play_compiles_before_the_first_frame_and_replays_exactly(atari_weights, capsys):
    from diamond_play.play.session import PlaySession

    def play() -> list[np.ndarray]:
        session = PlaySession(diamond_play.load_agent(atari_weights), seed=0,
                              mode=EXECUTION_MODES["compiled-bf16-cl"], compile_in_background=False)
        assert str(session.engine.compile_status).startswith("compiled in"), session.engine.compile_status
        assert session.compiler.thread is None
        frames = [session.step(a).frame.copy() for a in (1, 2, 3, 0)]
        session.close()
        return frames

    first, again = play(), play()
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "3",
                 "--actions", "random", "--seed", "0", "--mode", "compiled-bf16-cl"]) == 0
    assert "compiled-bf16-cl compiled in" in capsys.readouterr().out
    assert main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "1",
                 "--actions", "random", "--mode", "warp-speed"]) == 2
    assert "unknown mode 'warp-speed'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["atari", "csgo"])
def test_predrawn_noise_gives_the_eager_frame(kind):
    """CUDA-graph modes draw a frame's noise into fixed buffers before replaying it: same generator state, same
    frame, bit for bit (CS:GO quality covers the churn and conditioning-noise draws too)."""
    engine = WorldModelEngine(tiny_agent(kind), seed=0)
    engine.reset(synthetic_start(engine))

    def imagine(randn):
        frame = imagine_next_frame(engine.networks.dynamics, engine.networks.upsampler, engine.sampling, engine.obs,
                                   engine.act, randn, engine.full_res)
        return frame.low_res, frame.full_res

    expected = imagine(make_randn("cpu", generator=torch.Generator().manual_seed(5)))
    noise = PredrawnNoise.laid_out_by(imagine, torch.device("cpu"))
    noise.draw(torch.Generator().manual_seed(5))
    low_res, full_res = imagine(noise)
    assert torch.equal(low_res, expected[0])
    if kind == "csgo":
        assert torch.equal(full_res, expected[1]) and len(noise.buffers) > 13  # 1 + 10 steps' x, churn, cond noise
    else:
        assert full_res is None and len(noise.buffers) == 1
    with pytest.raises(RuntimeError, match="noise layout"):
        noise((1, 2, 3))  # a draw the layout does not have


def test_cuda_graph_modes_refuse_a_cpu_with_what_to_use(atari_weights, capsys):
    with pytest.raises(UserError, match="needs a GPU"):
        WorldModelEngine(diamond_play.load_agent(atari_weights), mode=EXECUTION_MODES["graph-bf16-cl"])
    assert main(["bench", "atari", "--weights", str(atari_weights), "--modes", "graph-bf16-cl", "--device",
                 "cpu"]) == 2
    assert "compiled-bf16-cl" in capsys.readouterr().err


def test_auto_mode_on_a_cpu_follows_the_measured_bf16_speed():
    from diamond_play.accel.modes import BF16_MIN_SPEEDUP, cpu_bf16_speedup, default_execution_mode

    cpu = torch.device("cpu")
    bf16_fast = cpu_bf16_speedup() >= BF16_MIN_SPEEDUP
    assert default_execution_mode(cpu).name == ("eager-bf16-cl" if bf16_fast else "eager-fp32")
    assert default_execution_mode(cpu, interactive=True).name == ("compiled-bf16-cl" if bf16_fast else "compiled-fp32")


def test_auto_mode_picks_fp32_where_bf16_is_only_emulated():
    """With oneDNN held to AVX-512 without bf16 instructions (Skylake to Ice Lake servers; any CPU with less), bf16
    convolutions are emulated and slower: auto must not pick a bf16 mode there."""
    import subprocess
    import sys

    code = ("import torch; from diamond_play.accel.modes import cpu_bf16_speedup, default_execution_mode as d; "
            "print(f'{cpu_bf16_speedup():.2f}', d(torch.device('cpu')).name, d(torch.device('cpu'), True).name)")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    speedup, headless, window = out.split()
    assert float(speedup) < 1 and (headless, window) == ("eager-fp32", "compiled-fp32"), out
