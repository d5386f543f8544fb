"""`load_agent`: one entry point for every kind of weights a user may point at."""

from __future__ import annotations

from pathlib import Path

import torch

from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.weights.format import MODEL_FILE, is_weights_dir, load_weights_dir
from diamond_play.weights.official import load_official_agent
from diamond_play.weights.run_layout import latest_weights


def load_agent(path: str | Path, device: torch.device | str = "cpu", config: str | Path | None = None,
               game: str | None = None) -> Agent:
    """Load an official `.pt` checkpoint (with or without its agent YAML as `config`) or a weights directory.

    The returned Agent has `.denoiser`, `.upsampler`, `.rew_end_model`, `.actor_critic` (None where absent) and
    `.config` (a WeightsConfig), in eval mode on `device`.
    """
    path = Path(path)
    if path.is_file() and path.name == MODEL_FILE:
        path = path.parent
    if path.is_dir():
        run_weights = latest_weights(path)
        if run_weights is not None:  # a training run directory: its latest checkpoint
            return load_weights_dir(run_weights, device)
        if not (path / MODEL_FILE).exists() and ((path / "checkpoints").is_dir() or (path / "log.csv").exists()):
            raise UserError(f"training run {str(path)!r} has no exported weights (checkpoints/last): a run writes "
                            "them after each epoch, and a run's weights are not kept in git; point at the exported "
                            "engine instead (e.g. diamond_play/shipped/atari/Breakout), or resume the run for an epoch")
        if is_weights_dir(path):
            return load_weights_dir(path, device)
        raise UserError(f"{str(path)!r} is a directory without config.yaml: point at a weights directory "
                        "(model.safetensors + config.yaml) or an official .pt file")
    if not path.exists():
        raise UserError(f"weights {str(path)!r} not found: check the path, or fetch official weights with "
                        "`diamond-play download atari GAME` / `diamond-play download csgo`")
    return load_official_agent(path, config=config, game=game, device=device)


def default_weights(kind: str, game: str | None = None) -> Path:
    """Weights to play when none are given: the project's shipped engine, else the downloaded official one."""
    from diamond_play.weights.hub import default_weights_dir, engine_name, shipped_weights_root

    what = engine_name(kind, game)
    for candidate in (shipped_weights_root() / what.replace(" ", "/"), default_weights_dir(kind, game)):
        if is_weights_dir(candidate):
            return candidate
    raise UserError(f"no weights for {what}: run `diamond-play download {what}` (official weights from the Hugging "
                    "Face hub), or pass --weights DIR")
