"""Atari games through gymnasium + ale-py: game names and their minimal action sets."""

from __future__ import annotations

import difflib
from functools import cache

from diamond_play.errors import UserError

# The Atari 100k benchmark, in the official order (REFERENCE.md §6).
ATARI_100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout", "ChopperCommand",
    "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull",
    "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)


def canonical_game(name: str, known: tuple[str, ...] = ATARI_100K_GAMES) -> str:
    """'breakout' -> 'Breakout'; an unknown name is a user error that suggests the closest one."""
    by_lower = {g.lower(): g for g in known}
    key = name.strip().lower().removesuffix("noframeskip-v4")
    if key in by_lower:
        return by_lower[key]
    close = difflib.get_close_matches(key, list(by_lower), n=1)
    hint = f"did you mean {by_lower[close[0]]!r}? " if close else ""
    raise UserError(f"unknown Atari game {name!r}: {hint}known games: {', '.join(known)}")


def env_id(game: str) -> str:
    return f"{game}NoFrameskip-v4"


@cache
def quiet_ale() -> None:
    """Register the ALE environments with gymnasium and silence ALE's start-up banner."""
    import ale_py
    import gymnasium as gym

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


@cache
def action_meanings(game: str) -> tuple[str, ...]:
    """The game's minimal ALE action set, e.g. ('NOOP', 'FIRE', 'RIGHT', 'LEFT') for Breakout."""
    import gymnasium as gym

    quiet_ale()
    env = gym.make(env_id(game))
    try:
        return tuple(env.unwrapped.get_action_meanings())
    finally:
        env.close()
