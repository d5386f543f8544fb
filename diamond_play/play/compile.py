"""Compiling a play engine's networks while it runs: play starts eagerly at once and speeds up when the compiled
networks are swapped in between two steps.

Used for engines made with `defer_compile=True`: in the background (`start`, the window) or in the calling thread
before the first step (`run`: headless runs and the gymnasium env, which then stay in one mode from their first
frame, so a seed reproduces them exactly).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence

import torch

from diamond_play.accel.compile_cache import AOTCompiled, CompileCancelled
from diamond_play.accel.frames import GraphedFrame
from diamond_play.accel.networks import (
    AcceleratedDenoiser,
    CompileStatus,
    RewEndStep,
    compile_denoise,
    compile_rew_end_step,
)
from diamond_play.imagine import predict_low_res, upsample_frame
from diamond_play.models.denoiser import make_randn
from diamond_play.threads import as_helper_thread
from diamond_play.world_model import WorldModel


@torch.no_grad()
def warm_up(world_model: WorldModel, dynamics: AcceleratedDenoiser, upsampler: AcceleratedDenoiser | None,
            rew_end_step: RewEndStep | None) -> None:
    """Run compiled networks once on copies of `world_model`'s buffers (its shapes, autocast and layout; a
    separate random generator), which compiles them for those shapes."""
    randn = make_randn(world_model.device, generator=torch.Generator(world_model.device).manual_seed(0))
    with world_model.autocast():
        low = predict_low_res(dynamics, world_model.sampling.dynamics, world_model.obs.clone(),
                              world_model.act.clone(), randn)
        if upsampler is not None and world_model.full_res is not None:
            assert world_model.sampling.upsampler is not None
            upsample_frame(upsampler, world_model.sampling.upsampler, low, world_model.full_res.clone(), randn)
        model = world_model.agent.rew_end_model
        if rew_end_step is not None and model is not None:
            zeros = torch.zeros(1, world_model.num_envs, model.lstm.hidden_size, device=world_model.device)
            rew_end_step(world_model.obs[:, -1:].clone(), world_model.act[:, -1:].clone(), low[:, None],
                         (zeros, zeros.clone()))


class NetworkCompiler:
    """Compiles `engine`'s denoisers (and reward/termination step), warms them up on dummy inputs of the real
    shapes (same autocast, layout and no-grad state, a separate random generator), then swaps them in. A failed
    compile leaves the engine eager; `engine.compile_status` says what happened."""

    def __init__(self, engine: WorldModel, also_warm: Sequence[WorldModel] = ()) -> None:
        """`also_warm`: world models sharing `engine`'s networks at other batch sizes (`play.shared`), whose shapes
        are compiled too before the swap, so no step after it waits for a compile."""
        self.engine = engine
        self.also_warm = tuple(also_warm)
        self.compilers: list[AOTCompiled] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.closed = False

    def start(self) -> None:
        """Compile on a thread while steps run eagerly. CUDA-graph modes first capture the eager frame (a capture
        must not overlap other GPU work) and start the thread after it; the compiled frame is captured once the
        compiled networks are in."""
        if not self.engine.compile_status.compiling:
            return
        frame = self.engine.frame
        if isinstance(frame, GraphedFrame) and frame.graph is None:
            frame.after_first_capture = self._start_thread
            return
        self._start_thread()

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run_in_background, name="diamond-play-compile", daemon=True)
        self.thread.start()

    def _run_in_background(self) -> None:
        as_helper_thread()  # its warm-up calls must not make a second OpenMP team beside the stepping thread's
        self.run()

    def run(self) -> None:
        """The compile, in the calling thread (nothing to do unless the engine's compile was deferred)."""
        engine = self.engine
        if not engine.compile_status.compiling:
            return
        mode, device, networks = engine.mode, engine.device, engine.networks
        started = time.perf_counter()
        per_call_graphs = not mode.cuda_graph
        try:
            # Compiled from shallow copies (shared parameters, own attributes): exporting sets attributes on the
            # module it traces, which the eager steps running meanwhile must not see.
            dynamics = AcceleratedDenoiser(engine.agent.denoiser, self._track(
                compile_denoise(copy.copy(engine.agent.denoiser), mode, device, per_call_graphs)))
            up = engine.agent.upsampler
            upsampler = None
            if up is not None and engine.full_res is not None and engine.sampling.upsampler is not None:
                upsampler = AcceleratedDenoiser(up, self._track(compile_denoise(copy.copy(up), mode, device,
                                                                                per_call_graphs)))
            model = engine.agent.rew_end_model
            rew_end_step = self._track(compile_rew_end_step(model, mode)) if model is not None else None
            for world_model in (engine, *self.also_warm):
                warm_up(world_model, dynamics, upsampler, rew_end_step)
            # Attribute stores between two steps: the next step uses the compiled networks.
            networks.dynamics = dynamics
            if upsampler is not None:
                networks.upsampler = upsampler
            if rew_end_step is not None:
                networks.rew_end_step = rew_end_step
            engine.frame.networks_changed()
            networks.status = CompileStatus("compiled", seconds=time.perf_counter() - started)
        except CompileCancelled:
            networks.status = CompileStatus("cancelled")
        except Exception as e:  # noqa: BLE001 - compilation is an optimisation: keep playing eagerly
            reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            networks.status = CompileStatus("failed", reason=reason)

    def _track(self, fn):
        if isinstance(fn, AOTCompiled):
            with self.lock:
                self.compilers.append(fn)
                if self.closed:
                    fn.cancel()
        return fn

    def close(self) -> None:
        """Stop a compilation still running and wait for its thread: its compiler process would outlive play, and
        a thread still inside torch when the interpreter exits aborts the process."""
        with self.lock:
            self.closed = True
            for compiler in self.compilers:
                compiler.cancel()
        if self.thread is not None:
            self.thread.join(timeout=120)
