"""Collect Atari gameplay into the project's dataset format with scripted, random or mixed policies.

    python -m data_tools.atari_collect Breakout OUT --frames 100000 --test-frames 5000 --seed 0

writes OUT/train and OUT/test (separate episodes, never mixed). Episodes end on a lost life (the official training
env's end signal), so the reward/termination model learns ball losses. Policies: `tracker` (Breakout: follows the
ball from the emulator RAM, with a random aim offset and random actions mixed in, so bricks break, the score
counts up and balls are lost and relaunched), `random`, and `mix` (tracker with probability 0.8 per episode).
The result is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools import run_tool
from diamond_play.data.collect import collect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.atari_collect", description=__doc__.split("\n\n")[0])
    p.add_argument("game")
    p.add_argument("out", type=Path)
    p.add_argument("--frames", type=int, default=100_000, help="training frames")
    p.add_argument("--test-frames", type=int, default=5_000, help="held-out frames (different seed)")
    p.add_argument("--policy", choices=["tracker", "random", "mix"], default="mix")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    def body() -> None:
        collect(args.game, args.out / "train", args.frames, args.policy, args.seed, "train")
        if args.test_frames:
            collect(args.game, args.out / "test", args.test_frames, args.policy, args.seed + 10_000, "test")

    return run_tool("atari_collect", body)


if __name__ == "__main__":
    sys.exit(main())
