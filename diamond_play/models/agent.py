"""The agent: the world model's denoiser (+ upsampler), reward/termination model and actor-critic together.

Its state dict uses the official flat key layout (`denoiser.`, `upsampler.`, `rew_end_model.`, `actor_critic.`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from diamond_play.config import WeightsConfig
from diamond_play.models.actor_critic import ActorCritic
from diamond_play.models.denoiser import Denoiser
from diamond_play.models.rew_end import RewEndModel

COMPONENTS = ("denoiser", "upsampler", "rew_end_model", "actor_critic")


class Agent(nn.Module):
    denoiser: Denoiser
    upsampler: Denoiser | None
    rew_end_model: RewEndModel | None
    actor_critic: ActorCritic | None

    def __init__(self, config: WeightsConfig) -> None:
        super().__init__()
        self.config = config
        self.weights_path: Path | None = None  # where it was loaded from (spawn points live beside the weights)
        cfg = config.agent
        self.denoiser = Denoiser(cfg.denoiser)
        self.upsampler = Denoiser(cfg.upsampler) if cfg.upsampler is not None else None
        self.rew_end_model = RewEndModel(cfg.rew_end_model) if cfg.rew_end_model is not None else None
        self.actor_critic = ActorCritic(cfg.actor_critic) if cfg.actor_critic is not None else None

    def parameter_counts(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in module.parameters())
                  for name in COMPONENTS if (module := getattr(self, name)) is not None}
        counts["total"] = sum(counts.values())
        return counts
