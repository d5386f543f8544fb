"""Dataset tools: Atari collection, video + action-log import, the CS:GO Dust II dataset."""

from __future__ import annotations

import sys
from collections.abc import Callable

from diamond_play.errors import UserError


def run_tool(prog: str, body: Callable[[], None]) -> int:
    """Run a tool's work: a UserError becomes one line on stderr and exit code 2, Ctrl-C exit code 130."""
    try:
        body()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
