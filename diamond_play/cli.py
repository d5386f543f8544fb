"""`diamond-play` command line: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from diamond_play import __version__
from diamond_play.errors import UserError


def cmd_import(args: argparse.Namespace) -> None:
    from diamond_play.weights.official import import_official

    out = import_official(args.checkpoint, args.out, config=args.config, game=args.game, overwrite=args.force)
    print(f"imported {args.checkpoint} -> {out}")


def cmd_download(args: argparse.Namespace) -> None:
    from diamond_play.weights.hub import download_atari, download_csgo

    overwrite = args.force or args.out is None  # the default location is a cache: refreshing it is safe
    if args.kind == "atari":
        if not args.game:
            raise UserError("which game? usage: diamond-play download atari GAME (e.g. Breakout)")
        out = download_atari(args.game, out_dir=args.out, source_dir=args.source, overwrite=overwrite)
    else:
        if args.game:
            raise UserError("`diamond-play download csgo` takes no game name")
        out = download_csgo(out_dir=args.out, source_dir=args.source, overwrite=overwrite)
    print(f"official weights ready in {out}")


def cmd_info(args: argparse.Namespace) -> None:
    from diamond_play.config import dump_yaml
    from diamond_play.weights.loading import load_agent

    agent = load_agent(args.weights, config=args.config)
    cfg = agent.config
    print(f"game: {cfg.game} ({cfg.kind}), {cfg.num_actions} actions, frames {cfg.frame_size[0]}x{cfg.frame_size[1]}")
    for name, count in agent.parameter_counts().items():
        print(f"  {name:14s} {count:>13,d} parameters")
    print("sampling:\n  " + dump_yaml(cfg.sampling).replace("\n", "\n  ").rstrip())
    if cfg.provenance:
        print("provenance:\n  " + dump_yaml(cfg.provenance).replace("\n", "\n  ").rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diamond-play", description="Play games imagined by a diffusion world "
                                     "model (DIAMOND).")
    parser.add_argument("--version", action="version", version=f"diamond-play {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import", help="convert an official DIAMOND checkpoint (.pt) into a weights directory")
    p.add_argument("checkpoint", type=Path, help="official agent checkpoint, e.g. Breakout.pt or csgo.pt")
    p.add_argument("--config", type=Path, help="its official agent YAML (config/agent/*.yaml); inferred if omitted")
    p.add_argument("--game", help="Atari game the checkpoint plays (default: from the file name)")
    p.add_argument("--out", type=Path, required=True, help="weights directory to create")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("download", help="fetch official weights from the Hugging Face hub and import them")
    p.add_argument("kind", choices=["atari", "csgo"])
    p.add_argument("game", nargs="?", help="Atari game, e.g. Breakout")
    p.add_argument("--from", dest="source", type=Path, help="use a local folder laid out like the hub repo instead")
    p.add_argument("--out", type=Path, help="weights directory (default: ~/.cache/diamond_play/weights/...)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("info", help="describe weights: game, actions, parameter counts, sampling, provenance")
    p.add_argument("weights", type=Path, help="weights directory or official .pt")
    p.add_argument("--config", type=Path, help="official agent YAML for a .pt")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"diamond-play: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("diamond-play: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
