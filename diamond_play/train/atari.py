"""Recipe: DIAMOND's Atari 100k training loop (the paper's Algorithm 1, with the official trainer's numbers).

`diamond-play train atari GAME --out RUN_DIR`. Each epoch: collect real steps with the current policy (ε-greedy on
π), then train the denoiser, the reward/termination model and the actor-critic (in imagination), evaluate every
`eval_every` epochs, export weights and save the full training state (models, optimisers, RNGs, emulator, episode in
progress) so `--resume RUN_DIR` continues after a kill -9 with nothing lost.

Run directory: config.yaml, dataset.yaml + episodes/ (the collected episodes: the run directory is also a dataset in
the project's format), checkpoints/{state.pt, last/, best/}, log.csv and TensorBoard events.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical
from tqdm import tqdm

from diamond_play import __version__
from diamond_play.accel.modes import training_mode
from diamond_play.config import (
    ACTOR_CRITIC_SIZES,
    ATARI_SAMPLER,
    ATARI_SIGMA_OFFSET_NOISE,
    DENOISER_SIZES,
    REW_END_SIZES,
    AgentConfig,
    DenoiserConfig,
    SamplingConfig,
    WeightsConfig,
    read_yaml,
    sized,
)
from diamond_play.data.episodes import Dataset, DatasetInfo, Episode, EpisodeBuilder
from diamond_play.data.segments import SegmentSampler
from diamond_play.devices import resolve_device
from diamond_play.envs.atari import (
    ATARI_100K_GAMES,
    AtariEnv,
    ale_games,
    canonical_game,
    human_normalized_score,
    reference_scores,
)
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor
from diamond_play.models.agent import Agent
from diamond_play.threads import use_threads
from diamond_play.train.core import (
    DistInfo,
    ModelTrainer,
    OptimConfig,
    RunDir,
    RunLifecycle,
    RunLogger,
    broadcast_object,
    build_run_config,
    finish_distributed,
    init_distributed,
    rng_state,
    run_phase,
    set_rng_state,
)
from diamond_play.train.rl import (
    ActorCriticLossConfig,
    ImaginedEnvs,
    RolloutRunner,
    imagination_loss_fn,
    imagination_world_model,
)
from diamond_play.train.world_model import (
    batches,
    denoiser_loss,
    rew_end_loss,
    sample_strip,
)


@dataclass
class PhaseConfig:
    """One model's training phase: its batch, its steps in the first and in later epochs, its optimiser."""

    batch_size: int = 32
    """Windows (or imagined environments, for the actor-critic) per step."""
    steps_first_epoch: int = 10_000
    steps_per_epoch: int = 400
    """Optimiser steps in each later epoch."""
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class AtariTrainConfig:
    """Every setting of an Atari 100k run (saved as RUN_DIR/config.yaml); the defaults are the paper's."""

    game: str = ""
    """The Atari game (ALE name, e.g. Breakout)."""
    preset: str = "paper"
    """The preset the run started from (paper, small or tiny), kept for the record."""
    model_size: str = "paper"
    """Sizes of the three networks: paper, small or tiny."""
    denoiser_model: dict[str, Any] = field(default_factory=dict)
    """InnerModelConfig fields on top of the size's."""
    rew_end_model: dict[str, Any] = field(default_factory=dict)
    """RewEndModelConfig fields on top of the size's."""
    actor_critic_model: dict[str, Any] = field(default_factory=dict)
    """ActorCriticConfig fields on top of the size's."""
    total_env_steps: int = 100_000
    """Real environment steps in all (1 env, ε-greedy): the 100k budget."""
    collect_steps_per_epoch: int = 100
    """Real steps collected per epoch after the first."""
    first_epoch_min_steps: int = 5_000
    """The first epoch collects at least this many steps..."""
    first_epoch_max_steps: int = 10_000
    """...and at most this many, extending 100 at a time until `first_epoch_min_rare_rewards` are seen."""
    first_epoch_min_rare_rewards: int = 10
    """Steps whose clipped reward is not the most common one that the first epoch waits for."""
    final_epochs: int = 50
    """Training-only epochs after the budget is spent."""
    epsilon: float = 0.01
    """ε of the collection policy."""
    num_steps_conditioning: int = 4
    """Past frames and actions the denoiser conditions on (L)."""
    num_autoregressive_steps: int = 1
    """K: denoiser windows of L + 1 + K = 6 frames."""
    denoiser: PhaseConfig = field(default_factory=PhaseConfig)
    """Batch, steps per epoch and AdamW of the denoiser."""
    rew_end: PhaseConfig = field(default_factory=lambda: PhaseConfig(optim=OptimConfig(max_grad_norm=100.0)))
    """Batch, steps per epoch and AdamW of the reward/termination model."""
    actor_critic: PhaseConfig = field(default_factory=lambda: PhaseConfig(
        steps_first_epoch=5_000, optim=OptimConfig(weight_decay=0.0, max_grad_norm=100.0)))
    """Imagined environments (batch), updates per epoch and AdamW of the actor-critic."""
    rew_end_seq_length: int = 19
    """Reward/termination windows: 15 steps after a burn-in of 4; they may run past an episode's end."""
    imagination_horizon: int = 15
    """Imagined episodes are truncated after this many steps."""
    backup_every: int = 15
    """Imagined steps per actor-critic update (the λ-return window)."""
    rl: ActorCriticLossConfig = field(default_factory=ActorCriticLossConfig)
    """Discount, λ and the loss weights."""
    eval_every: int = 10
    """Epochs between real-game evaluations (no life-loss ends, ε = 0)."""
    eval_episodes: int = 4
    """Games per evaluation."""
    final_eval_episodes: int = 100
    """Games after the last epoch."""
    eval_max_steps: int = 0
    """Cap on an evaluation game's steps; 0: until game over."""
    device: str = "auto"
    """auto, cpu or cuda."""
    amp: bool = False
    """bf16 autocast (training and imagination)."""
    compile: bool = False
    """torch.compile the denoiser for training."""
    seed: int = 0
    num_threads: int = 0
    """CPU threads for torch (0: the idle cores, at least 1)."""
    sample_every: int = 10
    """Epochs between TensorBoard sample strips (0: none)."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # A CPU run of about two hours (2-core AVX-512 machine, bf16): the narrow networks, a 6k-step budget, fewer
    # updates per epoch, half-size imagination batches, and test games capped at 2,000 steps.
    "small": {
        "model_size": "small", "total_env_steps": 6_000, "first_epoch_min_steps": 1_000,
        "first_epoch_max_steps": 2_000, "final_epochs": 5, "eval_every": 10, "final_eval_episodes": 10,
        "eval_max_steps": 2_000,
        "denoiser": {"steps_first_epoch": 400, "steps_per_epoch": 20},
        "rew_end": {"batch_size": 16, "steps_first_epoch": 200, "steps_per_epoch": 10},
        "actor_critic": {"batch_size": 16, "steps_first_epoch": 60, "steps_per_epoch": 4},
        "amp": True,
    },
    # Minutes on a CPU: for tests and for trying the pipeline.
    "tiny": {
        "model_size": "tiny", "total_env_steps": 400, "first_epoch_min_steps": 200, "first_epoch_max_steps": 300,
        "first_epoch_min_rare_rewards": 1, "final_epochs": 1, "eval_every": 2, "eval_episodes": 1,
        "final_eval_episodes": 2, "eval_max_steps": 100, "sample_every": 2,
        "denoiser": {"batch_size": 4, "steps_first_epoch": 4, "steps_per_epoch": 2},
        "rew_end": {"batch_size": 4, "steps_first_epoch": 4, "steps_per_epoch": 2},
        "actor_critic": {"batch_size": 4, "steps_first_epoch": 2, "steps_per_epoch": 1},
        "rew_end_seq_length": 8, "imagination_horizon": 5, "backup_every": 5,
    },
}


def agent_config(cfg: AtariTrainConfig, num_actions: int) -> AgentConfig:
    size = cfg.model_size
    if size not in DENOISER_SIZES:
        raise UserError(f"unknown model_size {size!r}: use one of {sorted(DENOISER_SIZES)}")
    inner = sized(DENOISER_SIZES[size], {"num_steps_conditioning": cfg.num_steps_conditioning,
                                         "num_actions": num_actions, **cfg.denoiser_model}, "denoiser_model")
    return AgentConfig(
        denoiser=DenoiserConfig(inner_model=inner, sigma_offset_noise=ATARI_SIGMA_OFFSET_NOISE,
                                num_autoregressive_steps=cfg.num_autoregressive_steps),
        rew_end_model=sized(REW_END_SIZES[size], {"num_actions": num_actions, **cfg.rew_end_model},
                            "rew_end_model"),
        actor_critic=sized(ACTOR_CRITIC_SIZES[size], {"num_actions": num_actions, **cfg.actor_critic_model},
                           "actor_critic_model"),
    )


# ---------------------------------------------------------------------------------------------------------------
# Real-environment collection and evaluation


def episode_to_state(episode: Episode | None) -> dict[str, Any] | None:
    """An episode as tensors (checkpoints load with weights_only=True, which refuses numpy arrays)."""
    if episode is None:
        return None
    return {k: None if v is None else torch.from_numpy(np.ascontiguousarray(v))
            for k, v in dataclasses.asdict(episode).items() if k != "attrs"} | {"attrs": dict(episode.attrs)}


def episode_from_state(state: dict[str, Any] | None) -> Episode | None:
    if state is None:
        return None
    return Episode(**{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()})


class Collector:
    """One training env (a lost life ends the episode) played by the actor-critic with ε-greedy exploration;
    finished episodes are appended to the run's dataset as they end."""

    def __init__(self, game: str, dataset: Dataset, epsilon: float, seed: int, device: torch.device) -> None:
        self.env = AtariEnv(game, end_on_life_loss=True, seed=seed)
        self.dataset, self.epsilon, self.device = dataset, epsilon, device
        self.rng = np.random.default_rng(seed + 1)
        self.builder = EpisodeBuilder({"game": self.env.game, "source": "diamond-play train atari", "fps": 15.0})
        self.frame: np.ndarray | None = None
        self.policy_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.game_return = 0.0
        self.reward_counts = [0, 0, 0]  # steps with clipped reward -1, 0, +1
        self.steps = 0

    @property
    def rare_rewards(self) -> int:
        return sum(self.reward_counts) - max(self.reward_counts)

    def in_progress(self) -> Episode | None:
        return self.builder.snapshot()

    @torch.no_grad()
    def collect(self, policy: nn.Module, steps: int) -> tuple[list[Episode], list[float]]:
        """-> (episodes finished and written, returns of games that ended)."""
        finished, returns = [], []
        for _ in range(steps):
            if self.frame is None:
                self.frame, _ = self.env.reset()
                self.policy_state = None
            logits, _, self.policy_state = policy(frames_to_tensor(self.frame[None], self.device), self.policy_state)
            action = int(Categorical(logits=logits.float()).sample().item())
            if self.rng.random() < self.epsilon:
                action = int(self.rng.integers(self.env.num_actions))
            next_frame, reward, end, trunc, info = self.env.step(action)
            self.builder.add(self.frame, action, reward, end, trunc)
            self.reward_counts[int(np.sign(reward)) + 1] += 1
            self.game_return += reward
            self.steps += 1
            if info["game_over"]:
                returns.append(self.game_return)
                self.game_return = 0.0
            if end or trunc:
                episode = self.builder.build(final_frame=next_frame, stopped_early=False)
                assert episode is not None
                self.dataset.append(episode)
                finished.append(episode)
                self.frame = None
            else:
                self.frame = next_frame
        return finished, returns

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.env.get_state(), "rng": self.rng.bit_generator.state,
                "episode": episode_to_state(self.builder.snapshot()),
                "frame": None if self.frame is None else torch.from_numpy(self.frame.copy()),
                "policy_state": self.policy_state, "game_return": self.game_return,
                "reward_counts": list(self.reward_counts), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.set_state(state["env"])
        self.rng.bit_generator.state = state["rng"]
        self.builder.restore(episode_from_state(state["episode"]))
        self.frame = None if state["frame"] is None else state["frame"].numpy()
        ps = state["policy_state"]
        self.policy_state = None if ps is None else (ps[0].to(self.device), ps[1].to(self.device))
        self.game_return, self.reward_counts = state["game_return"], list(state["reward_counts"])
        self.steps = state["steps"]


