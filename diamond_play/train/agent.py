"""Recipe: an actor-critic trained entirely inside a frozen world model (DIAMOND's RL phase on its own).

`diamond-play train agent --weights ENGINE --out RUN_DIR [--data DATASET]`: the engine's denoiser and
reward/termination model imagine every step; imagined episodes start from segments of real frames of the same game;
the rollout and loss are the Atari 100k loop's (`train.rl`). Each epoch is `steps_per_epoch` updates, then the
metrics are logged, a Breakout behaviour probe and (every `eval_every` epochs) real games are played, the engine +
actor-critic are exported and the training state (actor-critic, optimiser, RNGs, the imagined environments) is saved,
so `--resume RUN_DIR` continues as if it had never stopped. The frozen world model is not in the state: it is read
from the engine again, which must be the same file (its digest is checked).

Run directory: config.yaml, checkpoints/{state.pt, last/, best/}, log.csv and TensorBoard events.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from diamond_play import __version__
from diamond_play.accel.modes import ExecutionMode, execution_mode_named
from diamond_play.config import (
    ACTOR_CRITIC_SIZES,
    ActorCriticConfig,
    WeightsConfig,
    read_yaml,
    sized,
)
from diamond_play.data.collect import BREAKOUT_BALL_X, BREAKOUT_BALL_Y, BREAKOUT_PADDLE_X, BreakoutTracker
from diamond_play.data.episodes import Dataset, Episode
from diamond_play.data.segments import SegmentSampler
from diamond_play.devices import resolve_device
from diamond_play.envs.atari import ATARI_100K_GAMES, AtariEnv, ale_games, human_normalized_score
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor
from diamond_play.models.actor_critic import ActorCritic
from diamond_play.models.agent import Agent
from diamond_play.threads import use_threads
from diamond_play.train.atari import evaluate_policy, forever, tensors_to_cpu
from diamond_play.train.core import (
    ModelTrainer,
    OptimConfig,
    RunDir,
    RunLifecycle,
    RunLogger,
    build_run_config,
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
from diamond_play.weights.format import MODEL_FILE, SPAWN_DIR, file_sha256


@dataclass
class AgentTrainConfig:
    """Every setting of an imagination-only actor-critic run (saved as RUN_DIR/config.yaml)."""

    engine: str = ""
    """Weights directory of the world model; its denoiser and reward/termination model stay frozen."""
    data: str = ""
    """Dataset of the engine's game whose real segments start the imagined episodes (default: the engine's own,
    when its provenance names an existing dataset folder)."""
    actor_critic_size: str = "paper"
    """Size of the trained network: paper (DIAMOND's actor-critic), small or tiny."""
    actor_critic_model: dict[str, Any] = field(default_factory=dict)
    """ActorCriticConfig fields on top of the size, e.g. {lstm_dim: 256}."""
    epochs: int = 100
    """Epochs to train; each ends with logging, export and a resumable checkpoint."""
    steps_per_epoch: int = 100
    """Actor-critic updates per epoch."""
    num_envs: int = 32
    """Imagined environments stepped together (the paper's actor-critic batch)."""
    horizon: int = 15
    """Imagined episodes are truncated after this many steps and restarted from fresh real segments."""
    backup_every: int = 15
    """Imagined steps per update (the λ-return window)."""
    num_steps_denoising: int = 0
    """Euler steps per imagined frame; 0: the engine's own sampler setting (3 for Atari engines)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=0.0, max_grad_norm=100.0))
    """AdamW for the actor-critic (the paper's: lr 1e-4, no weight decay, clipping 100, 100 warm-up steps)."""
    rl: ActorCriticLossConfig = field(default_factory=ActorCriticLossConfig)
    """Discount, λ and the loss weights."""
    eval_every: int = 5
    """Epochs between real-game evaluations (Atari engines only); 0: only after the last epoch."""
    eval_episodes: int = 4
    """Full real games per evaluation (ε = 0, actions sampled from π)."""
    final_eval_episodes: int = 20
    """Full real games after the last epoch."""
    eval_max_steps: int = 0
    """Cap on a real game's steps; 0: the game's own end."""
    probe_frames: int = 2000
    """Held-out real frames for the behaviour probe (Breakout); 0: no probe."""
    device: str = "auto"
    amp: bool = False
    """bf16 autocast for imagination and the actor-critic."""
    world_model_mode: str = "auto"
    """How imagination runs the frozen world model: an execution mode without CUDA graphs (`diamond-play play
    --help` lists them; compiled modes compile once for the batch of `num_envs`), or auto: eager-bf16-cl with
    amp, else eager-fp32."""
    seed: int = 0
    num_threads: int = 0
    """CPU threads for torch (0: the idle cores, at least 1). On a machine shared with another job, 1."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Minutes on a CPU: for tests and for trying the pipeline.
    "tiny": {"actor_critic_size": "tiny", "epochs": 2, "steps_per_epoch": 2, "num_envs": 4, "horizon": 5,
             "backup_every": 5, "eval_every": 1, "eval_episodes": 1, "final_eval_episodes": 1,
             "eval_max_steps": 100, "probe_frames": 100},
}


def actor_critic_config(cfg: AgentTrainConfig, engine: WeightsConfig) -> ActorCriticConfig:
    if cfg.actor_critic_size not in ACTOR_CRITIC_SIZES:
        raise UserError(f"unknown actor_critic_size {cfg.actor_critic_size!r}: use one of "
                        f"{sorted(ACTOR_CRITIC_SIZES)}")
    assert engine.agent.rew_end_model is not None
    return sized(ACTOR_CRITIC_SIZES[cfg.actor_critic_size], {"img_size": engine.agent.rew_end_model.img_size,
                                                             "num_actions": engine.num_actions,
                                                             **cfg.actor_critic_model}, "actor_critic_model")


def engine_dataset(cfg: AgentTrainConfig, engine: Agent) -> Dataset:
    """The dataset the imagined episodes start from, checked against the engine."""
    data = cfg.data or str(engine.config.provenance.get("data", ""))
    if not data or not (Path(data) / "dataset.yaml").is_file():
        raise UserError("which real frames start the imagined episodes? pass --data DATASET (a dataset of the "
                        f"engine's game, {engine.config.game})")
    dataset = Dataset(data)
    info = dataset.info
    if len(dataset) == 0:
        raise UserError(f"dataset {data!r} has no episodes: record or collect some first")
    if info.game.lower() != engine.config.game.lower() or info.num_actions != engine.config.num_actions:
        raise UserError(f"dataset {data!r} holds {info.game} with {info.num_actions} actions but the engine plays "
                        f"{engine.config.game} with {engine.config.num_actions}: pass --data of the engine's game")
    if info.action_type != "discrete":
        raise UserError("train agent needs discrete actions (the actor-critic picks one action per step)")
    return dataset


# ---------------------------------------------------------------------------------------------------------------
# Behaviour probe


@dataclass
class BreakoutProbeFrames:
    """Real Breakout frames with the ball and paddle positions read from the emulator's RAM."""

    frames: np.ndarray  # uint8 (N, 64, 64, 3)
    first: np.ndarray  # bool (N,): the frame starts an episode (the LSTM is zeroed there)
    ball_minus_paddle: np.ndarray  # float (N,)
    ball_in_play: np.ndarray  # bool (N,)


def breakout_probe_frames(num_frames: int, seed: int) -> BreakoutProbeFrames:
    """Frames played by the scripted tracker (never seen in training: its own seed), one life per episode."""
    env = AtariEnv("Breakout", end_on_life_loss=True, seed=seed)
    rng = np.random.default_rng(seed)
    tracker = BreakoutTracker(rng, env.action_meanings)
    frames, first, offset, in_play = [], [], [], []
    frame, start = None, True
    while len(frames) < num_frames:
        if frame is None:
            frame, _ = env.reset()
            tracker.new_episode()
            start = True
        ram = env.ram()
        frames.append(frame)
        first.append(start)
        offset.append(float(ram[BREAKOUT_BALL_X]) - float(ram[BREAKOUT_PADDLE_X]))
        in_play.append(bool(ram[BREAKOUT_BALL_Y] != 0))
        frame, _, end, trunc, _ = env.step(tracker(env))
        start = False
        if end or trunc:
            frame = None
    env.close()
    return BreakoutProbeFrames(np.stack(frames), np.array(first), np.array(offset), np.array(in_play))


@torch.no_grad()
def breakout_probe(policy: torch.nn.Module, probe: BreakoutProbeFrames, action_names: Sequence[str],
                   device: torch.device) -> dict[str, float]:
    """Does the policy react to the game? The correlation between its right-minus-left preference and the ball's
    horizontal offset from the paddle (ball in play), and how likely it fires with and without a ball in play."""
    policy.eval()
    probs, state = [], None
    for frame, first in zip(probe.frames, probe.first, strict=True):
        if first:
            state = None
        logits, _, state = policy(frames_to_tensor(frame[None], device), state)
        probs.append(torch.softmax(logits.float(), dim=-1)[0].cpu().numpy())
    p = np.stack(probs)
    names = list(action_names)
    right_minus_left = p[:, names.index("RIGHT")] - p[:, names.index("LEFT")]
    fire = p[:, names.index("FIRE")]
    play = probe.ball_in_play
    x, y = right_minus_left[play], probe.ball_minus_paddle[play]
    corr = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else 0.0
    out = {"probe/right_left_vs_ball_offset_corr": corr, "probe/fire_in_play": float(fire[play].mean())}
    if (~play).any():
        out["probe/fire_ball_out"] = float(fire[~play].mean())
    return out


# ---------------------------------------------------------------------------------------------------------------
# The run


def imagination_mode(cfg: AgentTrainConfig, device: torch.device) -> ExecutionMode:
    name = cfg.world_model_mode if cfg.world_model_mode != "auto" else "eager-bf16-cl" if cfg.amp else "eager-fp32"
    mode = execution_mode_named(name, device)
    if mode.cuda_graph:
        raise UserError(f"world_model_mode={name} replays CUDA graphs, which imagination does not use: pick a mode "
                        "without graph in its name")
    return mode


def load_config(run: RunDir, resume: bool, layers: list[dict[str, Any]], overrides: list[str]) -> AgentTrainConfig:
    if resume:
        return build_run_config(AgentTrainConfig, [read_yaml(run.config_path)], overrides)
    return build_run_config(AgentTrainConfig, layers, overrides)


def agent_layers(engine: Path | None, data: Path | None, preset: str | None) -> list[dict[str, Any]]:
    preset = preset or "paper"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: use one of {sorted(PRESETS)}")
    return [PRESETS[preset], {"engine": str(engine) if engine else "", **({"data": str(data)} if data else {})}]


def load_engine_and_starts(cfg: AgentTrainConfig, device: torch.device) -> tuple[Agent, Dataset, list[Episode]]:
    """The frozen engine, checked to be one an agent can learn in, and the dataset whose segments start the
    imagined episodes, checked to fit it."""
    from diamond_play.weights.loading import load_agent

    agent = load_agent(cfg.engine, device=device)
    if agent.rew_end_model is None:
        raise UserError(f"engine {cfg.engine!r} has no reward/termination model: an agent learns from imagined "
                        "rewards; train one with `diamond-play train engine` (train_rew_end=true)")
    if agent.upsampler is not None or agent.config.game_kind.multi_hot_actions:
        raise UserError("train agent needs a one-stage engine with discrete actions (Atari or a recorded game)")
    dataset = engine_dataset(cfg, agent)
    episodes = [dataset[i] for i in range(len(dataset))]
    for ep in episodes:
        dataset.check_actions(ep)
    size = agent.rew_end_model.cfg.img_size
    if tuple(episodes[0].frames.shape[1:3]) != (size, size):
        h, w = episodes[0].frames.shape[1:3]
        raise UserError(f"dataset {str(dataset.root)!r} has {h}x{w} frames; the engine works at {size}x{size}: pass "
                        "a dataset of the engine's resolution")
    return agent, dataset, episodes


def real_game_evaluation(agent: Agent, cfg: AgentTrainConfig, epoch: int, games: int, ac_steps: int, hours: float,
                         device: torch.device) -> tuple[dict[str, float], float]:
    """`games` full real games of the actor-critic -> (scalars to log, mean return); also records the result in
    the agent's metrics and prints a line."""
    assert agent.actor_critic is not None
    played = evaluate_policy(agent.actor_critic, agent.config.game, games, cfg.eval_max_steps,
                             cfg.seed + 10_000 + epoch, device)
    mean, std = float(np.mean(played.returns)), float(np.std(played.returns))
    scalars = {"eval/return": mean, "eval/return_std": std, "eval/length": float(np.mean(played.lengths)),
               "eval/episodes": games}
    hns = human_normalized_score(agent.config.game, mean)
    if hns is not None:
        scalars["eval/hns"] = hns
    tqdm.write(f"epoch {epoch}/{cfg.epochs}: {ac_steps} actor-critic steps, {hours:.2f} h, real return {mean:.1f} "
               f"± {std:.1f} over {games} games" + (f" (HNS {hns:.3f})" if hns is not None else ""))
    agent.config.metrics = {**agent.config.metrics, "agent_eval": {
        "return": round(mean, 3), "return_std": round(std, 3), "episodes": games,
        "length": round(float(np.mean(played.lengths)), 1), "actor_critic_steps": ac_steps,
        **({"hns": round(hns, 4)} if hns is not None else {})}}
    return scalars, mean


class AgentRun:
    """An actor-critic learning inside a frozen engine: the imagined environments, the rollouts, the trainer, and
    the probes and real games it is measured by."""

    def __init__(self, cfg: AgentTrainConfig, life: RunLifecycle, agent: Agent, dataset: Dataset,
                 episodes: list[Episode], device: torch.device) -> None:
        self.cfg, self.life, self.agent, self.dataset, self.device = cfg, life, agent, dataset, device
        assert agent.weights_path is not None
        self.engine_digest = file_sha256(agent.weights_path / MODEL_FILE)
        for p in agent.parameters():
            p.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        ac_cfg = actor_critic_config(cfg, agent.config)
        agent.actor_critic = ActorCritic(ac_cfg).to(device)
        agent.config = dataclasses.replace(agent.config, agent=dataclasses.replace(agent.config.agent,
                                                                                   actor_critic=ac_cfg))
        self.sampler = agent.config.sampling.dynamics
        if cfg.num_steps_denoising:
            self.sampler = dataclasses.replace(self.sampler, num_steps_denoising=cfg.num_steps_denoising)
        starts = SegmentSampler(episodes, agent.denoiser.num_steps_conditioning, cfg.num_envs, seed=cfg.seed + 200)
        self.mode = imagination_mode(cfg, device)
        frozen = copy.deepcopy(agent)  # the mode prepares its networks in place; the exported engine stays as loaded
        frozen.actor_critic = None
        envs = ImaginedEnvs(imagination_world_model(frozen, cfg.num_envs, self.sampler, device, self.mode), starts,
                            cfg.horizon)
        self.runner = RolloutRunner(envs, ac_cfg.lstm_dim)
        self.trainer = ModelTrainer("actor_critic", agent.actor_critic, cfg.optim, device, cfg.amp)
        self.loss_fn = imagination_loss_fn(self.runner, cfg.backup_every, cfg.rl)
        self.np_rngs = {"starts": starts.rng}
        self.is_atari = agent.config.game_kind.real_game and (agent.config.game in ATARI_100K_GAMES
                                                              or agent.config.game in ale_games())
        self.probe = (breakout_probe_frames(cfg.probe_frames, seed=cfg.seed + 77_777)
                      if cfg.probe_frames and agent.config.game == "Breakout" else None)

    def restore(self, fresh_optimisers: Sequence[str]) -> None:
        state = self.life.restore([self.trainer], fresh_optimisers)
        if state:
            if state["engine_digest"] != self.engine_digest:
                raise UserError(f"engine {self.cfg.engine!r} is not the one this run started with (its "
                                "model.safetensors changed): resume with the original engine, or start a new run")
            set_rng_state(state["rng"], self.np_rngs)
            self.runner.load_state_dict(state["rollouts"])

    def end_epoch(self, logger: RunLogger, metrics: dict[str, list[float]]) -> None:
        """After an epoch: the policy probe, real games, log, export (best: the highest real return), checkpoint."""
        cfg, life, agent, trainer = self.cfg, self.life, self.agent, self.trainer
        epoch, hours = life.epoch, life.train_seconds / 3600
        assert agent.actor_critic is not None
        scalars = {k: float(np.mean(v)) for k, v in metrics.items()}
        scalars.update({"epoch": epoch, "hours": hours})
        if self.probe is not None:
            scalars.update(breakout_probe(agent.actor_critic, self.probe, agent.config.action_names, self.device))
        last = epoch == cfg.epochs
        is_best = False
        if self.is_atari and (last or (cfg.eval_every and epoch % cfg.eval_every == 0)):
            games = cfg.final_eval_episodes if last else cfg.eval_episodes
            evaluated, mean_return = real_game_evaluation(agent, cfg, epoch, games, trainer.steps, hours, self.device)
            scalars.update(evaluated)
            is_best = mean_return > life.best
            life.best = max(life.best, mean_return)
        logger.scalars(trainer.steps, scalars)
        agent.config.provenance = {**agent.config.provenance, "agent": {
            "recipe": "train agent", "engine": str(cfg.engine), "data": str(self.dataset.root),
            "actor_critic_steps": trainer.steps, "epochs": epoch, "command": life.command,
            "imagination": f"{cfg.num_envs} envs, horizon {cfg.horizon}, {self.sampler.num_steps_denoising} Euler "
                           f"steps, world model {self.mode.name}, actor-critic {'bf16' if cfg.amp else 'fp32'}",
            "train_hours": round(hours, 2), "trained_with": f"diamond_play {__version__}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}}
        life.run.export_weights(agent, best=is_best)
        life.save([trainer], rng=rng_state(self.np_rngs), rollouts=tensors_to_cpu(self.runner.state_dict()),
                  engine_digest=self.engine_digest)


def train_agent(out: Path | None, resume: Path | None, layers: list[dict[str, Any]], overrides: list[str],
                command: str = "", fresh_optimisers: Sequence[str] = ()) -> Path:
    life = RunLifecycle(resume or out, resume is not None, command, best=-float("inf"))  # type: ignore[arg-type]
    cfg = load_config(life.run, life.resuming, layers, overrides)
    if not cfg.engine:
        raise UserError("which world model? pass --weights ENGINE (a weights directory with a reward/termination "
                        "model, e.g. diamond_play/shipped/atari/Breakout)")
    use_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    agent, dataset, episodes = load_engine_and_starts(cfg, device)
    assert agent.weights_path is not None
    life.write_config(cfg)
    spawn = agent.weights_path / SPAWN_DIR
    if not life.resuming and spawn.is_dir():  # the exported engine keeps its start states
        shutil.copytree(spawn, life.run.spawn_dir)
    run = AgentRun(cfg, life, agent, dataset, episodes, device)
    run.restore(fresh_optimisers)
    logger, bar = life.open(cfg.epochs * cfg.steps_per_epoch, f"train agent {agent.config.game}",
                            life.epoch * cfg.steps_per_epoch, run.trainer.steps)
    try:
        while life.epoch < cfg.epochs:
            metrics: dict[str, list[float]] = {}
            run_phase(run.trainer, forever(), run.loss_fn, cfg.steps_per_epoch, bar, metrics)  # rollouts, no batches
            life.epoch += 1
            run.end_epoch(logger, metrics)
    finally:
        life.close()
    return life.run.root

