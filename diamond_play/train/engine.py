"""Recipe: train a world model (denoiser, optional reward/termination model and upsampler) on a static dataset.

`diamond-play train engine --data DATASET --out RUN_DIR` — recorded gameplay of any game, the Breakout default
engine, and (with the CS:GO presets) the Dust II models all use this recipe on top of `train.core`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from diamond_play import __version__
from diamond_play.config import (
    ATARI_SAMPLER,
    ATARI_SIGMA_OFFSET_NOISE,
    CSGO_DYNAMICS_SIZES,
    CSGO_SIGMA_LOC,
    CSGO_SIGMA_OFFSET_NOISE,
    CSGO_UPSAMPLER_SAMPLERS,
    DENOISER_SIZES,
    REW_END_SIZES,
    UPSAMPLER_SIZES,
    AgentConfig,
    DenoiserConfig,
    InnerModelConfig,
    SamplingConfig,
    SigmaDistributionConfig,
    WeightsConfig,
    csgo_sampling,
    read_yaml,
    sized,
)
from diamond_play.data.episodes import Dataset, Episode
from diamond_play.data.segments import SegmentSampler, SegmentStream, segment_batches
from diamond_play.data.spawns import spawns_from_episodes, write_spawns
from diamond_play.devices import resolve_device
from diamond_play.envs.atari import ATARI_100K_GAMES, ale_games
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.threads import use_threads
from diamond_play.train.core import (
    DistInfo,
    ModelTrainer,
    OptimConfig,
    RunLifecycle,
    RunLogger,
    build_run_config,
    finish_distributed,
    init_distributed,
    rng_state,
    run_phase,
    set_rng_state,
)
from diamond_play.train.world_model import (
    denoiser_loss,
    rew_end_loss,
    sample_strip,
    upsampler_loss,
)


@dataclass
class EngineTrainConfig:
    """Every setting of an engine training run (saved as RUN_DIR/config.yaml)."""

    data: str = ""
    """Dataset folder to train on (made by `diamond-play record`, `capture`, Atari collection or CS:GO prepare)."""
    recipe: str = "engine"
    """engine (discrete actions) or csgo (DIAMOND's CS:GO models on multi-hot actions)."""
    spawn_data: str = ""
    """Dataset whose episode starts become the spawn points (default: the training data)."""
    lazy_data: bool = False
    """Read training windows from disk instead of loading every episode (big datasets)."""
    loader_workers: int = 0
    """Processes that draw training batches (0: in the training process)."""
    preset: str = "small"
    """Model size (`train.world_model`): tiny, small or paper; the CS:GO recipe's fast or paper."""
    game: str = ""
    """The engine's game name (default: the dataset's)."""
    kind: str = ""
    """atari (start states from the real game) or custom (spawn points); default from the game."""
    num_steps_conditioning: int = 4
    """Past frames and actions the denoiser conditions on (L)."""
    resolution: list[int] = field(default_factory=list)
    """H, W of the dynamics model (default: the dataset's)."""
    upsampler: bool = False
    """Two stages: dynamics at `resolution`, an upsampler back to the dataset's size."""
    denoiser: dict[str, Any] = field(default_factory=dict)
    """InnerModelConfig fields on top of the preset's."""
    sigma_offset_noise: float = ATARI_SIGMA_OFFSET_NOISE
    """Per-channel offset noise of the denoiser's training noise (the paper's Atari value)."""
    train_rew_end: bool = True
    """Also train the reward/termination model (needs rewards and ends in the data)."""
    rew_end: dict[str, Any] = field(default_factory=dict)
    """RewEndModelConfig fields on top of the preset's."""
    epochs: int = 100
    """Epochs to train; each ends with logging, export and a resumable checkpoint."""
    steps_per_epoch: int = 200
    """Denoiser optimiser steps per epoch."""
    rew_end_steps_per_epoch: int = 200
    """Reward/termination optimiser steps per epoch."""
    batch_size: int = 32
    """Denoiser windows per step."""
    num_autoregressive_steps: int = 1
    """K: a denoiser window holds L + 1 + K frames and the loss predicts K + 1 of them."""
    upsampler_batch_size: int = 8
    """Upsampler windows per step."""
    upsampler_steps_per_epoch: int = 200
    """Upsampler optimiser steps per epoch."""
    upsampler_model: dict[str, Any] = field(default_factory=dict)
    """InnerModelConfig fields of the upsampler on top of the preset's."""
    rew_end_batch_size: int = 32
    """Reward/termination windows per step."""
    rew_end_seq_length: int = 19
    """Reward/termination window: 15 steps after a burn-in of 4, as the official Atari trainer."""
    denoiser_optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW of the denoiser."""
    rew_end_optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_grad_norm=100.0))
    """AdamW of the reward/termination model (clipping 100, as the official trainer)."""
    upsampler_optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_grad_norm=10.0))
    """AdamW of the upsampler (clipping 10, the CS:GO trainer's)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    amp: bool = False
    """bf16 autocast."""
    compile: bool = False
    """torch.compile the denoiser and upsampler for training."""
    seed: int = 0
    num_threads: int = 0
    """CPU threads for torch (0: the idle cores, at least 1)."""
    sample_every: int = 5
    """Epochs between TensorBoard sample strips (0: none)."""


# Run lengths per preset (model sizes are in train.world_model). `tiny` shows the whole pipeline in minutes on a CPU;
# its reward/termination model runs at 10x the paper's lr with a short warm-up, so that even this briefly trained
# it has learned that terminations are rare (at the paper's lr it still predicts one every other step, and play
# re-seeds from the real game on every frame).
ENGINE_RUN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 2, "steps_per_epoch": 50, "rew_end_steps_per_epoch": 25, "sample_every": 1,
             "rew_end_optim": {"lr": 1e-3, "warmup_steps": 10}},
}


