"""docs/ARCHITECTURE.md's layers: imports inside the package point down only (`from diamond_play import
__version__` aside)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diamond_play"
LAYER = {  # higher imports lower, never the other way
    "cli": 9, "__main__": 9, "serve": 8.5,
    "__init__": 8, "play": 8, "capture": 8, "train": 8, "evaluate": 8, "bench": 8, "world_model_env": 8,
    "engine": 6.5, "world_model": 6, "games": 6, "accel": 5, "imagine": 4, "weights": 3, "models": 2, "sampling": 2,
    "data": 1,
    "config": 0.5, "envs": 0.4, "frames": 0, "devices": 0, "errors": 0, "threads": 0,
}


def test_imports_point_down_only():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        here = path.relative_to(PACKAGE).with_suffix("").parts[0]
        assert here in LAYER, f"{here} is not in docs/ARCHITECTURE.md's layers (add it there and here)"
        for name, what in re.findall(r"^\s*from (diamond_play[\w.]*) import (\w+)", path.read_text(), re.M):
            target = name.split(".")[1] if "." in name else "__init__"
            if target != here and not (target == "__init__" and what == "__version__") and LAYER[target] > LAYER[here]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not upward, upward
