"""Actor-critic learning in imagination (the DIAMOND paper, section 3 and appendix): imagined environments,
rollouts, λ-returns and the REINFORCE + value loss.

`ImaginedEnvs` follows the official world-model env: each environment starts from a dataset segment of L frames
(the reward/termination LSTM burned in on it), steps by sampling the denoiser and *sampling* reward and end from
the reward/termination model, and is truncated after `horizon` steps; environments that end or are truncated are
restarted from fresh segments. `RolloutRunner` keeps the environments and the actor's LSTM between training steps,
as the official env loop does, and returns what the λ-return loss needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from diamond_play.config import SamplerConfig
from diamond_play.data.segments import SegmentSampler
from diamond_play.imagine import predict_low_res
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import make_randn


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


# ---------------------------------------------------------------------------------------------------------------
# Imagination

HiddenState = tuple[Tensor, Tensor]


@dataclass
class Rollout:
    """T imagined steps of B environments. Step t: the actor saw obs[:, t], took act[:, t] and got rew/end/trunc;
    val_bootstrap[:, t] = V(o_{t+1}) (of the final observation where the episode ended or was truncated)."""

    obs: Tensor  # (B, T, C, H, W), without gradient
    act: Tensor  # (B, T) int64
    rew: Tensor  # (B, T) float, clipped reward -1/0/+1
    end: Tensor  # (B, T) int64
    trunc: Tensor  # (B, T) int64
    logits_act: Tensor  # (B, T, A), with gradient
    val: Tensor  # (B, T), with gradient
    val_bootstrap: Tensor  # (B, T), without gradient


class ImaginedEnvs:
    """B environments simulated by the world model (denoiser + reward/termination model), without gradients."""

    def __init__(self, agent: Agent, segments: SegmentSampler, sampler: SamplerConfig, horizon: int,
                 device: torch.device, bf16: bool = False) -> None:
        if agent.rew_end_model is None:
            raise ValueError("imagination needs a reward/termination model")
        self.denoiser, self.rew_end_model = agent.denoiser, agent.rew_end_model
        self.segments, self.sampler, self.horizon = segments, sampler, horizon
        self.device, self.bf16 = device, bf16
        self.num_envs = segments.batch_size
        self.randn = make_randn(device)  # the global RNG, so a resumed run continues the same random stream
        self.obs = self.act = self.t = None
        self.rew_end_state: HiddenState | None = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _start_states(self, n: int) -> tuple[Tensor, Tensor, HiddenState]:
        """n segments of L frames, and the reward/termination LSTM burned in on their transitions."""
        batch = self.segments.sample(n).to(self.device)
        with self._autocast():
            _, _, state = self.rew_end_model.predict_rew_end(batch.obs[:, :-1], batch.act[:, :-1], batch.obs[:, 1:])
        return batch.obs, batch.act, (state[0].float(), state[1].float())

    @torch.no_grad()
    def reset(self) -> tuple[Tensor, Tensor]:
        """Restart every environment -> (current obs (B, C, H, W), the L − 1 frames before it (B, L−1, C, H, W))."""
        self.obs, self.act, self.rew_end_state = self._start_states(self.num_envs)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.obs[:, -1].clone(), self.obs[:, :-1].clone()

    @torch.no_grad()
    def _reset_envs(self, idx: Tensor) -> Tensor:
        obs, act, (h, c) = self._start_states(len(idx))
        assert self.obs is not None and self.act is not None and self.t is not None and self.rew_end_state
        self.obs[idx], self.act[idx], self.t[idx] = obs, act, 0
        self.rew_end_state[0][:, idx], self.rew_end_state[1][:, idx] = h, c
        return obs[:, :-1]

    def state_dict(self) -> dict[str, Tensor | None]:
        h, c = self.rew_end_state if self.rew_end_state is not None else (None, None)
        return {"obs": self.obs, "act": self.act, "t": self.t, "rew_end_h": h, "rew_end_c": c}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        def dev(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(self.device)

        self.obs, self.act, self.t = dev(state["obs"]), dev(state["act"]), dev(state["t"])
        h, c = dev(state["rew_end_h"]), dev(state["rew_end_c"])
        self.rew_end_state = None if h is None or c is None else (h, c)

    @torch.no_grad()
    def step(self, act: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """-> (obs, rew, end, trunc, final_obs, burn-in frames of the restarted envs or None).

        `obs` is already the first frame of a new episode where one ended (`final_obs` holds the last frame)."""
        assert self.obs is not None and self.act is not None and self.t is not None
        self.act[:, -1] = act
        with self._autocast():
            next_obs = predict_low_res(self.denoiser, self.sampler, self.obs, self.act, self.randn).float()
            logits_rew, logits_end, state = self.rew_end_model.predict_rew_end(
                self.obs[:, -1:], self.act[:, -1:], next_obs[:, None], self.rew_end_state)
        self.rew_end_state = (state[0].float(), state[1].float())
        rew = Categorical(logits=logits_rew[:, 0].float()).sample().float() - 1
        end = Categorical(logits=logits_end[:, 0].float()).sample()
        self.t += 1
        trunc = (self.t >= self.horizon).long()
        self.obs = self.obs.roll(-1, dims=1)
        self.act = self.act.roll(-1, dims=1)
        self.obs[:, -1] = next_obs
        dead = (end.bool() | trunc.bool()).nonzero().squeeze(1)
        burn_in = self._reset_envs(dead) if len(dead) else None
        return self.obs[:, -1].clone(), rew, end, trunc, next_obs, burn_in


class RolloutRunner:
    """Runs the actor-critic in the imagined environments, keeping environments and LSTM state between calls."""

    def __init__(self, envs: ImaginedEnvs, lstm_dim: int) -> None:
        self.envs, self.lstm_dim = envs, lstm_dim
        self.obs: Tensor | None = None
        self.state: HiddenState | None = None

    def state_dict(self) -> dict[str, Any]:
        """Environments, current frames and LSTM state: a resumed run continues the same imagined episodes."""
        return {"envs": self.envs.state_dict(), "obs": self.obs, "state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.envs.load_state_dict(state["envs"])
        device = self.envs.device
        self.obs = None if state["obs"] is None else state["obs"].to(device)
        self.state = None if state["state"] is None else (state["state"][0].to(device), state["state"][1].to(device))

    @staticmethod
    def burn_in(policy: nn.Module, frames: Tensor) -> HiddenState:
        """Zero the LSTM and run it over (n, L−1, C, H, W) real frames, as the official loop does after a reset.

        With gradients, as the official env loop: the state it leaves feeds the rest of the rollout, so the loss
        reaches the encoder and LSTM through the burn-in frames too."""
        state = None
        for i in range(frames.shape[1]):
            _, _, state = policy(frames[:, i], state)
        assert state is not None
        return state

    def _zero_state(self, n: int) -> HiddenState:
        z = torch.zeros(n, self.lstm_dim, device=self.envs.device)
        return z, z.clone()

    def rollout(self, policy: nn.Module, num_steps: int) -> Rollout:
        """`num_steps` steps of every environment; `policy` maps (obs, (h, c)) -> (logits, value, (h, c))."""
        if self.obs is None:
            self.obs, _ = self.envs.reset()
            self.state = self._zero_state(self.envs.num_envs)  # the first episodes have no burn-in
        assert self.state is not None
        state: HiddenState = (self.state[0].detach(), self.state[1].detach())
        obs = self.obs
        all_obs, acts, rews, ends, truncs, logits_l, vals, boots = [], [], [], [], [], [], [], []
        for _ in range(num_steps):
            logits, val, state = policy(obs, state)
            act = Categorical(logits=logits.detach()).sample()
            next_obs, rew, end, trunc, final_obs, burn_in = self.envs.step(act)
            boot = torch.zeros_like(val, dtype=torch.float32)
            dead = (end.bool() | trunc.bool())
            if dead.any():
                with torch.no_grad():  # value of the last frame with the LSTM state before the reset
                    _, val_final, _ = policy(final_obs[dead], (state[0][dead], state[1][dead]))
                boot[dead] = val_final.float()
                h, c = state[0].float().clone(), state[1].float().clone()  # (bf16 under autocast)
                assert burn_in is not None
                burnt_h, burnt_c = self.burn_in(policy, burn_in)
                h[dead], c[dead] = burnt_h.float(), burnt_c.float()
                state = (h, c)
            all_obs.append(obs)
            acts.append(act)
            rews.append(rew)
            ends.append(end)
            truncs.append(trunc)
            logits_l.append(logits)
            vals.append(val)
            boots.append((boot, dead))
            obs = next_obs
        with torch.no_grad():
            _, val_next, _ = policy(obs, state)  # bootstraps the last step where it did not end
        self.obs, self.state = obs, (state[0].detach(), state[1].detach())
        val = torch.stack(vals, dim=1)
        nxt = torch.cat((val[:, 1:].detach().float(), val_next.detach()[:, None].float()), dim=1)
        boot_values = torch.stack([b for b, _ in boots], dim=1)
        dead_mask = torch.stack([d for _, d in boots], dim=1)
        val_bootstrap = torch.where(dead_mask, boot_values, nxt)
        return Rollout(obs=torch.stack(all_obs, dim=1), act=torch.stack(acts, dim=1), rew=torch.stack(rews, dim=1),
                       end=torch.stack(ends, dim=1), trunc=torch.stack(truncs, dim=1),
                       logits_act=torch.stack(logits_l, dim=1), val=val, val_bootstrap=val_bootstrap)


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """1 − Var(G − V) / Var(G): 1 for a perfect critic, 0 for a constant one, negative for a harmful one."""
    var = returns.var()
    return 1 - (returns - values).var() / var if var > 0 else torch.zeros((), device=returns.device)


def imagination_loss_fn(runner: RolloutRunner, backup_every: int, cfg: ActorCriticLossConfig):
    """The actor-critic's loss for `ModelTrainer.step`: a fresh rollout of `backup_every` imagined steps per update,
    λ-returns and the REINFORCE + value + entropy loss, with what a reader plots beside it."""

    def loss(module: nn.Module, _batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        r = runner.rollout(module, backup_every)
        returns = lambda_returns(r.rew, r.end, r.trunc, r.val_bootstrap, cfg.gamma, cfg.lambda_)
        loss_value, metrics = actor_critic_loss(r.logits_act.float(), r.act, r.val.float(), returns, cfg)
        metrics["imagined_reward"] = r.rew.mean()
        metrics["imagined_reward_rate"] = (r.rew != 0).float().mean()
        metrics["imagined_end"] = r.end.float().mean()
        metrics["value_explained_variance"] = explained_variance(r.val.detach().float(), returns)
        return loss_value, metrics

    return loss
