"""A captured frame's input -> the action stored with it.

- A key map (`--keymap K.yaml`, the `record` format, combinations allowed: `w+space: 5`) gives discrete action ids
  exactly as `play` and `serve` will read the same keys (`play.controls.KeyMap`).
- `--keys w,a,s,d,space` makes every combination of those keys that is seen an action of its own, named after its
  keys ("w+space"; action 0 is no key): the key map is written as the combinations appear.
- `--mouse bins` stores CS:GO's 51-dim multi-hot action (its keys, clicks and binned mouse motion,
  `envs.csgo`), for the CS:GO recipe (`diamond-play train csgo`).
"""

from __future__ import annotations

import numpy as np

from diamond_play.capture.inputs import Interval
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.play.controls import CSGO_KEYS, KeyMap, canonical_key_name, split_combination

NO_KEY = "none"
CSGO_BUTTONS = {"mouse left": "l_click", "mouse right": "r_click"}


class KeymapActions:
    """A fixed key map."""

    def __init__(self, keymap: dict, num_actions: int | None = None) -> None:
        actions = {int(a) for a in keymap.get("keys", {}).values()} | {int(keymap.get("default", 0))}
        self.num_actions = num_actions or max(actions) + 1
        self.map = KeyMap(keymap, self.num_actions)
        self.keymap = keymap
        self.names = [f"action {i}" for i in range(self.num_actions)]
        for combo, action in self.map.entries:
            if self.names[action].startswith("action "):
                self.names[action] = "+".join(combo)
        self.names[self.map.default] = NO_KEY if self.names[self.map.default].startswith("action ") else \
            self.names[self.map.default]
        self.watched = set(self.map.keys)
        self.multi_hot = False

    def action(self, interval: Interval) -> int:
        return self.map.action_for([k for k in interval.down if k in self.watched])


class SeenCombinations:
    """Every combination of the watched keys that is seen becomes the next action id."""

    def __init__(self, keys: list[str], existing: dict | None = None) -> None:
        self.watched = [canonical_key_name(k) for k in keys]
        if len(set(self.watched)) != len(self.watched):
            raise UserError(f"--keys {','.join(keys)}: a key is listed twice")
        self.combos: dict[tuple[str, ...], int] = {(): 0}
        if existing:  # appending to a dataset captured with --keys before
            for name, action in existing.get("keys", {}).items():
                self.combos[tuple(canonical_key_name(k) for k in split_combination(name))] = int(action)
        self.multi_hot = False

    @property
    def num_actions(self) -> int:
        return len(self.combos)

    @property
    def names(self) -> list[str]:
        out = [NO_KEY] * len(self.combos)
        for combo, action in self.combos.items():
            if combo:
                out[action] = "+".join(combo)
        return out

    @property
    def keymap(self) -> dict:
        return {"keys": {"+".join(c): a for c, a in self.combos.items() if c}, "default": 0}

    def action(self, interval: Interval) -> int:
        combo = tuple(k for k in self.watched if k in interval.down)
        if combo not in self.combos:
            self.combos[combo] = len(self.combos)
        return self.combos[combo]


class CSGOActions:
    """CS:GO's multi-hot layout: W/A/S/D, Space, left Ctrl, left Shift, 1/2/3, R, both clicks, and the pointer's
    motion in the frame (screen pixels) in the dataset's bins."""

    def __init__(self, mouse_scale: float = 1.0) -> None:
        self.mouse_scale = mouse_scale
        self.watched = set(CSGO_KEYS) | set(CSGO_BUTTONS)
        self.num_actions = csgo.NUM_ACTIONS
        self.names = list(csgo.ACTION_NAMES)
        self.keymap: dict = {}
        self.multi_hot = True

    def action(self, interval: Interval) -> np.ndarray:
        pressed = [CSGO_KEYS[k] for k in interval.down if k in CSGO_KEYS]
        kept = csgo.resolve_forbidden(pressed)
        clicks = {CSGO_BUTTONS[b] for b in interval.down if b in CSGO_BUTTONS}
        action = csgo.CSGOAction(keys=tuple(k for k in csgo.KEYS if k in kept), l_click="l_click" in clicks,
                                 r_click="r_click" in clicks, mouse_x=round(interval.dx * self.mouse_scale),
                                 mouse_y=round(interval.dy * self.mouse_scale))
        return csgo.encode_action(action)


ActionSource = KeymapActions | SeenCombinations | CSGOActions
