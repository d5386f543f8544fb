"""Keyboard and mouse -> actions. Atari: WASD + space combined into the game's ALE action names. CS:GO: the dataset's
51-dim vector (keys, clicks, binned mouse motion) with forbidden key pairs resolved as the dataset does."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import pygame

from diamond_play.config import WeightsConfig
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.play.display import init_windowless_display

# Keys are named as pygame names them (`pygame.key.name`: "w", "space", "left ctrl", "left"): the window turns its
# events into these names and the browser page sends them, so both front ends share the controls below.
# Atari: which key gives which direction token. Arrows are left for the app (view and horizon), as in DIAMOND.
ATARI_KEYS = {"w": "UP", "s": "DOWN", "a": "LEFT", "d": "RIGHT", "space": "FIRE"}
_TOKEN_ORDER = ("UP", "DOWN", "RIGHT", "LEFT", "FIRE")  # ALE spells combinations in this order, e.g. UPRIGHTFIRE


def compose_action_name(tokens: set[str]) -> str:
    tokens = set(tokens)
    for a, b in (("UP", "DOWN"), ("LEFT", "RIGHT")):
        if {a, b} <= tokens:
            tokens -= {a, b}  # opposite directions cancel out
    return "".join(t for t in _TOKEN_ORDER if t in tokens) or "NOOP"


class Controls(ABC):
    """Key, button and mouse input -> the engine's action. Subclasses override what they use."""

    def handle_event(self, event: pygame.event.Event) -> None:
        """A pygame event from the window."""
        if event.type == pygame.KEYDOWN:
            self.key_down(pygame.key.name(event.key))
        elif event.type == pygame.KEYUP:
            self.key_up(pygame.key.name(event.key))
        elif event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            self.mouse_button(event.button, event.type == pygame.MOUSEBUTTONDOWN)
        elif event.type == pygame.MOUSEMOTION:
            self.mouse_motion(*event.rel)

    # Input a scheme does not use is ignored (Atari has no mouse, key maps no buttons).
    def key_down(self, name: str) -> None:
        return None

    def key_up(self, name: str) -> None:
        return None

    def mouse_button(self, button: int, down: bool) -> None:
        """`button`: 1 left, 3 right (pygame's and the page's numbering)."""
        return None

    def mouse_motion(self, dx: int, dy: int) -> None:
        return None

    def release_all(self) -> None:
        return None

    @abstractmethod
    def action(self) -> int | np.ndarray:
        """The action for the next frame."""

    def help_lines(self) -> list[str]:
        """The keys and what they do, for the key help."""
        return []


class AtariControls(Controls):
    """Held keys -> index into the game's action meanings; the longest supported combination wins."""

    def __init__(self, action_meanings: list[str] | tuple[str, ...]) -> None:
        self.meanings = list(action_meanings)
        self.held: set[str] = set()

    def key_down(self, name: str) -> None:
        if name in ATARI_KEYS:
            self.held.add(ATARI_KEYS[name])

    def key_up(self, name: str) -> None:
        if name in ATARI_KEYS:
            self.held.discard(ATARI_KEYS[name])

    def action_for(self, tokens: set[str]) -> int:
        for size in range(len(tokens), 0, -1):
            for subset in itertools.combinations(sorted(tokens, key=_TOKEN_ORDER.index), size):
                name = compose_action_name(set(subset))
                if name in self.meanings:
                    return self.meanings.index(name)
        return self.meanings.index("NOOP") if "NOOP" in self.meanings else 0

    def action(self) -> int:
        return self.action_for(self.held)

    def release_all(self) -> None:
        self.held.clear()

    def help_lines(self) -> list[str]:
        keys = {"UP": "W", "DOWN": "S", "LEFT": "A", "RIGHT": "D", "FIRE": "Space"}
        lines = []
        for i, name in enumerate(self.meanings):
            combo = " + ".join(keys[t] for t in _TOKEN_ORDER if t in name) if name != "NOOP" else "(no key)"
            lines.append(f"  {i:2d} {name:14s} {combo}")
        return lines


CSGO_KEYS = {"w": "w", "a": "a", "s": "s", "d": "d", "space": "space", "left ctrl": "ctrl", "left shift": "shift",
             "1": "1", "2": "2", "3": "3", "r": "r"}
