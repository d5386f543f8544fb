"""The training core shared by every recipe (Atari 100k, CS:GO, custom engines).

- `OptimConfig` + `ModelTrainer`: AdamW with decay on Linear/Conv/LSTM weights only, linear warm-up, gradient
  accumulation and clipping, bf16 autocast and torch.compile as options, DistributedDataParallel under torchrun.
- `RunDir`: the run directory, atomic training-state checkpoints (resume after kill -9) and weights exports.
- `RunLogger`: CSV + TensorBoard event files; `progress`: a tqdm bar with rate and ETA.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from diamond_play.config import dump_yaml
from diamond_play.data.episodes import write_text_atomically
from diamond_play.errors import UserError
from diamond_play.weights.run_layout import RunLayout


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up and gradient clipping; the paper's world-model defaults."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    """Applied to Linear/Conv/LSTM weights only."""
    eps: float = 1e-8
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping."""
    grad_acc_steps: int = 1
    """Micro-batches per optimiser step (keeps the effective batch on fewer GPUs)."""


# ---------------------------------------------------------------------------------------------------------------
# Distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun set up (NCCL on GPU, gloo on CPU); a single process needs nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish_distributed(info: DistInfo) -> None:
    """Leave the process group together at the end of a run: a rank exiting while its peer still tears down made
    gloo abort that peer (seen in the tests), which would turn a finished torchrun job into a failed one."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


# ---------------------------------------------------------------------------------------------------------------
# Optimisation


def decayed_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weights of Linear, Conv and LSTM layers only; biases, norms, embeddings are exempt."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_weight = name.startswith("weight")
            if is_weight and isinstance(module, (nn.Linear, nn.Conv2d, nn.LSTM, nn.LSTMCell)):
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ModelTrainer:
    """Optimiser, warm-up schedule and update step for one model (optionally DDP-wrapped)."""

    def __init__(self, name: str, model: nn.Module, cfg: OptimConfig, device: torch.device, amp: bool = False,
                 compile_model: bool = False, dist_info: DistInfo | None = None) -> None:
        self.name, self.model, self.cfg, self.device = name, model, cfg, device
        self.amp = amp
        self.dist_info = dist_info or DistInfo()
        # The fused kernel updates every parameter in one pass (about 10x faster than the per-tensor loop on a CPU).
        self.opt = torch.optim.AdamW(decayed_parameter_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.eps,
                                     fused=device.type in ("cuda", "cpu"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: min(1.0, (step + 1) / max(1, cfg.warmup_steps)))
        self.forward_module: nn.Module = model
        if compile_model:
            self.forward_module = torch.compile(self.forward_module)
        if self.dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.forward_module = nn.parallel.DistributedDataParallel(self.forward_module, device_ids=ids)
        self.steps = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, micro_batches: Iterator[Any], loss_fn: Callable[[nn.Module, Any], tuple[Tensor, dict]]) -> dict:
        """One optimiser step over `grad_acc_steps` micro-batches; returns averaged metrics + grad norm and lr."""
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        n = self.cfg.grad_acc_steps
        for i in range(n):
            batch = next(micro_batches)
            sync = contextlib.nullcontext()
            if self.dist_info.enabled and i < n - 1:
                sync = self.forward_module.no_sync()  # all-reduce once, on the last micro-batch
            with sync:
                with self.autocast():
                    loss, metrics = loss_fn(self.forward_module, batch)
                (loss / n).backward()
            for k, v in metrics.items():  # tensors: read once per step, after the backward passes
                totals[k] = totals.get(k, 0.0) + v.detach() / n if isinstance(v, Tensor) else totals.get(k, 0.0) + v / n
        totals = {k: float(v) for k, v in totals.items()}
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.steps += 1
        totals["grad_norm"] = float(grad_norm)
        totals["lr"] = self.sched.get_last_lr()[0]
        return {f"{self.name}/{k}": v for k, v in totals.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any], fresh_optimiser: bool = False) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]
        if fresh_optimiser:
            # Weights only: new AdamW moments and a new warm-up. Moments left by many steps at a low lr can keep a
            # raised lr from moving the model for hundreds of steps.
            return
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        # The saved optimiser carries the settings the run started with; `key=value` given on resume (e.g. a higher
        # rew_end_optim.lr) must win, or the override would be silently ignored.
        lr = self.cfg.lr * self.sched.lr_lambdas[0](self.sched.last_epoch)
        self.sched.base_lrs = [self.cfg.lr] * len(self.opt.param_groups)
        self.sched._last_lr = [lr] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group["initial_lr"], group["lr"], group["eps"] = self.cfg.lr, lr, self.cfg.eps
        self.opt.param_groups[0]["weight_decay"] = self.cfg.weight_decay  # see decayed_parameter_groups


def restore_trainers(trainers: Iterable[ModelTrainer], saved: dict[str, Any], fresh_optimisers: Iterable[str]) -> None:
    """Load each trainer's saved state; the ones named in `fresh_optimisers` keep their weights only."""
    trainers = list(trainers)
    fresh = set(fresh_optimisers)
    unknown = fresh - {t.name for t in trainers}
    if unknown:
        raise UserError(f"--fresh-optimiser {sorted(unknown)[0]}: this run trains "
                        f"{', '.join(t.name for t in trainers)}; name one of those")
    for t in trainers:
        t.load_state_dict(saved[t.name], fresh_optimiser=t.name in fresh)


