"""The training core and the engine recipe on small real data: a run, resume after kill -9, DDP in sync."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port, tiny_agent

import diamond_play
from diamond_play.cli import main
from diamond_play.data.episodes import Dataset
from diamond_play.errors import UserError
from diamond_play.train.core import ModelTrainer, OptimConfig, RunLogger, decayed_parameter_groups, restore_trainers

TESTS = Path(__file__).parent
TINY = ["--preset", "tiny", "batch_size=4", "rew_end_batch_size=2", "rew_end_seq_length=6", "sample_every=1"]


@pytest.fixture(scope="module")
def breakout_data(tmp_path_factory) -> Path:
    from data_tools.atari_collect import main as collect

    out = tmp_path_factory.mktemp("data") / "breakout"
    assert collect(["Breakout", str(out), "--frames", "600", "--test-frames", "100", "--seed", "0"]) == 0
    return out


def test_collection_writes_train_and_test_episodes(breakout_data):
    train, test = Dataset(breakout_data / "train"), Dataset(breakout_data / "test")
    assert sum(len(train[i]) for i in range(len(train))) == 600
    assert sum(len(test[i]) for i in range(len(test))) == 100
    ep = train[0]
    assert ep.frames.shape[1:] == (64, 64, 3) and ep.actions.max() < 4
    assert train.info.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]


def test_weight_decay_only_on_linear_conv_lstm_weights():
    agent = tiny_agent("atari")
    decay, no_decay = decayed_parameter_groups(agent, 0.01)
    names = {id(p): n for n, p in agent.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "denoiser.inner_model.conv_in.weight" in decayed
    assert "rew_end_model.lstm.weight_ih_l0" in decayed
    assert "denoiser.inner_model.conv_in.bias" not in decayed
    assert "denoiser.inner_model.act_emb.0.weight" not in decayed  # embeddings are not decayed
    assert "denoiser.inner_model.norm_out.norm.weight" not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(agent.parameters()))
    assert OptimConfig().warmup_steps == 100


def test_optimiser_settings_given_on_resume_take_effect():
    model = torch.nn.Linear(3, 2)
    device = torch.device("cpu")
    before = ModelTrainer("m", model, OptimConfig(lr=1e-4, warmup_steps=4), device)
    batch = iter(lambda: torch.ones(1, 3), None)
    for _ in range(2):
        before.step(batch, lambda module, x: (module(x).sum(), {}))
    resumed = ModelTrainer("m", model, OptimConfig(lr=1e-3, weight_decay=0.1, warmup_steps=4), device)
    resumed.load_state_dict(before.state_dict())
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 4)  # still in warm-up, at the new lr
    assert resumed.opt.param_groups[0]["weight_decay"] == 0.1 and resumed.opt.param_groups[1]["weight_decay"] == 0
    metrics = resumed.step(batch, lambda module, x: (module(x).sum(), {}))
    assert metrics["m/lr"] == pytest.approx(1e-3)


def test_fresh_optimiser_on_resume_keeps_weights_and_restarts_moments_and_warm_up():
    device = torch.device("cpu")
    model = torch.nn.Linear(3, 2)
    before = ModelTrainer("m", model, OptimConfig(warmup_steps=4), device)
    batch = iter(lambda: torch.ones(1, 3), None)
    for _ in range(3):
        before.step(batch, lambda module, x: (module(x).sum(), {}))
    fresh = ModelTrainer("m", torch.nn.Linear(3, 2), OptimConfig(lr=1e-3, warmup_steps=4), device)
    restore_trainers([fresh], {"m": before.state_dict()}, fresh_optimisers=["m"])
    assert torch.equal(fresh.model.weight, model.weight) and fresh.steps == 3
    assert not fresh.opt.state  # no AdamW moments carried over
    lr_after_one_step = fresh.step(batch, lambda module, x: (module(x).sum(), {}))["m/lr"]
    assert lr_after_one_step == pytest.approx(1e-3 * 2 / 4)  # a new warm-up, from its start
    with pytest.raises(UserError, match="--fresh-optimiser rew_end: this run trains m"):
        restore_trainers([fresh], {"m": before.state_dict()}, fresh_optimisers=["rew_end"])


def test_train_engine_run_export_and_resume(breakout_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "engine", "--data", str(breakout_data / "train"), "--out", str(run), *TINY]
    assert main([*args, "epochs=1", "steps_per_epoch=3", "rew_end_steps_per_epoch=2"]) == 0
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,denoiser/loss_denoising") and len(rows) == 2
    assert list(run.glob("events.out.tfevents.*"))
    agent = diamond_play.load_agent(run)  # a run directory loads its latest checkpoint
    assert agent.config.game == "Breakout" and agent.config.kind == "atari"
    assert agent.config.provenance["denoiser_steps"] == 3 and "command" in agent.config.provenance
    capsys.readouterr()
    assert main(["train", "engine", "--resume", str(run), "--fresh-optimiser", "upsampler", "epochs=2"]) == 2
    assert "name one of those" in capsys.readouterr().err  # this run has no upsampler
    # what a run killed mid-write leaves behind (a half-written state and weights export) goes on resume
    (run / "checkpoints" / ".state.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    (run / "checkpoints" / ".last.tmp-k1ll3d").mkdir()
    assert main(["train", "engine", "--resume", str(run), "--fresh-optimiser", "rew_end", "epochs=2"]) == 0
    assert not list((run / "checkpoints").glob(".*"))
    log = list(csv.DictReader((run / "log.csv").open()))
    assert [(r["step"], r["epoch"]) for r in log] == [("3", "1.0"), ("6", "2.0")]
    # the denoiser's warm-up went on; the restarted reward/termination optimiser began a new one
    assert float(log[1]["denoiser/lr"]) > float(log[0]["denoiser/lr"])
    assert float(log[1]["rew_end/lr"]) == pytest.approx(float(log[0]["rew_end/lr"]))
    assert "epochs: 2" in (run / "config.yaml").read_text()
    provenance = diamond_play.load_agent(run).config.provenance
    assert "--data" in provenance["command"] and "--resume" not in provenance["command"]  # how the run started
    assert provenance["denoiser_steps"] == 6 and provenance["train_hours"] >= 0
    # export: a standalone weights directory with added provenance and eval results
    (tmp_path / "eval.json").write_text('{"one_step_psnr": 31.5, "baseline_one_step_psnr": 30.0}')
    shipped = tmp_path / "shipped"
    assert main(["export", str(run), "--out", str(shipped), "--eval", str(tmp_path / "eval.json"),
                 "--provenance", "data=scripted policy, seed 0"]) == 0
    exported = diamond_play.load_agent(shipped)
    assert exported.config.provenance["data"] == "scripted policy, seed 0"
    assert exported.config.provenance["denoiser_steps"] == 6 and (shipped / "spawn").is_dir()
    assert exported.config.metrics["eval"]["one_step_psnr"] == 31.5
    (tmp_path / "bad.json").write_text("[1, 2]")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--eval", str(tmp_path / "bad.json")]) == 2
    assert "diamond-play eval --json" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", str(run), "--out", str(shipped)]) == 2  # no silent overwrite
    # starting over in the same directory is refused, with what to do instead
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # the trained engine plays headless from the real game's first frames
    assert main(["atari", "Breakout", "--weights", str(run), "--headless", "--frames", "3", "--actions", "random"]) == 0


def test_kill_9_then_resume_continues(breakout_data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "diamond_play", "train", "engine", "--data", str(breakout_data / "train"), "--out",
           str(run), *TINY, "epochs=50", "steps_per_epoch=2", "rew_end_steps_per_epoch=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "checkpoints" / "state.pt"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists()
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= saved < 50
    result = subprocess.run([sys.executable, "-m", "diamond_play", "train", "engine", "--resume", str(run),
                             f"epochs={saved + 1}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(state, weights_only=True)["epoch"] == saved + 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port", str(free_port()), str(TESTS / "ddp_worker.py"),
                             str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["world_size"] == 2 and verdict["changed"]
    assert verdict["digests"][0] == verdict["digests"][1]


def test_readme_torchrun_command_trains_an_engine_and_exits_cleanly(breakout_data, tmp_path):
    """The README's multi-process command, end to end on 2 CPU processes (gloo): both ranks finish with exit 0."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port", str(free_port()), "-m", "diamond_play", "train", "engine",
                             "--data", str(breakout_data / "train"), "--out", str(run), *TINY, "epochs=1",
                             "steps_per_epoch=2", "rew_end_steps_per_epoch=1", "sample_every=0"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((run / "log.csv").read_text().splitlines()) == 2  # one epoch, logged once (rank 0)
    assert diamond_play.load_agent(run).config.provenance["denoiser_steps"] == 2