def engine_layers(data: Path | None, preset: str | None) -> list[dict[str, Any]]:
    """A new `train engine` run's config layers: the preset's run lengths, then the data and model size."""
    return [ENGINE_RUN_PRESETS.get(preset or "", {}),
            {"data": str(data) if data else "", **({"preset": preset} if preset else {})}]


def model_resolution(cfg: EngineTrainConfig, info) -> tuple[tuple[int, int], tuple[int, int], int | None]:
    """-> (dynamics H W, shown H W, upsampling factor or None)."""
    native = (int(info.frame_size[0]), int(info.frame_size[1]))
    low = (int(cfg.resolution[0]), int(cfg.resolution[1])) if cfg.resolution else native
    if len(cfg.resolution) not in (0, 2):
        raise UserError("resolution takes two numbers: H W")
    if not cfg.upsampler:
        return low, low, None
    if low == native:
        raise UserError("--upsampler needs a --resolution smaller than the dataset's frames "
                        f"({native[0]}x{native[1]})")
    factor = native[0] // low[0]
    if native[0] % low[0] or native[1] % low[1] or native[1] // low[1] != factor:
        raise UserError(f"the dataset's {native[0]}x{native[1]} frames must be an integer multiple (same for H and W) "
                        f"of --resolution {low[0]} {low[1]}")
    return low, native, factor


def prepare_episodes(episodes: list[Episode], low: tuple[int, int], two_stage: bool) -> list[Episode]:
    """Resize frames to the dynamics resolution; two-stage engines keep the originals as full-res targets."""
    if tuple(episodes[0].frames.shape[1:3]) == low and not two_stage:
        return episodes

    def resize(frames: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(f, (low[1], low[0]), interpolation=cv2.INTER_AREA) for f in frames])

    out = []
    for e in episodes:
        out.append(dataclasses.replace(
            e, frames=resize(e.frames), full_res_frames=e.frames if two_stage else None,
            final_frame=None if e.final_frame is None else resize(e.final_frame[None])[0]))
    return out


def csgo_weights_config(cfg: EngineTrainConfig, info) -> WeightsConfig:
    """DIAMOND's two-stage CS:GO engine: dynamics on the dataset's low-res frames (noisy previous observations,
    K autoregressive steps), upsampler to its full-res frames, no reward/termination model."""
    if info.full_res_size is None:
        raise UserError(f"dataset {cfg.data!r} has no full-res frames: prepare it with `python -m data_tools.csgo "
                        "prepare`")
    low, full = list(info.frame_size), list(info.full_res_size)
    factor = full[0] // low[0]
    sigmas = SigmaDistributionConfig(loc=CSGO_SIGMA_LOC)
    inner = sized(CSGO_DYNAMICS_SIZES[cfg.preset], {"num_actions": info.num_actions, "noise_cond_embedding": True,
                                                   "num_steps_conditioning": cfg.num_steps_conditioning,
                                                   **cfg.denoiser}, "denoiser")
    denoiser = DenoiserConfig(inner_model=inner, sigma_offset_noise=cfg.sigma_offset_noise, noise_previous_obs=True,
                              num_autoregressive_steps=cfg.num_autoregressive_steps, sigma_distribution=sigmas)
    up_inner = upsampler_inner_model(cfg)
    upsampler = DenoiserConfig(inner_model=up_inner, sigma_offset_noise=cfg.sigma_offset_noise,
                               upsampling_factor=factor, sigma_distribution=dataclasses.replace(sigmas))
    return WeightsConfig(agent=AgentConfig(denoiser=denoiser, upsampler=upsampler), game=cfg.game or "csgo",
                         kind="csgo", num_actions=info.num_actions, action_names=list(info.action_names),
                         sampling=csgo_sampling("fast"), frame_size=full)


