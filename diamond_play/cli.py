"""`diamond-play` command line: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from diamond_play import __version__
from diamond_play.errors import UserError
from diamond_play.threads import use_threads


def cmd_import(args: argparse.Namespace) -> None:
    from diamond_play.weights.official import import_official

    out = import_official(args.checkpoint, args.out, config=args.config, game=args.game, overwrite=args.force)
    print(f"imported {args.checkpoint} -> {out}")
    from diamond_play.weights.format import read_weights_config

    if read_weights_config(out).game == "unknown":
        print(f"note: the game could not be inferred from the file name {args.checkpoint.name!r}, so it is recorded "
              f"as unknown: pass --game GAME to record it, or play it with `diamond-play atari GAME --weights "
              f"{out}`", file=sys.stderr)


def cmd_download(args: argparse.Namespace) -> None:
    from diamond_play.games import NAMED_GAMES

    overwrite = args.force or args.out is None  # the default location is a cache: refreshing it is safe
    out = NAMED_GAMES[args.kind].download(args.game, args.out, args.source, overwrite)
    print(f"official weights ready in {out}")


def cmd_export(args: argparse.Namespace) -> None:
    from diamond_play.weights.export import export_weights, parse_key_values, read_eval_json

    metrics = read_eval_json(args.eval) if args.eval else None
    out = export_weights(args.source, args.out, best=args.best, provenance=parse_key_values(args.provenance),
                         eval_metrics=metrics, overwrite=args.force)
    print(f"exported {args.source} -> {out}")


def cmd_info(args: argparse.Namespace) -> None:
    from diamond_play.config import dump_yaml
    from diamond_play.weights.loading import load_agent

    agent = load_agent(args.weights, config=args.config)
    cfg = agent.config
    def section(title: str, value: object) -> str:
        return f"{title}:\n  " + dump_yaml(value).replace("\n", "\n  ").rstrip()

    h, w = cfg.frame_size
    lines = [f"game: {cfg.game} ({cfg.kind}), {cfg.num_actions} actions, frames {h}x{w}"]
    if cfg.action_names:
        lines.append("actions: " + ", ".join(f"{i} {name}" for i, name in enumerate(cfg.action_names)))
    lines += [f"  {name:14s} {count:>13,d} parameters" for name, count in agent.parameter_counts().items()]
    lines.append(section("sampling", cfg.sampling))
    if cfg.metrics:
        lines.append(section("metrics", cfg.metrics))
    if cfg.provenance:
        lines.append(section("provenance", cfg.provenance))
    print("\n".join(lines))


def cmd_play(args: argparse.Namespace, agent=None) -> None:
    """`atari GAME` / `csgo` (the engine resolved by game), or `play --weights W` (`agent` already loaded)."""
    from diamond_play.devices import resolve_device
    from diamond_play.games import game_of
    from diamond_play.play.app import PlayOptions, run_headless, run_window
    from diamond_play.play.controls import AtariControls
    from diamond_play.play.engines import engine_for_game
    from diamond_play.play.session import PlaySession

    help_keys, fast = getattr(args, "help_keys", False), getattr(args, "fast", False)
    use_threads(args.threads, compute_off_main=not args.headless)  # a window steps on its StepWorker
    if not args.headless and not help_keys:
        from diamond_play.play.display import require_display

        require_display()  # before anything is loaded or written
    device = resolve_device(args.device)
    if agent is None:
        agent = engine_for_game(args.command, getattr(args, "game", None), args.weights, device,
                                getattr(args, "config", None))
    game = agent.config.game
    if help_keys:  # `atari GAME --help-keys`
        print(f"{game}: W/A/S/D move, Space fires; the game's actions and their keys:")
        print("\n".join(AtariControls(agent.config.action_names).help_lines()))
        print("Enter reset, . pause, e step while paused, m human/policy, left/right view (world model, side by "
              "side, real emulator), up/down horizon +-10, h HUD, Esc quit")
        return
    # The weights' sampler settings (the paper's 3 Euler steps for Atari, 3 + 10 for imported CS:GO weights);
    # --fast switches to the fast preset.
    sampling = game_of(agent.config).sampling("fast", agent.config.sampling) if fast else None
    opts = PlayOptions(fps=args.fps, size=args.size, headless=args.headless, frames=args.frames,
                       actions=args.actions, record=args.record, hud=not args.no_hud,
                       mouse_multiplier=getattr(args, "mouse_multiplier", 10.0), screenshot=args.screenshot)
    if args.actions == "policy" and agent.actor_critic is None:
        raise UserError("--actions policy needs weights with an actor-critic")
    import torch

    from diamond_play.accel.modes import execution_mode_named

    mode = execution_mode_named(args.mode, torch.device(device), interactive=not args.headless)
    if mode.compile and args.headless:
        print(f"{mode.name}: compiling the networks before the first frame (a first start builds them, a minute "
              "or more; later starts load them from the disk cache)", file=sys.stderr)
    # A window plays at once while the networks compile; a headless run waits for them, so it stays in one mode.
    session = PlaySession(agent, device=device, seed=args.seed, horizon=args.horizon,
                          spawn=getattr(args, "spawn", None), sampling=sampling,
                          record_dataset=args.record_dataset, fps=args.fps, mode=mode,
                          compile_in_background=not args.headless, ignore_end=args.ignore_end)
    stats = run_headless(session, opts) if args.headless else run_window(session, opts)
    reseeds = session.reseeds
    print(stats.summary() + (f"; {mode.name} {session.engine.compile_status}" if mode.compile else "")
          + f"; re-seeded {reseeds['end']} times by a predicted end, {reseeds['horizon']} at the horizon"
          + (" (ends ignored)" if args.ignore_end else ""))
    if args.record:
        print(f"video written to {args.record}")
    if session.recorder is not None:
        print(f"{session.recorder.saved} episode(s) saved to {args.record_dataset}")


def cmd_serve(args: argparse.Namespace) -> None:
    from diamond_play.serve.server import parse_engine_words, serve

    use_threads(args.threads, compute_off_main=True)  # players step on their own threads
    serve(parse_engine_words(args.words), args.weights, host=args.host, port=args.port, token=args.token,
          max_sessions=args.max_sessions, fps=args.fps, mode=args.mode, device=args.device, seed=args.seed,
          batch=not args.no_batch)


def add_play_arguments(p: argparse.ArgumentParser, weights_help: str = "weights directory, training run or "
                       "official .pt (default: the shipped engine, then the downloaded official weights)") -> None:
    p.add_argument("--weights", type=Path, help=weights_help)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--seed", type=int, help="seed for the sampler and start states (deterministic play)")
    p.add_argument("--mode", default="auto", help="execution mode: auto (on bf16 CPUs compiled-bf16-cl in a window, "
                   "eager until its background compile is ready, and eager-bf16-cl headless (where a compiled mode "
                   "compiles before the first frame); graph-bf16-cl on bf16 "
                   "GPUs; else eager-fp32), eager-fp32 (reference), "
                   "eager-bf16, eager-bf16-cl, compiled-fp32, compiled-bf16-cl, and on GPUs graph-bf16-cl, "
                   "compiled-graph-bf16-cl (see `diamond-play bench`)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second to aim for (default 10, as the paper)")
    p.add_argument("--size", type=int, help="window scale over the model's resolution (Atari 8, CS:GO 2)")
    p.add_argument("--horizon", type=int, help="imagined steps before the world model is re-seeded")
    p.add_argument("--headless", action="store_true", help="no window (servers, CI); needs --frames and --actions")
    p.add_argument("--frames", type=int, help="stop after N frames")
    p.add_argument("--actions", default="human", help="human (keyboard), random, policy, or a file of actions "
                   "(.npy, or text: one per line)")
    p.add_argument("--record", type=Path, help="write what is shown to a video at the pace shown: .webm (VP9, "
                   "plays in browsers), .mp4, .mkv or .avi")
    p.add_argument("--record-dataset", type=Path, help="append the played episodes to a dataset folder (HDF5)")
    p.add_argument("--screenshot", type=Path, help="save the last shown screen as a PNG on exit")
    p.add_argument("--no-hud", action="store_true", help="start with the HUD hidden (toggle with h); the window "
                   "is then only the frames, and h draws the HUD over them")
    p.add_argument("--ignore-end", action="store_true", help="keep imagining through predicted terminations "
                   "instead of re-seeding (for reward/termination models that fire too often, e.g. briefly "
                   "trained ones); the HUD still shows them")
    p.add_argument("--threads", type=int, help="CPU threads for the networks (default: the idle cores, at least "
                   "1; on a busy machine 1 is often fastest)")
    p.set_defaults(func=cmd_play)


def check_out_or_resume(args: argparse.Namespace) -> None:
    if (args.out is None) == (args.resume is None):
        raise UserError("pass either --out RUN_DIR (new run) or --resume RUN_DIR (continue a run)")
    if args.fresh_optimiser and args.resume is None:
        raise UserError("--fresh-optimiser restarts an optimiser of a saved run: use it with --resume RUN_DIR")


def add_run_dir_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="new run directory")
    p.add_argument("--resume", type=Path, help="continue the run in this directory (after a stop or a kill)")
    p.add_argument("--fresh-optimiser", action="append", default=[], metavar="MODEL",
                   help="with --resume: keep MODEL's weights (denoiser, rew_end, upsampler, actor_critic) but start "
                   "its optimiser afresh, with a new warm-up (e.g. after raising its lr); repeatable")
    p.add_argument("--threads", type=int, help="CPU threads (same as num_threads=N; default: the idle cores, at "
                   "least 1)")


def with_threads(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """`--threads N` as the run's num_threads override (so a resumed run keeps it unless told otherwise)."""
    return [*overrides, f"num_threads={args.threads}"] if args.threads else list(overrides)


