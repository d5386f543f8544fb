"""`train agent`: an actor-critic trained inside a frozen engine, on real ALE data; and the imagination rollout
checked against a plain re-statement of the paper's algorithm."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_agent
from safetensors.torch import load_file
from torch.distributions import Categorical

from diamond_play.cli import main
from diamond_play.config import ATARI_SAMPLER, WeightsConfig
from diamond_play.data.collect import collect
from diamond_play.data.episodes import Dataset
from diamond_play.data.segments import SegmentSampler
from diamond_play.imagine import predict_low_res
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import make_randn
from diamond_play.train.rl import (
    ActorCriticLossConfig,
    ImaginedEnvs,
    RolloutRunner,
    actor_critic_loss,
    imagination_world_model,
    lambda_returns,
)
from diamond_play.weights.format import load_weights_dir, save_weights_dir


def engine_without_actor_critic(seed: int = 0) -> Agent:
    full = tiny_agent("atari", seed=seed)
    cfg = dataclasses.replace(full.config, agent=dataclasses.replace(full.config.agent, actor_critic=None))
    engine = Agent(cfg)
    engine.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("actor_critic.")})
    return engine.eval()


@pytest.fixture(scope="module")
def engine_and_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agent")
    engine = save_weights_dir(engine_without_actor_critic(), root / "engine")
    data = root / "data"
    collect("Breakout", data, 300, "random", seed=0, show_progress=False)
    return engine, data


def run_args(engine: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "agent", "--weights", str(engine), "--data", str(data), "--out", str(out), "--preset", "tiny",
            *extra]


def test_train_agent_logs_probes_evaluates_exports_and_resumes_exactly(engine_and_data, tmp_path):
    engine, data = engine_and_data
    full = tmp_path / "full"
    assert main(run_args(engine, data, full)) == 0
    rows = list(csv.DictReader((full / "log.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]
    for key in ("actor_critic/entropy", "actor_critic/value_explained_variance", "actor_critic/imagined_reward_rate",
                "probe/right_left_vs_ball_offset_corr", "probe/fire_in_play", "eval/return", "eval/length",
                "eval/hns", "hours"):
        assert rows[-1][key] != "", key
    exported = load_weights_dir(full / "checkpoints" / "last")
    assert exported.actor_critic is not None and exported.rew_end_model is not None
    agent_prov = exported.config.provenance["agent"]
    assert agent_prov["actor_critic_steps"] == 4 and agent_prov["engine"] == str(engine)
    assert "return" in exported.config.metrics["agent_eval"]
    # The frozen world model is exported unchanged.
    before, after = load_file(engine / "model.safetensors"), load_file(full / "checkpoints/last/model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)

    # One epoch, then a resume to two: the same weights as the uninterrupted run.
    part = tmp_path / "part"
    assert main(run_args(engine, data, part, "epochs=1")) == 0
    older = tmp_path / "older"  # the same state as written before the run lifecycle: one trainer under "trainer"
    shutil.copytree(part, older)
    state = torch.load(older / "checkpoints/state.pt", weights_only=True)
    state["trainer"] = state.pop("trainers")["actor_critic"]
    torch.save(state, older / "checkpoints/state.pt")
    assert main(["train", "agent", "--resume", str(part), "epochs=2"]) == 0
    a = load_file(part / "checkpoints/last/model.safetensors")
    b = load_file(full / "checkpoints/last/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert [int(float(r["epoch"])) for r in csv.DictReader((part / "log.csv").open())] == [1, 2]
    assert main(["train", "agent", "--resume", str(older), "epochs=2"]) == 0
    c = load_file(older / "checkpoints/last/model.safetensors")
    assert all(torch.equal(c[k], b[k]) for k in b)


def test_train_agent_bad_input_is_one_line(engine_and_data, tmp_path, capsys):
    engine, data = engine_and_data
    no_rew = tiny_agent("atari")
    cfg: WeightsConfig = dataclasses.replace(no_rew.config, agent=dataclasses.replace(
        no_rew.config.agent, rew_end_model=None, actor_critic=None))
    bare = Agent(cfg)
    bare.denoiser.load_state_dict(no_rew.denoiser.state_dict())
    save_weights_dir(bare, tmp_path / "no_rew")
    assert main(run_args(tmp_path / "no_rew", data, tmp_path / "r1")) == 2
    assert "reward/termination" in capsys.readouterr().err
    pong = tmp_path / "pong"
    collect("Pong", pong, 50, "random", seed=0, show_progress=False)
    assert main(run_args(engine, pong, tmp_path / "r2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Pong" in err and "Breakout" in err
    assert main(["train", "agent", "--weights", str(engine), "--out", str(tmp_path / "r3")]) == 2
    assert "--data" in capsys.readouterr().err
    # A resume against a changed engine is refused.
    run = tmp_path / "r4"
    assert main(run_args(engine, data, run, "epochs=1")) == 0
    changed = tmp_path / "engine2"
    save_weights_dir(engine_without_actor_critic(seed=1), changed)
    cfg_path = run / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace(str(engine), str(changed)))
    assert main(["train", "agent", "--resume", str(run), "epochs=2"]) == 2
    assert "not the one this run started with" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The rollout, λ-returns, loss and gradients against the paper's algorithm written out plainly


def paper_rollout_loss(agent: Agent, starts: SegmentSampler, steps: int, horizon: int,
                       cfg: ActorCriticLossConfig) -> dict[str, torch.Tensor]:
    """DIAMOND's imagination loop as the official env loop states it: reset, act, imagine, sample reward and end,
    truncate at the horizon; dead environments restart from real segments, their value is taken on the final
    frame with the pre-reset state, the actor's LSTM is zeroed and burned in (with gradients) on the segment."""
    policy, den, rew_end = agent.actor_critic, agent.denoiser, agent.rew_end_model
    assert policy is not None and rew_end is not None
    randn = make_randn(torch.device("cpu"))
    num_envs = starts.batch_size

    def fresh(n: int):
        seg = starts.sample(n)
        with torch.no_grad():
            _, _, (h, c) = rew_end.predict_rew_end(seg.obs[:, :-1], seg.act[:, :-1], seg.obs[:, 1:])
        return seg.obs, seg.act, h, c

    obs_buf, act_buf, rh, rc = fresh(num_envs)
    t = torch.zeros(num_envs, dtype=torch.long)
    hx = torch.zeros(num_envs, policy.cfg.lstm_dim)
    cx = torch.zeros(num_envs, policy.cfg.lstm_dim)
    obs = obs_buf[:, -1].clone()
    acts, rews, ends, truncs, logits_all, vals, boots, deads = [], [], [], [], [], [], [], []
    for _ in range(steps):
        logits, val, (hx, cx) = policy(obs, (hx, cx))
        act = Categorical(logits=logits.detach()).sample()
        with torch.no_grad():
            act_buf[:, -1] = act
            nxt = predict_low_res(den, ATARI_SAMPLER, obs_buf, act_buf, randn)
            lr, le, (rh, rc) = rew_end.predict_rew_end(obs_buf[:, -1:], act_buf[:, -1:], nxt[:, None], (rh, rc))
            rew = Categorical(logits=lr[:, 0]).sample().float() - 1
            end = Categorical(logits=le[:, 0]).sample()
            t = t + 1
            trunc = (t >= horizon).long()
            obs_buf, act_buf = obs_buf.roll(-1, dims=1), act_buf.roll(-1, dims=1)
            obs_buf[:, -1] = nxt
            dead = end.bool() | trunc.bool()
            idx = dead.nonzero().squeeze(1)
            burn = None
            if len(idx):
                o, a, h, c = fresh(len(idx))
                obs_buf[idx], act_buf[idx], t[idx] = o, a, 0
                rh[:, idx], rc[:, idx] = h, c
                burn = o[:, :-1]
        boot = torch.zeros(num_envs)
        if dead.any():
            with torch.no_grad():
                _, val_final, _ = policy(nxt[dead], (hx[dead], cx[dead]))
            boot[dead] = val_final
            gate = 1 - dead.float().unsqueeze(1)
            hx, cx = hx * gate, cx * gate
            for i in range(burn.shape[1]):
                _, _, (hx[dead], cx[dead]) = policy(burn[:, i], (hx[dead], cx[dead]))
        acts.append(act)
        rews.append(rew)
        ends.append(end)
        truncs.append(trunc)
        logits_all.append(logits)
        vals.append(val)
        boots.append(boot)
        deads.append(dead)
        obs = obs_buf[:, -1].clone()
    with torch.no_grad():
        _, val_last, _ = policy(obs, (hx, cx))
    # G_t = r_t + γ(1 − e_t)[(1 − tr_t)(1 − λ) + tr_t]·V_boot_t + γλ(1 − (e_t ∨ tr_t))·G_{t+1}, G_T = V_boot_{T-1}
    next_values = [v.detach() for v in vals[1:]] + [val_last]
    returns: list[torch.Tensor] = [torch.zeros(0)] * steps
    g_next = torch.where(deads[-1], boots[-1], val_last)
    for i in reversed(range(steps)):
        v_boot = torch.where(deads[i], boots[i], next_values[i])
        e, tr = ends[i].float(), truncs[i].float()
        g_next = (rews[i] + cfg.gamma * (1 - e) * ((1 - tr) * (1 - cfg.lambda_) + tr) * v_boot
                  + cfg.gamma * cfg.lambda_ * (1 - torch.maximum(e, tr)) * g_next)
        returns[i] = g_next
    g_all, v_all = torch.stack(returns, 1), torch.stack(vals, 1)
    log_probs = F.log_softmax(torch.stack(logits_all, 1), dim=-1)
    a_all = torch.stack(acts, 1)
    log_pi = log_probs.gather(-1, a_all[..., None])[..., 0]
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    loss = (-(log_pi * (g_all - v_all).detach()).mean() + cfg.weight_value_loss * F.mse_loss(v_all, g_all.detach())
            - cfg.weight_entropy_loss * entropy)
    grads = torch.autograd.grad(loss, list(policy.parameters()))
    return {"act": a_all, "rew": torch.stack(rews, 1), "end": torch.stack(ends, 1), "val": v_all.detach(),
            "returns": g_all.detach(), "loss": loss.detach(), "grads": grads, "resets": torch.stack(deads).sum()}


