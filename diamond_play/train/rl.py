"""Actor-critic learning in imagination (DIAMOND §3 / Appendix): λ-returns and the REINFORCE + value loss.

Rollouts come from the world model; these are the pure pieces the Atari 100k recipe builds on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ActorCriticLossConfig:
    gamma: float = 0.985
    lambda_: float = 0.95
    weight_value_loss: float = 1.0
    weight_entropy_loss: float = 0.001


def lambda_returns(rew: Tensor, end: Tensor, trunc: Tensor, val_bootstrap: Tensor, gamma: float,
                   lambda_: float) -> Tensor:
    """λ-returns over (B, T) rollouts, computed backwards from G_T = V_boot[:, -1]:

    G_t = r_t + γ(1 − e_t)[(1 − tr_t)(1 − λ) + tr_t]·V_boot_t + γλ(1 − (e_t ∨ tr_t))·G_{t+1},

    where V_boot_t = V(o_{t+1}) (the value of the final observation when the episode ended or was truncated at t).
    A truncated step bootstraps fully on V_boot_t; a terminal step does not bootstrap at all.
    """
    end, trunc = end.float(), trunc.float()
    done = torch.maximum(end, trunc)
    g = val_bootstrap[:, -1]
    returns = []
    for t in reversed(range(rew.shape[1])):
        bootstrap = (1 - end[:, t]) * ((1 - trunc[:, t]) * (1 - lambda_) + trunc[:, t]) * val_bootstrap[:, t]
        g = rew[:, t] + gamma * bootstrap + gamma * lambda_ * (1 - done[:, t]) * g
        returns.append(g)
    return torch.stack(returns[::-1], dim=1)


def actor_critic_loss(logits: Tensor, actions: Tensor, values: Tensor, returns: Tensor,
                      cfg: ActorCriticLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """mean(−log π(a)·sg(G − V)) + w_v·MSE(V, G) − w_H·H(π); logits (B, T, A), actions/values/returns (B, T)."""
    log_probs = F.log_softmax(logits, dim=-1)
    log_pi = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    advantage = (returns - values).detach()
    loss_actions = -(log_pi * advantage).mean()
    loss_values = F.mse_loss(values, returns.detach())
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    loss = loss_actions + cfg.weight_value_loss * loss_values - cfg.weight_entropy_loss * entropy
    return loss, {"loss_actions": loss_actions.detach(), "loss_values": loss_values.detach(),
                  "entropy": entropy.detach(), "loss_actor_critic": loss.detach()}