def cmd_train_engine(args: argparse.Namespace) -> None:
    from diamond_play.train.engine import engine_layers, train_engine

    check_out_or_resume(args)
    if args.resume is None and args.data is None:
        raise UserError("a new run needs --data DATASET")
    overrides = with_threads(args, args.overrides)
    if args.resolution:
        overrides.append(f"resolution=[{args.resolution[0]}, {args.resolution[1]}]")
    if args.upsampler:
        overrides.append("upsampler=true")
    layers = engine_layers(args.data, args.preset)
    root = train_engine(args.out, args.resume, layers, overrides, args.command_line, args.fresh_optimiser)
    print(f"run saved in {root}; play it with: diamond-play play --weights {root}")


def cmd_train_csgo(args: argparse.Namespace) -> None:
    from diamond_play.train.engine import csgo_layers, train_engine

    check_out_or_resume(args)
    if args.resume is None and args.data is None:
        raise UserError("a new run needs --data DATASET (made by `python -m data_tools.csgo prepare`)")
    layers = csgo_layers(args.data, args.preset) if args.resume is None else []
    root = train_engine(args.out, args.resume, layers, with_threads(args, args.overrides), args.command_line,
                        args.fresh_optimiser)
    print(f"run saved in {root}; play it with: diamond-play csgo --weights {root}")


