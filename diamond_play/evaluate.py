"""`diamond-play eval`: how well a world model predicts held-out real play.

Teacher-forced one-step PSNR/SSIM, open-loop PSNR at several horizons (the model feeds on its own frames while the
real actions are replayed), the same numbers for the baseline that repeats the last real frame, and
reward/termination accuracy, and whether the lasting change a reward brings (a brick gone, the score up) appears in
imagination too. Also writes PNG strips: real frames above, imagined frames below.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from diamond_play.data.episodes import Dataset, Episode
from diamond_play.errors import UserError
from diamond_play.frames import frames_to_tensor, real_above_imagined
from diamond_play.imagine import imagine_next_frame
from diamond_play.models.agent import Agent
from diamond_play.models.denoiser import make_randn
from diamond_play.world_model import WorldModel

HORIZONS = (1, 4, 16, 64)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB for frames in [-1, 1] (peak-to-peak 2)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, on [0, 1] images, averaged over channels)."""
    a, b = (a + 1) / 2, (b + 1) / 2
    coords = torch.arange(11, dtype=a.dtype, device=a.device) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(a.shape[1], 1, 11, 11).contiguous()

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=5, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


REW_END_METRICS = ("reward_accuracy", "nonzero_reward_recall", "nonzero_reward_precision", "end_accuracy",
                   "end_recall", "end_precision")


@dataclass
class EvalResult:
    one_step_psnr: float
    one_step_ssim: float
    baseline_one_step_psnr: float
    baseline_one_step_ssim: float
    open_loop_psnr: dict[int, float] = field(default_factory=dict)
    baseline_open_loop_psnr: dict[int, float] = field(default_factory=dict)
    reward_accuracy: float | None = None
    nonzero_reward_recall: float | None = None
    nonzero_reward_precision: float | None = None  # of the steps predicted non-zero, the share that were right
    end_accuracy: float | None = None
    end_recall: float | None = None
    end_precision: float | None = None
    reward_events_reproduced: float | None = None  # share of reward events whose lasting change is imagined too
    num_reward_events: int = 0
    num_episodes: int = 0
    num_frames: int = 0

    def table(self) -> str:
        rows = [("one-step PSNR (dB)", self.one_step_psnr, self.baseline_one_step_psnr),
                ("one-step SSIM", self.one_step_ssim, self.baseline_one_step_ssim)]
        rows += [(f"open-loop PSNR h={h} (dB)", self.open_loop_psnr[h], self.baseline_open_loop_psnr[h])
                 for h in sorted(self.open_loop_psnr)]
        lines = [f"{'metric':28s} {'model':>8s} {'repeat-last':>12s} {'gain':>8s}", "-" * 60]
        lines += [f"{name:28s} {m:8.3f} {b:12.3f} {m - b:+8.3f}" for name, m, b in rows]
        for name in REW_END_METRICS:  # absent without a reward/termination model or without such steps
            if getattr(self, name) is not None:
                lines.append(f"{name.replace('_', ' ').replace('nonzero ', 'nonzero-'):28s} {getattr(self, name):8.3f}")
        if self.reward_events_reproduced is not None:
            lines.append(f"{'reward events reproduced':28s} {self.reward_events_reproduced:8.3f}   "
                         f"({self.num_reward_events} events, open loop from {EVENT_LEAD} steps before)")
        lines.append(f"({self.num_episodes} held-out episodes, {self.num_frames} frames)")
        return "\n".join(lines)

    def as_metrics(self) -> dict[str, float]:
        out = {"one_step_psnr": self.one_step_psnr, "one_step_ssim": self.one_step_ssim,
               "baseline_one_step_psnr": self.baseline_one_step_psnr}
        for h in self.open_loop_psnr:
            out[f"open_loop_psnr_h{h}"] = self.open_loop_psnr[h]
            out[f"baseline_open_loop_psnr_h{h}"] = self.baseline_open_loop_psnr[h]
        for k in (*REW_END_METRICS, "reward_events_reproduced"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.reward_events_reproduced is not None:
            out["num_reward_events"] = self.num_reward_events
        return {k: round(float(v), 4) for k, v in out.items()}


def _shown(agent: Agent, episode, t: int) -> np.ndarray:
    """The real frame a player sees at step t (full-res for two-stage engines)."""
    if agent.upsampler is None:
        return episode.frames[t]
    if episode.full_res_frames is None:
        raise UserError("this two-stage engine is evaluated against full-res frames, and the held-out episodes "
                        "have none: pass --data with a prepared dataset's test split")
    return episode.full_res_frames[t]


@torch.no_grad()
def one_step(agent: Agent, episodes: list[Episode], device: torch.device, randn, batch_size: int = 64,
             max_windows: int = 2000, show_progress: bool = False) -> tuple[float, float, float, float]:
    """Teacher-forced: every prediction conditions on real frames (and the real previous full-res frame)."""
    n = agent.denoiser.num_steps_conditioning
    windows = [(e, t) for e in episodes for t in range(n, len(e))]
    if len(windows) > max_windows:
        keep = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[i] for i in keep]
    if not windows:
        raise UserError(f"held-out episodes are shorter than {n + 1} frames: nothing to evaluate")
    sums = np.zeros(4)
    for i in tqdm(range(0, len(windows), batch_size), desc="eval: one step", unit="batch", leave=False,
                  disable=not show_progress):
        chunk = windows[i : i + batch_size]
        obs = frames_to_tensor(np.stack([e.frames[t - n : t] for e, t in chunk])).to(device)
        act = torch.from_numpy(np.stack([e.actions[t - n : t] for e, t in chunk])).to(device)
        real = frames_to_tensor(np.stack([_shown(agent, e, t) for e, t in chunk])).to(device)
        last = frames_to_tensor(np.stack([_shown(agent, e, t - 1) for e, t in chunk])).to(device)
        frame = imagine_next_frame(agent.denoiser, agent.upsampler, agent.config.sampling, obs, act, randn, last)
        pred = frame.full_res if frame.full_res is not None else frame.low_res
        sums += [psnr(pred, real).sum().item(), ssim(pred, real).sum().item(), psnr(last, real).sum().item(),
                 ssim(last, real).sum().item()]
    return tuple((sums / len(windows)).tolist())  # type: ignore[return-value]