def test_segment_batches_feed_both_losses(breakout_data):
    from diamond_play.data.segments import SegmentSampler

    ds = Dataset(breakout_data / "train")
    episodes = [ds[i] for i in range(len(ds))]
    agent = tiny_agent("atari")
    batch = SegmentSampler(episodes, 6, 2, seed=0).sample()
    loss, _ = agent.denoiser(batch.obs, batch.act, batch.mask_padding)
    rbatch = SegmentSampler(episodes, 8, 2, seed=0, beyond_end=True).sample()
    rloss, metrics = agent.rew_end_model(rbatch.obs, rbatch.act, rbatch.rew, rbatch.end, rbatch.mask_padding)
    assert torch.isfinite(loss) and torch.isfinite(rloss) and np.isfinite(float(metrics["loss_end"]))


def test_reward_and_end_recall_and_precision_count_the_right_steps(breakout_data):
    from diamond_play.evaluate import rew_end_accuracy

    agent = tiny_agent("atari")
    head = agent.rew_end_model.head
    with torch.no_grad():  # a head that always says "reward +1" and "not the end"
        head[0].weight.zero_()
        head[0].bias.fill_(1.0)
        head[2].weight.zero_()
        head[2].weight[2] = 1.0  # reward class 2 = +1
        head[2].weight[3] = 1.0  # end class 0 = not the end
    ds = Dataset(breakout_data / "train")
    episodes = [ds[i] for i in range(len(ds))]
    steps = sum(len(e) - 1 for e in episodes) + sum(e.final_frame is not None for e in episodes)
    rewarded = sum(int((e.rewards[: len(e) - 1 + (e.final_frame is not None)] > 0).sum()) for e in episodes)
    assert rewarded > 0
    reward_acc, recall, precision, end_acc, end_recall, end_precision = rew_end_accuracy(agent, episodes, "cpu")
    assert reward_acc == pytest.approx(rewarded / steps) and recall == 1.0
    assert precision == pytest.approx(rewarded / steps)
    assert end_precision != end_precision  # nan: nothing predicted as an end
    assert end_recall == 0.0 or end_recall != end_recall  # no end predicted (nan when the data has none)