@dataclass
class RealGames:
    """What `evaluate_policy` measured: one entry per full game."""

    returns: list[float]
    lengths: list[int]


@torch.no_grad()
def evaluate_policy(policy: nn.Module, game: str, episodes: int, max_steps: int, seed: int,
                    device: torch.device, show_progress: bool = True) -> RealGames:
    """Full games (no life-loss ends) played by sampling from π (ε = 0), as the official test env."""
    env = AtariEnv(game, seed=seed)
    returns, lengths = [], []
    for _ in tqdm(range(episodes), desc="evaluate", unit="episode", disable=not show_progress, leave=False):
        frame, _ = env.reset()
        state, total, steps = None, 0.0, 0
        while True:
            logits, _, state = policy(frames_to_tensor(frame[None], device), state)
            frame, reward, end, trunc, _ = env.step(int(Categorical(logits=logits.float()).sample().item()))
            total += reward
            steps += 1
            if end or trunc or (max_steps and steps >= max_steps):
                break
        returns.append(total)
        lengths.append(steps)
    env.close()
    return RealGames(returns, lengths)


# ---------------------------------------------------------------------------------------------------------------
# The loop


def collect_epoch(collector: Collector, policy: nn.Module, cfg: AtariTrainConfig, first: bool,
                  bar: tqdm) -> tuple[list[Episode], list[float]]:
    """One epoch's real steps. The first epoch collects at least `first_epoch_min_steps`, then 100 more at a time
    until rewards of more than one kind were seen (capped at `first_epoch_max_steps`); later epochs
    `collect_steps_per_epoch` until the budget is spent."""
    if not first:
        n = min(cfg.collect_steps_per_epoch, cfg.total_env_steps - collector.steps)
        return collector.collect(policy, n) if n > 0 else ([], [])
    new: list[Episode] = []
    returns: list[float] = []
    while collector.steps < cfg.first_epoch_max_steps and (
            collector.steps < cfg.first_epoch_min_steps
            or collector.rare_rewards < cfg.first_epoch_min_rare_rewards):
        got, rets = collector.collect(policy, min(cfg.collect_steps_per_epoch,
                                                  cfg.first_epoch_max_steps - collector.steps))
        new, returns = new + got, returns + rets
        bar.set_description(f"train atari {cfg.game} (collecting {collector.steps})")
    bar.set_description(f"train atari {cfg.game}")
    return new, returns