def cmd_train_atari(args: argparse.Namespace) -> None:
    from diamond_play.train.atari import train_atari

    check_out_or_resume(args)
    # One positional list so overrides may follow the options: the game is the item without '='.
    games = [w for w in args.words if "=" not in w]
    overrides = with_threads(args, [w for w in args.words if "=" in w])
    if len(games) > 1 or (args.resume is None and not games):
        raise UserError("name one game, e.g. `diamond-play train atari Breakout --out runs/breakout`")
    root = train_atari(games[0] if games else None, args.out, args.resume, args.preset, overrides,
                       args.command_line, args.fresh_optimiser)
    print(f"run saved in {root}; watch its policy play in its world model with: "
          f"diamond-play play --weights {root} --actions policy")


def cmd_train_agent(args: argparse.Namespace) -> None:
    from diamond_play.train.agent import agent_layers, train_agent

    check_out_or_resume(args)
    if args.resume is None and args.weights is None:
        raise UserError("a new run needs --weights ENGINE (a world model with a reward/termination model, e.g. "
                        "diamond_play/shipped/atari/Breakout)")
    layers = agent_layers(args.weights, args.data, args.preset) if args.resume is None else []
    if args.resume is not None and (args.weights or args.data or args.preset):
        raise UserError("--resume continues with the run's own engine, data and preset: drop --weights/--data/"
                        "--preset (change settings with key=value)")
    root = train_agent(args.out, args.resume, layers, with_threads(args, args.overrides), args.command_line,
                       args.fresh_optimiser)
    print(f"run saved in {root}; watch its policy play in its world model with: "
          f"diamond-play play --weights {root} --actions policy")


def cmd_record(args: argparse.Namespace) -> None:
    from diamond_play.play.record import RecordOptions, record

    dataset = record(RecordOptions(env_id=args.env_id, out=args.out, frames=args.frames, policy=args.policy,
                                   size=tuple(args.resolution), keymap=args.keymap, fps=args.fps, seed=args.seed))
    frames = sum(len(dataset[i]) for i in range(len(dataset)))
    print(f"{len(dataset)} episode(s), {frames} frames in {args.out}")