def upsampler_inner_model(cfg: EngineTrainConfig) -> InnerModelConfig:
    return sized(UPSAMPLER_SIZES[cfg.preset], {"num_steps_conditioning": 1, "num_actions": None,
                                               "noise_cond_embedding": True, "is_upsampler": True,
                                               **cfg.upsampler_model}, "upsampler_model")


def build_agent_config(cfg: EngineTrainConfig, info) -> WeightsConfig:
    if cfg.preset not in DENOISER_SIZES:
        raise UserError(f"unknown preset {cfg.preset!r}: use one of {sorted(DENOISER_SIZES)}")
    if cfg.recipe == "csgo":
        if info.action_type != "multi_hot":
            raise UserError(f"{cfg.data!r} holds discrete actions, not CS:GO's multi-hot ones: use `diamond-play "
                            "train engine`")
        return csgo_weights_config(cfg, info)
    if info.action_type != "discrete":
        raise UserError("engine training supports discrete actions; CS:GO data uses `diamond-play train csgo`")
    (h, w), shown, factor = model_resolution(cfg, info)
    inner = sized(DENOISER_SIZES[cfg.preset], {"num_steps_conditioning": cfg.num_steps_conditioning,
                                                "num_actions": info.num_actions, **cfg.denoiser}, "denoiser")
    denoiser = DenoiserConfig(inner_model=inner, sigma_offset_noise=cfg.sigma_offset_noise,
                              num_autoregressive_steps=cfg.num_autoregressive_steps)
    rew_end = None
    if cfg.train_rew_end:
        if h != w:
            raise UserError("the reward/termination model needs square frames: pass train_rew_end=false")
        rew_end = sized(REW_END_SIZES[cfg.preset], {"img_size": h, "num_actions": info.num_actions, **cfg.rew_end},
                        "rew_end")
    upsampler = None
    sampling = SamplingConfig(dynamics=dataclasses.replace(ATARI_SAMPLER))
    if factor is not None:
        upsampler = DenoiserConfig(inner_model=upsampler_inner_model(cfg), sigma_offset_noise=CSGO_SIGMA_OFFSET_NOISE,
                                   upsampling_factor=factor,
                                   sigma_distribution=SigmaDistributionConfig(loc=CSGO_SIGMA_LOC))
        sampling.upsampler = dataclasses.replace(CSGO_UPSAMPLER_SAMPLERS["fast"])
    game = cfg.game or info.game
    # Engines of ALE games start from the real emulator; others (and two-stage ones) from spawn points.
    is_ale = game in ATARI_100K_GAMES or game in ale_games()
    kind = cfg.kind or ("atari" if is_ale and upsampler is None else "custom")
    return WeightsConfig(agent=AgentConfig(denoiser=denoiser, upsampler=upsampler, rew_end_model=rew_end), game=game,
                         kind=kind, num_actions=info.num_actions, action_names=list(info.action_names),
                         sampling=sampling, frame_size=list(shown), keymap=dict(info.keymap))