def replay_world_model(agent: Agent, starts: list[tuple[Episode, int]], device: torch.device,
                       generator: torch.Generator, last_shown: Tensor | None = None) -> WorldModel:
    """The batched core filled with each start's L real frames and actions (episode, first frame index), ready to
    replay the real actions that follow. Two-stage engines also take the last real full-res frames (`last_shown`
    when the caller has read them already)."""
    n = agent.denoiser.num_steps_conditioning
    wm = WorldModel(agent, num_envs=len(starts), device=device, generator=generator)
    obs = frames_to_tensor(np.stack([e.frames[s : s + n] for e, s in starts])).to(device)
    act = torch.from_numpy(np.stack([e.actions[s : s + n] for e, s in starts])).to(device)
    full_res = None
    if agent.upsampler is not None:
        full_res = last_shown if last_shown is not None else frames_to_tensor(
            np.stack([_shown(agent, e, s + n - 1) for e, s in starts])).to(device)
    wm.fill(obs, act, full_res)
    return wm


def replayed_action(starts: list[tuple[Episode, int]], n: int, k: int) -> Tensor:
    """The real action after the k-th imagined frame's conditioning frames (B,)."""
    return torch.from_numpy(np.stack([e.actions[s + n - 1 + k] for e, s in starts]))


@torch.no_grad()
def open_loop(agent: Agent, episodes: list[Episode], device: torch.device, generator: torch.Generator,
              horizons: tuple[int, ...] = HORIZONS, starts_per_episode: int = 4,
              show_progress: bool = False) -> tuple[dict, dict, np.ndarray]:
    """Roll out max(horizons) steps from several starts; PSNR at each horizon and a strip of the first rollout."""
    n = agent.denoiser.num_steps_conditioning
    H = max(horizons)
    starts = []
    for e in episodes:
        usable = len(e) - H - n + 1
        if usable > 0:
            starts += [(e, int(s)) for s in np.linspace(0, usable - 1, starts_per_episode).round().astype(int)]
    if not starts:
        raise UserError(f"no held-out episode is longer than {n + H} frames: use longer episodes or smaller horizons")
    last_real = frames_to_tensor(np.stack([_shown(agent, e, s + n - 1) for e, s in starts])).to(device)
    wm = replay_world_model(agent, starts, device, generator, last_real)
    model, baseline = {h: 0.0 for h in horizons}, {h: 0.0 for h in horizons}
    strip_real, strip_pred = [], []
    for k in tqdm(range(H), desc="eval: open loop", unit="step", leave=False, disable=not show_progress):
        out = wm.step_batch(replayed_action(starts, n, k))
        shown = out.full_res if out.full_res is not None else out.low_res
        real = frames_to_tensor(np.stack([_shown(agent, e, s + n + k) for e, s in starts])).to(device)
        if k + 1 in model:
            model[k + 1] = psnr(shown, real).mean().item()
            baseline[k + 1] = psnr(last_real, real).mean().item()
        if k < 16:
            strip_real.append(real[0])
            strip_pred.append(shown[0])
    return model, baseline, real_above_imagined(strip_real, strip_pred)


