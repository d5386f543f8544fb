"""Networks compiled ahead of time for play, kept on disk so that the next start loads them in milliseconds.

`torch.compile` in the playing process re-traced and re-generated the code on every start (a minute on a 2-core
machine), and its tracing thread held the GIL so tightly that eager play beside it fell below 1 fps. Here the
inductor kernels are built once with AOTInductor (`torch.export` + `aoti_compile_and_package`) into a `.pt2`
package, keyed by everything that decides them, and loaded from disk afterwards. The weights are constants of the
package (on CPUs frozen: folded and prepacked for oneDNN); GPU builds (opt-in, the execution mode's
`gpu_compiler="aoti"`) are loaded single-threaded, so that a whole-frame CUDA graph can capture them.

The key covers the torch version and the device (the CPU's vector ISA with any oneDNN cap, or GPU name, compute
capability and CUDA version), the model code (`models/`, `config.py`, the inference rewrites in
`accel/inference.py`), the model's config, the bytes of every weight and buffer (the package holds them), the
autocast state of the first call and the shapes, strides and dtypes of its inputs. A call with another input
layout builds (or loads) its own package.

The export (seconds) runs in the calling process; inductor's code generation and C++ compilation (a minute or
more) run in a child process (`python -m diamond_play.accel.compile_cache PROGRAM PACKAGE`), so a build in the
background leaves the player's thread its share of the GIL and can be cancelled when play ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from diamond_play.devices import cpu_isa
from diamond_play.weights.hub import diamond_play_home

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # diamond_play/
# Least recently used packages beyond this total are deleted (each holds its weights: about 10 MB for an Atari
# engine, hundreds of MB for CS:GO's); the newest always stays.
CACHE_BYTES = int(float(os.environ.get("DIAMOND_PLAY_COMPILE_CACHE_GB", "4")) * 2**30)


def compile_cache_dir() -> Path:
    """$DIAMOND_PLAY_HOME/compiled (default ~/.cache/diamond_play/compiled)."""
    return diamond_play_home() / "compiled"


@functools.cache
def _code_digest() -> str:
    """The model code's sources (read once: they do not change under a running process)."""
    digest = hashlib.sha256()
    sources = [PACKAGE_DIR / "config.py", PACKAGE_DIR / "accel" / "inference.py", Path(__file__)]
    for path in sorted((PACKAGE_DIR / "models").glob("*.py")) + sources:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _tensor_layout(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)}:{t.stride()}:{t.dtype}:{t.device.type}"


def input_signature(args: tuple[Any, ...]) -> str:
    """Shapes, strides and dtypes of the tensors in `args` and the structure around them (None included)."""
    leaves, spec = tree_flatten(args)
    parts = [_tensor_layout(x) if isinstance(x, torch.Tensor) else repr(x) for x in leaves]
    return f"{spec}|{';'.join(parts)}"


def weights_digest(module: nn.Module) -> str:
    """Every parameter and buffer, non-persistent ones included (the inference rewrites' fused weights)."""
    digest = hashlib.sha256()
    for name, t in (*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)):
        digest.update(f"{name}:{_tensor_layout(t)}".encode())
        digest.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_weight_groups():
    """torch warns when it saves or loads weights that share storage (the fused conditioning buffers) that they
    may not be on the CPU: here they always are."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        yield


def device_key(device: torch.device) -> str:
    """What decides the generated kernels besides the model: the CPU's vector ISA or the GPU and its toolkit."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}|{torch.cuda.get_device_capability(device)}|{torch.version.cuda}"
    return cpu_isa()  # the hardware level picks inductor's vector code (AMX or AVX-512), ATen's capability lowers it


def load_package(path: Path, device: torch.device) -> Callable[..., Any]:
    # GPU runners single-threaded: the default runner's threads break CUDA graph capture.
    with _quiet_weight_groups():
        if device.type == "cuda":
            return torch._inductor.aoti_load_package(str(path), run_single_threaded=True,
                                                     device_index=device.index or 0)
        return torch._inductor.aoti_load_package(str(path))


class CompileCancelled(RuntimeError):
    pass


def _autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type, dtype) if dtype is not None else contextlib.nullcontext()


def module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


