"""CS:GO Dust II dataset tools (Pearce & Zhu "dataset_dm", the data DIAMOND's CS:GO engine was trained on).

    python -m data_tools.csgo prepare TAR_DIR OUT_DIR [--workers N]   # 28 tars of HDF5 files -> OUT_DIR/{train,test}
    python -m data_tools.csgo spawns DATASET OUT_DIR [--count N]      # start states from held-out episodes
    python -m data_tools.csgo inspect DATASET                          # counts, hours, action statistics
    python -m data_tools.csgo view DATASET                             # scrub episodes in a pygame window
    python -m data_tools.csgo loader DATASET [--workers N]             # samples/s of the training data loader
    python -m data_tools.csgo synth TAR_DIR [--files N]                # synthetic archives in the original layout

`prepare` streams each `hdf5_dm_july2021_<a>_to_<b>.tar` (no full extraction), converts every HDF5 file into one
episode (full-res 150x280 + low-res 30x56 frames, 51-dim actions) in the official train/test split, and is
resumable: finished archives are listed in OUT_DIR/prepare_done.txt and converted files are skipped. Corrupt or
truncated files are listed in OUT_DIR/prepare_report.txt and skipped; everything else is kept.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tarfile
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools import run_tool
from diamond_play.data.csgo_dataset import (
    FPS,
    TAR_PATTERN,
    dataset_info,
    episode_name,
    held_out_file_names,
    read_dm_file,
)
from diamond_play.data.episodes import Dataset
from diamond_play.data.spawns import spawns_from_episodes, write_spawns
from diamond_play.envs import csgo
from diamond_play.errors import UserError

NUM_OFFICIAL_TARS = 28


def convert_file(src: str, out_split: str, name: str) -> tuple[str, str | None]:
    """Worker: one original HDF5 file -> one episode. Returns (name, error or None); never raises."""
    try:
        Dataset(out_split).append(read_dm_file(src), name=name)
        return name, None
    except (OSError, ValueError, KeyError, UserError) as e:
        return name, (str(e).splitlines()[0] if str(e) else type(e).__name__)
    finally:
        if os.path.exists(src):
            os.remove(src)


def _append_line(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def prepare(tar_dir: Path, out: Path, workers: int = 1) -> dict[str, int]:
    tars = sorted(p for p in tar_dir.glob("*.tar") if TAR_PATTERN.search(p.name)) if tar_dir.is_dir() else []
    if not tars:
        raise UserError(f"no hdf5_dm_july2021_<a>_to_<b>.tar archives in {str(tar_dir)!r}")
    if len(tars) < NUM_OFFICIAL_TARS:
        print(f"note: {len(tars)} of the {NUM_OFFICIAL_TARS} official archives found; preparing those", file=sys.stderr)
    test_names = held_out_file_names()
    datasets = {split: Dataset(out / split, dataset_info(split)) for split in ("train", "test")}
    done_file, report = out / "prepare_done.txt", out / "prepare_report.txt"
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
    counts = {"converted": 0, "skipped": 0, "failed": 0}
    bar = tqdm(desc="files", unit="file")
    try:
        # "spawn", not fork: a forked child of a process that already ran torch's OpenMP pool can hang.
        with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool:
            pending: list[Future] = []

            def collect(block: bool) -> None:
                while pending and (block or pending[0].done() or len(pending) > 2 * workers):
                    name, error = pending.pop(0).result()
                    if error is None:
                        counts["converted"] += 1
                    else:
                        counts["failed"] += 1
                        _append_line(report, f"{name}: {error}")
                        tqdm.write(f"failed: {name}: {error}")
                    bar.update(1)

            for tar_path in tars:
                if tar_path.name in done:
                    continue
                bar.set_postfix(archive=tar_path.name)
                try:
                    with tarfile.open(tar_path, mode="r|*") as archive:
                        for member in archive:
                            base = Path(member.name).name
                            if not member.isfile() or not base.endswith(".hdf5"):
                                continue
                            try:
                                name = episode_name(base)
                            except UserError:
                                continue
                            split = "test" if base in test_names else "train"
                            if datasets[split].has(name):
                                counts["skipped"] += 1
                                continue
                            src = tmp_dir / f"{name}.hdf5"
                            with archive.extractfile(member) as f_in, src.open("wb") as f_out:  # type: ignore[union-attr]
                                while chunk := f_in.read(1 << 22):
                                    f_out.write(chunk)
                            pending.append(pool.submit(convert_file, str(src), str(out / split), name))
                            collect(block=False)
                except (tarfile.TarError, EOFError, OSError) as e:
                    collect(block=True)
                    _append_line(report, f"{tar_path.name}: archive unreadable or truncated ({e}); the files read "
                                         "before the break are kept, run prepare again after replacing it")
                    tqdm.write(f"failed: {tar_path.name}: archive unreadable or truncated ({e})")
                    counts["failed"] += 1
                    continue
                collect(block=True)
                _append_line(done_file, tar_path.name)
    finally:
        bar.close()
        for leftover in tmp_dir.glob("*"):
            leftover.unlink()
        tmp_dir.rmdir()
    return counts


def make_spawns(dataset_dir: Path, out: Path, count: int) -> int:
    test = Dataset(dataset_dir / "test" if (dataset_dir / "test").is_dir() else dataset_dir)
    episodes = [test[i] for i in range(min(len(test), 4 * count))]
    states = spawns_from_episodes(episodes, num_frames=4, count=count, full_res=True)
    if not states:
        raise UserError(f"no episodes of at least 4 frames in {str(dataset_dir)!r}")
    write_spawns(out, states)
    return len(states)


def inspect(dataset_dir: Path) -> str:
    lines = []
    splits = [d for d in ("train", "test") if (dataset_dir / d).is_dir()] or ["."]
    for split in splits:
        ds = Dataset(dataset_dir / split)
        actions = [ds[i].actions for i in range(len(ds))]
        if not actions:
            lines.append(f"{split}: no episodes")
            continue
        a = np.concatenate(actions)
        frames = len(a)
        lines.append(f"{split}: {len(ds)} episodes, {frames} frames, {frames / FPS / 3600:.2f} hours at {FPS:g} Hz")
        keys = ", ".join(f"{k} {a[:, i].mean():.1%}" for i, k in enumerate(csgo.KEYS))
        lines.append(f"  keys held: {keys}")
        lines.append(f"  clicks: left {a[:, 11].mean():.1%}, right {a[:, 12].mean():.1%}")
        mx = np.array(csgo.MOUSE_X_BINS)[a[:, csgo.MOUSE_X_OFFSET:csgo.MOUSE_Y_OFFSET].argmax(1)]
        my = np.array(csgo.MOUSE_Y_BINS)[a[:, csgo.MOUSE_Y_OFFSET:].argmax(1)]
        lines.append(f"  mouse x: moving {np.mean(mx != 0):.1%} of frames, mean |dx| {np.abs(mx).mean():.1f}; "
                     f"mouse y: moving {np.mean(my != 0):.1%}, mean |dy| {np.abs(my).mean():.1f}")
    return "\n".join(lines)


def view(dataset_dir: Path, max_ticks: int | None = None) -> None:
    """←/→ frame, PgUp/PgDn ±10 frames, ↑/↓ episode, Esc quits."""
    import pygame

    from diamond_play.play.display import init_window_display

    ds = Dataset(dataset_dir / "test" if (dataset_dir / "test").is_dir() else dataset_dir)
    if len(ds) == 0:
        raise UserError(f"no episodes in {str(dataset_dir)!r}")
    init_window_display()
    screen = pygame.display.set_mode((560, 340))
    pygame.display.set_caption("data_tools.csgo view")
    font = pygame.font.Font(None, 20)
    episode_index, t, ticks = 0, 0, 0
    episode = ds[0]
    running = True
    while running and (max_ticks is None or ticks < max_ticks):
        ticks += 1
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                running = False
            elif event.type == pygame.KEYDOWN:
                step = {pygame.K_RIGHT: 1, pygame.K_LEFT: -1, pygame.K_PAGEDOWN: 10, pygame.K_PAGEUP: -10}
                if event.key in step:
                    t = int(np.clip(t + step[event.key], 0, len(episode) - 1))
                elif event.key in (pygame.K_UP, pygame.K_DOWN):
                    episode_index = (episode_index + (1 if event.key == pygame.K_DOWN else -1)) % len(ds)
                    episode, t = ds[episode_index], 0
        frame = episode.full_res_frames[t] if episode.full_res_frames is not None else episode.frames[t]
        img = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        screen.fill((0, 0, 0))
        screen.blit(pygame.transform.smoothscale(img, (560, 300)), (0, 0))
        action = csgo.describe_action(csgo.decode_action(episode.actions[t]))
        text = f"episode {episode_index + 1}/{len(ds)}  frame {t + 1}/{len(episode)}  action: {action}"
        screen.blit(font.render(text, True, (255, 255, 255)), (6, 312))
        pygame.display.flip()
        pygame.time.wait(15)
    pygame.quit()


def loader_speed(dataset_dir: Path, workers: int, batches: int) -> str:
    """Samples/s of the training loader alone (the windows `train csgo` draws), per model."""
    import time

    import torch

    from diamond_play.data.segments import SegmentStream, segment_batches

    ds = Dataset(dataset_dir / "train" if (dataset_dir / "train").is_dir() else dataset_dir)
    episodes = ds.lazy_episodes()
    if not episodes:
        raise UserError(f"{str(dataset_dir)!r} has no episodes")
    lines = [f"{len(episodes)} episodes, {workers} worker process(es), {batches} batches after 2 warm-up ones:"]
    for name, seq, batch, full_res in (("dynamics", 4 + 1 + 4, 16, False), ("upsampler", 3, 4, True)):
        it = segment_batches(SegmentStream(episodes, seq, batch, seed=0, full_res=full_res), torch.device("cpu"),
                             workers)
        for _ in range(2):  # worker start-up and first file opens
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        dt = time.perf_counter() - t0
        it.close()
        lines.append(f"  {name:9s} windows of {seq} frames, batch {batch}: {batches * batch / dt:8.1f} samples/s "
                     f"({batches / dt:.1f} batches/s)")
    return "\n".join(lines)


def synthesize(tar_dir: Path, files: int, frames: int, first: int, seed: int) -> Path:
    """Archives of synthetic files in exactly the original layout (moving smooth patterns, random valid actions),
    to try `prepare`, the loader and `train csgo` without the real 660 GB dataset."""
    from diamond_play.data.csgo_dataset import write_dm_file

    rng = np.random.default_rng(seed)
    tar_dir.mkdir(parents=True, exist_ok=True)
    name = f"hdf5_dm_july2021_{first}_to_{first + files - 1}.tar"
    yy, xx = np.mgrid[0:150, 0:280].astype(np.float32)
    with tempfile.TemporaryDirectory(dir=tar_dir) as tmp, tarfile.open(tar_dir / f".{name}.tmp", "w") as tar:
        for n in tqdm(range(first, first + files), desc="synthesize", unit="file"):
            phase = rng.uniform(0, 2 * np.pi, 3)
            t = np.arange(frames, dtype=np.float32)[:, None, None]
            channels = [127 + 120 * np.sin(xx / (17 + 5 * c) + yy / 23 + 0.2 * t + phase[c]) for c in range(3)]
            frames_bgr = np.stack(channels, axis=-1).astype(np.uint8)
            key_sets = [(), ("w",), ("a",), ("d",), ("w", "a"), ("w", "d")]
            actions = np.stack([csgo.encode_action(csgo.CSGOAction(
                keys=key_sets[int(rng.integers(len(key_sets)))], l_click=bool(rng.random() < 0.05),
                mouse_x=int(rng.choice(csgo.MOUSE_X_BINS)), mouse_y=int(rng.choice(csgo.MOUSE_Y_BINS))))
                for _ in range(frames)])
            path = write_dm_file(Path(tmp) / f"hdf5_dm_july2021_{n}.hdf5", frames_bgr, actions)
            tar.add(path, arcname=f"dataset_dm_scraped_dust2/{path.name}")
            path.unlink()
    os.replace(tar_dir / f".{name}.tmp", tar_dir / name)
    return tar_dir / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.csgo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("prepare", help="convert the original tar archives into the project's dataset")
    c.add_argument("tar_dir", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    c = sub.add_parser("spawns", help="extract spawn points (start states) from the held-out episodes")
    c.add_argument("dataset", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--count", type=int, default=10)
    c = sub.add_parser("inspect", help="print counts, hours and action statistics")
    c.add_argument("dataset", type=Path)
    c = sub.add_parser("view", help="scrub through episodes with the decoded actions shown")
    c.add_argument("dataset", type=Path)
    c = sub.add_parser("loader", help="measure samples/s of the training data loader alone")
    c.add_argument("dataset", type=Path)
    c.add_argument("--workers", type=int, default=4)
    c.add_argument("--batches", type=int, default=50)
    c = sub.add_parser("synth", help="write synthetic archives in the original layout (to try the pipeline)")
    c.add_argument("tar_dir", type=Path)
    c.add_argument("--files", type=int, default=4)
    c.add_argument("--frames", type=int, default=1000)
    c.add_argument("--first", type=int, default=1, help="number of the first file (hdf5_dm_july2021_<n>.hdf5)")
    c.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    def body() -> None:
        if args.command == "prepare":
            args.out_dir.mkdir(parents=True, exist_ok=True)
            counts = prepare(args.tar_dir, args.out_dir, args.workers)
            print(f"converted {counts['converted']}, already done {counts['skipped']}, failed {counts['failed']}"
                  + (f" (see {args.out_dir / 'prepare_report.txt'})" if counts["failed"] else ""))
        elif args.command == "spawns":
            print(f"{make_spawns(args.dataset, args.out_dir, args.count)} spawn points written to {args.out_dir}")
        elif args.command == "inspect":
            print(inspect(args.dataset))
        elif args.command == "synth":
            print(f"wrote {synthesize(args.tar_dir, args.files, args.frames, args.first, args.seed)}")
        elif args.command == "loader":
            print(loader_speed(args.dataset, args.workers, args.batches))
        else:
            view(args.dataset)

    return run_tool("data_tools.csgo", body)


if __name__ == "__main__":
    sys.exit(main())
