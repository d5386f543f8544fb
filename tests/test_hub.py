"""`diamond-play download` against a local Hugging Face cache and a local folder shaped like the hub repo.

The hub itself is never contacted: HF_HUB_OFFLINE=1 makes huggingface_hub serve its standard cache layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import save_official, tiny_agent

import diamond_play
from diamond_play.weights.hub import load_manifest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_folder(root: Path) -> Path:
    """A folder laid out like the eloialonso/diamond repo, with tiny random agents."""
    ckpt, cfg = save_official(tiny_agent("atari"), root / "atari_100k" / "models", "Breakout")
    (root / "atari_100k" / "config" / "agent").mkdir(parents=True)
    shutil.move(cfg, root / "atari_100k" / "config" / "agent" / "default.yaml")
    (root / "atari_100k" / "config" / "env").mkdir(parents=True)
    (root / "atari_100k" / "config" / "env" / "atari.yaml").write_text("train:\n  id: null\n")
    ckpt, cfg = save_official(tiny_agent("csgo"), root / "csgo" / "model", "csgo")
    (root / "csgo" / "config" / "agent").mkdir(parents=True)
    shutil.move(cfg, root / "csgo" / "config" / "agent" / "csgo.yaml")
    spawn = root / "csgo" / "spawn" / "0"
    spawn.mkdir(parents=True)
    np.save(spawn / "low_res.npy", np.zeros((4, 3, 30, 56), np.uint8))
    return root


def hf_cache(tmp_path: Path) -> Path:
    """The standard HF cache layout: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    cache = tmp_path / "hf_cache"
    repo = cache / "models--eloialonso--diamond"
    hub_folder(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def run_download(tmp_path: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "DIAMOND_PLAY_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "diamond_play", "download", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_manifest_lists_the_26_games_and_csgo():
    manifest = load_manifest()
    assert manifest.repo_id == "eloialonso/diamond"
    assert len(manifest.atari["games"]) == 26
    assert manifest.atari_files("breakout")["checkpoint"] == "atari_100k/models/Breakout.pt"
    assert manifest.csgo["checkpoint"] == "csgo/model/csgo.pt"


def test_download_from_the_hf_cache_offline(tmp_path):
    cache = hf_cache(tmp_path)
    result = run_download(tmp_path, cache, "atari", "Breakout")
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "home" / "weights" / "atari" / "Breakout"
    agent = diamond_play.load_agent(weights)
    assert agent.config.game == "Breakout" and agent.config.provenance["file"] == "Breakout.pt"

    result = run_download(tmp_path, cache, "csgo")
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "home" / "weights" / "csgo"
    assert diamond_play.load_agent(weights).upsampler is not None
    assert (weights / "spawn" / "0" / "low_res.npy").is_file()


def test_offline_without_files_says_what_to_run(tmp_path):
    result = run_download(tmp_path, tmp_path / "empty_cache", "atari", "Pong")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "hf download eloialonso/diamond atari_100k/models/Pong.pt" in line
    assert "diamond-play download atari Pong --from diamond_hub" in line


def test_download_from_a_local_hub_folder(tmp_path, capsys):
    from diamond_play.cli import main

    source = hub_folder(tmp_path / "diamond_hub")
    assert main(["download", "atari", "breakout", "--from", str(source), "--out", str(tmp_path / "b")]) == 0
    assert diamond_play.load_agent(tmp_path / "b").config.game == "Breakout"
    assert main(["download", "csgo", "--from", str(source), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "spawn").is_dir()
    capsys.readouterr()
    assert main(["download", "atari", "Breakout", "--from", str(tmp_path / "c")]) == 2
    assert "laid out like the hub repo" in capsys.readouterr().err


@pytest.mark.parametrize("args,fragment", [(["atari"], "which game"), (["atari", "Tetris"], "unknown Atari game"),
                                           (["csgo", "Dust2"], "takes no game")])
def test_download_argument_errors(capsys, args, fragment):
    from diamond_play.cli import main

    assert main(["download", *args]) == 2
    assert fragment in capsys.readouterr().err
