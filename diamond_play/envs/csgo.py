"""CS:GO Dust II action space: the 51-dim multi-hot vector of the Pearce & Zhu dataset (11 keys, 2 mouse buttons,
23 mouse-x and 15 mouse-y bins, one bin set per axis)."""

from __future__ import annotations

import dataclasses

import numpy as np

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


# ---------------------------------------------------------------------------------------------------------------
# Encoding and decoding (shared by the play app, the data tools and training)

# Keys that cannot be held together (the dataset never has both); the one pressed earlier wins.
FORBIDDEN_PAIRS = (("w", "s"), ("a", "d"), ("1", "2"), ("1", "3"), ("2", "3"))
ARROW_MOUSE_X, ARROW_MOUSE_Y = 60, 50  # arrow keys stand in for the mouse with these deltas


@dataclasses.dataclass(frozen=True)
class CSGOAction:
    keys: tuple[str, ...] = ()  # subset of KEYS, in KEYS order
    l_click: bool = False
    r_click: bool = False
    mouse_x: int = 0  # a value of MOUSE_X_BINS
    mouse_y: int = 0  # a value of MOUSE_Y_BINS


def nearest_bin(value: float, bins: tuple[int, ...]) -> int:
    """Clip to the bin range and snap to the nearest bin value (ties go to the lower bin)."""
    value = min(max(value, bins[0]), bins[-1])
    return min(bins, key=lambda b: (abs(b - value), b))


def resolve_forbidden(pressed_in_order: list[str]) -> list[str]:
    """Drop keys that conflict with an earlier-pressed key, and keys that are not game keys."""
    kept: list[str] = []
    for key in pressed_in_order:
        if key not in KEYS or key in kept:
            continue
        if any((key, k) in FORBIDDEN_PAIRS or (k, key) in FORBIDDEN_PAIRS for k in kept):
            continue
        kept.append(key)
    return kept


def encode_action(action: CSGOAction) -> np.ndarray:
    """CSGOAction -> the dataset's 51-dim multi-hot float32 vector (exactly one mouse-x and one mouse-y bin)."""
    vec = np.zeros(NUM_ACTIONS, dtype=np.float32)
    for key in action.keys:
        vec[KEYS.index(key)] = 1
    vec[len(KEYS)] = float(action.l_click)
    vec[len(KEYS) + 1] = float(action.r_click)
    vec[MOUSE_X_OFFSET + MOUSE_X_BINS.index(nearest_bin(action.mouse_x, MOUSE_X_BINS))] = 1
    vec[MOUSE_Y_OFFSET + MOUSE_Y_BINS.index(nearest_bin(action.mouse_y, MOUSE_Y_BINS))] = 1
    return vec


def decode_action(vec: np.ndarray) -> CSGOAction:
    """51-dim vector -> CSGOAction. A vector with no mouse bin set decodes to 0 movement on that axis."""
    vec = np.asarray(vec)
    if vec.shape != (NUM_ACTIONS,):
        raise ValueError(f"a CS:GO action vector has {NUM_ACTIONS} entries, got shape {vec.shape}")
    keys = tuple(k for i, k in enumerate(KEYS) if vec[i] > 0.5)
    mx = vec[MOUSE_X_OFFSET:MOUSE_Y_OFFSET]
    my = vec[MOUSE_Y_OFFSET:]
    return CSGOAction(keys=keys, l_click=bool(vec[len(KEYS)] > 0.5), r_click=bool(vec[len(KEYS) + 1] > 0.5),
                      mouse_x=MOUSE_X_BINS[int(mx.argmax())] if mx.max() > 0.5 else 0,
                      mouse_y=MOUSE_Y_BINS[int(my.argmax())] if my.max() > 0.5 else 0)


def describe_action(action: CSGOAction) -> str:
    parts = [k.upper() for k in action.keys]
    parts += [name for name, on in (("LMB", action.l_click), ("RMB", action.r_click)) if on]
    if action.mouse_x or action.mouse_y:
        parts.append(f"mouse({action.mouse_x:+d},{action.mouse_y:+d})")
    return " ".join(parts) or "-"
