"""How many CPU threads torch uses: one choice shared by play, bench, eval, the trainers and the gym env.

Oversubscribed threads collapse on a busy machine (shipped Breakout headless with another job running: 1.0 fps
with torch's default of every core, 8.7 fps with one thread), so the default leaves busy cores alone.
"""

from __future__ import annotations

import os

from diamond_play.errors import UserError


def default_threads() -> int:
    """torch's own default (the physical cores) less the cores other processes kept busy over the last minute."""
    import torch

    cores = torch.get_num_threads()
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0
    return max(1, min(cores, cores - busy))


_compute_threads = 1  # what `use_threads` chose, for the thread that computes


def use_threads(threads: int | None, compute_off_main: bool = False) -> int:
    """Choose torch's intra-op threads: `threads`, or `default_threads()` when None or 0; returns the number.

    `compute_off_main`: the networks run on a worker thread (the window, serve), so this thread stays at one and the
    worker calls `as_compute_thread`. Each thread that runs a parallel op keeps an OpenMP team of its own; with two
    teams on the cores, OpenMP stops spinning between ops and every op pays a wake-up (docs/PERFORMANCE.md,
    "Threads"), so only the thread that steps the world model may use several."""
    if threads is not None and threads < 0:
        raise UserError(f"--threads {threads}: pass a positive number of CPU threads (or leave it out)")
    global _compute_threads
    _compute_threads = threads or default_threads()
    set_thread_count(1 if compute_off_main else _compute_threads)
    return _compute_threads


def set_thread_count(n: int) -> None:
    """torch.set_num_threads(n) for the calling thread, made to last. A thread takes the process-wide count (the
    last `set_num_threads` on any thread) at its first parallel op, over what it set itself: asking for the count
    first makes that happen now."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)


def compute_threads() -> int:
    """The count `use_threads` chose for the thread that computes."""
    return _compute_threads


def as_compute_thread(share: int = 1) -> int:
    """Call first on the thread that will step a world model: it gets `use_threads`' count, split `share` ways
    (several such threads at once); returns the count."""
    n = max(1, _compute_threads // share)
    set_thread_count(n)
    return n


def as_helper_thread() -> None:
    """Call first on a thread that touches tensors but does not step a world model (loading, compile warm-up,
    coordination): one thread, so it never makes an OpenMP team of its own."""
    set_thread_count(1)