# DIAMOND's CS:GO trainer.yaml: 600 epochs of 400 optimiser steps; dynamics batch 16 and upsampler
# batch 4, each accumulated over 8 micro-batches; clipping 10; no reward/termination model. Smaller presets for
# CPUs and tests.
CSGO_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"preset": "paper", "loader_workers": 4},
    "small": {"preset": "small", "loader_workers": 2, "epochs": 100, "steps_per_epoch": 100,
              "upsampler_steps_per_epoch": 100, "denoiser_optim": {"grad_acc_steps": 1},
              "upsampler_optim": {"grad_acc_steps": 1}},
    "tiny": {"preset": "tiny", "epochs": 2, "batch_size": 2, "steps_per_epoch": 2, "upsampler_batch_size": 1,
             "upsampler_steps_per_epoch": 2, "denoiser_optim": {"grad_acc_steps": 2},
             "upsampler_optim": {"grad_acc_steps": 2}, "sample_every": 1},
}
CSGO_RECIPE: dict[str, Any] = {
    "recipe": "csgo", "num_autoregressive_steps": 4, "sigma_offset_noise": CSGO_SIGMA_OFFSET_NOISE,
    "train_rew_end": False,
    "batch_size": 16, "steps_per_epoch": 400, "upsampler_batch_size": 4, "upsampler_steps_per_epoch": 400,
    "epochs": 600, "sample_every": 20, "lazy_data": True,
    "denoiser_optim": {"grad_acc_steps": 8, "max_grad_norm": 10.0},
    "upsampler_optim": {"grad_acc_steps": 8, "max_grad_norm": 10.0},
}


def csgo_layers(data: Path, preset: str | None) -> list[dict[str, Any]]:
    """A prepared dataset folder (train/ + test/) trains on train/ and takes spawn points from test/."""
    preset = preset or "paper"
    train = data / "train" if (data / "train" / "dataset.yaml").is_file() else data
    test = data / "test" if (data / "test" / "dataset.yaml").is_file() else None
    return [CSGO_RECIPE, CSGO_PRESETS[preset],
            {"data": str(train), **({"spawn_data": str(test)} if test is not None else {})}]


def training_episodes(cfg: EngineTrainConfig, dataset: Dataset, two_stage: bool) -> list:
    """The episodes the models train on: read lazily as stored (CS:GO, `lazy_data`), or loaded, checked and
    resized to the model's resolutions."""
    if cfg.lazy_data or cfg.recipe == "csgo":
        # Windows are read from disk as they are sampled; the files already hold the model's resolutions.
        if two_stage and cfg.recipe != "csgo":
            raise UserError("lazy_data=true reads frames as stored: it does not combine with --upsampler")
        return dataset.lazy_episodes()
    episodes = [dataset[i] for i in range(len(dataset))]
    for ep in episodes:
        dataset.check_actions(ep)
    low, _, _ = model_resolution(cfg, dataset.info)
    return prepare_episodes(episodes, low, two_stage=two_stage)


def engine_trainers(cfg: EngineTrainConfig, agent: Agent, device: torch.device,
                    dist_info: DistInfo) -> list[ModelTrainer]:
    """The denoiser's trainer, then the reward/termination model's and the upsampler's where the engine has them."""
    trainers = [ModelTrainer("denoiser", agent.denoiser, cfg.denoiser_optim, device, cfg.amp, cfg.compile,
                             dist_info)]
    if agent.rew_end_model is not None:
        trainers.append(ModelTrainer("rew_end", agent.rew_end_model, cfg.rew_end_optim, device, cfg.amp, False,
                                     dist_info))
    if agent.upsampler is not None:
        trainers.append(ModelTrainer("upsampler", agent.upsampler, cfg.upsampler_optim, device, cfg.amp, cfg.compile,
                                     dist_info))
    return trainers


LOSSES = {"denoiser": denoiser_loss, "rew_end": rew_end_loss, "upsampler": upsampler_loss}


def steps_per_epoch(cfg: EngineTrainConfig, model: str) -> int:
    return {"denoiser": cfg.steps_per_epoch, "rew_end": cfg.rew_end_steps_per_epoch,
            "upsampler": cfg.upsampler_steps_per_epoch}[model]


def epoch_batches(cfg: EngineTrainConfig, episodes: list, model: str, phase: int, epoch: int, device: torch.device,
                  rank: int):
    """This epoch's batches of one model, seeded by (seed, rank, epoch, phase): a resumed run draws the same."""
    windows = {"denoiser": (cfg.num_steps_conditioning + 1 + cfg.num_autoregressive_steps, cfg.batch_size,
                            {"full_res": False}),
               "rew_end": (cfg.rew_end_seq_length, cfg.rew_end_batch_size, {"beyond_end": True, "full_res": False}),
               "upsampler": (3, cfg.upsampler_batch_size, {})}
    seq, batch, kw = windows[model]
    stream = SegmentStream(episodes, seq, batch, seed=(cfg.seed, rank, epoch, phase), **kw)
    return segment_batches(stream, device, cfg.loader_workers)


