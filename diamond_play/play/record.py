"""`diamond-play record`: play (or let a policy play) a real gymnasium game and save it as a dataset."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame
import yaml

from diamond_play.config import GAME_KINDS
from diamond_play.data.episodes import Dataset, DatasetInfo, EpisodeBuilder
from diamond_play.envs.atari import AtariEnv
from diamond_play.envs.pixels import make_pixel_env
from diamond_play.errors import UserError
from diamond_play.play.app import Pacer, default_scale
from diamond_play.play.controls import AtariControls, KeymapControls, default_keymap, read_action_file
from diamond_play.play.display import init_window_display


@dataclass
class RecordOptions:
    env_id: str
    out: Path
    frames: int | None = None
    policy: str = "human"  # human | random | FILE (actions, one per line or .npy)
    size: tuple[int, int] = (64, 64)
    keymap: Path | None = None
    fps: float = 15.0
    seed: int = 0
    scale: int | None = None


def load_keymap(path: Path | None, num_actions: int) -> dict:
    if path is None:
        return default_keymap(num_actions)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"key map {str(path)!r} is unreadable ({str(e).splitlines()[0]}): see the README") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise UserError(f"key map {str(path)!r} must look like: keys: {{left: 0, right: 1}}, default: 0")
    return {"keys": {str(k): int(v) for k, v in data["keys"].items()}, "default": int(data.get("default", 0))}


def scripted_policy(policy: str, num_actions: int, rng: np.random.Generator):
    if policy == "random":
        return lambda: int(rng.integers(num_actions))
    path = Path(policy)
    if not path.is_file():
        raise UserError(f"--policy {policy!r}: use human, random or an existing action file")
    actions = read_action_file(path, num_actions)
    counter = iter(range(10**12))
    return lambda: actions[next(counter) % len(actions)]


def record(opts: RecordOptions) -> Dataset:
    env = make_pixel_env(opts.env_id, opts.size, seed=opts.seed)
    atari = isinstance(env, AtariEnv)
    keymap = {} if atari else load_keymap(opts.keymap, env.num_actions)
    frame_size = [opts.size[0], opts.size[0]] if atari else list(opts.size)
    info = DatasetInfo(game=env.game, num_actions=env.num_actions, action_names=list(env.action_meanings),
                       fps=opts.fps, frame_size=frame_size, source=f"diamond-play record {opts.env_id}",
                       keymap=keymap)
    rng = np.random.default_rng(opts.seed)
    human = opts.policy == "human"
    pick = None if human else scripted_policy(opts.policy, env.num_actions, rng)
    screen = controls = None
    if human:
        init_window_display()  # before the dataset exists: without a display nothing is written
        scale = opts.scale or default_scale(GAME_KINDS["atari" if atari else "custom"], tuple(frame_size))
        screen = pygame.display.set_mode((frame_size[1] * scale, frame_size[0] * scale))
        pygame.display.set_caption(f"diamond-play record: {env.game} (Esc to stop)")
        controls = (AtariControls(env.action_meanings) if atari else KeymapControls(keymap, env.num_actions))
    dataset = Dataset(opts.out, info)
    pacer = Pacer(opts.fps)
    total, quit_requested = 0, False
    frame, _ = env.reset()
    builder = EpisodeBuilder({"game": env.game, "source": "record", "fps": opts.fps})

    def save(final_frame: np.ndarray | None) -> None:
        episode = builder.build(final_frame)
        if episode is not None:
            dataset.append(episode)

    try:
        while not quit_requested and (opts.frames is None or total < opts.frames):
            if human:
                for event in pygame.event.get():
                    if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                        quit_requested = True
                    controls.handle_event(event)
                img = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
                screen.blit(pygame.transform.scale(img, screen.get_size()), (0, 0))
                pygame.display.flip()
                if not pacer.due():
                    time.sleep(0.002)
                    continue
                pacer.advance()
                action = controls.action()
            else:
                action = pick()
            next_frame, reward, end, trunc, _ = env.step(action)
            builder.add(frame, action, reward, end, trunc)
            total += 1
            frame = next_frame
            if end or trunc:
                save(next_frame)
                frame, _ = env.reset()
    except KeyboardInterrupt:
        pass
    finally:
        save(frame)
        env.close()
        if human:
            pygame.quit()
    return dataset
