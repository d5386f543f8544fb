"""Loading a flat state dict into an Agent with a one-line explanation of any mismatch."""

from __future__ import annotations

from torch import Tensor

from diamond_play.errors import UserError
from diamond_play.models.agent import Agent


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_state_dict_checked(agent: Agent, state_dict: dict[str, Tensor], source: str) -> None:
    """Strict load: missing keys, unexpected keys and shape mismatches become a UserError naming a few of them."""
    expected = agent.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                   if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing tensors {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_few(unexpected)}")
    if wrong_shape:
        problems.append(f"shapes that do not fit the config (file vs config) {_few(wrong_shape)}")
    if problems:
        raise UserError(f"{source} does not fit its model config: {'; '.join(problems)}. Pass the config the "
                        "checkpoint was trained with (--config), or omit it to infer the architecture from the file")
    agent.load_state_dict({k: v for k, v in state_dict.items()}, strict=True)
