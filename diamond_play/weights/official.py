"""Official DIAMOND checkpoints (`Agent.state_dict()` saved with torch.save): safe reading, architecture inference
from tensor shapes, the official YAML config layout, and conversion to the project's weights directory."""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diamond_play import __version__
from diamond_play.config import (
    ATARI_SAMPLER,
    ATARI_SIGMA_OFFSET_NOISE,
    CSGO_FULL_RES,
    CSGO_NUM_ACTIONS,
    CSGO_SIGMA_LOC,
    CSGO_SIGMA_OFFSET_NOISE,
    CSGO_UPSAMPLING_FACTOR,
    ActorCriticConfig,
    AgentConfig,
    DenoiserConfig,
    InnerModelConfig,
    RewEndModelConfig,
    SamplingConfig,
    SigmaDistributionConfig,
    WeightsConfig,
    csgo_sampling,
    read_yaml,
)
from diamond_play.envs import csgo
from diamond_play.envs.atari import ATARI_100K_GAMES, action_meanings, canonical_game
from diamond_play.errors import UserError
from diamond_play.models.agent import COMPONENTS, Agent
from diamond_play.weights.format import file_sha256
from diamond_play.weights.state_dict import load_state_dict_checked


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """torch.load with weights_only=True, turning every failure into a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist: check the path, or fetch official weights with "
                        "`diamond-play download atari GAME` / `diamond-play download csgo`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{str(path)!r} holds objects other than plain tensors, which are refused because loading "
                        "them could run code: export the agent's state_dict() with torch.save") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{str(path)!r} is truncated or corrupt ({reason}): download or copy it again") from None
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise UserError(f"{str(path)!r} is not a DIAMOND agent checkpoint (expected a flat dict of tensors with keys "
                        "'denoiser.…'): use a file from checkpoints/agent_versions/ or the Hugging Face hub")
    if not any(k.startswith("denoiser.") for k in obj):
        raise UserError(f"{str(path)!r} has no 'denoiser.' tensors, so it is not a DIAMOND agent checkpoint: use a "
                        "file from checkpoints/agent_versions/ or the Hugging Face hub")
    return dict(obj)


# ---------------------------------------------------------------------------------------------------------------
# Architecture inference from shapes

def _indices(sd: dict[str, Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _unet_levels(sd: dict[str, Tensor], blocks_prefix: str, num_levels: int) -> tuple[list[int], list[int], list[bool]]:
    depths, channels, attn = [], [], []
    for i in range(num_levels):
        block = f"{blocks_prefix}.{i}.resblocks"
        depths.append(len(_indices(sd, rf"{re.escape(block)}\.(\d+)\.")))
        channels.append(sd[f"{block}.0.conv1.weight"].shape[0])
        attn.append(f"{block}.0.attn.qkv_proj.weight" in sd)
    return depths, channels, attn


def _infer_denoiser(sd: dict[str, Tensor], prefix: str) -> DenoiserConfig:
    p = f"{prefix}.inner_model."
    cond_channels = sd[f"{p}noise_emb.weight"].shape[1] * 2
    img_channels = sd[f"{p}conv_out.weight"].shape[0]
    in_frames = sd[f"{p}conv_in.weight"].shape[1] // img_channels
    noise_cond = f"{p}noise_cond_emb.weight" in sd
    num_levels = len(_indices(sd, rf"{re.escape(p)}unet\.d_blocks\.(\d+)\."))
    depths, channels, attn = _unet_levels(sd, f"{p}unet.d_blocks", num_levels)
    if f"{p}act_emb.0.weight" in sd:
        num_actions, emb_dim = sd[f"{p}act_emb.0.weight"].shape
        n, is_upsampler = cond_channels // emb_dim, False
    else:
        num_actions, n, is_upsampler = None, in_frames - 2, True
    inner = InnerModelConfig(img_channels=img_channels, num_steps_conditioning=n, cond_channels=cond_channels,
                             depths=depths, channels=channels, attn_depths=attn, num_actions=num_actions,
                             noise_cond_embedding=noise_cond, is_upsampler=is_upsampler)
    csgo_branch = noise_cond  # only the CS:GO code embeds the conditioning noise level
    return DenoiserConfig(
        inner_model=inner,
        sigma_offset_noise=CSGO_SIGMA_OFFSET_NOISE if csgo_branch else ATARI_SIGMA_OFFSET_NOISE,
        noise_previous_obs=csgo_branch and not is_upsampler,
        upsampling_factor=CSGO_UPSAMPLING_FACTOR if is_upsampler else None,
        num_autoregressive_steps=4 if csgo_branch and not is_upsampler else 1,
        sigma_distribution=SigmaDistributionConfig(loc=CSGO_SIGMA_LOC) if csgo_branch else SigmaDistributionConfig(),
    )


def _infer_rew_end(sd: dict[str, Tensor]) -> RewEndModelConfig:
    p = "rew_end_model."
    num_levels = len(_indices(sd, rf"{p}encoder\.blocks\.(\d+)\.")) - 1  # the last block is the attention block
    depths, channels, attn = _unet_levels(sd, f"{p}encoder.blocks", num_levels)
    num_actions, cond_channels = sd[f"{p}act_emb.weight"].shape
    lstm_in = sd[f"{p}lstm.weight_ih_l0"].shape[1]
    img_size = math.isqrt(lstm_in // channels[-1]) * 2 ** (num_levels - 1)
    return RewEndModelConfig(lstm_dim=sd[f"{p}lstm.weight_hh_l0"].shape[1],
                             img_channels=sd[f"{p}encoder.conv_in.weight"].shape[1] // 2, img_size=img_size,
                             cond_channels=cond_channels, depths=depths, channels=channels, attn_depths=attn,
                             num_actions=num_actions)


def _infer_actor_critic(sd: dict[str, Tensor], img_size: int) -> ActorCriticConfig:
    p = "actor_critic.encoder.encoder."
    blocks = _indices(sd, rf"{re.escape(p)}(\d+)\.f\.")
    channels = [sd[f"{p}{i}.f.2.weight"].shape[0] for i in blocks]
    # MaxPool layers have no tensors but shift the Sequential indices: a gap of 2 means a pool after the block.
    down = [b - a == 2 for a, b in zip(blocks, blocks[1:], strict=False)]
    lstm_in = sd["actor_critic.lstm.weight_ih"].shape[1]
    down.append(channels[-1] * (img_size // 2 ** (sum(down) + 1)) ** 2 == lstm_in)
    return ActorCriticConfig(lstm_dim=sd["actor_critic.lstm.weight_hh"].shape[1],
                             img_channels=sd[f"{p}0.weight"].shape[1], img_size=img_size, channels=channels,
                             down=down, num_actions=sd["actor_critic.actor_linear.weight"].shape[0])


def infer_agent_config(sd: dict[str, Tensor]) -> AgentConfig:
    """Rebuild the architecture of an official checkpoint from its tensor shapes alone."""
    try:
        rew_end = _infer_rew_end(sd) if any(k.startswith("rew_end_model.") for k in sd) else None
        img_size = rew_end.img_size if rew_end is not None else 64
        return AgentConfig(
            denoiser=_infer_denoiser(sd, "denoiser"),
            upsampler=_infer_denoiser(sd, "upsampler") if any(k.startswith("upsampler.") for k in sd) else None,
            rew_end_model=rew_end,
            actor_critic=_infer_actor_critic(sd, img_size) if any(k.startswith("actor_critic.") for k in sd) else None,
        )
    except (KeyError, IndexError, ZeroDivisionError) as e:
        raise UserError(f"cannot infer the architecture from the checkpoint (no tensor {e}): pass the official "
                        "agent config with --config") from None


# ---------------------------------------------------------------------------------------------------------------
# Official YAML (config/agent/*.yaml, with hydra `_target_` keys)

_OFFICIAL_KEYS = {
    "denoiser": {"sigma_data", "sigma_offset_noise", "noise_previous_obs", "upsampling_factor", "inner_model"},
    "inner_model": {"img_channels", "num_steps_conditioning", "cond_channels", "depths", "channels", "attn_depths",
                    "num_actions", "is_upsampler"},
    "rew_end_model": {"lstm_dim", "img_channels", "img_size", "cond_channels", "depths", "channels", "attn_depths",
                      "num_actions"},
    "actor_critic": {"lstm_dim", "img_channels", "img_size", "channels", "down", "num_actions"},
}


def _is_set(value: Any) -> bool:
    # Hydra placeholders ("???", "${env.num_actions}") mean "filled in at run time": use the inferred value.
    return value is not None and not (isinstance(value, str) and (value == "???" or value.startswith("${")))


def _overlay(target: Any, section: dict[str, Any], kind: str, where: str) -> None:
    if not isinstance(section, dict):
        raise UserError(f"official config section {where!r} must be a mapping")
    for key, value in section.items():
        if key == "_target_" or key == "inner_model" or not _is_set(value):
            continue
        if key not in _OFFICIAL_KEYS[kind]:
            raise UserError(f"unknown key {where}.{key} in the official config: is this a DIAMOND agent config "
                            "(config/agent/*.yaml)?")
        current = getattr(target, key)
        if isinstance(current, list):
            value = [type(current[0])(v) for v in value] if current else list(value)
        elif isinstance(current, bool):
            value = bool(value)
        elif isinstance(current, (int, float)) and current is not None:
            value = type(current)(value)
        setattr(target, key, value)


def agent_config_from_official(data: Any, sd: dict[str, Tensor]) -> AgentConfig:
    """The official agent YAML layered over the shape-inferred config (which fills run-time fields)."""
    if isinstance(data, dict) and "agent" in data and "denoiser" not in data:
        data = data["agent"]  # a whole trainer config was given
    if not isinstance(data, dict) or "denoiser" not in data:
        raise UserError("the official config has no 'denoiser' section: pass config/agent/<name>.yaml")
    unknown = set(data) - {"_target_", "denoiser", "upsampler", "rew_end_model", "actor_critic", "num_actions"}
    if unknown:
        raise UserError(f"unknown key(s) {sorted(unknown)} in the official agent config")
    cfg = infer_agent_config(sd)
    for name in ("denoiser", "upsampler"):
        section, target = data.get(name), getattr(cfg, name)
        if section is None or target is None:
            if (section is None) != (target is None):
                raise UserError(f"the official config and the checkpoint disagree on whether there is a {name}: "
                                "pass the config that belongs to this checkpoint")
            continue
        _overlay(target, section, "denoiser", name)
        _overlay(target.inner_model, section.get("inner_model") or {}, "inner_model", f"{name}.inner_model")
    for name in ("rew_end_model", "actor_critic"):
        section, target = data.get(name), getattr(cfg, name)
        if section is not None and target is not None:
            _overlay(target, section, name, name)
    for den in (cfg.denoiser, cfg.upsampler):
        if den is not None:
            den.inner_model.attn_depths = [bool(a) for a in den.inner_model.attn_depths]
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Conversion

def official_weights_config(agent_cfg: AgentConfig, game: str | None, source: Path) -> WeightsConfig:
    provenance = {"source": "official DIAMOND checkpoint", "file": source.name, "sha256": file_sha256(source),
                  "converted_by": f"diamond_play {__version__}"}
    if agent_cfg.upsampler is not None:
        return WeightsConfig(agent=agent_cfg, game=game or "csgo", kind="csgo", num_actions=CSGO_NUM_ACTIONS,
                             action_names=list(csgo.ACTION_NAMES), sampling=csgo_sampling("quality"),
                             frame_size=list(CSGO_FULL_RES), provenance=provenance)
    num_actions = agent_cfg.denoiser.inner_model.num_actions or 0
    if game is None and source.stem.lower() in {g.lower() for g in ATARI_100K_GAMES}:
        game = source.stem
    if game is not None:
        game = canonical_game(game)
        names = list(action_meanings(game))
        if len(names) != num_actions:
            raise UserError(f"the checkpoint has {num_actions} actions but {game} has {len(names)}: "
                            "pass the right --game")
    else:
        game, names = "unknown", [f"action_{i}" for i in range(num_actions)]
    size = agent_cfg.rew_end_model.img_size if agent_cfg.rew_end_model is not None else 64
    return WeightsConfig(agent=agent_cfg, game=game, kind="atari", num_actions=num_actions, action_names=names,
                         sampling=SamplingConfig(dynamics=ATARI_SAMPLER), frame_size=[size, size],
                         provenance=provenance)


def load_official_agent(checkpoint: str | Path, config: str | Path | None = None, game: str | None = None,
                        device: torch.device | str = "cpu") -> Agent:
    """An official .pt (and optionally its agent YAML) as an Agent; the architecture is inferred when no YAML."""
    checkpoint = Path(checkpoint)
    sd = read_official_checkpoint(checkpoint)
    agent_cfg = agent_config_from_official(read_yaml(config), sd) if config is not None else infer_agent_config(sd)
    agent = Agent(official_weights_config(agent_cfg, game, checkpoint))
    load_state_dict_checked(agent, sd, repr(str(checkpoint)))
    return agent.to(device).eval()


def import_official(checkpoint: str | Path, out_dir: str | Path, config: str | Path | None = None,
                    game: str | None = None, overwrite: bool = False, spawn_dir: str | Path | None = None) -> Path:
    """Convert an official checkpoint into a weights directory (the conversion is lossless: same tensors)."""
    from diamond_play.weights.format import save_weights_dir

    agent = load_official_agent(checkpoint, config, game)
    return save_weights_dir(agent, out_dir, overwrite=overwrite, spawn_from=spawn_dir)


def official_state_dict(agent: Agent) -> dict[str, Tensor]:
    """The agent's tensors in the official flat layout (what torch.save(Agent.state_dict()) holds)."""
    return {k: v for k, v in agent.state_dict().items() if k.split(".", 1)[0] in COMPONENTS}
