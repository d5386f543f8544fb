"""Where a training run keeps its files: what `weights/` needs to read a run's weights (`--weights RUN_DIR`,
`export RUN_DIR`) without importing the trainers; `train.core.RunDir` adds the writing and resuming."""

from __future__ import annotations

from pathlib import Path


class RunLayout:
    """<run>/config.yaml, checkpoints/{state.pt, last/, best/}, spawn/, episodes/, events.* (TensorBoard),
    log.csv."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "checkpoints" / "state.pt"

    @property
    def last_weights(self) -> Path:
        return self.root / "checkpoints" / "last"

    @property
    def best_weights(self) -> Path:
        return self.root / "checkpoints" / "best"

    @property
    def spawn_dir(self) -> Path:
        return self.root / "spawn"


def latest_weights(run_dir: Path) -> Path | None:
    """A run directory's most recent exported weights (what --weights RUN_DIR means)."""
    candidate = RunLayout(run_dir).last_weights
    return candidate if (candidate / "config.yaml").is_file() else None