def forever(value: Any = None):
    while True:
        yield value


def num_epochs_after_first(cfg: AtariTrainConfig, collected: int) -> int:
    return math.ceil(max(0, cfg.total_env_steps - collected) / cfg.collect_steps_per_epoch) + cfg.final_epochs


def load_config(run: RunDir, game: str | None, preset: str | None, resume: bool,
                overrides: list[str]) -> AtariTrainConfig:
    if resume:
        return build_run_config(AtariTrainConfig, [read_yaml(run.config_path)], overrides)
    preset = preset or "paper"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: use one of {sorted(PRESETS)}")
    canonical = canonical_game(game or "", known=ATARI_100K_GAMES + tuple(ale_games()))
    return build_run_config(AtariTrainConfig, [PRESETS[preset], {"game": canonical, "preset": preset}], overrides)


def three_phases(cfg: AtariTrainConfig, agent: Agent, episodes: list[Episode], device: torch.device,
                 dist_info: DistInfo) -> tuple[list, RolloutRunner, dict[str, np.random.Generator], SegmentSampler]:
    """The loop's three phases (trainer, micro-batches, loss, phase config) over the shared, growing `episodes`:
    denoiser, reward/termination model, actor-critic in imagination; -> (phases, the rollout runner, the samplers'
    random generators, the denoiser's sampler)."""
    assert agent.rew_end_model is not None and agent.actor_critic is not None
    seed = cfg.seed * 1000 + dist_info.rank
    den_sampler = SegmentSampler(episodes, cfg.num_steps_conditioning + 1 + cfg.num_autoregressive_steps,
                                 cfg.denoiser.batch_size, seed=seed, recency=True)
    rew_sampler = SegmentSampler(episodes, cfg.rew_end_seq_length, cfg.rew_end.batch_size, seed=seed + 100,
                                 recency=True, beyond_end=True)
    start_sampler = SegmentSampler(episodes, cfg.num_steps_conditioning, cfg.actor_critic.batch_size,
                                   seed=seed + 200, recency=True)
    world_model = imagination_world_model(agent, cfg.actor_critic.batch_size, ATARI_SAMPLER, device,
                                          training_mode(cfg.amp))
    runner = RolloutRunner(ImaginedEnvs(world_model, start_sampler, cfg.imagination_horizon),
                           agent.actor_critic.cfg.lstm_dim)
    phases = [
        (ModelTrainer("denoiser", agent.denoiser, cfg.denoiser.optim, device, cfg.amp, cfg.compile, dist_info),
         batches(den_sampler, device), denoiser_loss, cfg.denoiser),
        (ModelTrainer("rew_end", agent.rew_end_model, cfg.rew_end.optim, device, cfg.amp, False, dist_info),
         batches(rew_sampler, device), rew_end_loss, cfg.rew_end),
        (ModelTrainer("actor_critic", agent.actor_critic, cfg.actor_critic.optim, device, cfg.amp, False, dist_info),
         forever(), imagination_loss_fn(runner, cfg.backup_every, cfg.rl), cfg.actor_critic),
    ]
    rngs = {"denoiser": den_sampler.rng, "rew_end": rew_sampler.rng, "starts": start_sampler.rng}
    return phases, runner, rngs, den_sampler


