"""Small random-initialised agents and official-format files for tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch
import yaml

from diamond_play.config import (
    ActorCriticConfig,
    AgentConfig,
    DenoiserConfig,
    InnerModelConfig,
    RewEndModelConfig,
    SigmaDistributionConfig,
    WeightsConfig,
    csgo_sampling,
)
from diamond_play.models.agent import Agent
from diamond_play.weights.official import official_state_dict

ONE_LEVEL = 2 / 255 + 1e-5  # one 8-bit level on the [-1, 1] scale: the optimised modes' documented tolerance


def tiny_atari_agent_config(num_actions: int = 4) -> AgentConfig:
    return AgentConfig(
        denoiser=DenoiserConfig(InnerModelConfig(cond_channels=32, depths=[1, 1], channels=[8, 16],
                                                 attn_depths=[False, True], num_actions=num_actions)),
        rew_end_model=RewEndModelConfig(lstm_dim=16, cond_channels=16, depths=[1, 1], channels=[8, 8],
                                        attn_depths=[False, False], num_actions=num_actions),
        actor_critic=ActorCriticConfig(lstm_dim=16, channels=[8, 8, 16, 16], num_actions=num_actions),
    )


def tiny_csgo_agent_config() -> AgentConfig:
    sigmas = SigmaDistributionConfig(loc=-1.2)
    return AgentConfig(
        denoiser=DenoiserConfig(
            InnerModelConfig(cond_channels=32, depths=[1, 1, 1, 1], channels=[8, 8, 16, 16],
                             attn_depths=[False, False, True, True], num_actions=51, noise_cond_embedding=True),
            sigma_offset_noise=0.1, noise_previous_obs=True, num_autoregressive_steps=4, sigma_distribution=sigmas),
        upsampler=DenoiserConfig(
            InnerModelConfig(num_steps_conditioning=1, cond_channels=32, depths=[1, 1, 1, 1], channels=[8, 8, 8, 16],
                             attn_depths=[False, False, False, True], num_actions=None, noise_cond_embedding=True,
                             is_upsampler=True),
            sigma_offset_noise=0.1, upsampling_factor=5, sigma_distribution=sigmas),
    )


def randomize(agent: Agent, seed: int = 0) -> Agent:
    """Make zero-initialised layers live so outputs depend on every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return agent


def tiny_agent(kind: str = "atari", seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    if kind == "atari":
        cfg = WeightsConfig(agent=tiny_atari_agent_config(), game="Breakout", num_actions=4,
                            action_names=["NOOP", "FIRE", "RIGHT", "LEFT"])
    else:
        cfg = WeightsConfig(agent=tiny_csgo_agent_config(), game="csgo", kind="csgo", num_actions=51,
                            frame_size=[150, 280], sampling=csgo_sampling("quality"))
    return randomize(Agent(cfg).eval(), seed)


def official_yaml(agent_cfg: AgentConfig, num_actions: int) -> dict:
    """The official config/agent/*.yaml layout (hydra `_target_` keys) for an agent config."""

    def denoiser(d: DenoiserConfig | None):
        if d is None:
            return None
        im = d.inner_model
        return {"_target_": "models.diffusion.DenoiserConfig", "sigma_data": d.sigma_data,
                "sigma_offset_noise": d.sigma_offset_noise, "noise_previous_obs": d.noise_previous_obs,
                "upsampling_factor": d.upsampling_factor,
                "inner_model": {"_target_": "models.diffusion.InnerModelConfig", "img_channels": im.img_channels,
                                "num_steps_conditioning": im.num_steps_conditioning,
                                "cond_channels": im.cond_channels, "depths": im.depths, "channels": im.channels,
                                "attn_depths": [int(a) for a in im.attn_depths]}}

    out = {"_target_": "agent.AgentConfig", "denoiser": denoiser(agent_cfg.denoiser)}
    if agent_cfg.upsampler is not None:
        out["upsampler"] = denoiser(agent_cfg.upsampler)
    r, a = agent_cfg.rew_end_model, agent_cfg.actor_critic
    out["rew_end_model"] = None if r is None else {
        "_target_": "models.rew_end_model.RewEndModelConfig", "lstm_dim": r.lstm_dim, "img_channels": r.img_channels,
        "img_size": r.img_size, "cond_channels": r.cond_channels, "depths": r.depths, "channels": r.channels,
        "attn_depths": [int(x) for x in r.attn_depths]}
    out["actor_critic"] = None if a is None else {
        "_target_": "models.actor_critic.ActorCriticConfig", "lstm_dim": a.lstm_dim, "img_channels": a.img_channels,
        "img_size": a.img_size, "channels": a.channels, "down": [int(x) for x in a.down]}
    out["num_actions"] = "???"  # the official files leave it to run time
    return out


def save_official(agent: Agent, folder: Path, name: str) -> tuple[Path, Path]:
    """torch.save(Agent.state_dict()) + its agent YAML, as the official code writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, cfg = folder / f"{name}.pt", folder / f"{name}.yaml"
    torch.save(official_state_dict(agent), ckpt)
    cfg.write_text(yaml.safe_dump(official_yaml(agent.config.agent, agent.config.num_actions), sort_keys=False))
    return ckpt, cfg


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous in DDP tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_window(env: dict, name: str, app: subprocess.Popen, timeout: float = 90.0) -> str:
    """The id of the top-level window whose title contains `name` (SDL titles are not matched by xdotool)."""
    deadline = time.time() + timeout
    while time.time() < deadline and app.poll() is None:
        tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
        for line in tree.splitlines():
            if f'"{name}' in line:
                return line.split()[0]
        time.sleep(0.2)
    raise AssertionError(f"the window did not appear: {app.stderr.read() if app.poll() is not None else ''}")
