"""λ-returns against hand-worked examples, and the actor-critic loss's pieces."""

from __future__ import annotations

import torch

from diamond_play.train.rl import ActorCriticLossConfig, actor_critic_loss, lambda_returns


def returns(rew, end, trunc, boot, gamma=0.5, lam=0.5):
    t = lambda x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    return lambda_returns(t(rew), t(end), t(trunc), t(boot), gamma, lam)[0].tolist()


def test_lambda_returns_hand_worked():
    # G_2 seed = V_boot_1 = 20.  t=1: 2 + 0.5*0.5*20 + 0.25*20 = 12.  t=0: 1 + 0.5*0.5*10 + 0.25*12 = 6.5
    assert returns([1, 2], [0, 0], [0, 0], [10, 20]) == [6.5, 12.0]
    # terminal at t=1: no bootstrap there.  t=0: 1 + 2.5 + 0.25*2 = 4
    assert returns([1, 2], [0, 1], [0, 0], [10, 20]) == [4.0, 2.0]
    # truncated at t=0: bootstrap fully on V_boot_0 and do not look past it: 1 + 0.5*10 = 6
    assert returns([1, 2], [0, 0], [1, 0], [10, 20]) == [6.0, 12.0]
    # λ = 1, γ = 1, no ends: plain sum of rewards plus the last bootstrap
    assert returns([1, 2, 3], [0, 0, 0], [0, 0, 0], [0, 0, 5], gamma=1.0, lam=1.0) == [11.0, 10.0, 8.0]
    # λ = 0: one-step TD targets r_t + γ V_boot_t
    assert returns([1, 2], [0, 0], [0, 0], [10, 20], gamma=0.5, lam=0.0) == [6.0, 12.0]


def test_actor_critic_loss_gradients_and_entropy():
    logits = torch.zeros(2, 3, 4, requires_grad=True)
    values = torch.zeros(2, 3, requires_grad=True)
    actions = torch.tensor([[0, 1, 2], [3, 0, 1]])
    rets = torch.ones(2, 3)
    cfg = ActorCriticLossConfig()
    loss, metrics = actor_critic_loss(logits, actions, values, rets, cfg)
    loss.backward()
    assert abs(metrics["entropy"] - torch.log(torch.tensor(4.0)).item()) < 1e-6  # uniform policy
    assert abs(metrics["loss_values"] - 1.0) < 1e-6
    assert values.grad is not None and (values.grad < 0).all()  # values move towards the returns
    taken = torch.zeros_like(logits).scatter(-1, actions.unsqueeze(-1), 1.0).bool()
    assert (logits.grad[taken] < 0).all()  # positive advantage: taken actions become more likely
