"""Shared fixtures: the conformance folder (official checkpoints + official outputs) and small helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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


@pytest.fixture(scope="session", autouse=True)
def isolated_user_home(tmp_path_factory: pytest.TempPathFactory):
    """Downloaded weights and compiled engines go to a temporary home, never the user's ~/.cache."""
    old = os.environ.get("DIAMOND_PLAY_HOME")
    os.environ["DIAMOND_PLAY_HOME"] = str(tmp_path_factory.mktemp("diamond_play_home"))
    yield
    if old is None:
        os.environ.pop("DIAMOND_PLAY_HOME", None)
    else:
        os.environ["DIAMOND_PLAY_HOME"] = old


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


@pytest.fixture(scope="session")
def atari_weights(tmp_path_factory) -> Path:
    """A tiny random Breakout engine (denoiser + reward/termination + actor-critic) in the own format."""
    from helpers import tiny_agent

    from diamond_play.weights.format import save_weights_dir

    return save_weights_dir(tiny_agent("atari"), tmp_path_factory.mktemp("weights") / "breakout")


@pytest.fixture(scope="session")
def csgo_weights(tmp_path_factory) -> Path:
    """A tiny random CS:GO engine with two spawn points in the official layout."""
    from helpers import tiny_agent

    from diamond_play.data.spawns import StartState, save_spawn
    from diamond_play.envs import csgo
    from diamond_play.weights.format import save_weights_dir

    root = tmp_path_factory.mktemp("csgo")
    rng = np.random.default_rng(0)
    for i in range(2):
        act = np.stack([csgo.encode_action(csgo.CSGOAction(keys=("w",))) for _ in range(4)])
        save_spawn(root / "spawn" / f"{i}", StartState(
            frames=rng.integers(0, 256, (4, 30, 56, 3), dtype=np.uint8), actions=act,
            full_res_frame=rng.integers(0, 256, (150, 280, 3), dtype=np.uint8), next_actions=act))
    return save_weights_dir(tiny_agent("csgo"), root / "weights", spawn_from=root / "spawn")


TOOLS = ("Xvfb", "xdotool", "xwininfo", "import")


@pytest.fixture
def xvfb_display():
    """A virtual X server of its own (DISPLAY value); skipped, or failed in CI, where the X tools are missing."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} missing: CI installs xvfb, xdotool, x11-utils and imagemagick")
        pytest.skip(f"{missing} not installed (apt-get install xvfb xdotool x11-utils imagemagick)")
    display = f":{90 + os.getpid() % 500}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.05)
    yield display
    server.terminate()
    server.wait(timeout=10)
