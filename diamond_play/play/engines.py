"""Which engine a play front end opens: by game (`diamond-play atari GAME`, `csgo`: the given weights checked to be
that game, else the shipped or downloaded engine) or by weights alone (`diamond-play play --weights W`). The window,
the headless runner and the browser server all resolve engines here."""

from __future__ import annotations

from pathlib import Path

import torch

from diamond_play.envs.atari import action_meanings, canonical_game
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.weights.loading import default_weights, load_agent


def name_unknown_game(agent: Agent, game: str) -> None:
    """Give an engine imported without a game name the game the user named, if its actions fit."""
    names = list(action_meanings(game))
    if len(names) != agent.config.num_actions:
        raise UserError(f"these weights have {agent.config.num_actions} actions but {game} has {len(names)}: "
                        "name the game they were trained on")
    agent.config.game, agent.config.action_names = game, names


def engine_for_game(kind: str, game: str | None, weights: Path | None, device: torch.device,
                    config: Path | None = None) -> Agent:
    """The engine of `kind` (atari or csgo) and, for Atari, `game`: `weights` when given (it must hold that
    game), else the shipped or downloaded one."""
    game = canonical_game(game or "") if kind == "atari" else "csgo"
    path = weights or default_weights(kind, game)
    agent = load_agent(path, device=device, config=config, game=game if kind == "atari" else None)
    if kind == "atari" and agent.config.kind == "atari" and agent.config.game == "unknown":
        name_unknown_game(agent, game)  # an official checkpoint imported under another file name
    if agent.config.kind != kind or (kind == "atari" and agent.config.game != game):
        raise UserError(f"{path} holds a {agent.config.game} ({agent.config.kind}) engine, not {game}: pass "
                        "matching --weights")
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
