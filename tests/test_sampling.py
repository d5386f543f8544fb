"""Sampler maths: Karras schedule, Euler/Heun, churn and conditioning noise, seeding."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_agent

from diamond_play.config import SamplerConfig, SamplingConfig, csgo_sampling
from diamond_play.imagine import denoise_fn, imagine_next_frame
from diamond_play.models.denoiser import make_randn
from diamond_play.sampling import churn_gamma, karras_sigmas, sample


def test_karras_schedule_endpoints_and_single_step():
    s = karras_sigmas(3, 2e-3, 5.0, 7)
    assert s.shape == (4,) and s[-1] == 0
    assert s[0].item() == pytest.approx(5.0, rel=1e-6) and s[2].item() == pytest.approx(2e-3, rel=1e-5)
    mid = (5.0 ** (1 / 7) + 0.5 * (2e-3 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7
    assert s[1].item() == pytest.approx(mid, rel=1e-5)
    assert karras_sigmas(1, 2e-3, 5.0, 7).tolist() == pytest.approx([5.0, 0.0], rel=1e-6)


def test_churn_gamma_window_and_cap():
    cfg = SamplerConfig(num_steps_denoising=10, s_churn=10, s_tmin=1, s_tmax=5)
    assert churn_gamma(3.0, cfg) == pytest.approx(math.sqrt(2) - 1)
    assert churn_gamma(0.5, cfg) == 0
    assert churn_gamma(6.0, cfg) == 0
    assert churn_gamma(3.0, SamplerConfig(num_steps_denoising=10, s_churn=1, s_tmin=1, s_tmax=5)) == 0.1


def counting_randn(seed: int = 0):
    calls: list[tuple[int, ...]] = []
    base = make_randn("cpu", generator=torch.Generator().manual_seed(seed))

    def randn(shape):
        calls.append(tuple(shape))
        return base(shape)

    return randn, calls


def test_single_heun_step_is_euler_and_returns_denoised():
    agent = tiny_agent("atari")
    obs = torch.rand(1, 12, 64, 64) * 2 - 1
    act = torch.tensor([[0, 1, 2, 3]])
    randn, calls = counting_randn()
    heun = SamplerConfig(num_steps_denoising=1, order=2)
    x, trajectory = sample(denoise_fn(agent.denoiser, act), obs, (1, 3, 64, 64), heun, randn)
    assert calls == [(1, 3, 64, 64)] and len(trajectory) == 2
    expected = agent.denoiser.denoise(trajectory[0], 5.0, obs, act)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


def test_heun_uses_two_evaluations_per_inner_step():
    agent = tiny_agent("atari")
    evaluations = []

    def den(x, sigma, cond, sigma_cond):
        evaluations.append(float(sigma))
        return agent.denoiser.denoise(x, sigma, cond, torch.zeros(1, 4, dtype=torch.long), sigma_cond)

    randn, _ = counting_randn()
    sample(den, torch.zeros(1, 12, 64, 64), (1, 3, 64, 64), SamplerConfig(num_steps_denoising=3, order=2), randn)
    assert len(evaluations) == 5  # 2 + 2 + 1 (the last step to sigma = 0 is Euler)


def test_csgo_quality_step_draws_and_determinism():
    agent = tiny_agent("csgo")
    obs = torch.rand(1, 4, 3, 30, 56) * 2 - 1
    act = torch.zeros(1, 4, 51)
    prev_full = torch.rand(1, 3, 150, 280) * 2 - 1
    sampling = csgo_sampling("quality")
    randn, calls = counting_randn(3)
    frame = imagine_next_frame(agent.denoiser, agent.upsampler, sampling, obs, act, randn, prev_full)
    assert frame.low_res.shape == (1, 3, 30, 56) and frame.full_res.shape == (1, 3, 150, 280)
    # dynamics: x0, then per step (offset, cond noise) x3; upsampler: x0, then churn on steps with sigma in [1, 5]
    sigmas_up = karras_sigmas(10, 1.0, 5.0, 7)[:-1]
    churn_steps = sum(1 for s in sigmas_up.tolist() if 1 <= s <= 5)
    assert len(calls) == 1 + 2 * 3 + 1 + churn_steps
    randn2, _ = counting_randn(3)
    again = imagine_next_frame(agent.denoiser, agent.upsampler, sampling, obs, act, randn2, prev_full)
    assert torch.equal(frame.full_res, again.full_res)
    randn3, _ = counting_randn(4)
    other = imagine_next_frame(agent.denoiser, agent.upsampler, sampling, obs, act, randn3, prev_full)
    assert not torch.equal(frame.full_res, other.full_res)


def test_two_stage_engine_requires_previous_full_res_frame():
    agent = tiny_agent("csgo")
    randn, _ = counting_randn()
    with pytest.raises(ValueError):
        imagine_next_frame(agent.denoiser, agent.upsampler, SamplingConfig(), torch.zeros(1, 4, 3, 30, 56),
                           torch.zeros(1, 4, 51), randn)
