"""CS:GO Dust II action space: the 51-dim multi-hot vector of the Pearce & Zhu dataset (REFERENCE.md §7)."""

from __future__ import annotations

KEYS = ("w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r")
CLICKS = ("l_click", "r_click")
MOUSE_X_BINS = (-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, 0, 2, 4, 10, 20, 30, 60, 100, 200, 300,
                500, 1000)
MOUSE_Y_BINS = (-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200)

MOUSE_X_OFFSET = len(KEYS) + len(CLICKS)  # 13
MOUSE_Y_OFFSET = MOUSE_X_OFFSET + len(MOUSE_X_BINS)  # 36
NUM_ACTIONS = MOUSE_Y_OFFSET + len(MOUSE_Y_BINS)  # 51

ACTION_NAMES = (
    list(KEYS)
    + list(CLICKS)
    + [f"mouse_x_{v}" for v in MOUSE_X_BINS]
    + [f"mouse_y_{v}" for v in MOUSE_Y_BINS]
)
assert len(ACTION_NAMES) == NUM_ACTIONS == 51
