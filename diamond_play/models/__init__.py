"""torch.nn modules of DIAMOND: blocks, U-Net, EDM denoiser, reward/termination model, actor-critic, agent."""

from diamond_play.models.actor_critic import ActorCritic
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import Denoiser, InnerModel
from diamond_play.models.rew_end import RewEndModel
from diamond_play.models.unet import UNet

__all__ = ["ActorCritic", "Agent", "Denoiser", "InnerModel", "RewEndModel", "UNet"]