class _BoundCall(nn.Module):
    """`owner.method(*args)` as a module's forward, under the autocast state it was first called with (export
    records the casts only when autocast is entered inside the traced code)."""

    def __init__(self, owner: nn.Module, method: str, device_type: str, autocast_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.owner = owner
        self.method = method
        self.device_type = device_type
        self.autocast_dtype = autocast_dtype

    def forward(self, *args: Any) -> Any:
        with _autocast(self.device_type, self.autocast_dtype):
            return getattr(self.owner, self.method)(*args)


def _prune(cache_dir: Path, budget: int = CACHE_BYTES) -> None:
    packages = sorted(cache_dir.glob("*.pt2"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for i, package in enumerate(packages):
        total += package.stat().st_size
        if i > 0 and total > budget:
            package.unlink(missing_ok=True)
    for leftover in cache_dir.glob(".*-*"):  # the work folders of builds killed with their process
        if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 24 * 3600:
            shutil.rmtree(leftover, ignore_errors=True)


class AOTCompiled:
    """`owner.method` compiled by AOTInductor for inference on the owner's device, cached on disk.

    The first call with a new input layout loads the matching package, or exports and compiles one (about a
    minute for the Atari U-Net on 2 cores) and writes it atomically; later calls run the loaded kernels."""

    def __init__(self, owner: nn.Module, method: str, cache_dir: Path | None = None) -> None:
        self.owner = owner
        self.method = method
        self.device = module_device(owner)
        self.cache_dir = cache_dir
        self.runners: dict[str, Callable[..., Any]] = {}
        self._weights_digest: str | None = None
        self.built: list[Path] = []  # packages this object compiled (not loaded from the cache)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Stop a build in progress (from another thread); the call waiting on it raises CompileCancelled."""
        with self._lock:
            self._cancelled = True
            if self._process is not None:
                self._process.kill()

    def __call__(self, *args: Any) -> Any:
        device_type = self.device.type
        autocast_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        signature = f"{autocast_dtype}|{input_signature(args)}"
        runner = self.runners.get(signature)
        if runner is None:
            runner = self.runners[signature] = self._load_or_build(args, autocast_dtype, signature)
        return runner(*args)

    def package_path(self, signature: str) -> Path:
        if self._weights_digest is None:
            self._weights_digest = weights_digest(self.owner)
        key = "\n".join((torch.__version__, device_key(self.device), _code_digest(),
                         type(self.owner).__qualname__, repr(getattr(self.owner, "cfg", None)), self.method,
                         self._weights_digest, signature))
        name = f"{type(self.owner).__name__.lower()}-{self.method}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
        return (self.cache_dir or compile_cache_dir()) / f"{name}.pt2"

    def _load_or_build(self, args: tuple[Any, ...], autocast_dtype: torch.dtype | None,
                       signature: str) -> Callable[..., Any]:
        path = self.package_path(signature)
        if path.exists():
            try:
                runner = load_package(path, self.device)
                os.utime(path)  # recently used: kept by _prune
                return runner
            except Exception:  # noqa: BLE001 - a truncated or foreign file: build it again
                path.unlink(missing_ok=True)
        self._build(args, autocast_dtype, path)
        return load_package(path, self.device)

    def _build(self, args: tuple[Any, ...], autocast_dtype: torch.dtype | None, path: Path) -> None:
        if self._cancelled:
            raise CompileCancelled("compilation cancelled")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Strict (dynamo) tracing: non-strict export patches torch functions process-wide, which broke the eager
        # steps that play runs on another thread meanwhile. The outer autocast is needed for the trace to see
        # the casts the inner one records.
        device_type = self.device.type
        with torch.no_grad(), _autocast(device_type, autocast_dtype):
            program = torch.export.export(_BoundCall(self.owner, self.method, device_type, autocast_dtype).eval(),
                                          tuple(args), strict=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as tmp:
            program_file, package_file = Path(tmp) / "program.pt2", Path(tmp) / "package.pt2"
            with _quiet_weight_groups():
                torch.export.save(program, program_file)
            with self._lock:
                if self._cancelled:
                    raise CompileCancelled("compilation cancelled")
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "diamond_play.accel.compile_cache", str(program_file), str(package_file)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _, err = self._process.communicate()
            returncode, self._process = self._process.returncode, None
            if self._cancelled:
                raise CompileCancelled("compilation cancelled")
            if returncode != 0 or not package_file.exists():
                lines = [line for line in err.splitlines() if line.strip()]
                raise RuntimeError(lines[-1] if lines else f"the compiler process exited with {returncode}")
            os.replace(package_file, path)  # atomic: a killed build leaves no package under the real name
        self.built.append(path)
        _prune(path.parent)


def compile_exported_program(program_file: Path, package_file: Path) -> None:
    """The child process's work: inductor over an exported program. CPU builds freeze the weights (inductor folds
    them and prepacks the convolutions' weights for oneDNN once; unfrozen, each convolution reorders its weights on
    every call, which for CS:GO's 330M-parameter dynamics model cost more than the convolutions). Inductor freezes
    only under no_grad. GPU builds keep torch.compile's defaults."""
    program = torch.export.load(program_file)
    on_cpu = all(t.device.type == "cpu" for t in program.state_dict.values())
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(program, package_path=str(package_file),
                                                 inductor_configs={"freezing": on_cpu})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m diamond_play.accel.compile_cache PROGRAM.pt2 PACKAGE.pt2")
    compile_exported_program(Path(sys.argv[1]), Path(sys.argv[2]))