CSGO_ARROWS = {"left": ("x", -csgo.ARROW_MOUSE_X), "right": ("x", csgo.ARROW_MOUSE_X),
               "up": ("y", -csgo.ARROW_MOUSE_Y), "down": ("y", csgo.ARROW_MOUSE_Y)}


class CSGOControls(Controls):
    """Held keys (in press order), held mouse buttons, and the last mouse motion since the previous action."""

    def __init__(self, mouse_multiplier: float = 10.0) -> None:
        self.mouse_multiplier = mouse_multiplier
        self.pressed: list[str] = []
        self.arrows: list[str] = []
        self.l_click = self.r_click = False
        self.last_rel = (0, 0)

    def key_down(self, name: str) -> None:
        if name in CSGO_KEYS and CSGO_KEYS[name] not in self.pressed:
            self.pressed.append(CSGO_KEYS[name])
        elif name in CSGO_ARROWS and name not in self.arrows:
            self.arrows.append(name)

    def key_up(self, name: str) -> None:
        if name in CSGO_KEYS and CSGO_KEYS[name] in self.pressed:
            self.pressed.remove(CSGO_KEYS[name])
        elif name in self.arrows:
            self.arrows.remove(name)

    def mouse_button(self, button: int, down: bool) -> None:
        if button == 1:
            self.l_click = down
        elif button == 3:
            self.r_click = down

    def mouse_motion(self, dx: int, dy: int) -> None:
        self.last_rel = (dx, dy)  # the official app uses the frame's last motion event, not the sum

    def release_all(self) -> None:
        self.pressed.clear()
        self.arrows.clear()
        self.l_click = self.r_click = False
        self.last_rel = (0, 0)

    def current(self) -> csgo.CSGOAction:
        """The action for this frame; consumes the mouse motion."""
        mouse = {"x": self.last_rel[0] * self.mouse_multiplier, "y": self.last_rel[1] * self.mouse_multiplier}
        self.last_rel = (0, 0)
        seen: set[str] = set()
        for key in self.arrows:  # arrows override the mouse; the earlier-pressed of two opposite arrows wins
            axis, delta = CSGO_ARROWS[key]
            if axis not in seen:
                mouse[axis] = delta
                seen.add(axis)
        keys = csgo.resolve_forbidden(self.pressed)
        return csgo.CSGOAction(keys=tuple(k for k in csgo.KEYS if k in keys), l_click=self.l_click,
                               r_click=self.r_click, mouse_x=csgo.nearest_bin(mouse["x"], csgo.MOUSE_X_BINS),
                               mouse_y=csgo.nearest_bin(mouse["y"], csgo.MOUSE_Y_BINS))

    def action(self) -> np.ndarray:
        return csgo.encode_action(self.current())

    def help_lines(self) -> list[str]:
        return ["  W/A/S/D move, Space jump, Ctrl crouch, Shift walk, 1/2/3 weapons, R reload",
                "  left/right click fire/aim, mouse (or arrows) look"]


def default_keymap(num_actions: int) -> dict[str, object]:
    """For non-Atari games: left arrow = action 0, right arrow = the last action, digits 1-9 = actions 0-8; with no
    key held the action is 0, or 1 for three-action games whose middle action does nothing (MountainCar, Acrobot)."""
    keys: dict[str, int] = {str(i + 1): i for i in range(min(9, num_actions))}
    keys["left"] = 0
    keys["right"] = num_actions - 1
    return {"keys": keys, "default": 1 if num_actions == 3 else 0}


MOUSE_BUTTON_NAMES = {1: "mouse left", 2: "mouse middle", 3: "mouse right"}  # key-map names of the buttons


def canonical_key_name(name: str) -> str:
    """The name pygame gives the key ("Left" and "left" are one key), or a mouse button's key-map name."""
    if name in MOUSE_BUTTON_NAMES.values():
        return name
    init_windowless_display()  # key names resolve through SDL's video subsystem
    try:
        return pygame.key.name(pygame.key.key_code(name))
    except ValueError:
        raise UserError(f"key map: unknown key name {name!r} (use pygame names such as 'left', 'space', 'a', "
                        "'left ctrl', or 'mouse left' / 'mouse right')") from None


def split_combination(keys: str) -> list[str]:
    """"w+space" -> ["w", "space"]; a lone "+" is the plus key."""
    parts = keys.split("+")
    return [keys] if not all(parts) else parts


