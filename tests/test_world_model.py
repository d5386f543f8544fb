"""The batched world-model core: rows filled and restarted independently, in-place shifting, and the inference
modes within tolerance of eager fp32 at a batch of several environments (as the imagination rollouts run it)."""

from __future__ import annotations

import copy

import torch
from helpers import ONE_LEVEL, tiny_agent

import diamond_play
from diamond_play.accel.modes import EXECUTION_MODES
from diamond_play.world_model import WorldModel


def segments(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (n, 4, 3, 64, 64), generator=g).float() / 127.5 - 1
    return obs, torch.randint(0, 4, (n, 4), generator=g)


def test_rows_restart_on_their_own_and_buffers_shift():
    agent = tiny_agent("atari")
    wm = WorldModel(agent, num_envs=3, generator=torch.Generator().manual_seed(0))
    obs, act = segments(3, 0)
    wm.fill(obs, act)
    full_state = tuple(s.clone() for s in wm.rew_end_state)
    out = wm.step_batch(torch.tensor([1, 2, 3]))
    assert out.low_res.shape == (3, 3, 64, 64) and out.reward.shape == (3,) and out.end.shape == (3,)
    assert set(out.reward.tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(wm.obs[:, :3], obs[:, 1:]) and torch.equal(wm.obs[:, 3], out.low_res)
    # The action taken after obs[:, 3] now sits beside it in slot 2; the last slot waits for the next action.
    assert torch.equal(wm.act[:, :2], act[:, 1:3]) and wm.act[:, 2].tolist() == [1, 2, 3]

    # Restarting row 1 from its original segment gives it the burn-in state of the first fill; rows 0 and 2 keep
    # the state the step left them.
    stepped = tuple(s.clone() for s in wm.rew_end_state)
    wm.fill(obs[1:2], act[1:2], rows=torch.tensor([1]))
    assert torch.equal(wm.obs[1], obs[1]) and torch.equal(wm.obs[0, 3], out.low_res[0])
    for now, first, after_step in zip(wm.rew_end_state, full_state, stepped, strict=True):
        torch.testing.assert_close(now[:, 1], first[:, 1])
        assert torch.equal(now[:, [0, 2]], after_step[:, [0, 2]])


def test_inference_modes_within_tolerance_at_a_batch(conformance_dir):
    """What the agent trainer's imagination runs (eager-bf16-cl on bf16 CPUs): one frame of 3 environments on
    the official conformance weights, >= 99% of pixels within one 8-bit level of eager fp32, same noise."""
    agent = diamond_play.load_agent(conformance_dir / "atari" / "agent.pt")
    obs, act = segments(3, 1)
    frames = {}
    for name in ("eager-fp32", "eager-bf16-cl"):
        wm = WorldModel(copy.deepcopy(agent), num_envs=3, mode=EXECUTION_MODES[name],
                        generator=torch.Generator().manual_seed(0))
        wm.fill(obs, act)
        frames[name] = wm.step_batch(torch.tensor([0, 1, 2])).low_res.float()
    diff = (frames["eager-bf16-cl"] - frames["eager-fp32"]).abs()
    assert (diff <= ONE_LEVEL).float().mean() >= 0.99 and diff.mean() < 2e-3
