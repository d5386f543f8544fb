"""What `capture` grabs: a window found by its title, a fixed region, or a whole monitor, read with mss.

Windows are found through the X server on Linux (python-xlib: every viewable window with a title, with or without
a window manager) and through pywinctl on macOS and Windows. A window is looked up again before every grab, so it
may move; when it closes the capture ends its episode (`WindowClosed`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from diamond_play.errors import UserError


@dataclass(frozen=True)
class Rect:
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class WindowInfo:
    title: str
    rect: Rect
    handle: Any
    """The platform's window: an X window id, or a pywinctl window."""


class WindowClosed(Exception):
    """The captured window is gone."""


class WindowHidden(Exception):
    """The captured window is minimised or unmapped for now."""


def check_display() -> None:
    """Fail early, with what to do, where no program may read the screen or the input."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        if os.environ.get("WAYLAND_DISPLAY"):
            raise UserError("Wayland does not let one program read another's window or input: run the game under "
                            "XWayland (DISPLAY set) and capture it with --window or --region, or log in to an X11 "
                            "session")
        raise UserError("no display to capture (DISPLAY is not set): run on the desktop, or under Xvfb")


class X11Windows:
    """Viewable, titled windows of the X server, in root-window coordinates."""

    def __init__(self) -> None:
        from Xlib import X, display, error

        self.X, self.errors = X, (error.BadWindow, error.BadDrawable, error.BadMatch)
        self.display = display.Display()
        self.root = self.display.screen().root
        self.net_wm_name = self.display.intern_atom("_NET_WM_NAME")
        self.utf8 = self.display.intern_atom("UTF8_STRING")

    def title(self, window) -> str:
        prop = window.get_full_property(self.net_wm_name, self.utf8)
        if prop is not None and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
        return name.decode("latin-1") if isinstance(name, bytes) else (name or "")

    def rect(self, window) -> Rect:
        geometry = window.get_geometry()
        origin = window.translate_coords(self.root, 0, 0)
        return Rect(-origin.x, -origin.y, geometry.width, geometry.height)

    def all(self) -> list[WindowInfo]:
        found: list[WindowInfo] = []
        stack = list(self.root.query_tree().children)
        while stack:
            window = stack.pop()
            try:
                if window.get_attributes().map_state != self.X.IsViewable:
                    continue
                stack.extend(window.query_tree().children)
                title = self.title(window)
                if title:
                    found.append(WindowInfo(title, self.rect(window), window.id))
            except self.errors:
                continue  # closed while we looked
        return found

    def current(self, info: WindowInfo) -> Rect:
        window = self.display.create_resource_object("window", info.handle)
        try:
            if window.get_attributes().map_state != self.X.IsViewable:
                raise WindowHidden(info.title)
            return self.rect(window)
        except self.errors:
            raise WindowClosed(info.title) from None


class PyWinCtlWindows:
    """macOS and Windows (documented, not tested here): pywinctl's window list."""

    def __init__(self) -> None:
        try:
            import pywinctl
        except ImportError:
            raise UserError("window capture on this system needs pywinctl: pip install pywinctl (or capture with "
                            "--region or --screen)") from None
        self.pywinctl = pywinctl

    def all(self) -> list[WindowInfo]:
        out = []
        for window in self.pywinctl.getAllWindows():
            if window.title and window.isVisible:
                box = window.box
                out.append(WindowInfo(window.title, Rect(box.left, box.top, box.width, box.height), window))
        return out

    def current(self, info: WindowInfo) -> Rect:
        window = info.handle
        if not window.isAlive:
            raise WindowClosed(info.title)
        if not window.isVisible or window.isMinimized:
            raise WindowHidden(info.title)
        box = window.box
        return Rect(box.left, box.top, box.width, box.height)


def window_system() -> X11Windows | PyWinCtlWindows:
    check_display()
    return X11Windows() if sys.platform.startswith("linux") else PyWinCtlWindows()


def list_windows() -> list[WindowInfo]:
    """Titled windows, biggest first, one per title and rectangle (a window manager's frame may repeat a title)."""
    seen, out = set(), []
    for info in sorted(window_system().all(), key=lambda w: -w.rect.width * w.rect.height):
        if (info.title, info.rect) not in seen:
            seen.add((info.title, info.rect))
            out.append(info)
    return out


def find_window(title: str) -> WindowInfo:
    """The one window whose title contains `title` (case-insensitive; an exact match wins over partial ones)."""
    windows = list_windows()
    matches = [w for w in windows if w.title == title] or [w for w in windows if title.lower() in w.title.lower()]
    if not matches:
        raise UserError(f"no window's title contains {title!r}: `diamond-play capture --list-windows` shows them")
    if len({w.title for w in matches}) > 1 or len(matches) > 1:
        names = ", ".join(repr(w.title) for w in matches[:5])
        raise UserError(f"{len(matches)} windows match {title!r} ({names}): give more of the title")
    return matches[0]


class ScreenGrabber:
    """Grabs the target's pixels as RGB uint8 (H, W, 3): a window (followed as it moves), a region or a monitor."""

    def __init__(self, window: str | None = None, region: tuple[int, int, int, int] | None = None,
                 screen: int | None = None) -> None:
        import mss

        if sum(x is not None for x in (window, region, screen)) != 1:
            raise UserError("capture one thing: --window TITLE, --region X Y W H or --screen N")
        check_display()
        self.mss = mss.MSS()
        monitors = self.mss.monitors  # 0: all monitors together, 1..: each
        self.windows = None
        self.window: WindowInfo | None = None
        if window is not None:
            self.windows = window_system()
            self.window = find_window(window)
            self.rect = self.window.rect
        elif region is not None:
            left, top, width, height = region
            self.rect = Rect(left, top, width, height)
            whole = monitors[0]
            if width <= 0 or height <= 0 or left < whole["left"] or top < whole["top"] or \
                    left + width > whole["left"] + whole["width"] or top + height > whole["top"] + whole["height"]:
                raise UserError(f"--region {left} {top} {width} {height} is not inside the screen "
                                f"({whole['width']}x{whole['height']} at {whole['left']},{whole['top']})")
        else:
            assert screen is not None
            if not 1 <= screen < len(monitors):
                raise UserError(f"--screen {screen}: this desktop has monitors 1..{len(monitors) - 1}")
            m = monitors[screen]
            self.rect = Rect(m["left"], m["top"], m["width"], m["height"])
        self.name = self.window.title if self.window is not None else (
            f"region {self.rect.left},{self.rect.top} {self.rect.width}x{self.rect.height}")

    def grab(self) -> np.ndarray:
        """The target's pixels now; a part outside the screen (a window moved half off it) is black."""
        if self.window is not None and self.windows is not None:
            self.rect = self.windows.current(self.window)
        r, whole = self.rect, self.mss.monitors[0]
        left, top = max(r.left, whole["left"]), max(r.top, whole["top"])
        right = min(r.left + r.width, whole["left"] + whole["width"])
        bottom = min(r.top + r.height, whole["top"] + whole["height"])
        image = np.zeros((r.height, r.width, 3), dtype=np.uint8)
        if right > left and bottom > top:
            shot = np.asarray(self.mss.grab({"left": left, "top": top, "width": right - left,
                                             "height": bottom - top}))
            image[top - r.top:bottom - r.top, left - r.left:right - r.left] = shot[..., 2::-1]  # BGRA -> RGB
        return image

    def close(self) -> None:
        self.mss.close()