class KeyMap:
    """A key map {"keys": {KEYS: action}, "default": action}: KEYS is a key name or a combination ("w+space").
    Of the entries whose keys are all held, the one with the most keys wins, and among those the one pressed last;
    with nothing held the action is `default`."""

    def __init__(self, keymap: dict, num_actions: int) -> None:
        self.default = int(keymap.get("default", 0))
        if not 0 <= self.default < num_actions:
            raise UserError(f"key map: default action {self.default} is outside 0..{num_actions - 1}")
        self.entries: list[tuple[tuple[str, ...], int]] = []
        for keys, action in keymap.get("keys", {}).items():
            combo = tuple(canonical_key_name(k) for k in split_combination(str(keys)))
            if not 0 <= int(action) < num_actions:
                raise UserError(f"key map: action {action} for {keys!r} is outside 0..{num_actions - 1}")
            self.entries.append((combo, int(action)))
        self.keys = {k for combo, _ in self.entries for k in combo}

    def action_for(self, held: list[str]) -> int:
        """`held`: the keys down, in the order they were pressed (oldest first)."""
        order = {name: i for i, name in enumerate(held)}
        best: tuple[int, int] | None = None
        action = self.default
        for combo, entry_action in self.entries:
            if all(k in order for k in combo):
                rank = (len(combo), max(order[k] for k in combo))
                if best is None or rank > best:
                    best, action = rank, entry_action
        return action

    def help_lines(self) -> list[str]:
        return [f"  {' + '.join(combo):10s} action {action}" for combo, action in self.entries] + [
            f"  (no key)   action {self.default}"]


class KeymapControls(Controls):
    """Keys and mouse buttons through a `KeyMap` (custom engines: recorded or captured games)."""

    def __init__(self, keymap: dict, num_actions: int) -> None:
        self.keymap = KeyMap(keymap, num_actions)
        self.held: list[str] = []

    def key_down(self, name: str) -> None:
        if name in self.keymap.keys and name not in self.held:
            self.held.append(name)

    def key_up(self, name: str) -> None:
        if name in self.held:
            self.held.remove(name)

    def mouse_button(self, button: int, down: bool) -> None:
        name = MOUSE_BUTTON_NAMES.get(button)
        if name is not None:
            (self.key_down if down else self.key_up)(name)

    def action(self) -> int:
        return self.keymap.action_for(self.held)

    def release_all(self) -> None:
        self.held.clear()

    def help_lines(self) -> list[str]:
        return self.keymap.help_lines()


def controls_for(config: WeightsConfig, mouse_multiplier: float = 10.0) -> Controls:
    """The controls of an engine: mouse + keys (CS:GO), the game's ALE actions from W/A/S/D + Space (Atari, and
    recorded games with ALE action names), else its key map (or the default one)."""
    if config.game_kind.mouse:
        return CSGOControls(mouse_multiplier)
    if config.game_kind.real_game or (not config.keymap and "NOOP" in config.action_names):
        return AtariControls(config.action_names)
    return KeymapControls(config.keymap or default_keymap(config.num_actions), config.num_actions)


def read_action_file(path: Path, num_actions: int, multi_hot: bool = False) -> list:
    """Actions from a .npy file or a text file (`#` starts a comment line): one integer in 0..num_actions-1 per
    line, or for multi-hot engines one row of num_actions 0/1 values (CS:GO: 51, comma- or space-separated)."""
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            rows = [line.strip() for line in path.read_text().splitlines() if line.strip()
                    and not line.startswith("#")]
            data = np.array([[float(v) for v in row.replace(",", " ").split()] for row in rows])
    except (ValueError, OSError) as e:
        raise UserError(f"action file {str(path)!r} is unreadable ({e}): see `diamond-play atari --help`") from None
    if multi_hot:
        if data.ndim != 2 or data.shape[1] != num_actions or not np.isin(data, (0, 1)).all():
            raise UserError(f"action file {str(path)!r} must hold rows of {num_actions} 0/1 values, got shape "
                            f"{data.shape}")
        return [row.astype(np.float32) for row in data]
    data = data.reshape(-1)
    if len(data) == 0 or data.min() < 0 or data.max() >= num_actions or not np.all(data == data.astype(int)):
        raise UserError(f"action file {str(path)!r} must hold integers in 0..{num_actions - 1}")
    return [int(a) for a in data]