def run_phase(trainer: ModelTrainer, micro_batches: Iterator[Any],
              loss_fn: Callable[[nn.Module, Any], tuple[Tensor, dict]], steps: int, bar: tqdm,
              sink: dict[str, list[float]]) -> None:
    """`steps` optimiser steps of one model; metrics are appended to `sink`, the bar shows the losses."""
    for _ in range(steps):
        metrics = trainer.step(micro_batches, loss_fn)
        for k, v in metrics.items():
            sink.setdefault(k, []).append(v)
        bar.update(1)
        if trainer.steps % 10 == 0:
            bar.set_postfix({k.split("/")[-1]: f"{v:.4f}" for k, v in metrics.items()
                             if "loss" in k and "/loss_rew" not in k and "/loss_end" not in k}, refresh=False)


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """key=value (dotted keys for nested sections; values parsed as YAML)."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value (e.g. epochs=10)")
        key, value = item.split("=", 1)
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise UserError(f"override {key!r}: {p!r} is not a section")
        target[leaf] = yaml.safe_load(value)
    return data


def merge_config(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` on top of `base`, section by section (nested mappings merge, other values replace)."""
    out = dict(base)
    for k, v in layer.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_run_config(cls: type, layers: list[dict[str, Any]], overrides: list[str]) -> Any:
    """A run's config: the class defaults, then each layer (e.g. a preset), then key=value overrides. Starting from
    the full defaults keeps a section's own defaults when one of its keys is overridden."""
    from diamond_play.config import from_dict, to_dict

    raw = to_dict(cls())
    for layer in layers:
        raw = merge_config(raw, layer)
    return from_dict(cls, apply_overrides(raw, overrides), "train")


# ---------------------------------------------------------------------------------------------------------------
# Run directory and checkpoints


def rng_state(np_rngs: dict[str, np.random.Generator]) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": {k: g.bit_generator.state for k, g in np_rngs.items()},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any], np_rngs: dict[str, np.random.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    for k, g in np_rngs.items():
        if k in state["numpy"]:
            g.bit_generator.state = state["numpy"][k]
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RunDir(RunLayout):
    """A run directory (layout in `weights.run_layout`) as the trainers write, save and resume it."""

    def exists(self) -> bool:
        return self.state_path.is_file()

    def prepare_new(self) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"run directory {str(self.root)!r} already exists: continue it with --resume "
                            f"{self.root}, or choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.state_path)

    def remove_interrupted_writes(self) -> None:
        """Delete what a killed run left half-written in checkpoints/: every atomic write there goes through a
        dot-named temporary (`.state.pt.*.tmp`, `.last.tmp-*`, `.best.tmp`, `.last.old-*`). Call it once, from
        the one process that writes the run, before resuming."""
        folder = self.root / "checkpoints"
        for leftover in folder.glob(".*") if folder.is_dir() else []:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def load_state(self) -> dict[str, Any]:
        if not self.exists():
            raise UserError(f"{str(self.root)!r} has no checkpoints/state.pt to resume from: start a new run with "
                            "--out instead")
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
            raise UserError(f"{str(self.state_path)!r} is corrupt ({str(e).splitlines()[0][:120]}): restore it or "
                            "start a new run") from None

    def export_weights(self, agent, best: bool = False) -> Path:
        """Write the agent (and the run's spawn points) to checkpoints/last, and copy it to best/ when asked."""
        from diamond_play.weights.format import replace_dir_atomically, save_weights_dir

        spawn = self.spawn_dir if self.spawn_dir.is_dir() else None
        out = save_weights_dir(agent, self.last_weights, overwrite=True, spawn_from=spawn)
        if best:
            tmp = self.root / "checkpoints" / ".best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(out, tmp)
            replace_dir_atomically(tmp, self.best_weights)
        return out


def starting_command(run: RunDir, command: str) -> str:
    """The command line that started the run (kept in its exported weights' provenance), else `command`: a
    resumed run's provenance still says how it was made."""
    from diamond_play.weights.format import read_weights_config

    if (run.last_weights / "config.yaml").is_file():
        return str(read_weights_config(run.last_weights).provenance.get("command", command))
    return command


