"""Model structure (parameter counts, key layout) and the denoiser's equations and training loss."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_agent

from diamond_play.accel import inference
from diamond_play.accel.inference import OneStepRewEnd, fuse_norm_conditioning, use_parallel_group_norm
from diamond_play.config import WeightsConfig, atari_agent_config, csgo_agent_config
from diamond_play.models.agent import Agent
from diamond_play.models.blocks import AdaGroupNorm, GroupNorm
from diamond_play.models.denoiser import edm_conditioners, quantize_to_uint8_levels


def meta_agent(cfg: WeightsConfig) -> Agent:
    with torch.device("meta"):
        return Agent(cfg)


def test_atari_paper_parameter_counts_match_official():
    agent = meta_agent(WeightsConfig(agent=atari_agent_config(num_actions=4), game="Breakout"))
    counts = agent.parameter_counts()
    assert counts["denoiser"] == 4_405_955
    assert counts["rew_end_model"] == 5_900_864
    assert counts["actor_critic"] == 3_229_637
    assert len(agent.denoiser.state_dict()) == 236
    # +64 per action for the denoiser, +128 for the reward model, +513 for the actor-critic
    bigger = meta_agent(WeightsConfig(agent=atari_agent_config(num_actions=18), game="Alien")).parameter_counts()
    assert bigger["denoiser"] - counts["denoiser"] == 14 * 64
    assert bigger["rew_end_model"] - counts["rew_end_model"] == 14 * 128
    assert bigger["actor_critic"] - counts["actor_critic"] == 14 * 513


def test_csgo_paper_parameter_counts_match_official():
    agent = meta_agent(WeightsConfig(agent=csgo_agent_config(), game="csgo", kind="csgo", num_actions=51))
    counts = agent.parameter_counts()
    assert counts["denoiser"] == 330_489_219
    assert counts["upsampler"] == 51_149_187
    assert counts["total"] == 381_638_406
    assert len(agent.denoiser.state_dict()) == 303
    assert len(agent.upsampler.state_dict()) == 270
    keys = agent.state_dict().keys()
    assert "denoiser.inner_model.unet.u_blocks.1.resblocks.2.attn.qkv_proj.weight" in keys
    assert "upsampler.inner_model.act_emb.0.weight" not in keys


def test_conditioners_use_effective_sigma_with_offset_noise():
    sigma = torch.tensor([0.0, 1.0])
    cs = edm_conditioners(sigma, None, sigma_data=0.5, sigma_offset_noise=0.3)
    sigma_e = torch.sqrt(sigma**2 + 0.09)
    torch.testing.assert_close(cs.c_in.flatten(), 1 / torch.sqrt(sigma_e**2 + 0.25))
    torch.testing.assert_close(cs.c_skip.flatten(), 0.25 / (sigma_e**2 + 0.25))
    torch.testing.assert_close(cs.c_out.flatten(), sigma_e * torch.sqrt(0.25 / (sigma_e**2 + 0.25)))
    torch.testing.assert_close(cs.c_noise, torch.log(sigma_e) / 4)
    assert torch.equal(cs.c_noise_cond, torch.zeros(2))


def test_quantisation_truncates_like_official():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0, 2 * 100.9 / 255 - 1])
    q = quantize_to_uint8_levels(x)
    levels = torch.round((q + 1) / 2 * 255)
    assert levels.tolist() == [0, 0, 127, 254, 255, 255, 100]  # 127.5 -> 127 and 100.9 -> 100: truncation


@pytest.mark.parametrize("height,width", [(64, 64), (30, 56), (13, 21)])
def test_unet_pads_and_crops_any_size(height, width):
    agent = tiny_agent("atari")
    den = agent.denoiser
    x = torch.randn(2, 3, height, width)
    obs = torch.randn(2, 12, height, width)
    out = den.denoise(x, torch.tensor([1.0, 0.5]), obs, torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]))
    assert out.shape == (2, 3, height, width)
    assert out.min() >= -1 and out.max() <= 1


def test_atari_denoiser_loss_trains_and_respects_padding():
    agent = tiny_agent("atari").train()
    den = agent.denoiser
    obs = torch.rand(3, 6, 3, 64, 64) * 2 - 1
    act = torch.randint(0, 4, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :3] = False  # left padding at an episode start
    g = torch.Generator().manual_seed(0)
    loss, metrics = den.loss(obs, act, mask, generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss) and float(metrics["loss_denoising"]) == pytest.approx(loss.item())
    loss.backward()
    grads = [p.grad for p in den.parameters() if p.requires_grad]
    assert all(gr is not None for gr in grads)
    # Same generator seed -> same loss; a batch made only of padding gives 0, not NaN.
    den.zero_grad()
    again, _ = den.loss(obs, act, mask, generator=torch.Generator().manual_seed(0))
    assert again.item() == pytest.approx(loss.item())
    empty, _ = den.loss(obs, act, torch.zeros(3, 6, dtype=torch.bool))
    assert empty.item() == 0.0


def test_csgo_dynamics_and_upsampler_losses():
    agent = tiny_agent("csgo").train()
    obs = torch.rand(2, 8, 3, 30, 56) * 2 - 1
    act = torch.zeros(2, 8, 51)
    act[:, :, 0] = 1
    act[:, :, 13 + 11] = 1
    act[:, :, 36 + 7] = 1
    mask = torch.ones(2, 8, dtype=torch.bool)
    loss, _ = agent.denoiser.loss(obs, act, mask)  # 4 conditioning frames, 4 autoregressive predictions
    assert torch.isfinite(loss)
    full = torch.rand(2, 2, 3, 150, 280) * 2 - 1
    up_loss, _ = agent.upsampler.loss(obs[:, :2], None, mask[:, :2], full_res=full)
    assert torch.isfinite(up_loss)
    up_loss.backward()
    assert agent.upsampler.inner_model.conv_in.weight.grad is not None


def test_rew_end_and_actor_critic_shapes():
    agent = tiny_agent("atari")
    obs = torch.rand(2, 5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        rew, end, (h, c) = agent.rew_end_model.predict_rew_end(obs, torch.zeros(2, 5, dtype=torch.long), obs)
        assert rew.shape == (2, 5, 3) and end.shape == (2, 5, 2) and h.shape == (1, 2, 16)
        logits, value, (h, c) = agent.actor_critic.predict_act_value(obs[:, 0], None)
    assert logits.shape == (2, 4) and value.shape == (2,) and h.shape == (2, 16)


@pytest.mark.parametrize("kind", ["atari", "csgo"])
def test_fused_norm_conditioning_matches_per_norm_linears(kind):
    """The optimised modes' one-matmul conditioning gives the same denoiser output, and state dicts are unchanged."""
    torch.manual_seed(0)
    agent = tiny_agent(kind).eval()  # randomised weights (none left at zero)
    inner = agent.denoiser.inner_model
    cfg = inner.cfg
    h, w = (30, 56) if kind == "csgo" else (64, 64)
    x = torch.randn(2, 3, h, w)
    obs = torch.randn(2, 3 * cfg.num_steps_conditioning, h, w)
    act = torch.zeros(2, cfg.num_steps_conditioning, cfg.num_actions) if kind == "csgo" else torch.ones(
        2, cfg.num_steps_conditioning, dtype=torch.long)
    c_noise, c_noise_cond = torch.tensor([0.3, -0.2]), torch.zeros(2)
    keys = set(agent.state_dict())
    with torch.no_grad():
        expected = inner(x, c_noise, c_noise_cond, obs, act)
        fuse_norm_conditioning(inner)
        fused = inner(x, c_noise, c_noise_cond, obs, act)
    assert set(agent.state_dict()) == keys
    assert expected.abs().max() > 0.01 and torch.allclose(fused, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_group_norm_matches_native_group_norm(channels_last, monkeypatch):
    """The GPU inference path's GroupNorm (per-channel statistics combined into groups, applied as one affine)
    gives the native norms' outputs, for plain and adaptive norms, any batch, either memory layout."""
    monkeypatch.setattr(inference, "PARALLEL_GN_MIN_GROUP_ELEMENTS", 1)  # small maps take the parallel path too
    torch.manual_seed(0)
    x = torch.randn(3, 64, 9, 14) * torch.linspace(0.5, 4, 64)[:, None, None] + torch.linspace(-3, 5, 64)[:, None, None]
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    plain, ada = torch.nn.Sequential(GroupNorm(64)), torch.nn.ModuleList([AdaGroupNorm(64, 16)])
    torch.nn.init.normal_(plain[0].norm.weight)
    torch.nn.init.normal_(plain[0].norm.bias)
    cond = torch.randn(3, 16)
    with torch.no_grad():
        expected = plain(x), ada[0](x, cond)
        use_parallel_group_norm(plain)
        use_parallel_group_norm(ada)
        assert type(plain[0]) is inference.ParallelStatsGroupNorm and ada[0].parallel_stats
        got = plain(x), ada[0](x, cond)
    for e, g in zip(expected, got, strict=True):
        assert e.abs().max() > 0.5 and torch.allclose(g, e, atol=2e-5, rtol=1e-5)


def test_rew_end_one_step_inference_matches_the_sequence_model():
    """The play engine's optimised per-frame call (fused norm conditioning, one-matmul LSTM step) steps through a
    sequence like the reference model does, state and all; with bf16 LSTM weights it stays close."""
    model = tiny_agent("atari").rew_end_model.eval()
    obs = torch.rand(2, 6, 3, 64, 64) * 2 - 1
    act = torch.randint(0, 4, (2, 5))
    keys = set(model.state_dict())
    with torch.no_grad():
        rew, end, state = model.predict_rew_end(obs[:, :-1], act, obs[:, 1:])
        fuse_norm_conditioning(model.encoder)
        one_step = OneStepRewEnd(model)
        step_state = None
        for t in range(5):
            r, e, step_state = one_step(obs[:, t:t + 1], act[:, t:t + 1], obs[:, t + 1:t + 2], step_state)
            assert torch.allclose(r, rew[:, t:t + 1], atol=1e-5) and torch.allclose(e, end[:, t:t + 1], atol=1e-5)
    assert rew.abs().max() > 0.01
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state, step_state, strict=True))
    assert set(model.state_dict()) == keys
    with pytest.raises(ValueError, match="one time step"):
        one_step(obs[:, :2], act[:, :2], obs[:, 1:3])
    one_step = OneStepRewEnd(model, torch.bfloat16)
    with torch.no_grad():
        step_state = None
        for t in range(5):
            r, e, step_state = one_step(obs[:, t:t + 1], act[:, t:t + 1], obs[:, t + 1:t + 2], step_state)
    assert step_state[0].dtype == torch.float32 and step_state[1].dtype == torch.float32
    assert torch.allclose(r, rew[:, -1:], atol=2e-2) and torch.allclose(e, end[:, -1:], atol=2e-2)
    assert all(torch.allclose(a, b, atol=2e-2) for a, b in zip(state, step_state, strict=True))