def play_test_games(agent: Agent, cfg: AtariTrainConfig, epoch: int, num_epochs: int, env_steps: int,
               device: torch.device) -> tuple[dict[str, float], float]:
    """An epoch's test games (the last epoch's `final_eval_episodes`) -> (scalars to log, mean return); records
    the result in the agent's metrics and prints it (beside the paper's reference scores at the end)."""
    assert agent.actor_critic is not None
    last_epoch = epoch == num_epochs
    n_eval = cfg.final_eval_episodes if last_epoch else cfg.eval_episodes
    eval_returns = evaluate_policy(agent.actor_critic, cfg.game, n_eval, cfg.eval_max_steps,
                                   cfg.seed + 10_000 + epoch, device).returns
    mean_return = float(np.mean(eval_returns))
    scalars = {"eval/return": mean_return}
    hns = human_normalized_score(cfg.game, mean_return)
    if hns is not None:
        scalars["eval/hns"] = hns
    tqdm.write(f"epoch {epoch}/{num_epochs}: {env_steps} env steps, eval return {mean_return:.1f} "
               f"over {n_eval} episodes" + (f" (HNS {hns:.3f})" if hns is not None else ""))
    ref = reference_scores().get(cfg.game)
    if last_epoch and ref is not None:
        tqdm.write(f"final: return {mean_return:.1f} ± {float(np.std(eval_returns)):.1f} over {n_eval} "
                   f"games; random policy {ref.random}, human {ref.human}, DIAMOND (paper) {ref.diamond}")
    agent.config.metrics = {"eval_return": round(mean_return, 3), "eval_episodes": n_eval,
                            **({"eval_hns": round(hns, 4)} if hns is not None else {})}
    return scalars, mean_return