def end_engine_epoch(life: RunLifecycle, cfg: EngineTrainConfig, agent: Agent, trainers: list[ModelTrainer],
                     episodes: list, logger: RunLogger, means: dict[str, float], device: torch.device) -> None:
    """Rank 0 after an epoch: log, sample strip, export (best: the lowest denoising loss) and checkpoint."""
    epoch, step = life.epoch, trainers[0].steps
    logger.scalars(step, {"epoch": epoch, **means})
    if cfg.sample_every and epoch % cfg.sample_every == 0:
        strip_windows = SegmentSampler(episodes, cfg.num_steps_conditioning + 1, 8, seed=epoch)
        logger.image(step, "samples/real_vs_imagined", sample_strip(agent, strip_windows, device, epoch))
    loss = means.get("denoiser/loss_denoising", float("inf"))
    is_best = loss < life.best
    life.best = min(life.best, loss)
    agent.config.provenance = {
        "data": str(Path(cfg.data).resolve()), "episodes": len(episodes),
        "frames": int(sum(len(e) for e in episodes)), "denoiser_steps": step, "epochs": epoch,
        "command": life.command, "train_hours": round(life.train_seconds / 3600, 2),
        "trained_with": f"diamond_play {__version__}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    agent.config.metrics = {k: round(v, 6) for k, v in means.items() if "loss" in k}
    life.run.export_weights(agent, best=is_best)
    life.save(trainers, rng=rng_state({}))


def train_engine(out: Path | None, resume: Path | None, layers: list[dict[str, Any]], overrides: list[str],
                 command: str = "", fresh_optimisers: Sequence[str] = ()) -> Path:
    dist_info = init_distributed(device="cuda" if torch.cuda.is_available() else "cpu")
    life = RunLifecycle(resume or out, resume is not None, command, best=float("inf"),  # type: ignore[arg-type]
                        is_main=dist_info.is_main)
    run = life.run
    cfg = build_run_config(EngineTrainConfig, [read_yaml(run.config_path)] if life.resuming else layers, overrides)
    if not cfg.data:
        raise UserError("which data? pass --data DATASET (a folder made by `diamond-play record`)")
    use_threads(cfg.num_threads)
    dataset = Dataset(cfg.data)
    if len(dataset) == 0:
        raise UserError(f"dataset {cfg.data!r} has no episodes: record some first")
    weights_cfg = build_agent_config(cfg, dataset.info)
    device = resolve_device(cfg.device, dist_info.local_rank if dist_info.enabled else None)
    two_stage = weights_cfg.agent.upsampler is not None
    episodes = training_episodes(cfg, dataset, two_stage)
    life.write_config(cfg)
    if dist_info.is_main and not run.spawn_dir.is_dir():  # start states for engines without an emulator
        source = Dataset(cfg.spawn_data).lazy_episodes() if cfg.spawn_data else episodes
        write_spawns(run.spawn_dir, spawns_from_episodes(source, cfg.num_steps_conditioning, full_res=two_stage))

    torch.manual_seed(cfg.seed + dist_info.rank)
    agent = Agent(weights_cfg).to(device)
    trainers = engine_trainers(cfg, agent, device, dist_info)
    state = life.restore(trainers, fresh_optimisers)
    if state:
        set_rng_state(state["rng"], {})
    per_epoch = sum(steps_per_epoch(cfg, t.name) for t in trainers)
    logger, bar = life.open(cfg.epochs * per_epoch, f"train {weights_cfg.game}", life.epoch * per_epoch,
                            trainers[0].steps)
    try:
        while life.epoch < cfg.epochs:
            epoch_metrics: dict[str, list[float]] = {}
            for phase, t in enumerate(trainers):
                run_phase(t, epoch_batches(cfg, episodes, t.name, phase, life.epoch, device, dist_info.rank),
                          LOSSES[t.name], steps_per_epoch(cfg, t.name), bar, epoch_metrics)
            life.epoch += 1
            if dist_info.is_main:
                means = {k: float(np.mean(v)) for k, v in epoch_metrics.items()}
                end_engine_epoch(life, cfg, agent, trainers, episodes, logger, means, device)
    finally:
        life.close()
    finish_distributed(dist_info)
    return run.root
