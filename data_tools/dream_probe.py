"""Can an agent learn the game inside this engine? Policies' reward and end rates in imagination beside their
returns in the real game: an engine that can teach gives a policy that plays well more imagined reward (and fewer
imagined ends) than one that plays badly.

    python -m data_tools.dream_probe ENGINE --data DATASET [--policies random tracker] [--agent WEIGHTS]

Policies: `random` (uniform actions), `tracker` (Breakout: moves the paddle under the ball it sees in the frame,
FIRE when it sees none; the frames are read, not the emulator's RAM, so it plays the same way in both worlds) and
`agent` (the actor-critic of `--agent`, actions sampled). Imagined episodes start from segments of DATASET, as in
`train agent`, and are truncated after `--horizon` steps.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from data_tools import run_tool
from diamond_play.accel.modes import default_execution_mode
from diamond_play.data.episodes import Dataset
from diamond_play.data.segments import SegmentSampler
from diamond_play.envs.atari import AtariEnv
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor, tensor_to_frames
from diamond_play.models.agent import Agent
from diamond_play.train.rl import ImaginedEnvs, imagination_world_model

# Breakout at 64x64: the paddle's rows, the rows the ball flies through below the bricks, the playfield's columns
# inside the walls; paddle and ball share one red.
PADDLE_ROWS, BALL_ROWS, COLUMNS = slice(57, 60), slice(29, 57), slice(3, 61)
NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (frames (B, H, W, 3) uint8, restarted (B,)) -> actions


def red_pixels(frame: np.ndarray) -> np.ndarray:
    return (frame[..., 0] > 120) & (frame[..., 1] < 110)


def ball_seen(frame: np.ndarray) -> bool:
    """Whether the tracker finds a ball below the bricks (a ball the imagination lost, or one too faint, is not)."""
    return bool(red_pixels(frame)[BALL_ROWS, COLUMNS].any())


def tracker_action(frame: np.ndarray) -> int:
    red = red_pixels(frame)
    paddle = np.nonzero(red[PADDLE_ROWS, COLUMNS].any(0))[0]
    ball = np.nonzero(red[BALL_ROWS, COLUMNS])[1]
    if len(ball) == 0 or len(paddle) == 0:
        return FIRE
    offset = ball.mean() - paddle.mean()
    return RIGHT if offset > 1 else LEFT if offset < -1 else NOOP


def make_policy(name: str, agent: Agent | None, num_actions: int, rng: np.random.Generator) -> Policy:
    if name == "random":
        return lambda frames, _restarted: rng.integers(num_actions, size=len(frames))
    if name == "tracker":
        return lambda frames, _restarted: np.array([tracker_action(f) for f in frames])
    assert agent is not None and agent.actor_critic is not None
    model, state = agent.actor_critic, {"hc": None}

    @torch.no_grad()
    def act(frames: np.ndarray, restarted: np.ndarray) -> np.ndarray:
        hc = state["hc"]
        if hc is not None and restarted.any():  # a new episode: zero that row's LSTM
            keep = torch.from_numpy(~restarted).float()[:, None]
            hc = (hc[0] * keep, hc[1] * keep)
        logits, _, state["hc"] = model(frames_to_tensor(frames), hc)
        return torch.distributions.Categorical(logits=logits.float()).sample().numpy()

    return act


@torch.no_grad()
def imagined_rates(engine: Agent, dataset: Dataset, policy: Policy, num_envs: int, steps: int, horizon: int,
                   euler_steps: int, seed: int) -> tuple[float, float, float]:
    """(positive rewards per step, ends per step, share of frames with a ball seen) of `policy` in `steps` imagined
    steps of `num_envs` envs."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    sampler = dataclasses.replace(engine.config.sampling.dynamics, num_steps_denoising=euler_steps)
    world = imagination_world_model(copy.deepcopy(engine), num_envs, sampler, device, default_execution_mode(device))
    episodes = [dataset[i] for i in range(len(dataset))]
    envs = ImaginedEnvs(world, SegmentSampler(episodes, engine.denoiser.num_steps_conditioning, num_envs, seed=seed),
                        horizon)
    obs, _ = envs.reset()
    restarted = np.ones(num_envs, dtype=bool)
    rewards = ends = seen = 0.0
    for _ in range(steps):
        frames = tensor_to_frames(obs)
        seen += float(np.mean([ball_seen(f) for f in frames]))
        act = torch.from_numpy(np.asarray(policy(frames, restarted), dtype=np.int64))
        obs, rew, end, trunc, _, _ = envs.step(act)
        rewards += float((rew > 0).float().mean())
        ends += float(end.float().mean())
        restarted = (end.bool() | trunc.bool()).numpy()
    return rewards / steps, ends / steps, seen / steps