def test_rollout_loss_and_gradients_match_the_papers_algorithm(engine_and_data):
    _, data = engine_and_data
    ds = Dataset(data)
    episodes = [ds[i] for i in range(len(ds))]
    agent = tiny_agent("atari")  # its random end head fires often: episodes end mid-rollout, not only truncate
    cfg = ActorCriticLossConfig()
    steps, horizon, num_envs = 9, 3, 5

    torch.manual_seed(0)
    expected = paper_rollout_loss(agent, SegmentSampler(episodes, 4, num_envs, seed=1), steps, horizon, cfg)

    torch.manual_seed(0)
    envs = ImaginedEnvs(imagination_world_model(agent, num_envs, ATARI_SAMPLER, torch.device("cpu")),
                        SegmentSampler(episodes, 4, num_envs, seed=1), horizon)
    r = RolloutRunner(envs, agent.actor_critic.cfg.lstm_dim).rollout(agent.actor_critic, steps)
    returns = lambda_returns(r.rew, r.end, r.trunc, r.val_bootstrap, cfg.gamma, cfg.lambda_)
    loss, _ = actor_critic_loss(r.logits_act, r.act, r.val, returns, cfg)
    grads = torch.autograd.grad(loss, list(agent.actor_critic.parameters()))

    assert expected["resets"] >= num_envs * 2 and r.end.sum() > 0  # many restarts, some of them by an end
    assert torch.equal(r.act, expected["act"]) and torch.equal(r.rew, expected["rew"])
    assert torch.equal(r.end, expected["end"])
    torch.testing.assert_close(r.val.detach(), expected["val"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(returns, expected["returns"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss.detach(), expected["loss"], atol=1e-6, rtol=1e-5)
    for ours, paper in zip(grads, expected["grads"], strict=True):
        torch.testing.assert_close(ours, paper, atol=1e-6, rtol=1e-4)


def test_agent_play_collection_and_end_probe_on_real_breakout(engine_and_data, tmp_path, capsys):
    """The tools of the engine's second stage: real play by an agent appended to a dataset, and the probe of
    whether the reward/termination model lets an action decide the end."""
    from data_tools.atari_collect import main as collect_main
    from data_tools.end_probe import main as probe_main

    engine, data = engine_and_data
    with_agent = save_weights_dir(tiny_agent("atari"), tmp_path / "with_agent")
    assert collect_main(["Breakout", str(tmp_path / "play"), "--frames", "150", "--test-frames", "0",
                         "--policy", "agent", "--weights", str(with_agent), "--epsilon", "0.5"]) == 0
    played = Dataset(tmp_path / "play" / "train")
    assert len(played) > 0 and sum(len(played[i]) for i in range(len(played))) >= 150
    assert "policy=agent" in played.info.source and played[0].terminations[-1]  # a lost life ends each episode
    assert collect_main(["Breakout", str(tmp_path / "bad"), "--frames", "10", "--policy", "agent"]) == 2
    assert "--weights" in capsys.readouterr().err

    assert probe_main([str(engine), "--data", str(data), "--segments", "2", "--horizon", "2"]) == 0
    out = capsys.readouterr().out
    assert "P(end) at true ends: recorded actions" in out and "FIRE" in out and "holding: NOOP" in out


def test_dream_probe_sets_policies_side_by_side_in_imagination_and_the_real_game(engine_and_data, tmp_path, capsys):
    from data_tools.dream_probe import FIRE, LEFT, RIGHT, ball_seen, tracker_action
    from data_tools.dream_probe import main as dream_main

    engine, data = engine_and_data
    with_agent = save_weights_dir(tiny_agent("atari"), tmp_path / "with_agent")
    assert dream_main([str(engine), "--data", str(data), "--policies", "random", "tracker", "agent", "--agent",
                       str(with_agent), "--envs", "2", "--steps", "3", "--horizon", "2", "--games", "1",
                       "--max-real-steps", "30"]) == 0
    out = capsys.readouterr().out
    for name in ("random", "tracker", "agent"):
        assert f"  {name}" in out
    assert out.count("rewards/step") == 6 and "real game: return" in out
    assert out.count("ball seen") == 6  # a Breakout engine: how often the tracker finds the ball, in both worlds
    assert dream_main([str(engine), "--data", str(data), "--policies", "agent"]) == 2
    assert "--agent" in capsys.readouterr().err

    # The tracker reads the frame: the ball left of the paddle -> LEFT, right -> RIGHT, none -> FIRE.
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[58, 30:38] = (200, 72, 72)
    assert tracker_action(frame) == FIRE and not ball_seen(frame)
    frame[40, 10] = (200, 72, 72)
    assert tracker_action(frame) == LEFT and ball_seen(frame)
    frame[40, 10], frame[40, 55] = 0, (200, 72, 72)
    assert tracker_action(frame) == RIGHT


def test_eval_agent_plays_full_real_games(tmp_path, capsys):
    weights = save_weights_dir(tiny_agent("atari"), tmp_path / "agent")
    out = tmp_path / "agent_eval.json"
    assert main(["eval", str(weights), "--agent", "--episodes", "2", "--seed", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Breakout: return" in printed and "over 2 real games" in printed and "human-normalised" in printed
    import json

    result = json.loads(out.read_text())
    assert len(result["returns"]) == 2 and all(n > 10 for n in result["lengths"])  # full games: five lives
    engine = save_weights_dir(engine_without_actor_critic(), tmp_path / "engine")
    assert main(["eval", str(engine), "--agent"]) == 2
    assert "no actor-critic" in capsys.readouterr().err