# A reward event at step t (reward of action t, non-zero): the rollout starts EVENT_LEAD steps before it, from real
# frames, and replays the real actions. Its lasting change is judged on the real frames [t + EVENT_SETTLE,
# t + EVENT_SETTLE + EVENT_POST) against frames [t - EVENT_LEAD - 1, t]: ALE shows a hit's brick and score one or
# two frames after the reward step.
EVENT_LEAD, EVENT_SETTLE, EVENT_POST = 2, 2, 5
PIXEL_CHANGE = 0.45  # summed |RGB difference| on the [-1, 1] scale (~20/255 per channel): above the model's noise


def lasting_change(before: Tensor, after: Tensor) -> Tensor:
    """Pixels that hold still through both windows (T, C, H, W) and differ between them: a brick gone, a new score
    digit. A moving ball or paddle changes within a window, so it is not counted. -> bool (H, W)."""

    def still(window: Tensor) -> Tensor:
        return (window - window[-1:]).abs().sum(1).amax(0) <= PIXEL_CHANGE

    differ = (after[0] - before[-1]).abs().sum(0) > PIXEL_CHANGE
    return still(before) & still(after) & differ


def change_reproduced(imagined_after: Tensor, before: Tensor, after: Tensor, changed: Tensor) -> float:
    """Share of the changed pixels that the imagined frames (T, C, H, W) show in their new state: closer to the
    real after-frame than to the real before-frame in at least half of the frames."""
    to_after = (imagined_after - after).abs().sum(1)
    to_before = (imagined_after - before).abs().sum(1)
    new_state = (to_after < to_before).float().mean(0) >= 0.5
    return new_state[changed].float().mean().item()


@torch.no_grad()
def reward_events(agent: Agent, episodes: list[Episode], device: torch.device, generator: torch.Generator,
                  max_events: int = 64,
                  batch_size: int = 32, show_progress: bool = False) -> tuple[float, int, np.ndarray] | None:
    """For each held-out reward event with a visible lasting change: does the open-loop rollout show it? An event
    counts as reproduced when at least half of its changed pixels reach their new state. -> (share of events
    reproduced, number of events, strip of the first event) or None when no event has a visible change."""
    n = agent.denoiser.num_steps_conditioning  # judged on the dynamics model's frames (low-res for two stages)
    steps = EVENT_LEAD + EVENT_SETTLE + EVENT_POST
    events = []
    for e in episodes:
        rewards = np.asarray(e.rewards[:])
        for t in np.nonzero(rewards)[0]:
            start = int(t) - EVENT_LEAD - n  # first conditioning frame
            if start < 0 or start + n + steps > len(e):
                continue
            frames = frames_to_tensor(np.asarray(e.frames[start : start + n + steps]))
            before, after = frames[n - 1 : n + EVENT_LEAD + 1], frames[n + EVENT_LEAD + EVENT_SETTLE :]
            changed = lasting_change(before, after)
            if changed.any():
                events.append((e, start, frames, changed))
        if len(events) >= max_events:
            break
    events = events[:max_events]
    if not events:
        return None
    reproduced, strip = 0, None
    for i in tqdm(range(0, len(events), batch_size), desc="eval: reward events", unit="batch", leave=False,
                  disable=not show_progress):
        chunk = events[i : i + batch_size]
        starts = [(e, s) for e, s, _, _ in chunk]
        wm = replay_world_model(agent, starts, device, generator)
        # The event is judged on the dynamics model's frames.
        imagined = [wm.step_batch(replayed_action(starts, n, k)).low_res.cpu() for k in range(steps)]
        rollouts = torch.stack(imagined, dim=1)  # (B, steps, C, H, W)
        for (_, _, frames, changed), rollout in zip(chunk, rollouts, strict=True):
            last_before, first_after = frames[n + EVENT_LEAD], frames[n + EVENT_LEAD + EVENT_SETTLE]
            share = change_reproduced(rollout[EVENT_LEAD + EVENT_SETTLE :], last_before, first_after, changed)
            reproduced += share >= 0.5
            if strip is None:
                strip = real_above_imagined(list(frames[n:]), list(rollout))
    assert strip is not None
    return reproduced / len(events), len(events), strip