def test_eval_prints_the_table_and_writes_a_strip(breakout_data, tmp_path, capsys):
    from diamond_play.evaluate import psnr, ssim

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x)).logical_not().all() and psnr(x, x)[0] > 90
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-4)
    assert psnr(x, -x)[0] < psnr(x, x * 0.9)[0]

    run = tmp_path / "run"
    assert main(["train", "engine", "--data", str(breakout_data / "train"), "--out", str(run), *TINY, "epochs=1",
                 "steps_per_epoch=1", "rew_end_steps_per_epoch=1"]) == 0
    strip, metrics = tmp_path / "strip.png", tmp_path / "m.json"
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(breakout_data / "test"), "--episodes", "1", "--max-horizon", "4",
                 "--strip", str(strip), "--json", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "one-step PSNR" in out and "open-loop PSNR h=4" in out and "repeat-last" in out
    assert "reward accuracy" in out
    import cv2

    img = cv2.imread(str(strip))
    assert img.shape[0] == 2 * 64 * 3 and img.shape[1] == 4 * 64 * 3  # real row + imagined row, 4 steps, x3
    values = json.loads(metrics.read_text())
    assert "open_loop_psnr_h4" in values and "baseline_one_step_psnr" in values


def test_resumed_log_drops_rows_past_the_checkpoint(tmp_path):
    """A run killed between an epoch's log row and its checkpoint logs that epoch again on resume: the orphan row
    goes, the rest of the log (and its header) stays."""
    import csv

    first = RunLogger(tmp_path)
    for step in (100, 200, 300):
        first.scalars(step, {"epoch": step / 100, "loss": 1.0 / step})
    RunLogger(tmp_path)  # not a resume: nothing dropped
    assert len(list(csv.DictReader((tmp_path / "log.csv").open()))) == 3
    resumed = RunLogger(tmp_path, resumed_at=200)
    resumed.scalars(300, {"epoch": 3.0, "loss": 0.5})
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["step"] for r in rows] == ["100", "200", "300"] and rows[-1]["loss"] == "0.5"
    assert list(rows[0]) == ["step", "epoch", "loss"]


def test_reward_event_change_counts_lasting_pixels_only():
    """A brick that goes between the windows is a lasting change; a ball that moves every frame is not. Imagined
    frames that show the brick gone reproduce it; frames that keep it do not."""
    from diamond_play.evaluate import change_reproduced, lasting_change

    frames = -torch.ones(8, 3, 16, 16)
    frames[:4, :, 2, 4:8] = 1.0  # a brick in the before-window, gone after
    for t in range(8):
        frames[t, :, 10, t + 2] = 1.0  # the ball moves one pixel per frame
    before, after = frames[:4], frames[4:]
    changed = lasting_change(before, after)
    assert changed.sum() == 4 and changed[2, 4:8].all()

    assert change_reproduced(after.clone(), before[-1], after[0], changed) == 1.0
    kept = after.clone()
    kept[:, :, 2, 4:8] = 1.0
    assert change_reproduced(kept, before[-1], after[0], changed) == 0.0
    kept[:2, :, 2, 4:6] = -1.0  # half the brick gone in half the frames: still "at least half the frames"
    assert change_reproduced(kept, before[-1], after[0], changed) == 0.5
    assert not lasting_change(before, before).any()
