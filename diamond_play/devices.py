"""Which torch device a command runs on."""

from __future__ import annotations

import os

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


def cpu_isa() -> str:
    """The vector ISA the CPU kernels use: the hardware's best level (AMX, AVX-512 bf16, AVX-512, AVX2), ATen's kernel
    capability (ATEN_CPU_CAPABILITY can lower it) and oneDNN's cap when ONEDNN_MAX_CPU_ISA sets one."""
    cpu = torch.cpu
    if cpu._is_amx_tile_supported():
        level = "AMX"
    elif cpu._is_avx512_bf16_supported():
        level = "AVX-512 bf16"
    elif cpu._is_avx512_supported():
        level = "AVX-512"
    elif cpu._is_avx2_supported():
        level = "AVX2"
    else:
        level = "no AVX2"
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"{level}; ATen {torch.backends.cpu.get_cpu_capability()}" + (f"; oneDNN <= {onednn}" if onednn else "")
