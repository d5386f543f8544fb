"""The keyboard and mouse while capturing: the X server's RECORD extension on Linux, pynput's listeners (hooks,
event taps) on Windows and macOS, log every press, release, click and move with the time it arrived;
`EventLog.interval` then says, for a frame's time span, which keys and buttons were down at any moment of it and how
far the pointer moved. Frames and input are matched by these times, not by the order they reach the capture loop."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diamond_play.errors import UserError
from diamond_play.play.controls import MOUSE_BUTTON_NAMES

# pynput's special keys by the name pygame gives them (the key-map names used everywhere else).
PYNPUT_KEY_NAMES = {
    "alt": "left alt", "alt_l": "left alt", "alt_r": "right alt", "alt_gr": "right alt",
    "backspace": "backspace", "caps_lock": "caps lock", "cmd": "left meta", "cmd_l": "left meta",
    "cmd_r": "right meta", "ctrl": "left ctrl", "ctrl_l": "left ctrl", "ctrl_r": "right ctrl", "delete": "delete",
    "down": "down", "end": "end", "enter": "return", "esc": "escape", "home": "home", "insert": "insert",
    "left": "left", "menu": "menu", "num_lock": "numlock", "page_down": "page down", "page_up": "page up",
    "pause": "pause", "print_screen": "print screen", "right": "right", "scroll_lock": "scroll lock",
    "shift": "left shift", "shift_l": "left shift", "shift_r": "right shift", "space": "space", "tab": "tab",
    "up": "up", **{f"f{i}": f"f{i}" for i in range(1, 21)},
}
PYNPUT_BUTTONS = {"left": 1, "middle": 2, "right": 3}


def pynput_key_name(key) -> str | None:
    """A pynput key as pygame names it ("w", "space", "left ctrl"); None for keys without a name."""
    name = getattr(key, "name", None)
    if name is not None:
        return PYNPUT_KEY_NAMES.get(name)
    char = getattr(key, "char", None)
    return char.lower() if char else None


@dataclass
class Interval:
    """The input of one frame's time span."""

    down: list[str]
    """Keys and mouse buttons ("mouse left") down at any moment of it, in the order they were last pressed."""
    dx: float = 0.0
    dy: float = 0.0
    events: int = 0


