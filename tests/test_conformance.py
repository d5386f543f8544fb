"""The official code's outputs on small official-format checkpoints (shared/conformance) must be reproduced."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import assert_quantised_close

import diamond_play
from diamond_play.config import SamplerConfig, SamplingConfig, from_dict, read_yaml
from diamond_play.imagine import denoise_fn, imagine_next_frame
from diamond_play.models.denoiser import bicubic_upsample, edm_conditioners
from diamond_play.sampling import sample, sampler_sigmas

RAW = {"atol": 1e-4, "rtol": 1e-4}
# DIAMOND_PLAY_TEST_DEVICE=cuda runs the same comparisons on a GPU (scripts/gpu_check.sh).
DEVICE = torch.device(os.environ.get("DIAMOND_PLAY_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False  # the official outputs are strict fp32
    torch.backends.cudnn.allow_tf32 = False


def load(conformance_dir, game: str):
    return diamond_play.load_agent(conformance_dir / game / "agent.pt", device=DEVICE)


@pytest.fixture(scope="module")
def atari_expected_on_device(atari_expected):
    return {k: v.to(DEVICE) for k, v in atari_expected.items()}


@pytest.fixture(scope="module")
def csgo_expected_on_device(csgo_expected):
    return {k: v.to(DEVICE) for k, v in csgo_expected.items()}


def check_denoiser_calls(denoiser, expected, prefix: str, obs, act, sigma_cond) -> None:
    for k, sigma in enumerate(expected[f"{prefix}_sigmas"].tolist()):
        noisy = expected[f"{prefix}_noisy"][k]
        b = noisy.shape[0]
        sig = torch.full((b,), sigma, device=noisy.device)
        cs = edm_conditioners(sig, sigma_cond, denoiser.cfg.sigma_data, denoiser.cfg.sigma_offset_noise)
        with torch.no_grad():
            out = denoiser.model_output(noisy, obs, act, cs)
            raw = denoiser.denoised_raw(noisy, out, cs)
        torch.testing.assert_close(out, expected[f"{prefix}_model_output"][k], **RAW)
        torch.testing.assert_close(raw, expected[f"{prefix}_denoised_raw"][k], **RAW)
        denoised = denoiser.denoise(noisy, sig, obs, act, sigma_cond=sigma_cond)
        assert_quantised_close(denoised, expected[f"{prefix}_denoised"][k])


def test_atari_denoiser_matches_official(conformance_dir, atari_expected_on_device):
    e = atari_expected_on_device
    agent = load(conformance_dir, "atari")
    obs = e["den_obs"].reshape(2, 12, 64, 64)
    check_denoiser_calls(agent.denoiser, e, "den", obs, e["den_act"], None)


def test_atari_sampler_matches_official(conformance_dir, atari_expected_on_device):
    e = atari_expected_on_device
    agent = load(conformance_dir, "atari")
    cfg = SamplerConfig(num_steps_denoising=3)
    torch.testing.assert_close(sampler_sigmas(cfg, DEVICE), e["smp_sigmas"], rtol=1e-6, atol=0)
    draws = iter([e["smp_randn_0"]])
    _, trajectory = sample(denoise_fn(agent.denoiser, e["den_act"]), e["den_obs"].reshape(2, 12, 64, 64),
                           (2, 3, 64, 64), cfg, lambda shape: next(draws))
    assert len(trajectory) == 4
    for x, expected in zip(trajectory, e["smp_trajectory"], strict=True):
        assert_quantised_close(x, expected, min_fraction=0.99)


def test_atari_rew_end_matches_official(conformance_dir, atari_expected_on_device):
    e = atari_expected_on_device
    model = load(conformance_dir, "atari").rew_end_model
    with torch.no_grad():
        rew, end, (h, c) = model.predict_rew_end(e["rew_obs"], e["rew_act"], e["rew_next_obs"])
        torch.testing.assert_close(rew, e["rew_logits_rew"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(end, e["rew_logits_end"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h, e["rew_hx"], **RAW)
        torch.testing.assert_close(c, e["rew_cx"], **RAW)
        rew2, end2, (h2, c2) = model.predict_rew_end(e["rew2_obs"], e["rew2_act"], e["rew2_next_obs"], (h, c))
    torch.testing.assert_close(rew2, e["rew2_logits_rew"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(end2, e["rew2_logits_end"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2, e["rew2_hx"], **RAW)
    torch.testing.assert_close(c2, e["rew2_cx"], **RAW)


def test_atari_actor_critic_matches_official(conformance_dir, atari_expected_on_device):
    e = atari_expected_on_device
    model = load(conformance_dir, "atari").actor_critic
    hx_cx = (torch.zeros(2, 32, device=DEVICE), torch.zeros(2, 32, device=DEVICE))
    with torch.no_grad():
        for t in range(5):
            logits, value, hx_cx = model.predict_act_value(e["rew_next_obs"][:, t], hx_cx)
            torch.testing.assert_close(logits, e["ac_logits"][:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(value, e["ac_values"][:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hx_cx[0], e["ac_hx_seq"][:, t], **RAW)
            torch.testing.assert_close(hx_cx[1], e["ac_cx_seq"][:, t], **RAW)


def test_csgo_dynamics_and_upsampler_match_official(conformance_dir, csgo_expected_on_device):
    e = csgo_expected_on_device
    agent = load(conformance_dir, "csgo")
    check_denoiser_calls(agent.denoiser, e, "den", e["den_obs"].reshape(1, 12, 30, 56), e["den_act"],
                         e["den_sigma_cond"])
    upsampled = bicubic_upsample(e["up_low_res"], 5)
    torch.testing.assert_close(upsampled, e["up_low_res_upsampled"], **RAW)
    cond = torch.cat([e["up_prev_obs"].reshape(1, 3, 150, 280), upsampled], dim=1)
    check_denoiser_calls(agent.upsampler, e, "up", cond, None, None)


def test_csgo_fast_step_matches_official_with_recorded_draws(conformance_dir, csgo_expected_on_device):
    e = csgo_expected_on_device
    agent = load(conformance_dir, "csgo")
    dyn = official_sampler_section(conformance_dir, "diffusion_sampler_next_obs")
    up = official_sampler_section(conformance_dir, "diffusion_sampler_upsampling")
    torch.testing.assert_close(sampler_sigmas(dyn, DEVICE), e["run_dyn_sigmas"], rtol=1e-6, atol=0)
    torch.testing.assert_close(sampler_sigmas(up, DEVICE), e["run_up_sigmas"], rtol=1e-6, atol=0)

    draws = [e[f"run_randn_{i}"] for i in range(5)]
    shapes_seen = []

    def recorded(shape):
        shapes_seen.append(tuple(shape))
        return draws[len(shapes_seen) - 1]

    act = torch.cat([e["run_act_buffer"][:, :3], e["run_act"][:, None]], dim=1)
    frame = imagine_next_frame(agent.denoiser, agent.upsampler, SamplingConfig(dyn, up), e["run_obs"], act, recorded,
                               prev_full_res=e["up_prev_obs"][:, 0])
    assert shapes_seen == [tuple(d.shape) for d in draws], "random draws must follow the official order"
    assert_quantised_close(frame.low_res, e["run_next_obs_low"], min_fraction=0.99)
    assert_quantised_close(frame.full_res, e["run_next_obs_full"], min_fraction=0.99)


def official_sampler_section(conformance_dir, key: str) -> SamplerConfig:
    data = {k: v for k, v in read_yaml(conformance_dir / "csgo" / "world_model_env.yaml")[key].items()
            if k != "_target_"}
    return from_dict(SamplerConfig, data)