class RunLifecycle:
    """What every recipe does around its epochs, said once: the run directory (new, or resumed after removing what
    a killed run half-wrote), its config file, the trainers restored and saved with the epoch, the best score and
    the training time, the command that started the run, and the log and progress bar. The recipe restores and
    saves its own extra state (random streams, rollouts, the collector) through `restore` and `save`."""

    def __init__(self, root: Path, resuming: bool, command: str, best: float, is_main: bool = True) -> None:
        self.run = RunDir(root)
        self.resuming, self.is_main = resuming, is_main
        self.epoch, self.best, self.seconds_before = 0, best, 0.0
        self.command = starting_command(self.run, command) if resuming else command
        self.started = time.monotonic()
        self.logger: RunLogger | None = None
        self.bar: tqdm | None = None

    def write_config(self, cfg: Any) -> None:
        """Create a new run's directory; write the config (overrides given on resume are kept)."""
        if not self.is_main:
            return
        if not self.resuming:
            self.run.prepare_new()
        write_text_atomically(self.run.config_path, dump_yaml(cfg))

    def restore(self, trainers: Iterable[ModelTrainer], fresh_optimisers: Iterable[str] = ()) -> dict[str, Any]:
        """A resumed run's trainers, epoch, best score and training time; -> the saved state ({} for a new run)."""
        if not self.resuming:
            return {}
        if self.is_main:
            self.run.remove_interrupted_writes()
        state = self.run.load_state()
        trainers = list(trainers)
        if "trainers" not in state and "trainer" in state and len(trainers) == 1:
            state["trainers"] = {trainers[0].name: state.pop("trainer")}  # `train agent` states before the lifecycle
        restore_trainers(trainers, state["trainers"], fresh_optimisers)
        self.epoch, self.best = state["epoch"], state["best"]
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.started = time.monotonic()
        return state

    def open(self, total_steps: int, desc: str, done_steps: int, log_step: int) -> tuple[RunLogger, tqdm]:
        """The log (continuing after `log_step` when resumed) and the progress bar (`done_steps` of `total_steps`)."""
        self.logger = RunLogger(self.run.root, enabled=self.is_main, resumed_at=log_step if self.resuming else None)
        self.bar = progress(total_steps, desc, initial=done_steps, enabled=self.is_main)
        return self.logger, self.bar

    @property
    def train_seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def save(self, trainers: Iterable[ModelTrainer], **extra: Any) -> None:
        self.run.save_state({"trainers": {t.name: t.state_dict() for t in trainers}, "epoch": self.epoch,
                             "best": self.best, "train_seconds": self.train_seconds, **extra})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.logger is not None:
            self.logger.close()


# ---------------------------------------------------------------------------------------------------------------
# Logging and progress


class RunLogger:
    """Scalars to log.csv (one row per logged step, columns grow as needed) and TensorBoard; images to TensorBoard."""

    def __init__(self, root: Path, enabled: bool = True, resumed_at: int | None = None) -> None:
        """`resumed_at`: the logged step of the checkpoint a resumed run starts from. An epoch's row is written
        before its checkpoint, so a run killed in between left rows past it; they are dropped, as the resumed run
        logs those steps again."""
        self.root, self.enabled = root, enabled
        self.csv_path = root / "log.csv"
        self.columns: list[str] = []  # the CSV header, read once (a resumed run appends to its log)
        if enabled and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                self.columns = list(reader.fieldnames or [])
            if resumed_at is not None and any(float(r["step"]) > resumed_at for r in rows):
                self._rewrite([r for r in rows if float(r["step"]) <= resumed_at])
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(root))
            except ImportError:  # TensorBoard is optional: the CSV log is always written
                self.writer = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        columns = list(dict.fromkeys(["step", *self.columns, *row]))
        if self.columns and columns == self.columns:
            with self.csv_path.open("a", newline="") as f:
                csv.DictWriter(f, columns).writerow(row)
        else:  # first row or new columns: rewrite the file with the wider header
            existing: list[dict[str, str]] = []
            if self.csv_path.is_file():
                with self.csv_path.open(newline="") as f:
                    existing = list(csv.DictReader(f))
            self.columns = columns
            self._rewrite(existing + [row])
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.csv_path)

    def image(self, step: int, tag: str, image_hwc: np.ndarray) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(total: int, desc: str, initial: int = 0, enabled: bool = True) -> tqdm:
    # One unit throughout (tqdm otherwise switches between step/s and s/step as the rate crosses 1).
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled,
                smoothing=0.1, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                "{rate_noinv_fmt}{postfix}]")
