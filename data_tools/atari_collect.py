"""Collect Atari gameplay into the project's dataset format with scripted, random or mixed policies.

    python -m data_tools.atari_collect Breakout OUT --frames 100000 --test-frames 5000 --seed 0

writes OUT/train and OUT/test (separate episodes, never mixed). Episodes end on a lost life (the official training
env's end signal), so the reward/termination model learns ball losses. Policies: `tracker` (Breakout: follows the
ball from the emulator RAM, with a random aim offset and random actions mixed in, so bricks break, the score
counts up and balls are lost and relaunched), `random`, `mix` (tracker with probability 0.8 per episode), and
`agent` (the actor-critic of `--weights`, with `--epsilon` random actions: real play of an agent, e.g. to teach an
engine the outcomes of what the agent does that its data never showed).
The result is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools import run_tool
from diamond_play.data.collect import collect
from diamond_play.errors import UserError


def collect_with_agent(game: str, out: Path, frames: int, weights: Path, epsilon: float, seed: int) -> None:
    """`frames` real steps of the actor-critic in `weights` (the Atari loop's collector: episodes end on a lost
    life), appended to the dataset at `out`."""
    import torch
    from tqdm import tqdm

    from diamond_play.data.episodes import Dataset, DatasetInfo
    from diamond_play.envs.atari import AtariEnv
    from diamond_play.train.atari import Collector
    from diamond_play.weights.loading import load_agent

    agent = load_agent(weights, device="cpu")
    if agent.actor_critic is None:
        raise UserError(f"{str(weights)!r} has no actor-critic: train one with `diamond-play train agent`")
    torch.manual_seed(seed)
    probe = AtariEnv(game)
    info = DatasetInfo(game=probe.game, num_actions=probe.num_actions, action_names=list(probe.action_meanings),
                       fps=15.0, frame_size=[64, 64],
                       source=f"data_tools.atari_collect policy=agent weights={weights} epsilon={epsilon} seed={seed}")
    probe.close()
    if agent.config.num_actions != info.num_actions:
        raise UserError(f"{str(weights)!r} plays {agent.config.num_actions} actions, {info.game} has "
                        f"{info.num_actions}: pass the weights of a {info.game} agent")
    dataset = Dataset(out, info)
    collector = Collector(game, dataset, epsilon, seed, torch.device("cpu"))
    done = sum(len(dataset[i]) for i in range(len(dataset)))
    agent.actor_critic.eval()
    with tqdm(total=frames, initial=done, desc=out.name, unit="frame") as bar:
        while done < frames:  # whole episodes: the last one may run past `frames`
            finished, _ = collector.collect(agent.actor_critic, 100)
            n = sum(len(e) for e in finished)
            done += n
            bar.update(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.atari_collect", description=__doc__.split("\n\n")[0])
    p.add_argument("game")
    p.add_argument("out", type=Path)
    p.add_argument("--frames", type=int, default=100_000, help="training frames")
    p.add_argument("--test-frames", type=int, default=5_000, help="held-out frames (different seed)")
    p.add_argument("--policy", choices=["tracker", "random", "mix", "agent"], default="mix")
    p.add_argument("--weights", type=Path, help="--policy agent: weights directory with an actor-critic")
    p.add_argument("--epsilon", type=float, default=0.0, help="--policy agent: share of uniformly random actions")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    def body() -> None:
        if args.policy == "agent":
            if args.weights is None:
                raise UserError("--policy agent plays the actor-critic of an engine: pass --weights WEIGHTS_DIR")
            collect_with_agent(args.game, args.out / "train", args.frames, args.weights, args.epsilon, args.seed)
            if args.test_frames:
                collect_with_agent(args.game, args.out / "test", args.test_frames, args.weights, args.epsilon,
                                   args.seed + 10_000)
            return
        collect(args.game, args.out / "train", args.frames, args.policy, args.seed, "train")
        if args.test_frames:
            collect(args.game, args.out / "test", args.test_frames, args.policy, args.seed + 10_000, "test")

    return run_tool("atari_collect", body)


if __name__ == "__main__":
    sys.exit(main())
