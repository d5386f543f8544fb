"""`diamond-play export`: a training run's weights as a standalone weights directory to share or ship.

The result carries its provenance (the run's, plus whatever the publisher adds, e.g. how the data was made) and,
when given, the numbers `diamond-play eval --json` measured on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diamond_play.errors import UserError
from diamond_play.weights.format import SPAWN_DIR, save_weights_dir


def parse_key_values(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {item!r} (e.g. --provenance data='collected with ...')")
        out[key.strip()] = value
    return out


def read_eval_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"eval results {str(path)!r} not found: write them with `diamond-play eval WEIGHTS "
                        "--json FILE`") from None
    except (OSError, ValueError) as e:
        raise UserError(f"eval results {str(path)!r} are not readable JSON ({e}): re-run `diamond-play eval "
                        "--json`") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise UserError(f"{str(path)!r} is not a `diamond-play eval --json` file (a flat name -> number object)")
    return data


def export_weights(source: Path, out: Path, best: bool = False, provenance: dict[str, str] | None = None,
                   eval_metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Copy the weights of `source` (a run directory: its last, or best, checkpoint; or a weights directory) to
    `out`, adding provenance entries and eval metrics (under metrics.eval) to its config."""
    from diamond_play.weights.loading import load_agent
    from diamond_play.weights.run_layout import RunLayout

    if best:
        source = RunLayout(source).best_weights
        if not (source / "config.yaml").is_file():
            raise UserError(f"{str(source)!r} does not exist: --best needs a training run directory with a best "
                            "checkpoint")
    agent = load_agent(source)
    weights_dir = getattr(agent, "weights_path", None)
    if weights_dir is not None and Path(out).resolve() == Path(weights_dir).resolve():
        raise UserError("--out is the source weights directory itself: export to another folder")
    agent.config.provenance = {**agent.config.provenance, "exported_from": str(source), **(provenance or {})}
    if eval_metrics is not None:
        agent.config.metrics = {**agent.config.metrics, "eval": eval_metrics}
    spawn = Path(weights_dir) / SPAWN_DIR if weights_dir is not None else None
    return save_weights_dir(agent, out, overwrite=overwrite,
                            spawn_from=spawn if spawn is not None and spawn.is_dir() else None)