@torch.no_grad()
def rew_end_accuracy(agent: Agent, episodes: list[Episode], device: torch.device) -> tuple[float, ...] | None:
    model = agent.rew_end_model
    if model is None:
        return None
    correct_r = correct_e = total = nz_total = nz_hit = nz_pred = end_total = end_hit = end_pred = 0
    for e in episodes:
        if len(e) < 2:
            continue
        frames = np.asarray(e.frames[:])
        if e.final_frame is not None:
            frames = np.concatenate([frames, np.asarray(e.final_frame)[None]])
        t = len(frames) - 1
        obs = frames_to_tensor(frames[:-1])[None].to(device)
        nxt = frames_to_tensor(frames[1:])[None].to(device)
        act = torch.from_numpy(e.actions[:t])[None].to(device)
        rew_logits, end_logits, _ = model.predict_rew_end(obs, act, nxt)
        pred_r = rew_logits.argmax(-1)[0].cpu().numpy()
        pred_e = end_logits.argmax(-1)[0].cpu().numpy()
        true_r = (np.sign(e.rewards[:t]) + 1).astype(int)
        true_e = e.terminations[:t].astype(int)
        correct_r += int((pred_r == true_r).sum())
        correct_e += int((pred_e == true_e).sum())
        total += t
        nz = true_r != 1
        nz_total += int(nz.sum())
        nz_hit += int((pred_r[nz] == true_r[nz]).sum())
        nz_pred += int((pred_r != 1).sum())
        end_total += int(true_e.sum())
        end_hit += int(((pred_e == 1) & (true_e == 1)).sum())
        end_pred += int((pred_e == 1).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    # In REW_END_METRICS order; nan where undefined (no such steps), reported as absent.
    return (ratio(correct_r, total), ratio(nz_hit, nz_total), ratio(nz_hit, nz_pred), ratio(correct_e, total),
            ratio(end_hit, end_total), ratio(end_hit, end_pred))


def held_out_episodes(data: Path | None, game: str, episodes: int, seed: int) -> list[Episode]:
    """Episodes from a held-out dataset folder, or freshly collected ones (seeded, never seen in training)."""
    if data is None:
        from diamond_play.data.collect import collect

        policy = "mix" if game == "Breakout" else "random"
        with tempfile.TemporaryDirectory(prefix="diamond_eval_") as tmp:  # episodes are read into memory
            ds = collect(game, Path(tmp) / "held_out", frames=episodes * 300, policy=policy, seed=seed,
                         desc="collect")
            eps = [ds[i] for i in range(len(ds))]
    else:
        eps = Dataset(data).lazy_episodes()  # windows are read as needed (CS:GO test splits do not fit in memory)
    eps.sort(key=len, reverse=True)
    return eps[:episodes]


def evaluate(agent: Agent, episodes: list[Episode], device: torch.device | str = "cpu", seed: int = 0,
             horizons: tuple[int, ...] = HORIZONS, show_progress: bool = True
             ) -> tuple[EvalResult, dict[str, np.ndarray]]:
    """-> (the numbers, strips: "open_loop" (the first rollout) and, when the episodes have a reward event with a
    visible change, "reward_event" (the first such event))."""
    device = torch.device(device)
    agent = agent.to(device).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    randn = make_randn(device, generator=g)
    one = one_step(agent, episodes, device, randn, show_progress=show_progress)
    model, baseline, strip = open_loop(agent, episodes, device, g, horizons, show_progress=show_progress)
    result = EvalResult(*one, open_loop_psnr=model, baseline_open_loop_psnr=baseline, num_episodes=len(episodes),
                        num_frames=sum(len(e) for e in episodes))
    acc = rew_end_accuracy(agent, episodes, device)
    if acc is not None:
        for name, value in zip(REW_END_METRICS, acc, strict=True):
            setattr(result, name, None if math.isnan(value) else value)
    events = reward_events(agent, episodes, device, g, show_progress=show_progress)
    strips = {"open_loop": strip}
    if events is not None:
        result.reward_events_reproduced, result.num_reward_events, strips["reward_event"] = events
    return result, strips


def save_strip(strip: np.ndarray, path: Path, scale: int = 3) -> Path:
    big = cv2.resize(strip, (strip.shape[1] * scale, strip.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    return path
