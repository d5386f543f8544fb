"""Which engine a play front end opens: by game (`diamond-play atari GAME`, `csgo`: the given weights checked to be
that game, else the shipped or downloaded engine) or by weights alone (`diamond-play play --weights W`). The window,
the headless runner and the browser server all resolve engines here."""

from __future__ import annotations

from pathlib import Path

import torch

from diamond_play.errors import UserError
from diamond_play.games import NAMED_GAMES
from diamond_play.models.agent import Agent
from diamond_play.weights.loading import default_weights, load_agent


def engine_for_game(kind: str, game: str | None, weights: Path | None, device: torch.device,
                    config: Path | None = None) -> Agent:
    """The engine of `kind` (atari or csgo) and, for Atari, `game`: `weights` when given (it must hold that
    game), else the shipped or downloaded one."""
    named = NAMED_GAMES[kind]
    game = named.engine_game(game)
    path = weights or default_weights(kind, game)
    agent = load_agent(path, device=device, config=config, game=named.official_game(game))
    named.check_engine(agent, game, path)
    return agent


def engine_from_weights(weights: Path | None, device: torch.device) -> Agent:
    """The engine in `weights` (a weights directory, a training run or an official .pt), whatever its game."""
    if weights is None:
        raise UserError("which engine? `diamond-play play --weights W` plays a weights directory, a training run or "
                        "an official .pt; for the shipped or downloaded engines use `diamond-play atari GAME` or "
                        "`diamond-play csgo`")
    agent = load_agent(weights, device=device)
    if agent.config.game_kind.real_game and agent.config.game == "unknown":
        raise UserError(f"{weights} does not record which Atari game it plays: play it with `diamond-play "
                        f"atari GAME --weights {weights}`, or re-import it with --game GAME")
    return agent
