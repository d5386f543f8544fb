"""Weights I/O: the project's own format (safetensors + config.yaml), official checkpoints, hub downloads."""

from diamond_play.weights.format import load_weights_dir, save_weights_dir
from diamond_play.weights.loading import load_agent
from diamond_play.weights.official import import_official, read_official_checkpoint

__all__ = ["import_official", "load_agent", "load_weights_dir", "read_official_checkpoint", "save_weights_dir"]