def cmd_capture(args: argparse.Namespace) -> None:
    from diamond_play.capture.capture import CaptureOptions, capture
    from diamond_play.capture.screen import list_windows

    if args.list_windows:
        for w in list_windows():
            print(f"{w.title!r}: {w.rect.width}x{w.rect.height} at {w.rect.left},{w.rect.top}")
        return
    if args.out is None:
        raise UserError("where to? capture --out DATASET (--window TITLE | --region X Y W H | --screen N)")
    stats = capture(CaptureOptions(
        out=args.out, window=args.window, region=tuple(args.region) if args.region else None, screen=args.screen,
        fps=args.fps, resolution=tuple(args.resolution),
        full_resolution=tuple(args.full_resolution) if args.full_resolution else None, keymap=args.keymap,
        keys=args.keys.split(",") if args.keys else None, mouse=args.mouse, mouse_scale=args.mouse_scale,
        seconds=args.seconds, start_key=args.start_key, episode_key=args.episode_key, stop_key=args.stop_key,
        start_now=args.start_now, idle_s=args.idle, max_episode_s=args.max_episode_s, game=args.game))
    print(f"{stats.frames} frames in {stats.episodes} episode(s) -> {args.out} ({stats.ended_by}; {stats.fps:.1f} "
          f"fps, {stats.dropped} dropped, CPU {100 * stats.cpu_s / max(stats.captured_s, 1e-9):.0f}% of one core); "
          f"check it with `diamond-play inspect {args.out}`")


def cmd_inspect(args: argparse.Namespace) -> None:
    from diamond_play.data.episodes import Dataset
    from diamond_play.data.inspect import describe_dataset

    print(describe_dataset(Dataset(args.dataset)))


def cmd_play_weights(args: argparse.Namespace) -> None:
    from diamond_play.devices import resolve_device
    from diamond_play.play.engines import engine_from_weights

    use_threads(args.threads, compute_off_main=not args.headless)  # before loading: see cmd_play
    cmd_play(args, engine_from_weights(args.weights, resolve_device(args.device)))


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from diamond_play.devices import resolve_device
    from diamond_play.envs.atari import canonical_game
    from diamond_play.evaluate import evaluate, held_out_episodes, save_strip
    from diamond_play.weights.loading import load_agent

    use_threads(args.threads)
    device = resolve_device(args.device)
    agent = load_agent(args.weights, device=device)
    if args.fast:
        from diamond_play.games import game_of

        agent.config.sampling = game_of(agent.config).sampling("fast", agent.config.sampling)
    if args.agent:
        eval_agent(agent, args, device)
        return
    if args.data is None and not agent.config.game_kind.real_game:
        raise UserError(f"these are {agent.config.kind} weights: pass --data HELD_OUT_DATASET (for CS:GO, the test "
                        "split of a prepared dataset, e.g. csgo_data/test)")
    game = canonical_game(args.game) if args.game else agent.config.game
    episodes = held_out_episodes(args.data, game, args.episodes, args.seed)
    horizons = tuple(h for h in (1, 4, 16, 64) if h <= args.max_horizon)
    result, strips = evaluate(agent, episodes, device=device, seed=args.seed, horizons=horizons)
    print(result.table())
    from diamond_play.weights.hub import diamond_play_home

    strip = args.strip or diamond_play_home() / "eval" / f"{agent.config.game}_strip.png"
    path = save_strip(strips["open_loop"], strip)
    print(f"strip (real above, imagined below) written to {path}")
    if "reward_event" in strips:
        path = save_strip(strips["reward_event"], strip.with_name(f"{strip.stem}_reward_event.png"))
        print(f"first reward event (real above, imagined below) written to {path}")
    if args.json:
        args.json.write_text(json.dumps(result.as_metrics(), indent=2))


def eval_agent(agent, args: argparse.Namespace, device) -> None:
    """`eval --agent`: the weights' actor-critic in full real games (Atari 100k evaluation: ε = 0, actions sampled
    from the policy, a game ends when the lives are gone)."""
    import json

    import numpy as np

    from diamond_play.envs.atari import human_normalized_score
    from diamond_play.train.atari import evaluate_policy

    if agent.actor_critic is None:
        raise UserError(f"{str(args.weights)!r} has no actor-critic: train one with `diamond-play train agent`")
    if not agent.config.game_kind.real_game:
        raise UserError("eval --agent plays the real game: it needs Atari weights")
    games = evaluate_policy(agent.actor_critic, agent.config.game, args.episodes, 0, args.seed, device)
    mean, std = float(np.mean(games.returns)), float(np.std(games.returns))
    hns = human_normalized_score(agent.config.game, mean)
    print(f"{agent.config.game}: return {mean:.1f} ± {std:.1f} over {args.episodes} real games"
          + (f" (human-normalised {hns:.3f})" if hns is not None else "")
          + f", {float(np.mean(games.lengths)):.0f} steps per game; returns {[round(r, 1) for r in games.returns]}")
    if args.json:
        args.json.write_text(json.dumps({"return": mean, "return_std": std, "returns": games.returns,
                                         "lengths": games.lengths, "episodes": args.episodes,
                                         **({"hns": hns} if hns is not None else {})}, indent=2))


