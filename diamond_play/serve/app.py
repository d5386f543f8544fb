"""The ASGI app: the page, the engine list and one WebSocket per player.

Protocol. The page sends JSON text messages of at most `MAX_MESSAGE_BYTES`:
`{"type": "start", "engine": ID, "spawn": N | null, "preset": NAME | null}` once, then
`{"type": "input", "keys": [NAME, ...], "buttons": [1 | 3, ...], "dx": INT, "dy": INT, "commands": [NAME, ...],
"id": INT}` (held keys and buttons, the mouse motion summed since the last message, app keys pressed through the
page's buttons, an optional number the HUD echoes as "input" in the frames stepped with it), and
`{"type": "record", "on": true | false}` to start and stop recording. The server answers
`{"type": "ready", "engine": {...}, "keys": [...]}`, then per shown frame a `{"type": "hud", ...}` text message
followed by the frame as a binary JPEG message, and per finished recording
`{"type": "recording", "id": ID, "files": {NAME: URL}, "steps": N, "episodes": N}` (GET each URL to download it,
within `RECORDING_KEEP_S` of leaving). A message that breaks these rules closes that socket with a reason (code
1008); nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from diamond_play.accel.modes import ExecutionMode
from diamond_play.errors import UserError
from diamond_play.games import game_of
from diamond_play.play.session import PlaySession
from diamond_play.play.shared import SharedWorldModel, batchable
from diamond_play.serve.catalog import EngineEntry
from diamond_play.serve.player import Player, PlayerInput, Recording
from diamond_play.threads import as_helper_thread
from diamond_play.weights.loading import load_agent

MAX_MESSAGE_BYTES = 4096
MAX_KEYS = 16
MAX_MOTION = 10_000  # pixels per message, far beyond any hand
KEY_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789 .,;'[]/\\-=`")
COMMANDS = {"return", ".", "e", "m", "h", "left", "right", "up", "down"}  # the app keys (play.app.handle_app_key)
POLICY_VIOLATION = 1008
START_TIMEOUT_S = 30.0
TOKEN_COOKIE = "diamond_play_token"
RECORDING_KEEP_S = 300.0  # a player's recordings stay downloadable this long after they leave
log = logging.getLogger("diamond_play.serve")


class BadMessage(ValueError):
    """A client message that breaks the protocol; its text is the close reason."""


@dataclass
class ServeOptions:
    device: torch.device
    mode: ExecutionMode
    fps: float = 10.0
    max_sessions: int = 4
    token: str | None = None
    """Required in the page URL and the WebSocket URL when set (any host but loopback)."""
    seed: int | None = None
    batch: bool = True
    """Players on the same engine and preset share one world model, stepped as one batch (`play.shared`); off,
    or in a mode that cannot batch, every player gets an engine of their own."""


@dataclass
class SharedEngines:
    """The engines players share, by (engine id, sampler preset), made by the first player and closed with the
    last (`take` and `release` run on worker threads)."""

    engines: dict[tuple[str, str | None], SharedWorldModel] = field(default_factory=dict)
    users: dict[tuple[str, str | None], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: tuple[str, str | None], make: Callable[[], SharedWorldModel]) -> SharedWorldModel:
        with self.lock:
            if key not in self.engines:
                self.engines[key] = make()
            self.users[key] = self.users.get(key, 0) + 1
            return self.engines[key]

    def release(self, key: tuple[str, str | None]) -> None:
        with self.lock:
            self.users[key] -= 1
            if self.users[key] > 0:
                return
            del self.users[key]
            engine = self.engines.pop(key)
        engine.close()


@dataclass
class ServerState:
    catalog: dict[str, EngineEntry]
    options: ServeOptions
    players: set[Player] = field(default_factory=set)
    starting: int = 0  # sessions being set up, counted against max_sessions
    shared: SharedEngines = field(default_factory=SharedEngines)
    recordings_root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="diamond-play-recordings-")))
    """Removed when the server stops."""
    recordings: dict[str, Recording] = field(default_factory=dict)

    def forget_recordings(self, ids: list[str]) -> None:
        for rid in ids:
            recording = self.recordings.pop(rid, None)
            if recording is not None:
                shutil.rmtree(recording.folder, ignore_errors=True)


def key_names(value: Any, what: str) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > MAX_KEYS:
        raise BadMessage(f"{what}: a list of at most {MAX_KEYS} key names")
    for name in value:
        if not isinstance(name, str) or not 0 < len(name) <= 16 or not set(name) <= KEY_NAME_CHARS:
            raise BadMessage(f"{what}: {str(name)[:20]!r} is not a key name")
    return frozenset(value)


def parse_input(msg: dict[str, Any]) -> PlayerInput:
    unknown = set(msg) - {"type", "keys", "buttons", "dx", "dy", "commands", "id"}
    if unknown:
        raise BadMessage(f"input: unknown fields {sorted(unknown)}")
    keys = key_names(msg.get("keys", []), "keys")
    commands = msg.get("commands", [])
    if not isinstance(commands, list) or len(commands) > MAX_KEYS or not all(c in COMMANDS for c in commands):
        raise BadMessage(f"commands: a list of {sorted(COMMANDS)}")
    buttons = msg.get("buttons", [])
    if not isinstance(buttons, list) or not all(b in (1, 3) and isinstance(b, int) for b in buttons):
        raise BadMessage("buttons: a list of 1 (left) and 3 (right)")
    dx, dy = msg.get("dx", 0), msg.get("dy", 0)
    for v in (dx, dy):
        if not isinstance(v, int) or isinstance(v, bool) or abs(v) > MAX_MOTION:
            raise BadMessage(f"dx, dy: integers within +-{MAX_MOTION}")
    input_id = msg.get("id")
    if input_id is not None and (not isinstance(input_id, int) or isinstance(input_id, bool)
                                 or not 0 <= input_id < 2**53):
        raise BadMessage("id: a non-negative integer")
    return PlayerInput(keys, frozenset(buttons), dx, dy, list(commands), input_id)


def parse_message(text: str | None) -> dict[str, Any]:
    """A text message's JSON object (binary messages have no text)."""
    if text is None:
        raise BadMessage("messages are JSON text")
    if len(text) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        raise BadMessage("not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("start", "input", "record"):
        raise BadMessage('a JSON object with "type": "start", "input" or "record"')
    return msg


def parse_record(msg: dict[str, Any]) -> bool:
    if set(msg) != {"type", "on"} or not isinstance(msg["on"], bool):
        raise BadMessage('record: {"type": "record", "on": true | false}')
    return msg["on"]


def start_session(state: ServerState, msg: dict[str, Any]
                  ) -> tuple[EngineEntry, PlaySession, tuple[str, str | None] | None]:
    """The session a start message asks for, and the key of the shared engine it sits on (None: an engine of its
    own). Loads the engine: call off the event loop."""
    as_helper_thread()  # loading is not stepping: no OpenMP team on this pool thread
    unknown = set(msg) - {"type", "engine", "spawn", "preset"}
    if unknown:
        raise BadMessage(f"start: unknown fields {sorted(unknown)}")
    entry = state.catalog.get(msg.get("engine"))  # type: ignore[arg-type]
    if entry is None:
        raise BadMessage(f"unknown engine: choose one of {sorted(state.catalog)}")
    spawn, preset = msg.get("spawn"), msg.get("preset")
    if spawn is not None and (not isinstance(spawn, int) or isinstance(spawn, bool) or not 0 <= spawn < 10_000):
        raise BadMessage("spawn: null or a spawn point's index")
    game = game_of(entry.config)
    if preset is not None and preset not in game.sampling_presets:
        raise BadMessage(f"preset: null or one of {list(game.sampling_presets)}")
    opts = state.options
    sampling = game.sampling(preset, entry.config.sampling)
    if not (opts.batch and batchable(opts.mode)):
        agent = load_agent(entry.path, device=opts.device)
        try:
            return entry, PlaySession(agent, device=opts.device, seed=opts.seed, spawn=spawn, sampling=sampling,
                                      fps=opts.fps, mode=opts.mode), None
        except UserError as e:
            raise BadMessage(str(e)) from None
    key = (entry.id, preset)
    shared = state.shared.take(key, lambda: SharedWorldModel(
        load_agent(entry.path, device=opts.device), sampling, opts.device, opts.mode, opts.max_sessions, opts.fps,
        opts.seed))
    try:
        session = PlaySession(shared.agent, device=opts.device, seed=opts.seed, spawn=spawn, fps=opts.fps,
                              shared=shared)
    except UserError as e:
        state.shared.release(key)
        raise BadMessage(str(e)) from None
    except BaseException:
        state.shared.release(key)
        raise
    return entry, session, key


def request_token(request: Request | WebSocket) -> str | None:
    """The token in the URL (`?token=`) or in the cookie the page got with it."""
    return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)


