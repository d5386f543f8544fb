"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from diamond_play.errors import UserError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """"auto": CUDA when torch sees a GPU, else the CPU. Under DDP (`local_rank`), "cuda" is the process's own GPU.
    A GPU asked for that this torch build cannot see is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but this torch build sees no GPU: use --device cpu, or install "
                        "a CUDA build of torch (see the README)")
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    return torch.device(name)
