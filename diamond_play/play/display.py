"""Starting SDL's video subsystem: a real window only where there is a display, a silent dummy one otherwise.

Without a display SDL falls back to an offscreen driver, so a window would open nowhere and keyboard play would
record nothing but the default action; `init_window_display` refuses that in one line before anything is written.
"""

from __future__ import annotations

import os
import sys

import pygame

from diamond_play.errors import UserError

NO_DISPLAY = ("no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set): play without a window "
              "with --headless --frames N --actions random|policy, or start a virtual display first (e.g. "
              "`xvfb-run -a diamond-play ...`, after `apt-get install xvfb`)")
WINDOWLESS_DRIVERS = ("offscreen", "dummy")


def has_display() -> bool:
    """Whether a window would be visible: always on macOS and Windows; on Linux/BSD an X11 or Wayland display."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def require_display() -> None:
    """A UserError unless a window can be shown; a driver named in SDL_VIDEODRIVER is taken as asked (the tests
    use `dummy`). Cheap: callers check before loading or writing anything."""
    if not os.environ.get("SDL_VIDEODRIVER") and not has_display():
        raise UserError(NO_DISPLAY)


def init_window_display() -> None:
    """Initialise SDL for a window (see `require_display`); SDL settling on a windowless driver is a UserError too."""
    require_display()
    pygame.display.init()
    if not os.environ.get("SDL_VIDEODRIVER") and pygame.display.get_driver() in WINDOWLESS_DRIVERS:
        pygame.display.quit()
        raise UserError(NO_DISPLAY)
    pygame.font.init()


def init_windowless_display() -> None:
    """Initialise SDL for drawing without a window (headless runs, key names): the dummy driver, which needs no
    display and prints nothing."""
    if not pygame.display.get_init():
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        pygame.display.init()
    pygame.font.init()
