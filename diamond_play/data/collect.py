"""Collecting real Atari gameplay into datasets: a scripted Breakout policy, random play, and the collector.

Used by `python -m data_tools.atari_collect`, by `diamond-play eval` (fresh held-out episodes) and by tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from diamond_play.data.episodes import Dataset, DatasetInfo, EpisodeBuilder
from diamond_play.envs.atari import AtariEnv
from diamond_play.errors import UserError

# Breakout RAM: paddle x, ball x, ball y (0 when no ball is in play).
BREAKOUT_PADDLE_X, BREAKOUT_BALL_X, BREAKOUT_BALL_Y = 72, 99, 101


class BreakoutTracker:
    """Moves the paddle under the ball; the aim offset and the share of random actions change per episode."""

    def __init__(self, rng: np.random.Generator, meanings: tuple[str, ...]) -> None:
        self.rng = rng
        self.fire, self.right, self.left, self.noop = (meanings.index(m) for m in ("FIRE", "RIGHT", "LEFT", "NOOP"))
        self.new_episode()

    def new_episode(self) -> None:
        self.offset = float(self.rng.normal(8, 4))
        self.epsilon = float(self.rng.uniform(0.05, 0.3))

    def __call__(self, env: AtariEnv) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(env.num_actions))
        ram = env.ram()
        if ram[BREAKOUT_BALL_Y] == 0:
            return self.fire
        diff = int(ram[BREAKOUT_BALL_X]) - (int(ram[BREAKOUT_PADDLE_X]) + self.offset)
        return self.right if diff > 2 else self.left if diff < -2 else self.noop


def collect(game: str, out: Path, frames: int, policy: str, seed: int, desc: str = "collect",
            show_progress: bool = True) -> Dataset:
    env = AtariEnv(game, end_on_life_loss=True, seed=seed)
    rng = np.random.default_rng(seed)
    if policy in ("tracker", "mix") and env.game != "Breakout":
        raise UserError(f"the tracker policy knows Breakout only, not {env.game}: use --policy random")
    dataset = Dataset(out, DatasetInfo(game=env.game, num_actions=env.num_actions,
                                       action_names=list(env.action_meanings), fps=15.0, frame_size=[64, 64],
                                       source=f"data_tools.atari_collect policy={policy} seed={seed}"))
    done = sum(len(dataset[i]) for i in range(len(dataset)))  # resumable: continue after what is on disk
    tracker = BreakoutTracker(rng, env.action_meanings) if policy in ("tracker", "mix") else None
    bar = tqdm(total=frames, initial=done, desc=desc, unit="frame", disable=not show_progress)
    while done < frames:
        use_tracker = tracker is not None and (policy == "tracker" or rng.random() < 0.8)
        if tracker is not None:
            tracker.new_episode()
        frame, _ = env.reset()
        builder = EpisodeBuilder({"game": env.game, "source": "ale", "fps": 15.0})
        while True:
            a = tracker(env) if use_tracker and tracker is not None else int(rng.integers(env.num_actions))
            next_frame, r, end, trunc, _ = env.step(a)
            builder.add(frame, a, r, end, trunc)
            frame = next_frame
            if end or trunc or done + len(builder) >= frames:
                break
        episode = builder.build(final_frame=frame)
        dataset.append(episode)
        done += len(episode)
        bar.update(len(episode))
    bar.close()
    env.close()
    return dataset
