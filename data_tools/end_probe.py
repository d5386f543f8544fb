"""Does an engine's reward/termination model let the action decide whether an episode ends? An agent trained in
imagination finds such a shortcut and exploits it (the first Breakout agent learned to hold FIRE, which its engine
had tied to "no life lost soon" because the data's policy fired only while no ball was in play).

    python -m data_tools.end_probe ENGINE [ENGINE ...] --data HELD_OUT_DATASET

For each engine (weights or run directory), on held-out episodes that end (a lost life):
- P(end) at the true end step with the recorded actions, and with each action in place of the last 8;
- from the same held-out start segments, the imagined chance of an end within `--horizon` steps when one action
  is held throughout (and for uniformly random actions): a large spread between actions is the shortcut.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from data_tools import run_tool
from diamond_play.data.episodes import Dataset
from diamond_play.data.segments import SegmentSampler
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor
from diamond_play.models.agent import Agent
from diamond_play.world_model import WorldModel

SWAPPED_STEPS = 8


@torch.no_grad()
def end_probability_at_true_ends(agent: Agent, dataset: Dataset, action: int | None) -> float:
    """Mean P(end) the model gives the last step of held-out episodes that end; `action` replaces the last
    `SWAPPED_STEPS` actions (None: the recorded ones)."""
    assert agent.rew_end_model is not None
    probs = []
    for i in range(len(dataset)):
        ep = dataset[i]
        if not ep.terminations[-1] or ep.final_frame is None:
            continue
        start = max(0, len(ep) - 40)
        obs = frames_to_tensor(np.concatenate([ep.frames[start:], ep.final_frame[None]]), "cpu")[None]
        act = torch.as_tensor(np.asarray(ep.actions[start:]), dtype=torch.long)[None]
        if action is not None:
            act[0, -SWAPPED_STEPS:] = action
        _, logits_end, _ = agent.rew_end_model.predict_rew_end(obs[:, :-1], act, obs[:, 1:])
        probs.append(logits_end[0, -1].softmax(-1)[1].item())
    if not probs:
        raise UserError(f"{str(dataset.root)!r} has no episode that ends with a termination: pass held-out data "
                        "with lost lives")
    return float(np.mean(probs))


@torch.no_grad()
def imagined_end_within(agent: Agent, dataset: Dataset, action: int | None, horizon: int, segments: int,
                        euler_steps: int, seed: int) -> float:
    """Imagined chance of an end within `horizon` steps from `segments` held-out start segments, holding `action`
    (None: uniformly random actions); the end probabilities, not sampled ends, are accumulated."""
    assert agent.rew_end_model is not None
    torch.manual_seed(seed)
    episodes = [dataset[i] for i in range(len(dataset))]
    batch = SegmentSampler(episodes, agent.denoiser.num_steps_conditioning, segments, seed=seed).sample(segments)
    sampling = dataclasses.replace(agent.config.sampling, dynamics=dataclasses.replace(
        agent.config.sampling.dynamics, num_steps_denoising=euler_steps))
    world = WorldModel(agent, segments, sampling)
    world.fill(batch.obs, batch.act)
    survive = torch.ones(segments)
    for _ in range(horizon):
        act = torch.randint(0, agent.config.num_actions, (segments,)) if action is None else torch.full(
            (segments,), action)
        step = world.step_batch(act)
        assert step.end_probability is not None
        survive = survive * (1 - step.end_probability)
    return float(1 - survive.mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.end_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("engines", nargs="+", type=Path, help="weights or run directories with a reward/termination model")
    p.add_argument("--data", type=Path, required=True, help="held-out dataset of the engines' game")
    p.add_argument("--horizon", type=int, default=15, help="imagined steps (default 15, the paper's horizon)")
    p.add_argument("--segments", type=int, default=24, help="held-out start segments (default 24)")
    p.add_argument("--euler-steps", type=int, default=1, help="Euler steps per imagined frame (default 1)")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)

    def body() -> None:
        from diamond_play.weights.loading import load_agent

        dataset = Dataset(args.data)
        print(f"held-out data: {args.data}")
        for path in args.engines:
            agent = load_agent(path, device="cpu")
            if agent.rew_end_model is None:
                raise UserError(f"{str(path)!r} has no reward/termination model")
            names = list(agent.config.action_names) or [str(a) for a in range(agent.config.num_actions)]
            print(f"{path}")
            recorded = end_probability_at_true_ends(agent, dataset, None)
            swapped = [end_probability_at_true_ends(agent, dataset, a) for a in range(len(names))]
            print(f"  P(end) at true ends: recorded actions {recorded:.3f}; last {SWAPPED_STEPS} actions = "
                  + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, swapped, strict=True)))
            held = [imagined_end_within(agent, dataset, a, args.horizon, args.segments, args.euler_steps, args.seed)
                    for a in [*range(len(names)), None]]
            print(f"  imagined P(end within {args.horizon}) holding: "
                  + ", ".join(f"{n} {v:.3f}" for n, v in zip([*names, "random"], held, strict=True)), flush=True)

    return run_tool("end_probe", body)


if __name__ == "__main__":
    sys.exit(main())
