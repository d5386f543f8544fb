"""Actor-critic learning in imagination (the DIAMOND paper, section 3 and appendix): imagined environments,
rollouts, λ-returns and the REINFORCE + value loss.

`ImaginedEnvs` follows the official world-model env: each environment starts from a dataset segment of L frames
(the reward/termination LSTM burned in on it), steps by sampling the denoiser and *sampling* reward and end from
the reward/termination model, and is truncated after `horizon` steps; environments that end or are truncated are
restarted from fresh segments. `RolloutRunner` keeps the environments and the actor's LSTM between training steps,
as the official env loop does, and returns what the λ-return loss needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from diamond_play.accel.modes import ExecutionMode
from diamond_play.config import SamplerConfig
from diamond_play.data.segments import SegmentSampler
from diamond_play.models.agent import Agent
from diamond_play.world_model import HiddenState, WorldModel


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
    """B environments simulated by a batched world model (denoiser + reward/termination model), without
    gradients: episodes start from real dataset segments and are truncated after `horizon` steps."""

    def __init__(self, world_model: WorldModel, segments: SegmentSampler, horizon: int) -> None:
        if world_model.agent.rew_end_model is None:
            raise ValueError("imagination needs a reward/termination model")
        if world_model.num_envs != segments.batch_size:
            raise ValueError(f"a world model of {world_model.num_envs} environments cannot take batches of "
                             f"{segments.batch_size} start segments")
        self.world_model, self.segments, self.horizon = world_model, segments, horizon
        self.device = world_model.device
        self.num_envs = world_model.num_envs
        self.t: Tensor | None = None

    def _restart(self, rows: Tensor | None) -> Tensor:
        """Fresh segments into `rows` (None: all) -> their frames before the current one (n, L−1, C, H, W)."""
        batch = self.segments.sample(self.num_envs if rows is None else len(rows)).to(self.device)
        self.world_model.fill(batch.obs, batch.act, rows=rows)
        return batch.obs[:, :-1]

    @torch.no_grad()
    def reset(self) -> tuple[Tensor, Tensor]:
        """Restart every environment -> (current obs (B, C, H, W), the L − 1 frames before it (B, L−1, C, H, W))."""
        self._restart(None)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        obs = self.world_model.obs
        return obs[:, -1].clone(), obs[:, :-1].clone()

    def state_dict(self) -> dict[str, Tensor | None]:
        wm = self.world_model
        h, c = wm.rew_end_state if wm.rew_end_state is not None else (None, None)
        return {"obs": wm.obs.clone(), "act": wm.act.clone(), "t": self.t, "rew_end_h": h, "rew_end_c": c}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        wm = self.world_model
        obs, act, t, h, c = (state[k] for k in ("obs", "act", "t", "rew_end_h", "rew_end_c"))
        self.t = None if t is None else t.to(self.device)
        if obs is None or act is None:
            return
        wm.obs.copy_(obs)
        wm.act.copy_(act)
        wm.rew_end_state = None if h is None or c is None else (h.to(self.device), c.to(self.device))

    @torch.no_grad()
    def step(self, act: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """-> (obs, rew, end, trunc, final_obs, burn-in frames of the restarted envs or None).

        `obs` is already the first frame of a new episode where one ended (`final_obs` holds the last frame)."""
        assert self.t is not None
        out = self.world_model.step_batch(act)
        assert out.reward is not None and out.end is not None
        final_obs = out.low_res.float().clone()
        self.t += 1
        trunc = (self.t >= self.horizon).long()
        dead = (out.end.bool() | trunc.bool()).nonzero().squeeze(1)
        burn_in = None
        if len(dead):
            burn_in = self._restart(dead)
            self.t[dead] = 0
        return self.world_model.obs[:, -1].clone(), out.reward, out.end, trunc, final_obs, burn_in


def imagination_world_model(agent: Agent, num_envs: int, sampler: SamplerConfig, device: torch.device,
                            mode: ExecutionMode | None = None) -> WorldModel:
    """The batched world model the imagined environments step, sampling with `sampler` (e.g. fewer Euler steps
    than play). `mode` prepares the networks in place: eager-fp32 or AUTOCAST_BF16 for networks still training."""
    sampling = dataclasses.replace(agent.config.sampling, dynamics=sampler)
    return WorldModel(agent, num_envs, sampling, device, mode)


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
