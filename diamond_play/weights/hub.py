"""Official weights from the Hugging Face hub (repo `eloialonso/diamond`), imported into the own format.

Files come through huggingface_hub (standard cache, HF_HUB_OFFLINE honoured) or, with `source_dir`, from a local
folder laid out like the hub repo (what `hf download eloialonso/diamond … --local-dir DIR` produces).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from diamond_play.config import read_yaml
from diamond_play.envs.atari import canonical_game
from diamond_play.errors import UserError
from diamond_play.weights.official import import_official

SHIPPED = Path(__file__).resolve().parents[1] / "shipped"


def shipped_weights_root() -> Path:
    """The package's `shipped/` folder (package data, so installed wheels play offline): the hub manifest and the
    engines trained and shipped by this project, e.g. `atari/Breakout`."""
    return Path(os.environ.get("DIAMOND_PLAY_SHIPPED_WEIGHTS", SHIPPED))


def diamond_play_home() -> Path:
    """The user's own files (downloaded weights, compiled engines): $DIAMOND_PLAY_HOME, default
    $XDG_CACHE_HOME/diamond_play (~/.cache/diamond_play)."""
    home = os.environ.get("DIAMOND_PLAY_HOME")
    if home is None:
        home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diamond_play"
    return Path(home)


def user_weights_root() -> Path:
    """Where downloaded and imported weights live: $DIAMOND_PLAY_HOME/weights."""
    return diamond_play_home() / "weights"


def engine_name(kind: str, game: str | None = None) -> str:
    """How the command line names an official engine: `csgo`, or `atari GAME` (the download command's words)."""
    return "csgo" if kind == "csgo" else f"atari {game}"


def default_weights_dir(kind: str, game: str | None = None) -> Path:
    return user_weights_root() / engine_name(kind, game).replace(" ", "/")


@dataclass
class Manifest:
    repo_id: str
    atari: dict
    csgo: dict

    def atari_files(self, game: str) -> dict[str, str]:
        game = canonical_game(game, tuple(self.atari["games"]))
        return {"checkpoint": self.atari["checkpoint"].format(game=game), "agent_config": self.atari["agent_config"]}


def load_manifest(path: Path | None = None) -> Manifest:
    path = path or shipped_weights_root() / "manifest.yaml"
    if not path.is_file():
        raise UserError(f"weights manifest {str(path)!r} not found: reinstall diamond_play (it ships in the "
                        "package), or set DIAMOND_PLAY_SHIPPED_WEIGHTS to a folder that holds manifest.yaml")
    data = read_yaml(path)
    try:
        return Manifest(repo_id=data["repo_id"], atari=data["atari"], csgo=data["csgo"])
    except (KeyError, TypeError):
        raise UserError(f"weights manifest {str(path)!r} is malformed: restore it from the repository") from None


def _offline_help(manifest: Manifest, files: list[str], command: str, reason: str) -> UserError:
    quoted = " ".join(shlex.quote(f) for f in files)
    return UserError(
        f"could not get the official weights from the Hugging Face hub ({reason}). On a machine with internet "
        f"access run: `pip install -U huggingface_hub && hf download {manifest.repo_id} {quoted} --local-dir "
        f"diamond_hub`, copy the diamond_hub folder here, then run: `{command} --from diamond_hub`"
    )


def failure_reason(e: Exception) -> str:
    """A short reason for a failed download: the network in plain words, else the error's first sentence."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(e, LocalEntryNotFoundError) or "connect" in str(e).lower() or "resolve" in str(e).lower():
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached from this machine"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " …"


def fetch_files(manifest: Manifest, files: list[str], source_dir: Path | None, command: str,
                allow_patterns: str | None = None) -> Path:
    """Get `files` (repo-relative) and return the root they lie under, laid out as in the hub repo."""
    if source_dir is not None:
        missing = [f for f in files if not (source_dir / f).is_file()]
        if missing:
            raise UserError(f"{str(source_dir)!r} lacks {missing[0]}: it must be laid out like the hub repo "
                            f"{manifest.repo_id} (see `hf download … --local-dir`)")
        return source_dir
    import logging

    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import logging as hf_logging

    # The hub client logs every retry of a failed connection; the one-line error below says what to do instead.
    hf_logging.set_verbosity_error()
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        if allow_patterns is not None:
            root = Path(snapshot_download(manifest.repo_id, allow_patterns=allow_patterns))
        else:
            paths = [Path(hf_hub_download(manifest.repo_id, f)) for f in files]
            root = paths[0].parents[len(Path(files[0]).parts) - 1]
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise _offline_help(manifest, [allow_patterns] if allow_patterns else files, command,
                            failure_reason(e)) from None
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise _offline_help(manifest, files, command, f"{missing[0]} is not in the downloaded snapshot")
    return root


def download_atari(game: str, out_dir: Path | None = None, source_dir: Path | None = None,
                   overwrite: bool = True) -> Path:
    manifest = load_manifest()
    files = manifest.atari_files(game)
    game = canonical_game(game)
    root = fetch_files(manifest, list(files.values()), source_dir, f"diamond-play download atari {game}")
    out_dir = out_dir or default_weights_dir("atari", game)
    return import_official(root / files["checkpoint"], out_dir, config=root / files["agent_config"], game=game,
                           overwrite=overwrite)


def download_csgo(out_dir: Path | None = None, source_dir: Path | None = None, overwrite: bool = True) -> Path:
    manifest = load_manifest()
    m = manifest.csgo
    root = fetch_files(manifest, [m["checkpoint"], m["agent_config"]], source_dir, "diamond-play download csgo",
                       allow_patterns=None if source_dir else m["allow_patterns"])
    spawn = root / m["spawn_dir"]
    out_dir = out_dir or default_weights_dir("csgo")
    return import_official(root / m["checkpoint"], out_dir, config=root / m["agent_config"], game="csgo",
                           overwrite=overwrite, spawn_dir=spawn if spawn.is_dir() else None)
