"""Typed configs for every model and sampler, the paper's presets, and strict YAML/dict conversion.

Field names follow the official DIAMOND configs so official YAML files map onto them directly.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from diamond_play.envs.csgo import NUM_ACTIONS as CSGO_NUM_ACTIONS
from diamond_play.errors import UserError

# The paper's noise settings, each named once: the offset noise of the Atari and CS:GO denoisers, the CS:GO models'
# training sigma distribution (log-normal location; the scale is the default 1.2) and the upsampling factor.
ATARI_SIGMA_OFFSET_NOISE = 0.3
CSGO_SIGMA_OFFSET_NOISE = 0.1
CSGO_SIGMA_LOC = -1.2
CSGO_UPSAMPLING_FACTOR = 5


T = TypeVar("T")


@dataclass
class SigmaDistributionConfig:
    """Training noise levels: sigma = exp(N(loc, scale²)), clipped to [sigma_min, sigma_max]."""

    loc: float = -0.4
    scale: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0


@dataclass
class InnerModelConfig:
    """The U-Net F inside the EDM denoiser."""

    img_channels: int = 3
    num_steps_conditioning: int = 4  # L past frames stacked on channels
    cond_channels: int = 256  # width of the (noise + action) conditioning vector
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # ResBlocks per level
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    num_actions: int | None = None  # None: no action embedding (the upsampler)
    noise_cond_embedding: bool = False  # CS:GO branch: embeds the conditioning-frame noise level too
    is_upsampler: bool = False  # adds the bicubic-upsampled low-res frame to the input channels

    def __post_init__(self) -> None:
        self.attn_depths = [bool(a) for a in self.attn_depths]
        if not (len(self.depths) == len(self.channels) == len(self.attn_depths)):
            raise UserError("inner_model: depths, channels and attn_depths must have the same length")
        if self.num_actions is not None and self.cond_channels % self.num_steps_conditioning:
            raise UserError("inner_model: cond_channels must be divisible by num_steps_conditioning")


@dataclass
class DenoiserConfig:
    """EDM preconditioning around the inner model (Karras et al. 2022, with DIAMOND's offset noise)."""

    inner_model: InnerModelConfig
    sigma_data: float = 0.5
    sigma_offset_noise: float = ATARI_SIGMA_OFFSET_NOISE
    noise_previous_obs: bool = False  # CS:GO dynamics: train on noised conditioning frames
    upsampling_factor: int | None = None  # set for the upsampler (5 for CS:GO)
    num_autoregressive_steps: int = 1  # K frames predicted per training segment, each from the previous prediction
    sigma_distribution: SigmaDistributionConfig = field(default_factory=SigmaDistributionConfig)


@dataclass
class RewEndModelConfig:
    """CNN + LSTM that predicts the clipped reward and the episode end from (o_t, a_t, o_t+1)."""

    lstm_dim: int = 512
    img_channels: int = 3
    img_size: int = 64
    cond_channels: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    num_actions: int = 4

    def __post_init__(self) -> None:
        self.attn_depths = [bool(a) for a in self.attn_depths]


@dataclass
class ActorCriticConfig:
    """Shared CNN + LSTM cell with a policy head and a value head."""

    lstm_dim: int = 512
    img_channels: int = 3
    img_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    down: list[bool] = field(default_factory=lambda: [True, True, True, True])
    num_actions: int = 4

    def __post_init__(self) -> None:
        self.down = [bool(d) for d in self.down]


@dataclass
class AgentConfig:
    denoiser: DenoiserConfig
    upsampler: DenoiserConfig | None = None
    rew_end_model: RewEndModelConfig | None = None
    actor_critic: ActorCriticConfig | None = None


@dataclass
class SamplerConfig:
    """Karras schedule + Euler/Heun with optional churn (EDM Algorithm 2) and conditioning noise."""

    num_steps_denoising: int = 3
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1  # 1 = Euler, 2 = Heun (last step is always Euler)
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    s_cond: float = 0.0  # noise added to the conditioning frames at every step (CS:GO dynamics)

    def __post_init__(self) -> None:
        if self.num_steps_denoising < 1:
            raise UserError("sampler: num_steps_denoising must be at least 1")
        if self.order not in (1, 2):
            raise UserError("sampler: order must be 1 (Euler) or 2 (Heun)")


@dataclass
class SamplingConfig:
    """How frames are imagined at play time: dynamics sampler and, for two-stage engines, the upsampler's."""

    dynamics: SamplerConfig = field(default_factory=SamplerConfig)
    upsampler: SamplerConfig | None = None


@dataclass(frozen=True)
class GameKind:
    """What differs between the kinds of engine — an Atari game, CS:GO, a game recorded by a user — said once, so
    the rest of the code asks a question instead of comparing kind names."""

    name: str
    real_game: bool
    """The real game runs beside the world model (ALE): start states come from it, `eval` can collect held-out
    episodes and play an agent in it. Else start states are spawn points shipped with the weights."""
    multi_hot_actions: bool
    """Actions are CS:GO's multi-hot key/mouse vectors instead of discrete action ids."""
    mouse: bool
    """The window grabs the mouse and turns its movement into actions."""
    smooth_scaling: bool
    """The window scales frames smoothly (photographic frames) instead of nearest-neighbour (pixel art)."""
    window_scale: int
    """Window pixels per frame pixel; 0: grow small frames to about 512 pixels."""
    play_horizon: int
    """Imagined steps before play re-seeds from a start state (the official play settings)."""
    horizon_keys: bool
    """Up/Down change the horizon while playing (the official Atari play keys; its CS:GO play has none)."""


GAME_KINDS = {
    kind.name: kind for kind in (
        GameKind("atari", real_game=True, multi_hot_actions=False, mouse=False, smooth_scaling=False, window_scale=0,
                 play_horizon=50, horizon_keys=True),
        GameKind("csgo", real_game=False, multi_hot_actions=True, mouse=True, smooth_scaling=True, window_scale=2,
                 play_horizon=1000, horizon_keys=False),
        GameKind("custom", real_game=False, multi_hot_actions=False, mouse=False, smooth_scaling=False,
                 window_scale=0, play_horizon=1000, horizon_keys=True),
    )
}


@dataclass
class WeightsConfig:
    """Everything in a weights directory's config.yaml besides the tensors."""

    agent: AgentConfig
    game: str
    kind: str = "atari"
    """atari | csgo | custom: the name of the engine's `GameKind` (`game_kind`)."""
    num_actions: int = 4
    action_names: list[str] = field(default_factory=list)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    frame_size: list[int] = field(default_factory=lambda: [64, 64])  # H, W of what the engine shows
    keymap: dict[str, Any] = field(default_factory=dict)  # custom engines: {"keys": {key: action}, "default": a}
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = 1

    @property
    def game_kind(self) -> GameKind:
        return GAME_KINDS[self.kind]


# ---------------------------------------------------------------------------------------------------------------
# Presets: the official agent configs of the Atari 100k models and of the CS:GO models

def atari_agent_config(num_actions: int) -> AgentConfig:
    return AgentConfig(
        denoiser=DenoiserConfig(
            inner_model=InnerModelConfig(cond_channels=256, channels=[64] * 4, num_actions=num_actions),
            sigma_offset_noise=ATARI_SIGMA_OFFSET_NOISE,
        ),
        rew_end_model=RewEndModelConfig(num_actions=num_actions),
        actor_critic=ActorCriticConfig(num_actions=num_actions),
    )


CSGO_LOW_RES = (30, 56)
CSGO_FULL_RES = (150, 280)


def csgo_agent_config() -> AgentConfig:
    csgo_sigmas = SigmaDistributionConfig(loc=CSGO_SIGMA_LOC)
    return AgentConfig(
        denoiser=DenoiserConfig(
            inner_model=InnerModelConfig(
                cond_channels=2048,
                channels=[128, 256, 512, 1024],
                attn_depths=[False, False, True, True],
                num_actions=CSGO_NUM_ACTIONS,
                noise_cond_embedding=True,
            ),
            sigma_offset_noise=CSGO_SIGMA_OFFSET_NOISE,
            noise_previous_obs=True,
            num_autoregressive_steps=4,
            sigma_distribution=csgo_sigmas,
        ),
        upsampler=DenoiserConfig(
            inner_model=InnerModelConfig(
                num_steps_conditioning=1,
                cond_channels=2048,
                channels=[64, 64, 128, 256],
                attn_depths=[False, False, False, True],
                num_actions=None,
                noise_cond_embedding=True,
                is_upsampler=True,
            ),
            sigma_offset_noise=CSGO_SIGMA_OFFSET_NOISE,
            upsampling_factor=CSGO_UPSAMPLING_FACTOR,
            sigma_distribution=dataclasses.replace(csgo_sigmas),
        ),
    )



# Model sizes for the trainers: "paper" is DIAMOND's, "small" trains about 10x faster on a CPU, "tiny" is for tests.
# A recipe sets the fields that come from its data (actions, frame size, conditioning frames) and the user's
# overrides on top (`sized`).
DENOISER_SIZES: dict[str, InnerModelConfig] = {
    "paper": atari_agent_config(4).denoiser.inner_model,
    "small": InnerModelConfig(cond_channels=128, channels=[32] * 4),
    # Three levels keep the always-on attention of the middle blocks at 16x16 for 64x64 frames.
    "tiny": InnerModelConfig(cond_channels=32, channels=[8, 16, 16], depths=[1] * 3, attn_depths=[False] * 3),
}
UPSAMPLER_SIZES: dict[str, InnerModelConfig] = {
    "paper": csgo_agent_config().upsampler.inner_model,  # type: ignore[union-attr]
    "small": InnerModelConfig(cond_channels=128, channels=[32, 32, 64, 64], attn_depths=[False, False, False, True]),
    "tiny": InnerModelConfig(cond_channels=32, channels=[8, 8, 8, 16], depths=[1] * 4,
                             attn_depths=[False, False, False, True]),
}
CSGO_DYNAMICS_SIZES: dict[str, InnerModelConfig] = {
    "paper": csgo_agent_config().denoiser.inner_model,
    "small": InnerModelConfig(cond_channels=256, channels=[32, 64, 128, 128], attn_depths=[False, False, True, True]),
    "tiny": InnerModelConfig(cond_channels=32, channels=[8, 8, 16, 16], depths=[1] * 4,
                             attn_depths=[False, False, True, True]),
}
REW_END_SIZES: dict[str, RewEndModelConfig] = {
    "paper": RewEndModelConfig(),
    "small": RewEndModelConfig(lstm_dim=256, cond_channels=64, channels=[16] * 4),
    # Four levels: the encoder's final attention blocks then run at 8x8 for 64x64 frames.
    "tiny": RewEndModelConfig(lstm_dim=16, cond_channels=16, channels=[8] * 4, depths=[1] * 4),
}
ACTOR_CRITIC_SIZES: dict[str, ActorCriticConfig] = {
    "paper": ActorCriticConfig(),
    "small": ActorCriticConfig(lstm_dim=256, channels=[16, 16, 32, 32]),
    "tiny": ActorCriticConfig(lstm_dim=32, channels=[8] * 4),
}


def sized(preset: T, fields: dict[str, Any], where: str) -> T:
    """A size preset with `fields` set on top (the recipe's, then the user's overrides), checked like any config."""
    return from_dict(type(preset), {**to_dict(preset), **fields}, where)

ATARI_SAMPLER = SamplerConfig(num_steps_denoising=3)
FAST_DYNAMICS_STEPS = 1  # the `fast` preset of one-stage engines: one Euler step (a third of the paper's compute)
CSGO_DYNAMICS_SAMPLERS = {
    "fast": SamplerConfig(num_steps_denoising=1, s_cond=0.005),
    "quality": SamplerConfig(num_steps_denoising=3, s_cond=0.005),
}
CSGO_UPSAMPLER_SAMPLERS = {
    "fast": SamplerConfig(num_steps_denoising=1, sigma_min=1.0, order=2, s_churn=10.0, s_tmin=1.0, s_tmax=5.0,
                          s_noise=0.9),
    "quality": SamplerConfig(num_steps_denoising=10, sigma_min=1.0, order=1, s_churn=10.0, s_tmin=1.0, s_tmax=5.0,
                             s_noise=0.9),
}


def fewer_steps(own: SamplingConfig, steps: int) -> SamplingConfig:
    """`own` with `steps` Euler steps for the dynamics model (noise schedule and the rest unchanged)."""
    return dataclasses.replace(own, dynamics=dataclasses.replace(own.dynamics, num_steps_denoising=steps))


def csgo_sampling(preset: str = "quality") -> SamplingConfig:
    """The paper plays CS:GO with 'quality' (3 + 10 steps); the official trainer.yaml defaults to 'fast' (1 + 1)."""
    if preset not in CSGO_DYNAMICS_SAMPLERS:
        raise UserError(f"unknown CS:GO sampling preset {preset!r}: use one of {sorted(CSGO_DYNAMICS_SAMPLERS)}")
    return SamplingConfig(dynamics=dataclasses.replace(CSGO_DYNAMICS_SAMPLERS[preset]),
                          upsampler=dataclasses.replace(CSGO_UPSAMPLER_SAMPLERS[preset]))


# ---------------------------------------------------------------------------------------------------------------
# Strict dict <-> dataclass conversion

def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-safe data (inf stays a float, which PyYAML writes as .inf)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _convert(tp: Any, value: Any, where: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise UserError(f"config key {where!r} must not be empty")
    tp = inner
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {where!r} must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} must be a mapping, got {value!r}")
        return dict(value)
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"config key {where!r} must be of type {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build a dataclass from a mapping; unknown keys and wrong types are user errors naming the key."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise UserError(f"config section {where or cls.__name__!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown config key(s) {unknown} in {where or cls.__name__!r}; known keys: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"config key {key!r} is missing")
    return cls(**kwargs)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist: check the path")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"config file {str(path)!r} is not valid YAML ({first}): fix or replace it") from None


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