class AtariRun:
    """One Atari 100k run's moving parts: the agent, its three phases, the real-game collector (rank 0) and the
    episodes the models train on (the finished ones + the one in progress)."""

    def __init__(self, cfg: AtariTrainConfig, life: RunLifecycle, dist_info: DistInfo, device: torch.device) -> None:
        self.cfg, self.life, self.dist_info, self.device = cfg, life, dist_info, device
        probe = AtariEnv(cfg.game)
        num_actions, action_names = probe.num_actions, list(probe.action_meanings)
        probe.close()
        self.dataset = Dataset(life.run.root, DatasetInfo(
            game=cfg.game, num_actions=num_actions, action_names=action_names, fps=15.0, frame_size=[64, 64],
            source="diamond-play train atari")) if dist_info.is_main else None
        torch.manual_seed(cfg.seed + dist_info.rank)
        weights_cfg = WeightsConfig(agent=agent_config(cfg, num_actions), game=cfg.game, kind="atari",
                                    num_actions=num_actions, action_names=action_names,
                                    sampling=SamplingConfig(dynamics=dataclasses.replace(ATARI_SAMPLER)),
                                    frame_size=[64, 64])
        self.agent = Agent(weights_cfg).to(device)
        assert self.agent.rew_end_model is not None and self.agent.actor_critic is not None
        self.episodes: list[Episode] = []  # shared with the phases' samplers, refilled in place
        self.phases, self.runner, self.np_rngs, self.den_sampler = three_phases(cfg, self.agent, self.episodes,
                                                                                device, dist_info)
        self.collector = (Collector(cfg.game, self.dataset, cfg.epsilon, cfg.seed, device)
                          if self.dataset is not None else None)
        self.finished: list[Episode] = []
        self.in_progress: Episode | None = None
        self.num_epochs: int | None = None  # known once the first epoch has collected

    @property
    def trainers(self) -> list[ModelTrainer]:
        return [trainer for trainer, *_ in self.phases]

    def restore(self, fresh_optimisers: Sequence[str]) -> None:
        """Continue a saved run: models, optimisers, RNGs, imagined episodes, the emulator and the episodes."""
        state = self.life.restore(self.trainers, fresh_optimisers)
        if state:
            # Each rank continues its own random stream and imagined episodes (a run resumed with a different
            # number of processes starts the extra ranks from rank 0's).
            own = self.dist_info.rank if self.dist_info.rank < len(state["rng"]) else 0
            set_rng_state(state["rng"][own], self.np_rngs)
            self.runner.load_state_dict(state["rollouts"][own])
            self.num_epochs = state["num_epochs"]
            if self.collector is not None and self.dataset is not None:
                self.collector.load_state_dict(state["collector"])
                # Episodes written after the checkpoint (by the killed epoch) are collected again, identically,
                # from the restored emulator and RNG state: drop them so none is counted twice.
                for path in self.dataset.episode_paths()[state["episodes_on_disk"]:]:
                    path.unlink()
        if self.dataset is not None and self.collector is not None:
            finished = [self.dataset[i] for i in range(len(self.dataset))]
            in_progress = self.collector.in_progress()
        else:
            finished, in_progress = [], None
        self.finished, self.in_progress = broadcast_object((finished, in_progress), self.dist_info)
        self.episodes[:] = self.finished + ([self.in_progress] if self.in_progress is not None else [])

    def planned_updates(self, num_epochs: int) -> int:
        first = sum(p.steps_first_epoch for *_, p in self.phases)
        return first + (num_epochs - 1) * sum(p.steps_per_epoch for *_, p in self.phases)

    def collect(self, first: bool, bar: tqdm) -> tuple[list[Episode], list[float], int, int]:
        """Play the real game (rank 0) and share the new episodes: (new episodes, their returns, env steps so far,
        steps collected now)."""
        new, returns, env_steps, collected_now = [], [], 0, 0
        if self.collector is not None:
            before = self.collector.steps
            new, returns = collect_epoch(self.collector, self.agent.actor_critic, self.cfg, first, bar)
            self.in_progress = self.collector.in_progress()
            env_steps, collected_now = self.collector.steps, self.collector.steps - before
        new, self.in_progress, env_steps = broadcast_object((new, self.in_progress, env_steps), self.dist_info)
        self.finished.extend(new)
        self.episodes[:] = self.finished + ([self.in_progress] if self.in_progress is not None else [])
        return new, returns, env_steps, collected_now

    def end_epoch(self, logger: RunLogger, scalars: dict[str, float], env_steps: int, rng_states: list[Any],
                  rollout_states: list[Any]) -> None:
        """Rank 0 after an epoch: test games, log, sample strip, export and checkpoint (with every rank's random
        and rollout states)."""
        cfg, life, epoch, num_epochs = self.cfg, self.life, self.life.epoch, self.num_epochs
        assert num_epochs is not None and self.collector is not None and self.dataset is not None
        is_best = False
        if epoch == num_epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
            evaluated, mean_return = play_test_games(self.agent, cfg, epoch, num_epochs, env_steps, self.device)
            scalars.update(evaluated)
            is_best = mean_return > life.best
            life.best = max(life.best, mean_return)
        logger.scalars(epoch, scalars)
        if cfg.sample_every and epoch % cfg.sample_every == 0:
            logger.image(epoch, "samples/real_vs_imagined", sample_strip(self.agent, self.den_sampler, self.device,
                                                                         epoch))
        self.agent.config.provenance = {
            "game": cfg.game, "env_steps": env_steps, "epochs": epoch,
            "episodes": len(self.finished), "denoiser_steps": self.phases[0][0].steps, "command": life.command,
            "trained_with": f"diamond_play {__version__}", "recipe": "train atari",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        life.run.export_weights(self.agent, best=is_best)
        life.save(self.trainers, rng=rng_states, rollouts=rollout_states, num_epochs=num_epochs,
                  collector=self.collector.state_dict(), episodes_on_disk=len(self.dataset))


def train_atari(game: str | None, out: Path | None, resume: Path | None, preset: str | None,
                overrides: list[str], command: str = "", fresh_optimisers: Sequence[str] = ()) -> Path:
    dist_info = init_distributed(device="cuda" if torch.cuda.is_available() else "cpu")
    life = RunLifecycle(resume or out, resume is not None, command, best=-float("inf"),  # type: ignore[arg-type]
                        is_main=dist_info.is_main)
    cfg = load_config(life.run, game, preset, life.resuming, overrides)
    use_threads(cfg.num_threads)
    device = resolve_device(cfg.device, dist_info.local_rank if dist_info.enabled else None)
    life.write_config(cfg)
    run = AtariRun(cfg, life, dist_info, device)
    run.restore(fresh_optimisers)
    estimate = run.num_epochs or 1 + num_epochs_after_first(cfg, cfg.first_epoch_min_steps)
    logger, bar = life.open(run.planned_updates(estimate), f"train atari {cfg.game}",
                            run.planned_updates(life.epoch) if life.epoch else 0, life.epoch)
    try:
        while run.num_epochs is None or life.epoch < run.num_epochs:
            first = life.epoch == 0
            new, returns, env_steps, collected_now = run.collect(first, bar)
            if first:
                run.num_epochs = 1 + num_epochs_after_first(cfg, env_steps)
                bar.total = run.planned_updates(run.num_epochs)
                bar.refresh()
            metrics: dict[str, list[float]] = {}
            for trainer, micro_batches, loss_fn, phase in run.phases:
                steps = phase.steps_first_epoch if first else phase.steps_per_epoch
                run_phase(trainer, micro_batches, loss_fn, steps, bar, metrics)
            life.epoch += 1
            rng_states = gather_per_rank(rng_state(run.np_rngs), dist_info)
            rollout_states = gather_per_rank(tensors_to_cpu(run.runner.state_dict()), dist_info)
            if dist_info.is_main:
                scalars = {k: float(np.mean(v)) for k, v in metrics.items()}
                scalars.update({"epoch": life.epoch, "env_steps": env_steps, "collect/steps": collected_now,
                                "collect/episodes": len(new)})
                if returns:
                    scalars["collect/return"] = float(np.mean(returns))
                run.end_epoch(logger, scalars, env_steps, rng_states, rollout_states)
    finally:
        life.close()
    finish_distributed(dist_info)
    return life.run.root


def tensors_to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: tensors_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to_cpu(v) for v in obj)
    return obj


def gather_per_rank(obj: Any, dist_info: DistInfo) -> list[Any]:
    """Every rank's `obj` (e.g. its RNG state), indexed by rank; called by all ranks."""
    if not dist_info.enabled:
        return [obj]
    import torch.distributed as dist

    objs: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(objs, obj)
    return objs
