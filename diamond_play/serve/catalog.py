"""The engines a server offers: the shipped and downloaded ones, and any given with --weights. Players choose them by
the id listed here; no client ever names a path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from diamond_play.config import WeightsConfig
from diamond_play.errors import UserError
from diamond_play.games import NAMED_GAMES, game_of
from diamond_play.weights.format import CONFIG_FILE, is_weights_dir, read_weights_config
from diamond_play.weights.hub import shipped_weights_root, user_weights_root
from diamond_play.weights.loading import default_weights
from diamond_play.weights.run_layout import latest_weights


@dataclass(frozen=True)
class EngineEntry:
    """One engine on offer."""

    id: str
    """Stable within a server: the game's name and a short digest of the weights' path."""
    path: Path
    config: WeightsConfig

    def public(self) -> dict[str, object]:
        """What the page is told about the engine (never its path)."""
        cfg = self.config
        presets = game_of(cfg).sampling_presets
        steps = cfg.sampling.dynamics.num_steps_denoising
        up = cfg.sampling.upsampler
        return {"id": self.id, "game": cfg.game, "kind": cfg.kind, "frame_size": list(cfg.frame_size),
                "num_actions": cfg.num_actions, "presets": list(presets),
                "sampling": f"{steps} dynamics steps" + (f" + {up.num_steps_denoising} upsampler steps" if up else ""),
                "policy": cfg.agent.actor_critic is not None, "origin": self.origin}

    @property
    def origin(self) -> str:
        for root, name in ((shipped_weights_root(), "shipped"), (user_weights_root(), "downloaded")):
            if self.path.is_relative_to(root.resolve()):
                return name
        return "given"


def weights_path(path: Path) -> Path:
    """A weights directory itself, or a training run's latest exported weights."""
    if is_weights_dir(path):
        return path
    latest = latest_weights(path) if path.is_dir() else None
    if latest is None:
        raise UserError(f"{str(path)!r} is not a weights directory (model.safetensors + config.yaml) or a training "
                        "run with exported weights: `serve` plays weights directories (import an official .pt "
                        "first with `diamond-play import`)")
    return latest


def entry_for(path: Path) -> EngineEntry:
    path = weights_path(path).resolve()
    config = read_weights_config(path)
    slug = re.sub(r"[^a-z0-9]+", "-", config.game.lower()).strip("-") or "engine"
    return EngineEntry(f"{slug}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}", path, config)


def installed_engines() -> list[Path]:
    """Every shipped and downloaded engine directory on this machine."""
    found = []
    for root in (shipped_weights_root(), user_weights_root()):
        if root.is_dir():
            found += sorted(p.parent for p in root.rglob(CONFIG_FILE) if is_weights_dir(p.parent))
    return found


def build_catalog(games: list[tuple[str, str | None]], weights: list[Path]) -> list[EngineEntry]:
    """The engines of `games` ((kind, game) pairs: the shipped or downloaded one of each) and of `weights`; with
    neither, every installed engine."""
    paths = [default_weights(kind, NAMED_GAMES[kind].engine_game(game)) for kind, game in games] + list(weights)
    if not paths:
        paths = installed_engines()
    if not paths:
        raise UserError("no engines to serve: pass --weights DIR, or `atari GAME` / `csgo` after "
                        "`diamond-play download ...`")
    entries: dict[str, EngineEntry] = {}
    for path in paths:
        entry = entry_for(path)
        entries.setdefault(entry.id, entry)
    return list(entries.values())
