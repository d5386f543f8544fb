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


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to `threads`, or to `default_threads()` when None or 0; returns the number."""
    if threads is not None and threads < 0:
        raise UserError(f"--threads {threads}: pass a positive number of CPU threads (or leave it out)")
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n