def real_returns(game: str, policy: Policy, games: int, max_steps: int, seed: int) -> tuple[float, float, float]:
    """(mean return, reward per step, share of frames with a ball seen) of `policy` over full real games (all
    lives), capped at `max_steps`."""
    env = AtariEnv(game, seed=seed)
    returns, total_steps, seen = [], 0, 0
    for _ in range(games):
        frame, _ = env.reset()
        ret, restarted = 0.0, np.ones(1, dtype=bool)
        for _ in range(max_steps):
            seen += ball_seen(frame)
            frame, reward, end, trunc, _ = env.step(int(policy(frame[None], restarted)[0]))
            restarted = np.zeros(1, dtype=bool)
            ret += reward
            total_steps += 1
            if end or trunc:
                break
        returns.append(ret)
    env.close()
    return float(np.mean(returns)), float(sum(returns)) / max(1, total_steps), seen / max(1, total_steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.dream_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("engine", type=Path, help="weights or run directory with a reward/termination model")
    p.add_argument("--data", type=Path, required=True, help="dataset of the engine's game (start segments)")
    p.add_argument("--policies", nargs="+", default=["random", "tracker"], choices=["random", "tracker", "agent"])
    p.add_argument("--agent", type=Path, help="weights whose actor-critic is the `agent` policy")
    p.add_argument("--envs", type=int, default=16, help="imagined environments (default 16)")
    p.add_argument("--steps", type=int, default=150, help="imagined steps of every environment (default 150)")
    p.add_argument("--horizon", type=int, default=15, help="imagined episodes' truncation (default 15, the paper's)")
    p.add_argument("--euler-steps", type=int, default=1, help="Euler steps per imagined frame (default 1)")
    p.add_argument("--games", type=int, default=3, help="real games per policy (default 3)")
    p.add_argument("--max-real-steps", type=int, default=3000, help="cap on a real game's steps (default 3000)")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)

    def body() -> None:
        from diamond_play.weights.loading import load_agent

        engine = load_agent(args.engine, device="cpu")
        if engine.rew_end_model is None:
            raise UserError(f"{str(args.engine)!r} has no reward/termination model: nothing to learn from")
        breakout = engine.config.game == "Breakout" and engine.config.frame_size == [64, 64]
        if "tracker" in args.policies and not breakout:
            raise UserError("the tracker policy reads 64x64 Breakout frames: drop it with --policies random agent")
        agent = None
        if "agent" in args.policies:
            if args.agent is None:
                raise UserError("the agent policy needs --agent WEIGHTS (weights with an actor-critic)")
            agent = load_agent(args.agent, device="cpu")
            if agent.actor_critic is None:
                raise UserError(f"{str(args.agent)!r} has no actor-critic")
        dataset = Dataset(args.data)
        real_game = engine.config.game_kind.real_game
        print(f"{args.engine}: {args.envs} imagined envs x {args.steps} steps, horizon {args.horizon}, "
              f"{args.euler_steps} Euler steps; starts from {args.data}")
        for name in args.policies:
            rng = np.random.default_rng(args.seed)
            rate, ends, seen = imagined_rates(engine, dataset, make_policy(name, agent, engine.config.num_actions, rng),
                                        args.envs, args.steps, args.horizon, args.euler_steps, args.seed)
            line = f"  {name:8s} imagined: {rate:.4f} rewards/step, {ends:.4f} ends/step"
            line += f", ball seen {seen:.0%}" if breakout else ""
            if real_game:
                policy = make_policy(name, agent, engine.config.num_actions, rng)
                ret, per_step, real_seen = real_returns(engine.config.game, policy, args.games, args.max_real_steps,
                                                        args.seed)
                line += f"; real game: return {ret:.1f} over {args.games} games, {per_step:.4f} rewards/step"
                line += f", ball seen {real_seen:.0%}" if breakout else ""
            print(line, flush=True)

    return run_tool("dream_probe", body)


if __name__ == "__main__":
    sys.exit(main())