class EventLog:
    """Timestamped input events (from any thread), consumed span by span."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str | tuple[float, float], bool]] = []  # (time, kind, what, down)
        self.held: dict[str, float] = {}  # down now: name -> when pressed
        self.pointer: tuple[float, float] | None = None
        self.last_event = time.monotonic()
        self.error: BaseException | None = None  # the listener stopped on this

    def add(self, t: float, kind: str, what: str | tuple[float, float], down: bool = True) -> None:
        """kind "key" (a key or mouse button name, pressed or released) or "move" (the pointer's new position)."""
        with self.lock:
            self.events.append((t, kind, what, down))
            self.last_event = max(self.last_event, t)

    def idle_s(self) -> float:
        with self.lock:
            return time.monotonic() - self.last_event

    def interval(self, start: float, end: float) -> Interval:
        """The input in [start, end): events before `start` only update what is held (call with increasing,
        adjoining spans)."""
        with self.lock:
            due = sorted((e for e in self.events if e[0] < end), key=lambda e: e[0])
            self.events = [e for e in self.events if e[0] >= end]
        down = dict(self.held)  # held when the span began
        dx = dy = 0.0
        count = 0
        for t, kind, what, is_down in due:
            inside = t >= start
            count += inside
            if kind == "move":
                assert isinstance(what, tuple)
                if self.pointer is not None and inside:
                    dx, dy = dx + what[0] - self.pointer[0], dy + what[1] - self.pointer[1]
                self.pointer = what
                continue
            assert isinstance(what, str)
            if is_down:
                if what not in self.held:
                    self.held[what] = t
                if inside or what not in down:
                    down[what] = self.held[what]
            else:
                self.held.pop(what, None)
                if not inside:
                    down.pop(what, None)  # released before the span began
        return Interval(sorted(down, key=down.__getitem__), dx, dy, count)


# X keysym names (python-xlib's XK) by the name pygame gives the key.
X11_KEY_NAMES = {
    "Alt_L": "left alt", "Alt_R": "right alt", "BackSpace": "backspace", "Caps_Lock": "caps lock",
    "Control_L": "left ctrl", "Control_R": "right ctrl", "Delete": "delete", "Down": "down", "End": "end",
    "Escape": "escape", "Home": "home", "Insert": "insert", "Left": "left", "Menu": "menu", "Next": "page down",
    "Num_Lock": "numlock", "Pause": "pause", "Print": "print screen", "Prior": "page up", "Return": "return",
    "Right": "right", "Scroll_Lock": "scroll lock", "Shift_L": "left shift", "Shift_R": "right shift",
    "Super_L": "left meta", "Super_R": "right meta", "Tab": "tab", "Up": "up", "space": "space",
    "minus": "-", "equal": "=", "comma": ",", "period": ".", "slash": "/", "semicolon": ";", "apostrophe": "'",
    "bracketleft": "[", "bracketright": "]", "backslash": "\\", "grave": "`",
    **{f"F{i}": f"f{i}" for i in range(1, 21)},
}
X11_BUTTONS = {1: 1, 2: 2, 3: 3}  # 4-7 are the wheel


class X11Input(EventLog):
    """Linux: the X server's RECORD extension, which sees every key, button and pointer motion the server handles
    (real devices and XTEST alike), on a thread of its own."""

    def __init__(self, mouse: bool, on_key: Callable[[str, bool], None] | None = None) -> None:
        super().__init__()
        from Xlib import XK, X, display
        from Xlib.error import DisplayError
        from Xlib.ext import record
        from Xlib.protocol import rq

        self.X, self.record, self.rq, self.on_key, self.mouse = X, record, rq, on_key, mouse
        try:
            self.control, self.data = display.Display(), display.Display()
        except DisplayError as e:
            raise UserError(f"cannot open the X display to read the keyboard ({e}): run on the desktop or Xvfb") \
                from None
        if not self.control.has_extension("RECORD"):
            raise UserError("this X server has no RECORD extension, so capture cannot see the keyboard: start it "
                            "with +extension RECORD (Xvfb and Xorg have it by default)")
        self.keysym_names = {getattr(XK, n): n[3:] for n in dir(XK) if n.startswith("XK_")}
        if mouse:
            pointer = self.control.screen().root.query_pointer()
            self.pointer = (float(pointer.root_x), float(pointer.root_y))
        last = X.MotionNotify if mouse else X.KeyRelease
        self.context = self.data.record_create_context(0, [record.AllClients], [{
            "core_requests": (0, 0), "core_replies": (0, 0), "ext_requests": (0, 0, 0, 0),
            "ext_replies": (0, 0, 0, 0), "delivered_events": (0, 0), "device_events": (X.KeyPress, last),
            "errors": (0, 0), "client_started": False, "client_died": False}])
        self.data.sync()
        self.thread = threading.Thread(target=self._listen, name="diamond-play X11 input", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        try:
            self.data.record_enable_context(self.context, self._reply)  # returns when the context is disabled
        except Exception as e:  # reported by the capture loop, which stops rather than record actions blind
            self.error = e

    def key_name(self, keycode: int) -> str | None:
        name = self.keysym_names.get(self.control.keycode_to_keysym(keycode, 0))
        if name is None:
            return None
        return X11_KEY_NAMES.get(name, name.lower() if len(name) == 1 else None)

    def _reply(self, reply) -> None:
        if reply.category != self.record.FromServer or reply.client_swapped or not reply.data:
            return
        now, X = time.monotonic(), self.X
        data = reply.data
        while data:
            event, data = self.rq.EventField(None).parse_binary_value(data, self.data.display, None, None)
            if event.type in (X.KeyPress, X.KeyRelease):
                name = self.key_name(event.detail)
                if name is not None:
                    down = event.type == X.KeyPress
                    self.add(now, "key", name, down)
                    if self.on_key is not None:
                        self.on_key(name, down)
            elif event.type in (X.ButtonPress, X.ButtonRelease) and event.detail in X11_BUTTONS:
                self.add(now, "key", MOUSE_BUTTON_NAMES[X11_BUTTONS[event.detail]], event.type == X.ButtonPress)
            elif event.type == X.MotionNotify:
                self.add(now, "move", (float(event.root_x), float(event.root_y)))

    def close(self) -> None:
        self.control.record_disable_context(self.context)
        self.control.flush()
        self.thread.join(5)
        self.control.record_free_context(self.context)
        self.control.close()
        self.data.close()


class PynputInput(EventLog):
    """macOS and Windows (documented, not tested here): pynput's keyboard and mouse listener threads."""

    def __init__(self, mouse: bool, on_key: Callable[[str, bool], None] | None = None) -> None:
        super().__init__()
        try:
            from pynput import keyboard
            from pynput import mouse as pynput_mouse
        except ImportError as e:
            raise UserError(f"cannot read the keyboard and mouse ({e}): pip install pynput; on macOS the terminal "
                            "needs Accessibility and Input Monitoring permission") from None
        self.on_key = on_key
        self.listeners = [keyboard.Listener(on_press=lambda k: self._key(k, True),
                                            on_release=lambda k: self._key(k, False))]
        if mouse:
            x, y = pynput_mouse.Controller().position  # motion is counted from here
            self.pointer = (float(x), float(y))
            self.listeners.append(pynput_mouse.Listener(on_move=self._move, on_click=self._click))
        for listener in self.listeners:
            listener.start()
        for listener in self.listeners:
            listener.wait()
            if not listener.is_alive():
                raise UserError("cannot listen to the keyboard and mouse: on macOS allow Input Monitoring for this "
                                "terminal")

    def _key(self, key, down: bool) -> None:
        name = pynput_key_name(key)
        if name is None:
            return
        self.add(time.monotonic(), "key", name, down)
        if self.on_key is not None:
            self.on_key(name, down)

    def _click(self, x: float, y: float, button, down: bool) -> None:
        number = PYNPUT_BUTTONS.get(getattr(button, "name", ""))
        if number is not None:
            self.add(time.monotonic(), "key", MOUSE_BUTTON_NAMES[number], down)

    def _move(self, x: float, y: float) -> None:
        self.add(time.monotonic(), "move", (float(x), float(y)))

    def close(self) -> None:
        for listener in self.listeners:
            listener.stop()


InputLog = X11Input | PynputInput


def open_input(mouse: bool, on_key: Callable[[str, bool], None] | None = None) -> InputLog:
    """The keyboard (and mouse) listener of this platform; `on_key(name, down)` runs on its thread (hotkeys)."""
    return X11Input(mouse, on_key) if sys.platform.startswith("linux") else PynputInput(mouse, on_key)
