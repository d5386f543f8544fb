"""The project's weights directory: `model.safetensors` + `config.yaml` (+ optional `spawn/`), written atomically.

Loading never executes code: safetensors holds only tensors and the YAML is read with safe_load.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diamond_play.config import GAME_KINDS, WeightsConfig, dump_yaml, from_dict, read_yaml
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.weights.state_dict import load_state_dict_checked

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
SPAWN_DIR = "spawn"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_weights_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def replace_dir_atomically(tmp_dir: Path, out_dir: Path) -> None:
    """Move a fully written tmp_dir to out_dir; an existing out_dir is swapped out only after that succeeds."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, backup)
    try:
        os.replace(tmp_dir, out_dir)
    except OSError:
        if backup is not None:
            os.replace(backup, out_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    """mkdtemp makes private (0700) folders; give the result the permissions a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def save_weights_dir(agent: Agent, out_dir: str | Path, overwrite: bool = False,
                     spawn_from: str | Path | None = None) -> Path:
    """Write agent + config to out_dir atomically (temp dir + rename). Refuses to replace a directory unless told."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"output directory {str(out_dir)!r} already exists and is not empty: choose another "
                        "--out or pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in agent.state_dict().items()}
        save_file(tensors, str(tmp_dir / MODEL_FILE), metadata={"format": "diamond_play"})
        (tmp_dir / CONFIG_FILE).write_text(dump_yaml(agent.config))
        if spawn_from is not None:
            shutil.copytree(spawn_from, tmp_dir / SPAWN_DIR)
        _apply_umask(tmp_dir)
        replace_dir_atomically(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def read_weights_config(weights_dir: Path) -> WeightsConfig:
    config = from_dict(WeightsConfig, read_yaml(weights_dir / CONFIG_FILE), "")
    if config.kind not in GAME_KINDS:
        raise UserError(f"{str(weights_dir / CONFIG_FILE)!r} says kind: {config.kind}; this version knows "
                        f"{', '.join(GAME_KINDS)}: fix the file or update diamond_play")
    return config


def load_weights_dir(weights_dir: str | Path, device: torch.device | str = "cpu") -> Agent:
    weights_dir = Path(weights_dir)
    if not (weights_dir / CONFIG_FILE).is_file():
        raise UserError(f"{str(weights_dir)!r} has no {CONFIG_FILE}: it is not a diamond_play weights directory "
                        "(import an official checkpoint with `diamond-play import FILE.pt --out DIR`)")
    model_path = weights_dir / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"{str(weights_dir)!r} has no {MODEL_FILE}: copy or re-create the weights directory")
    config = read_weights_config(weights_dir)
    try:
        state_dict = load_file(str(model_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{str(model_path)!r} is corrupt or truncated ({str(e).splitlines()[0]}): "
                        "re-create or re-download the weights") from None
    with torch.device("meta"):
        agent = Agent(config)  # built on meta: the real tensors come from the file
    agent = agent.to_empty(device="cpu")
    load_state_dict_checked(agent, state_dict, repr(str(model_path)))
    agent.weights_path = weights_dir
    return agent.to(device).eval()
