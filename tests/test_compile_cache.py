"""CPU compiled modes: AOTInductor packages built once, kept on disk, loaded by the next start."""

from __future__ import annotations

import threading
import time

import torch
from helpers import ONE_LEVEL, tiny_agent
from torch import nn

from diamond_play.accel.compile_cache import AOTCompiled, CompileCancelled, compile_cache_dir
from diamond_play.accel.modes import EXECUTION_MODES
from diamond_play.bench import synthetic_start
from diamond_play.engine import WorldModelEngine


def denoiser_inputs(den) -> tuple:
    generator = torch.Generator().manual_seed(0)
    c, h, w = den.cfg.inner_model.img_channels, 64, 64
    n = den.num_steps_conditioning
    noisy = torch.randn(1, c, h, w, generator=generator)
    obs = torch.randn(1, n * c, h, w, generator=generator).clamp(-1, 1)
    act = torch.randint(0, den.cfg.inner_model.num_actions, (1, n), generator=generator)
    return noisy, torch.full((1,), 0.8), obs, act, None


class SmallNet(nn.Module):
    """Small enough to compile in seconds: the cache's bookkeeping, not the U-Net, is what these tests check."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def predict(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * scale


def test_package_is_built_once_then_loaded_again_and_rebuilt_when_broken(tmp_path):
    torch.manual_seed(0)
    net = SmallNet().eval()
    args = (torch.randn(1, 3, 8, 8), torch.full((1, 1, 1, 1), 0.5))
    with torch.no_grad():
        expected = net.predict(*args)
        first = AOTCompiled(net, "predict", cache_dir=tmp_path)
        out = first(*args)
        assert len(first.built) == 1 and first.built[0].parent == tmp_path
        torch.testing.assert_close(out, expected)

        again = AOTCompiled(net, "predict", cache_dir=tmp_path)  # a new start: loads, builds nothing
        assert torch.equal(again(*args), out) and again.built == []

        first.built[0].write_bytes(b"not a package")  # a truncated or foreign file is rebuilt, not fatal
        rebuilt = AOTCompiled(net, "predict", cache_dir=tmp_path)
        assert torch.equal(rebuilt(*args), out) and len(rebuilt.built) == 1

        signature = next(iter(again.runners))
        net.conv.bias.add_(0.1)  # the weights are frozen into the package: new weights, new key
        assert AOTCompiled(net, "predict", cache_dir=tmp_path).package_path(signature) != first.built[0]
    assert [p.name for p in tmp_path.iterdir()] == [first.built[0].name]  # no temporary files left behind


def test_cancel_stops_the_compiler_process_and_leaves_no_package(tmp_path):
    den = tiny_agent("atari").denoiser.eval()
    args = denoiser_inputs(den)
    compiler = AOTCompiled(den, "denoise_batch", cache_dir=tmp_path)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with torch.no_grad():
                compiler(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 120
    while compiler._process is None and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    process = compiler._process
    compiler.cancel()
    thread.join(timeout=60)
    assert process is not None and process.poll() is not None  # the child is gone
    assert len(errors) == 1 and isinstance(errors[0], CompileCancelled)
    assert list(tmp_path.iterdir()) == []


def test_tests_never_write_into_the_users_cache():
    assert "pytest" in str(compile_cache_dir()) or "tmp" in str(compile_cache_dir())


def test_two_stage_engine_compiles_dynamics_and_upsampler_within_tolerance():
    """The CS:GO path: dynamics denoiser and upsampler both run as packages, close to the same mode eagerly."""
    agent = tiny_agent("csgo")
    eager = WorldModelEngine(agent, seed=0, mode=EXECUTION_MODES["eager-bf16-cl"])
    eager.reset(synthetic_start(eager))
    eager.step(synthetic_start(eager).actions[-1])
    compiled = WorldModelEngine(tiny_agent("csgo"), seed=0, mode=EXECUTION_MODES["compiled-bf16-cl"])
    assert isinstance(compiled.networks.upsampler.batch_fn, AOTCompiled)
    compiled.reset(synthetic_start(compiled))
    compiled.step(synthetic_start(compiled).actions[-1])
    assert compiled.full_res is not None and eager.full_res is not None
    for got, want in ((compiled.obs[0, -1], eager.obs[0, -1]), (compiled.full_res, eager.full_res)):
        diff = (got - want).abs()
        assert (diff <= ONE_LEVEL).float().mean() >= 0.99
