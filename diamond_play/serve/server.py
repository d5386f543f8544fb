"""Starting the server: the engines on offer, the access token, uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diamond_play.errors import UserError
from diamond_play.games import NAMED_GAMES


def parse_engine_words(words: list[str]) -> list[tuple[str, str | None]]:
    """`atari Breakout csgo atari Pong` -> [("atari", "Breakout"), ("csgo", None), ("atari", "Pong")]."""
    out: list[tuple[str, str | None]] = []
    rest = list(words)
    while rest:
        kind = rest.pop(0)
        if kind == "csgo":
            out.append((kind, None))
        elif kind == "atari":
            if not rest or rest[0] in NAMED_GAMES:
                raise UserError("which game? usage: diamond-play serve atari GAME (e.g. atari Breakout)")
            out.append((kind, rest.pop(0)))
        else:
            raise UserError(f"serve takes `atari GAME`, `csgo` and --weights DIR, not {kind!r}")
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token a request must carry: the given one, else a new one unless the server listens on loopback only."""
    if token is not None:
        if len(token) < 8:
            raise UserError("--token: use at least 8 characters")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(16)


def serve(games: list[tuple[str, str | None]], weights: list[Path], host: str, port: int, token: str | None,
          max_sessions: int, fps: float, mode: str, device: str, seed: int | None, batch: bool = True) -> None:
    import torch
    import uvicorn

    from diamond_play.accel.modes import execution_mode_named
    from diamond_play.devices import resolve_device
    from diamond_play.serve.app import ServeOptions, create_app
    from diamond_play.serve.catalog import build_catalog

    if max_sessions < 1 or not 0 < fps <= 60:
        raise UserError("--max-sessions takes 1 or more, --fps a rate in (0, 60]")
    catalog = build_catalog(games, weights)
    resolved = resolve_device(device)
    options = ServeOptions(device=resolved, mode=execution_mode_named(mode, torch.device(resolved), interactive=True),
                           fps=fps, max_sessions=max_sessions, token=access_token(host, token), seed=seed,
                           batch=batch)
    app = create_app(catalog, options)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={options.token}" if options.token else "")
    names = ", ".join(f"{e.config.game} ({e.config.kind})" for e in catalog)
    print(f"diamond-play serve: {names}; up to {max_sessions} players, {fps:g} fps, {options.mode.name}")
    print(f"open {url}")
    if is_loopback(host):
        print(f"from another machine: ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open the URL there")
    sys.stdout.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextlib.contextmanager
def serve_in_thread(app: Any, start_timeout_s: float = 20.0) -> Iterator[str]:
    """Run `app` on uvicorn in a thread on a free port of 127.0.0.1 (tests, `bench serve`): yields "HOST:PORT" once
    it accepts connections, stops it on exit."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="diamond-play uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the server did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