def cmd_bench(args: argparse.Namespace) -> None:

    from diamond_play.accel.modes import available_execution_modes
    from diamond_play.bench import format_table, machine_description, run_play_bench, write_json
    from diamond_play.devices import resolve_device

    use_threads(args.threads)
    device = resolve_device(args.device)
    if args.kind == "train":
        bench_training(args, device)
        return
    if args.kind == "serve":
        bench_serving(args, device)
        return
    if args.target is not None:
        raise UserError(f"unexpected {args.target!r}: `bench {args.kind}` takes no second word")
    modes = args.modes.split(",") if args.modes else available_execution_modes(device)
    results = run_play_bench(args.kind, args.preset, device, args.frames, modes, args.weights)
    what = f"play {args.kind} {args.preset}"
    print(f"{what}, batch 1, {args.frames} frames per mode on {machine_description(device)}")
    print(format_table(results))
    if args.json:
        write_json(args.json, device, results, what)


def bench_serving(args: argparse.Namespace, device) -> None:
    import torch

    from diamond_play.accel.modes import execution_mode_named
    from diamond_play.bench import machine_description, write_json
    from diamond_play.serve.bench import run_serve_bench
    from diamond_play.weights.hub import shipped_weights_root

    if args.target is not None:
        raise UserError(f"unexpected {args.target!r}: `bench serve` takes --weights for another engine")
    use_threads(args.threads, compute_off_main=True)  # as serve: players and shared engines step on threads
    if args.modes and "," in args.modes:
        raise UserError("bench serve runs one execution mode: give --modes one name (default: auto, as serve)")
    mode = execution_mode_named(args.modes or "auto", torch.device(device), interactive=True)
    weights = args.weights or shipped_weights_root() / "atari" / "Breakout"
    try:
        sessions = [int(n) for n in args.sessions.split(",")]
    except ValueError:
        raise UserError(f"--sessions {args.sessions!r}: comma-separated counts, e.g. 1,2,4") from None
    batching = {"both": [True, False], "on": [True], "off": [False]}[args.batching]
    print(f"serve {weights.name}: real server and WebSocket clients on 127.0.0.1, {args.fps:g} fps per session, "
          f"{mode.name}, {args.seconds:g} s per row, key change every 0.25 s, on {machine_description(device)}",
          flush=True)
    results = run_serve_bench(weights, device, mode, sessions, batching, args.fps, args.seconds)
    if args.json:
        write_json(args.json, device, results, f"serve {weights} {mode.name} {args.fps:g} fps")


