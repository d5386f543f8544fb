"""Synthetic episodes in the project's format for tests run in subprocesses."""

from __future__ import annotations

import torch

from diamond_play.data.episodes import Episode
from diamond_play.envs import csgo


def csgo_episode(g: torch.Generator, length: int = 8) -> Episode:
    """Random low-res + full-res CS:GO frames with valid multi-hot actions (walking forward)."""
    full = torch.randint(0, 256, (length, 150, 280, 3), generator=g, dtype=torch.uint8).numpy()
    low = torch.randint(0, 256, (length, 30, 56, 3), generator=g, dtype=torch.uint8).numpy()
    action = csgo.encode_action(csgo.CSGOAction(keys=("w",)))
    actions = torch.from_numpy(action).repeat(length, 1).numpy()
    zeros = torch.zeros(length, dtype=torch.bool).numpy()
    return Episode(frames=low, actions=actions, rewards=torch.zeros(length).numpy(), terminations=zeros,
                   truncations=zeros.copy(), full_res_frames=full)
