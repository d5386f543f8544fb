"""Shared fixtures: the conformance folder (official checkpoints + official outputs) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

REPO = Path(__file__).resolve().parents[1]


def _find_conformance() -> Path | None:
    for candidate in (os.environ.get("DIAMOND_PLAY_CONFORMANCE"), REPO.parent / "shared" / "conformance",
                      REPO / "shared" / "conformance"):
        if candidate and (Path(candidate) / "atari" / "agent.pt").is_file():
            return Path(candidate)
    return None


CONFORMANCE = _find_conformance()


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    if CONFORMANCE is None:
        pytest.fail("conformance fixture not found: set DIAMOND_PLAY_CONFORMANCE to shared/conformance")
    return CONFORMANCE


@pytest.fixture(scope="session")
def atari_expected(conformance_dir: Path) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(conformance_dir / "atari" / "expected.npz").items()
            if k != "meta_json"}


@pytest.fixture(scope="session")
def csgo_expected(conformance_dir: Path) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(conformance_dir / "csgo" / "expected.npz").items()
            if k != "meta_json"}


def assert_quantised_close(actual: torch.Tensor, expected: torch.Tensor, min_fraction: float = 0.999) -> None:
    """The fixture's rule for 8-bit outputs: |diff| <= one level on >= min_fraction of elements, mean < 1e-3."""
    diff = (actual - expected).abs()
    within = (diff <= 2 / 255 + 1e-5).float().mean().item()
    assert within >= min_fraction, f"only {within:.5f} of elements within one 8-bit level"
    assert diff.mean().item() < 1e-3, f"mean |diff| {diff.mean().item():.2e}"