def bench_training(args: argparse.Namespace, device) -> None:
    from diamond_play.bench import TRAIN_MODES, format_train_table, machine_description, run_train_bench, write_json

    if args.target is None:
        raise UserError("which training? `diamond-play bench train atari` or `diamond-play bench train csgo`")
    modes = args.modes.split(",") if args.modes else list(TRAIN_MODES)
    phases = args.phases.split(",") if args.phases else None
    results = run_train_bench(args.target, device, modes, args.steps, phases, batch_size=args.batch_size,
                              weights=args.weights)
    what = f"train {args.target}"
    batch = f"batch {args.batch_size}" if args.batch_size else "the paper's batch sizes"
    print(f"{what}: one optimiser step per phase at {batch}, median of {args.steps} after a warm-up step, on "
          f"{machine_description(device)}")
    print(format_train_table(results))
    if args.json:
        write_json(args.json, device, results, what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diamond-play", description="Play games imagined by a diffusion world "
                                     "model (DIAMOND).")
    parser.add_argument("--version", action="version", version=f"diamond-play {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("atari", help="play an Atari game imagined by a world model")
    p.add_argument("game", help="Atari game, e.g. Breakout")
    p.add_argument("--config", type=Path, help="official agent YAML when --weights is a .pt")
    p.add_argument("--help-keys", action="store_true", help="print the game's actions and their keys, then exit")
    p.add_argument("--fast", action="store_true", help="fast preset: 1 Euler step per frame instead of the paper's "
                   "3, a third of the compute (`eval --fast` measures how much the frames differ)")
    add_play_arguments(p)

    p = sub.add_parser("csgo", help="play CS:GO Dust II imagined by a world model (keyboard + mouse)")
    p.add_argument("--spawn", type=int, help="start from this spawn point (default: a random one)")
    p.add_argument("--fast", action="store_true", help="official fast preset: 1 dynamics step + 1 upsampler step "
                   "(default: the paper's 3 + 10 steps)")
    p.add_argument("--mouse-multiplier", type=float, default=10.0, help="mouse sensitivity (default 10)")
    add_play_arguments(p)

    p = sub.add_parser("play", help="play any engine (e.g. one trained with `train engine`) from its weights")
    p.add_argument("--spawn", type=int, help="start from this spawn point (default: a random one)")
    p.add_argument("--mouse-multiplier", type=float, default=10.0, help="mouse sensitivity (CS:GO engines)")
    p.add_argument("--fast", action="store_true", help="fast sampler preset: 1 Euler step (CS:GO engines: the "
                   "official 1 + 1)")
    add_play_arguments(p, weights_help="the engine to play (required): weights directory, training run or official "
                       ".pt; its stored key map, game and sampler settings apply")
    p.set_defaults(func=cmd_play_weights)

    p = sub.add_parser("serve", help="play in a browser: a web server on this machine (one tab per player); open the "
                       "URL it prints, or tunnel it from a remote GPU box with ssh -L")
    p.add_argument("words", nargs="*", metavar="atari GAME | csgo", help="the shipped or downloaded engines to offer "
                   "(default, with no --weights either: every shipped and downloaded engine)")
    p.add_argument("--weights", type=Path, action="append", default=[], help="also offer this weights directory or "
                   "training run (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                   "only; any other needs the access token, generated unless --token is given)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="access token the URL must carry (default: none on 127.0.0.1, a new random one "
                   "on any other host)")
    p.add_argument("--max-sessions", type=int, default=4, help="players at once (default 4); more get a 'server "
                   "full' answer")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second per player (default 10)")
    p.add_argument("--mode", default="auto", help="execution mode (as for play; default auto)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--seed", type=int, help="seed for the sampler and start states")
    p.add_argument("--threads", type=int, help="CPU threads for the networks (default: the idle cores, at least 1)")
    p.add_argument("--no-batch", action="store_true", help="give every player an engine of their own instead of "
                   "stepping the players of one engine as one batch")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("record", help="record gameplay of a gymnasium game into a dataset")
    p.add_argument("env_id", help="gymnasium id with pixels and discrete actions: an ALE game (Breakout) or e.g. "
                   "CartPole-v1")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--frames", type=int, help="stop after N frames (default: until Esc)")
    p.add_argument("--policy", default="human", help="human (keyboard), random, or an action file")
    p.add_argument("--resolution", type=int, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="frame size to store (default 64 64; Atari frames are square)")
    p.add_argument("--keymap", type=Path, help="YAML key map for non-Atari games: keys: {left: 0, right: 1}")
    p.add_argument("--fps", type=float, default=15.0, help="recording rate for human play (default 15)")
    p.add_argument("--seed", type=int, default=0, help="seed for the game's start and the random policy (default 0)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("capture", help="record any game on the screen (a window, region or monitor) with the "
                       "keyboard and mouse into a dataset")
    p.add_argument("--out", type=Path, help="dataset folder (created, or appended to)")
    p.add_argument("--window", metavar="TITLE", help="the window whose title contains TITLE (followed as it moves)")
    p.add_argument("--region", type=int, nargs=4, metavar=("X", "Y", "W", "H"), help="a screen rectangle")
    p.add_argument("--screen", type=int, metavar="N", help="a whole monitor (1 = the first)")
    p.add_argument("--list-windows", action="store_true", help="print the window titles capture can grab")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    p.add_argument("--resolution", type=int, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="stored frame size (default 64 64)")
    p.add_argument("--full-resolution", type=int, nargs=2, metavar=("H", "W"), help="also store frames at this "
                   "size, for an upsampler (e.g. 150 280)")
    p.add_argument("--keymap", type=Path, help="YAML key map: keys: {w: 1, a: 2, w+space: 3}, default: 0")
    p.add_argument("--keys", help="comma-separated keys to watch (e.g. w,a,s,d,space,mouse left): every "
                   "combination seen becomes an action named after its keys")
    p.add_argument("--mouse", choices=["none", "bins", "continuous"], default="none", help="bins: CS:GO's "
                   "actions (its keys, clicks, binned mouse motion; train with `train csgo`); continuous: store the "
                   "raw pointer motion beside the key actions")
    p.add_argument("--mouse-scale", type=float, default=1.0, help="pointer pixels -> CS:GO bin units (bins)")
    p.add_argument("--seconds", type=float, help="stop after this much captured time")
    p.add_argument("--start-key", default="f9", help="starts and pauses capture (default f9)")
    p.add_argument("--episode-key", default="f8", help="starts a new episode (default f8)")
    p.add_argument("--stop-key", default="f10", help="ends the capture (default f10; Ctrl-C works too)")
    p.add_argument("--start-now", action="store_true", help="capture at once instead of waiting for the start key")
    p.add_argument("--idle", type=float, default=60.0, help="seconds without input that end the episode and wait "
                   "for input (default 60; 0: never)")
    p.add_argument("--max-episode-s", type=float, default=120.0, help="a longer episode is written and continued "
                   "as a new one (default 120)")
    p.add_argument("--game", help="the dataset's game name (default: from the window title)")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("inspect", help="what a dataset holds: episodes, frames, and the action histogram")
    p.add_argument("dataset", type=Path, help="dataset folder")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train engines and agents: `train engine` (any recorded game), `train csgo` "
                       "(DIAMOND's CS:GO engine), `train atari` (the Atari 100k loop), `train agent` (an "
                       "actor-critic inside an engine)")
    train_sub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    t = train_sub.add_parser("engine", help="train a world model (+ reward/termination model) on a recorded dataset")
    t.add_argument("--data", type=Path, help="dataset folder (dataset.yaml + episodes/)")
    add_run_dir_options(t)
    t.add_argument("--preset", choices=["paper", "small", "tiny"], help="model size (default small); tiny also "
                   "sets a run of minutes (2 epochs of 50 + 25 steps) for trying the pipeline")
    t.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), help="frame size of the world model "
                   "(default: the dataset's)")
    t.add_argument("--upsampler", action="store_true", help="two stages: the world model at --resolution and an "
                   "upsampler back to the dataset's frame size (like DIAMOND's CS:GO engine)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=10 amp=true")
    t.set_defaults(func=cmd_train_engine)
    t = train_sub.add_parser("csgo", help="DIAMOND's CS:GO engine: the dynamics model and the upsampler on a dataset "
                             "made by `python -m data_tools.csgo prepare`")
    t.add_argument("--data", type=Path, help="prepared dataset (train/ and test/; spawn points come from test/)")
    add_run_dir_options(t)
    t.add_argument("--preset", choices=["paper", "small", "tiny"], help="paper (default): DIAMOND's models and "
                   "hyperparameters; small: narrower models for one GPU or a long CPU run; tiny: tests")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. loader_workers=8 "
                   "amp=true denoiser_optim.grad_acc_steps=4")
    t.set_defaults(func=cmd_train_csgo)
    t = train_sub.add_parser("atari", help="DIAMOND's Atari 100k loop: collect, train world model + reward/"
                             "termination model, train the actor-critic in imagination")
    add_run_dir_options(t)
    t.add_argument("--preset", choices=["paper", "small", "tiny"], help="paper (default): the paper's budget and "
                   "networks; small: about two hours on a CPU; tiny: minutes, for trying the pipeline")
    t.add_argument("words", nargs="*", metavar="GAME|key=value",
                   help="the Atari game (e.g. Breakout; not needed with --resume), then config overrides, e.g. "
                   "total_env_steps=50000 denoiser.batch_size=16 amp=true")
    t.set_defaults(func=cmd_train_atari)
    t = train_sub.add_parser("agent", help="train an actor-critic entirely inside a world model (frozen denoiser + "
                             "reward/termination model), evaluated in the real game for Atari engines")
    t.add_argument("--weights", type=Path, help="the engine: weights directory with a reward/termination model")
    t.add_argument("--data", type=Path, help="dataset of the engine's game whose real segments start the imagined "
                   "episodes (default: the engine's own training data, where its provenance names it)")
    add_run_dir_options(t)
    t.add_argument("--preset", choices=["paper", "tiny"], help="paper (default): DIAMOND's actor-critic and "
                   "imagination settings; tiny: minutes, for trying the pipeline")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. num_steps_denoising=1 "
                   "num_envs=16 actor_critic_size=small amp=true num_threads=1")
    t.set_defaults(func=cmd_train_agent)

    p = sub.add_parser("eval", help="measure a world model on held-out real episodes (PSNR, SSIM, open loop)")
    p.add_argument("weights", type=Path, help="weights directory, run directory or official .pt")
    p.add_argument("--game", help="Atari game to collect held-out episodes from (default: the weights' game)")
    p.add_argument("--data", type=Path, help="held-out dataset folder (default: collect fresh episodes)")
    p.add_argument("--episodes", type=int, default=8, help="number of held-out episodes, or with --agent of real "
                   "games (default 8)")
    p.add_argument("--agent", action="store_true", help="instead: play the weights' actor-critic in the real game "
                   "(Atari 100k evaluation: ε = 0, full games) and report its return")
    p.add_argument("--max-horizon", type=int, default=64, help="longest open-loop horizon (1, 4, 16, 64)")
    p.add_argument("--fast", action="store_true", help="measure the fast sampler preset (1 Euler step; CS:GO 1 + 1) "
                   "instead of the weights' own")
    p.add_argument("--strip", type=Path, help="PNG strip to write (and beside it STEM_reward_event.png: the first "
                   "held-out reward event); default: ~/.cache/diamond_play/eval/GAME_strip.png")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least 1)")
    p.add_argument("--seed", type=int, default=12345, help="seed for held-out collection and sampling")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="frame latency of the play engine (bench atari|csgo) in every execution mode, "
                       "training step time (bench train atari|csgo), or browser play (bench serve)")
    p.add_argument("kind", choices=["atari", "csgo", "train", "serve"], help="atari or csgo: play-frame latency of "
                   "that engine; train: training-step time (then name atari or csgo); serve: the real server with "
                   "WebSocket clients (fps, input-to-frame latency, encode time, bytes per frame)")
    p.add_argument("target", nargs="?", choices=["atari", "csgo"], help="after `train`: which recipe's models")
    p.add_argument("--steps", type=int, default=3, help="bench train: timed optimiser steps per phase and mode")
    p.add_argument("--batch-size", type=int, help="bench train: batch size (default: the paper's per phase)")
    p.add_argument("--phases", help="bench train: comma-separated phases (atari: denoiser,rew_end,actor_critic; "
                   "csgo: denoiser,upsampler)")
    p.add_argument("--preset", choices=["quality", "fast"], default="quality", help="sampler preset: quality (the "
                   "weights' own; the paper's 3 Euler steps for Atari, 3 + 10 for CS:GO) or fast (1 step; CS:GO 1 + 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--frames", type=int, default=20, help="timed frames per mode (after 3 warm-up frames)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least 1; compare modes "
                   "with the machine otherwise idle)")
    p.add_argument("--modes", help="comma-separated execution modes (default: all that run on the device; "
                   "eager-fp32 always runs)")
    p.add_argument("--weights", type=Path, help="benchmark these weights instead of random ones (paper sizes; "
                   "bench serve: instead of the shipped Breakout engine)")
    p.add_argument("--sessions", default="1,2,4", help="bench serve: numbers of players at once (default 1,2,4)")
    p.add_argument("--batching", choices=["both", "on", "off"], default="both", help="bench serve: players of "
                   "one engine stepped as one batch, each with an engine of their own, or both (default)")
    p.add_argument("--seconds", type=float, default=15.0, help="bench serve: measured seconds per row")
    p.add_argument("--fps", type=float, default=10.0, help="bench serve: frames per second per player, as serve")
    p.add_argument("--json", type=Path, help="write the results as JSON")
    p.set_defaults(func=cmd_bench)

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

    p = sub.add_parser("export", help="copy a training run's weights to a standalone weights directory, with "
                       "provenance and eval results")
    p.add_argument("source", type=Path, help="training run directory (its latest weights) or weights directory")
    p.add_argument("--out", type=Path, required=True, help="weights directory to write")
    p.add_argument("--best", action="store_true", help="the run's best checkpoint instead of its latest")
    p.add_argument("--eval", type=Path, help="`diamond-play eval --json` results to store in the config's metrics")
    p.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE",
                   help="add a provenance entry (repeatable), e.g. data='how the data was collected'")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="describe weights: game, actions, parameter counts, sampling, provenance")
    p.add_argument("weights", type=Path, help="weights directory or official .pt")
    p.add_argument("--config", type=Path, help="official agent YAML for a .pt")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a trailing list positional once, so key=value overrides written after the options arrive here.
    list_name = next((n for n in ("words", "overrides") if isinstance(getattr(args, n, None), list)), None)
    if extra and list_name and all("=" in e and not e.startswith("-") for e in extra):
        getattr(args, list_name).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["diamond-play", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.func(args)
    except UserError as e:
        print(f"diamond-play: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("diamond-play: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `diamond-play info W | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
