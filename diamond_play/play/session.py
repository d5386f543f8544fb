"""A play session without any UI: the engine, where start states come from, the optional real emulator running
in lockstep, the optional policy, and recording. The pygame window and the headless runner both drive this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diamond_play.accel.modes import ExecutionMode
from diamond_play.config import GameKind
from diamond_play.data.episodes import Dataset, DatasetInfo, EpisodeBuilder
from diamond_play.engine import WorldModelEngine
from diamond_play.errors import UserError
from diamond_play.frames import tensor_to_frames
from diamond_play.games import game_of
from diamond_play.models.agent import Agent
from diamond_play.play.compile import NetworkCompiler
from diamond_play.play.shared import SharedWorldModel


@dataclass
class Outcome:
    """What one tick produced."""

    frame: np.ndarray  # world-model frame to show
    real_frame: np.ndarray | None
    action: int | np.ndarray
    reward: float | None
    end: bool | None
    latency_s: float
    reset: bool = False  # the world model was re-seeded after this step (end or horizon)
    reset_by: str = ""  # "end" (predicted termination) or "horizon"
    episode_return: float | None = None  # predicted rewards summed since the last reset, this step included


class Policy:
    """The agent's actor-critic choosing actions from the world model's frames (LSTM burned in at reset)."""

    def __init__(self, agent: Agent, generator: torch.Generator) -> None:
        if agent.actor_critic is None:
            raise UserError("these weights have no actor-critic, so there is no policy to play: use human control")
        self.model = agent.actor_critic
        self.generator = generator
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def reset(self, engine: WorldModelEngine) -> None:
        self.state = None
        for i in range(engine.num_cond - 1):
            _, _, self.state = self.model.predict_act_value(engine.obs[:, i], self.state)

    @torch.no_grad()
    def act(self, engine: WorldModelEngine) -> int:
        logits, _, self.state = self.model.predict_act_value(engine.current_low_res(), self.state)
        return int(torch.multinomial(logits.softmax(-1), 1, generator=self.generator).item())


class EpisodeRecorder:
    """Collects what the player saw and did, and appends finished episodes to a dataset (HDF5, atomic)."""

    def __init__(self, dataset: Dataset, fps: float) -> None:
        self.dataset = dataset
        self.builder = EpisodeBuilder({"game": dataset.info.game, "source": "diamond-play world model", "fps": fps})
        self.saved = 0

    @property
    def actions(self) -> list:
        return self.builder.actions

    def record(self, low_res: np.ndarray, full_res: np.ndarray | None, action, reward: float | None,
               end: bool | None) -> None:
        self.builder.add(low_res, action, reward, end, full_res=full_res)

    def flush(self, truncated: bool = True, final_frame: np.ndarray | None = None) -> None:
        episode = self.builder.build(final_frame, stopped_early=truncated)
        if episode is not None:
            self.dataset.append(episode)
            self.saved += 1


class PlaySession:
    def __init__(self, agent: Agent, device: torch.device | str = "cpu", seed: int | None = None,
                 horizon: int | None = None, spawn: int | None = None, sampling=None,
                 record_dataset: str | None = None, fps: float = 10.0, mode: ExecutionMode | None = None,
                 compile_in_background: bool = True, ignore_end: bool = False,
                 shared: SharedWorldModel | None = None) -> None:
        """`ignore_end`: keep imagining through predicted terminations (they are still shown) instead of
        re-seeding from the start states: for reward/termination models that fire too often. `shared`: take a
        seat on that engine (its agent, sampling, device and mode) instead of making one."""
        cfg = agent.config
        self.ignore_end = ignore_end
        self.reseeds = {"end": 0, "horizon": 0}  # re-seeds since the session started, by cause
        self.game = game_of(cfg)
        # Compiled modes compile in the background: play starts eagerly at once and speeds up when ready (the
        # engine says whether it can: CUDA-graph modes under torch.compile compile and capture at the first frame
        # instead). Without `compile_in_background` (headless runs) they compile before the first frame, so the
        # whole run is in one mode and a seed reproduces it.
        self.shared = shared
        self.compiler: NetworkCompiler | None = None
        if shared is not None:
            self.engine: WorldModelEngine = shared.seat(seed, horizon)
        else:
            self.engine = WorldModelEngine(agent, sampling=sampling, device=device, seed=seed,
                                           horizon=horizon or cfg.game_kind.play_horizon, mode=mode,
                                           defer_compile=mode is not None and mode.compile)
            self.compiler = NetworkCompiler(self.engine)
            if compile_in_background:
                self.compiler.start()
            else:
                self.compiler.run()
        self.rng = np.random.default_rng(seed)
        self.starts = self.game.start_states(cfg, agent.weights_path, self.engine.num_cond,
                                             self.engine.low_res_size[0], seed, spawn, self.rng)
        self.policy = Policy(agent, self.engine.generator) if agent.actor_critic is not None else None
        self.fps = fps
        self.two_stage = agent.upsampler is not None
        self.recorder: EpisodeRecorder | None = None
        if record_dataset is not None:
            self.start_recording(record_dataset)
        self.frame = self.reset()

    def start_recording(self, root: str | Path) -> None:
        """Append what is played from the next step on to the dataset at `root` (made if new)."""
        cfg = self.engine.config
        info = DatasetInfo(game=cfg.game, num_actions=cfg.num_actions,
                           action_type="multi_hot" if self.engine.multi_hot else "discrete",
                           action_names=list(cfg.action_names), fps=self.fps,
                           frame_size=list(self.engine.low_res_size),
                           full_res_size=list(cfg.frame_size) if self.two_stage else None,
                           source="diamond-play world model")
        self.recorder = EpisodeRecorder(Dataset(root, info), self.fps)

    def stop_recording(self) -> Dataset | None:
        """Save the episode in progress and stop recording: the dataset recorded to, if any."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return None
        recorder.flush()
        return recorder.dataset

    @property
    def game_kind(self) -> GameKind:
        return self.game.traits

    @property
    def has_real_env(self) -> bool:
        return self.game_kind.real_game

    @property
    def real_frame(self) -> np.ndarray | None:
        return self.starts.frame

    def reset(self, restart_real: bool = False) -> np.ndarray:
        if self.recorder is not None:
            self.recorder.flush()
        if restart_real:
            self.starts.restart()
        self.frame = self.engine.reset(self.starts.start_state())
        self.episode_return = 0.0
        if self.policy is not None:
            self.policy.reset(self.engine)
        return self.frame

    def policy_action(self) -> int:
        if self.policy is None:
            raise UserError("these weights have no actor-critic, so there is no policy to play")
        return self.policy.act(self.engine)

    def step(self, action) -> Outcome:
        if self.recorder is not None:  # copy now: the engine shifts its buffers in place
            low_res_before = tensor_to_frames(self.engine.obs[0, -1])
            full_before = self.engine.current_frame() if self.engine.full_res is not None else None
        result = self.engine.step(action)
        real = self.starts.step(action)
        if self.recorder is not None:
            self.recorder.record(low_res_before, full_before, action, result.reward, result.end)
        if result.reward is not None:
            self.episode_return += result.reward
        outcome = Outcome(result.frame, real, action, result.reward, result.end, result.latency_s,
                          episode_return=self.episode_return if result.reward is not None else None)
        self.frame = result.frame
        if (result.end and not self.ignore_end) or result.truncated:
            outcome.reset_by = "horizon" if result.truncated and not result.end else "end"
            self.reseeds[outcome.reset_by] += 1
            if self.recorder is not None:
                self.recorder.flush(truncated=not result.end, final_frame=tensor_to_frames(self.engine.obs[0, -1]))
            outcome.reset = True
            self.reset()
        return outcome

    def close(self) -> None:
        if self.compiler is not None:
            self.compiler.close()
        if self.shared is not None:
            self.shared.leave(self.engine)
        self.stop_recording()
        self.starts.close()

