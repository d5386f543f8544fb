"""The Breakout engine this project trained and ships in diamond_play/shipped/atari/Breakout (what `diamond-play atari
Breakout` plays offline)."""

from __future__ import annotations

import json
from pathlib import Path

import diamond_play
from diamond_play.cli import main
from diamond_play.weights.hub import SHIPPED as SHIPPED_ROOT
from diamond_play.weights.loading import default_weights

SHIPPED = SHIPPED_ROOT / "atari" / "Breakout"
REPO = Path(__file__).resolve().parents[1]


def test_shipped_breakout_engine_loads_with_provenance_and_eval_numbers():
    agent = diamond_play.load_agent(SHIPPED)
    cfg = agent.config
    assert cfg.game == "Breakout" and cfg.kind == "atari" and agent.rew_end_model is not None
    for key in ("data", "command", "machine", "denoiser_steps", "trained_with", "date"):
        assert cfg.provenance.get(key), key
    assert {"one_step_psnr", "baseline_one_step_psnr", "open_loop_psnr_h4", "open_loop_psnr_h16",
            "reward_accuracy", "reward_events_reproduced"} <= set(cfg.metrics["eval"])
    assert cfg.metrics["eval"]["reward_events_reproduced"] >= 0.5  # bricks go and the score counts in imagination
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) <= 20 * 2**20
    assert default_weights("atari", "Breakout").resolve() == SHIPPED


def test_eval_of_the_shipped_engine_on_a_small_held_out_set(tmp_path, capsys):
    """Fresh held-out episodes from the real game (never in the training data), horizons 1 and 4."""
    out = tmp_path / "eval.json"
    assert main(["eval", str(SHIPPED), "--episodes", "1", "--max-horizon", "4", "--strip", str(tmp_path / "s.png"),
                 "--json", str(out), "--seed", "3"]) == 0
    table = capsys.readouterr().out
    assert "one-step PSNR" in table and "repeat-last" in table and (tmp_path / "s.png").stat().st_size > 0
    metrics = json.loads(out.read_text())
    assert metrics["one_step_psnr"] > 10 and "baseline_open_loop_psnr_h4" in metrics
    # The episode scores (the collector's paddle-tracking policy breaks bricks), so the brick/score check runs.
    assert "reward events reproduced" in table and metrics["num_reward_events"] >= 1
    assert 0 <= metrics["reward_events_reproduced"] <= 1
    assert (tmp_path / "s_reward_event.png").stat().st_size > 0


def test_atari_breakout_plays_the_shipped_engine_by_default():
    assert main(["atari", "Breakout", "--headless", "--frames", "3", "--actions", "random"]) == 0


def test_the_wheel_carries_the_shipped_engine_and_the_hub_manifest(tmp_path):
    """Installed from a wheel, `diamond-play atari Breakout` plays offline: the engine is package data."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=600)
    names = set(zipfile.ZipFile(next(tmp_path.glob("diamond_play-*.whl"))).namelist())
    shipped = [p.relative_to(REPO).as_posix() for p in SHIPPED.rglob("*") if p.is_file()]
    assert shipped and set(shipped) <= names
    assert "diamond_play/shipped/manifest.yaml" in names
