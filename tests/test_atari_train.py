"""The Atari 100k recipe on the real ALE game: a tiny run end to end, kill -9 + resume, imagination rollouts, DDP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
from helpers import free_port, tiny_agent
from safetensors.torch import load_file

from diamond_play.cli import main
from diamond_play.config import ATARI_SAMPLER
from diamond_play.data.episodes import Dataset
from diamond_play.data.segments import SegmentSampler
from diamond_play.envs.atari import AtariEnv, human_normalized_score, reference_scores
from diamond_play.train.rl import ImaginedEnvs, RolloutRunner, imagination_world_model

TESTS = Path(__file__).parent
RUN_ARGS = ["train", "atari", "Breakout", "--preset", "tiny", "total_env_steps=600"]


def dataset_digest(run: Path) -> list[str]:
    out = []
    for path in Dataset(run).episode_paths():
        with h5py.File(path) as f:
            h = hashlib.sha256()
            for key in ("frames", "actions", "rewards", "terminations", "truncations"):
                h.update(f[key][()].tobytes())
            out.append(h.hexdigest())
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(next((run / "checkpoints" / "last").glob("*.safetensors")))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("atari") / "run"
    assert main([*RUN_ARGS, "--out", str(run)]) == 0
    return run


def test_tiny_run_collects_trains_evaluates_and_exports(full_run, capsys):
    import csv

    rows = list(csv.DictReader((full_run / "log.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, len(rows) + 1))
    last = rows[-1]
    assert int(float(last["env_steps"])) == 600
    for key in ("denoiser/loss_denoising", "rew_end/loss_rew_end", "actor_critic/loss_actor_critic", "eval/return",
                "eval/hns"):
        assert last[key] not in ("", None), key
    # Every collected step is on disk (finished episodes) or in the checkpoint (the episode in progress).
    state = torch.load(full_run / "checkpoints" / "state.pt", weights_only=True)
    ds = Dataset(full_run)
    on_disk = sum(len(ds[i]) for i in range(len(ds)))
    in_progress = 0 if state["collector"]["episode"] is None else len(state["collector"]["episode"]["frames"])
    assert on_disk + in_progress == 600 == state["collector"]["steps"]
    assert ds.info.game == "Breakout"
    assert all(ds[i].terminations[-1] or ds[i].truncations[-1] for i in range(len(ds)))  # ends at a lost life
    assert any(p.name.startswith("events.out.tfevents") for p in full_run.iterdir())
    # The exported agent carries an actor-critic and plays its world model headless with its own policy.
    assert main(["play", "--weights", str(full_run), "--headless", "--frames", "10", "--actions", "policy"]) == 0
    assert "10 frames" in capsys.readouterr().out


def test_kill_and_resume_loses_nothing_and_matches_an_uninterrupted_run(full_run, tmp_path):
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "diamond_play", *RUN_ARGS, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = run / "checkpoints" / "state.pt"
    deadline = time.time() + 240
    while not state_path.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # into the next epoch: collection has already written episodes the checkpoint does not know
    if proc.poll() is not None:
        pytest.fail("the run ended before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(state_path, weights_only=True)["epoch"] < 5
    assert main(["train", "atari", "--resume", str(run)]) == 0
    assert dataset_digest(run) == dataset_digest(full_run)
    a, b = weights(run), weights(full_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imagination_rollouts_have_the_right_shapes_and_masks(full_run):
    agent = tiny_agent("atari")
    ds = Dataset(full_run)
    episodes = [ds[i] for i in range(len(ds))]
    starts = SegmentSampler(episodes, 4, batch_size=3, seed=0, recency=True)
    envs = ImaginedEnvs(imagination_world_model(agent, 3, ATARI_SAMPLER, torch.device("cpu")), starts, horizon=5)
    runner = RolloutRunner(envs, agent.actor_critic.cfg.lstm_dim)
    torch.manual_seed(0)
    r = runner.rollout(agent.actor_critic, 7)
    assert r.obs.shape == (3, 7, 3, 64, 64) and r.logits_act.shape == (3, 7, 4)
    for x in (r.act, r.rew, r.end, r.trunc, r.val, r.val_bootstrap):
        assert x.shape == (3, 7)
    assert set(r.rew.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert r.logits_act.requires_grad and r.val.requires_grad and not r.val_bootstrap.requires_grad
    # Truncation exactly `horizon` steps after each (re)start, counting restarts caused by ends.
    since_start = torch.zeros(3, dtype=torch.long)
    for t in range(7):
        since_start += 1
        assert torch.equal(r.trunc[:, t].bool(), since_start >= 5)
        since_start[(r.end[:, t].bool() | r.trunc[:, t].bool())] = 0
    # Not-done steps bootstrap on the next step's value.
    done = r.end.bool() | r.trunc.bool()
    assert torch.allclose(r.val_bootstrap[:, :-1][~done[:, :-1]], r.val[:, 1:].detach()[~done[:, :-1]])
    # The rollout continues where it stopped: the envs keep their step counters between calls.
    assert envs.t is not None and envs.t.max() < 5


def test_reference_scores_and_hns():
    scores = reference_scores()
    assert len(scores) == 26 and scores["Breakout"].diamond == 132.5
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score("Breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized_score("Tetris", 10) is None


def test_env_state_round_trips_through_a_checkpoint(tmp_path):
    env = AtariEnv("Breakout", end_on_life_loss=True, seed=3)
    env.reset()
    for i in range(40):
        env.step(1 if i % 7 == 0 else i % 4)
    torch.save(env.get_state(), tmp_path / "s.pt")
    expected = [env.step(i % 4)[0] for i in range(30)]
    other = AtariEnv("Breakout", end_on_life_loss=True)
    other.set_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert all((a == other.step(i % 4)[0]).all() for i, a in enumerate(expected))


def test_bad_train_atari_input_is_one_line(tmp_path, capsys):
    assert main(["train", "atari", "Breakot", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Breakout" in err
    assert main(["train", "atari", "--resume", str(tmp_path / "missing")]) == 2
    assert main(["train", "atari", "Breakout", "--out", str(tmp_path / "r2"), "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_ddp_actor_critic_step_keeps_ranks_in_sync(tmp_path):
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port", str(free_port()), str(TESTS / "ddp_worker.py"),
                             str(out), "actor_critic"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["world_size"] == 2 and verdict["changed"]
    assert verdict["digests"][0] == verdict["digests"][1]