def authorised(token: str | None, given: str | None) -> bool:
    return token is None or (given is not None and secrets.compare_digest(token, given))


def same_origin(websocket: WebSocket) -> bool:
    """Browsers send Origin on WebSocket upgrades; a page from another site must not drive a player."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser (a script has the token, or runs on this machine)
    host = websocket.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def page(name: str) -> str:
    return resources.files("diamond_play.serve").joinpath("static", name).read_text()


def create_app(catalog: list[EngineEntry], options: ServeOptions) -> FastAPI:
    state = ServerState({e.id: e for e in catalog}, options)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutil.rmtree(state.recordings_root, ignore_errors=True)

    app = FastAPI(title="diamond-play", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = state

    def check_token(request: Request) -> Response | None:
        if authorised(options.token, request_token(request)):
            return None
        return HTMLResponse("missing or wrong token: open the URL `diamond-play serve` printed", status_code=401)

    @app.get("/")
    def index(request: Request) -> Response:
        refused = check_token(request)
        if refused is not None:
            return refused
        response = HTMLResponse(page("index.html"))
        if options.token is not None:  # the page's own requests and its WebSocket carry it from here on
            response.set_cookie(TOKEN_COOKIE, options.token, httponly=True, samesite="strict")
        return response

    @app.get("/play.js")
    def script(request: Request) -> Response:
        return check_token(request) or Response(page("play.js"), media_type="text/javascript")

    @app.get("/api/engines")
    def engines(request: Request) -> Response:
        return check_token(request) or JSONResponse({
            "engines": [e.public() for e in catalog], "playing": len(state.players) + state.starting,
            "max_sessions": options.max_sessions})

    @app.get("/api/recordings/{rid}/{name}")
    def recording_file(request: Request, rid: str, name: str) -> Response:
        refused = check_token(request)
        if refused is not None:
            return refused
        recording = state.recordings.get(rid)
        if recording is None or name not in recording.files():
            return JSONResponse({"error": "no such recording: it is kept for a while after its player leaves"},
                                status_code=404)
        return FileResponse(recording.folder / name, filename=f"diamond-play-{rid[:6]}-{name}")

    @app.websocket("/ws")
    async def play(websocket: WebSocket) -> None:
        if not authorised(options.token, request_token(websocket)) or not same_origin(websocket):
            await websocket.close(code=POLICY_VIOLATION)  # before accepting: the upgrade is refused with 403
            return
        await websocket.accept()
        playing = len(state.players) + state.starting
        if playing >= options.max_sessions:
            await websocket.send_json({"type": "full", "playing": playing, "max_sessions": options.max_sessions})
            await websocket.close(code=1013, reason=f"server full, {playing} playing")
            return
        state.starting += 1
        player = None
        shared_key = None
        try:
            entry, session, shared_key = await open_session(websocket, state)
            loop = asyncio.get_running_loop()
            new_frame = asyncio.Event()
            try:
                player = Player(session, options.fps, lambda: loop.call_soon_threadsafe(new_frame.set),
                                recordings=state.recordings_root, compute_share=options.max_sessions)
            except BaseException:
                session.close()
                raise
            state.starting -= 1
            state.players.add(player)
            await websocket.send_json({"type": "ready", "engine": entry.public(),
                                       "keys": player.controls.help_lines()})
            await serve_player(websocket, player, new_frame, state)
        except WebSocketDisconnect:
            pass
        except BadMessage as e:
            await close_with(websocket, str(e))
        except Exception as e:  # a bug of ours: the log has it, the page a reason, the other players nothing
            log.exception("player session failed")
            await close_with(websocket, f"server error: {type(e).__name__}: {e}")
        finally:
            if player is None:
                state.starting -= 1
            else:
                await asyncio.to_thread(player.close)
            if shared_key is not None:
                await asyncio.to_thread(state.shared.release, shared_key)
            if player is not None:
                state.players.discard(player)  # the seat counts until its engine is given back
                if player.announced:
                    asyncio.get_running_loop().call_later(RECORDING_KEEP_S, state.forget_recordings,
                                                          player.announced)

    return app


async def close_with(websocket: WebSocket, reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # already closed
        await websocket.close(code=POLICY_VIOLATION, reason=reason[:120])


async def open_session(websocket: WebSocket, state: ServerState
                       ) -> tuple[EngineEntry, PlaySession, tuple[str, str | None] | None]:
    """Wait for the start message and load its engine off the event loop."""
    try:
        message = await asyncio.wait_for(websocket.receive(), START_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BadMessage(f"no start message within {START_TIMEOUT_S:.0f} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect()
    msg = parse_message(message.get("text"))
    if msg["type"] != "start":
        raise BadMessage("the first message is a start message")
    return await asyncio.to_thread(start_session, state, msg)


async def serve_player(websocket: WebSocket, player: Player, new_frame: asyncio.Event, state: ServerState) -> None:
    """Receive input and send the newest frame until either side stops."""

    async def send_frames() -> None:
        sent = 0
        while True:
            await new_frame.wait()
            new_frame.clear()
            if player.error is not None:
                raise BadMessage(f"the engine stopped: {player.error}")
            for recording in player.take_finished():
                state.recordings[recording.id] = recording
                player.announced.append(recording.id)
                await websocket.send_json({
                    "type": "recording", "id": recording.id, "steps": recording.steps,
                    "episodes": recording.episodes,
                    "files": {name: f"api/recordings/{recording.id}/{name}" for name in recording.files()}})
            packet = player.latest
            if packet is not None and packet.seq != sent:
                sent = packet.seq
                await websocket.send_text(json.dumps({"type": "hud", "seq": packet.seq, **packet.hud}))
                await websocket.send_bytes(packet.jpeg)

    async def receive_input() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect()
            msg = parse_message(message.get("text"))
            if msg["type"] == "start":
                raise BadMessage("one start message per connection")
            if msg["type"] == "record":
                player.request_recording(parse_record(msg))
            else:
                player.update(parse_input(msg))

    tasks = [asyncio.create_task(send_frames()), asyncio.create_task(receive_input())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
