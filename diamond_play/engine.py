"""World-model runtime shared by play, training rollouts, eval, bench and the gymnasium env.

One imagined frame = the dynamics sampler (+ bicubic x5 and the upsampler sampler for two-stage engines);
`WorldModelEngine` keeps the frame-stacked buffers around it.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from diamond_play.compile_cache import AOTCompiled, CompileCancelled
from diamond_play.config import SamplerConfig, SamplingConfig
from diamond_play.data.spawns import StartState
from diamond_play.errors import UserError
from diamond_play.models.agent import Agent
from diamond_play.models.blocks import NormConditioned, use_inference_group_norm
from diamond_play.models.denoiser import Denoiser, Randn, bicubic_upsample, make_randn
from diamond_play.models.rew_end import RewEndModel
from diamond_play.sampling import sample


@dataclass
class ImaginedFrame:
    low_res: Tensor  # (B, C, h, w): what the dynamics model predicted (and conditions on next)
    full_res: Tensor | None  # (B, C, H, W): the upsampler's output, None for one-stage engines


class Cancelled(Exception):
    """Raised inside a step when the engine was asked to stop (the app is closing)."""


def denoise_fn(denoiser: Denoiser, act: Tensor | None, cancel: threading.Event | None = None):
    """Bind the actions so the sampler sees (x, sigma, cond_frames, sigma_cond); check `cancel` between calls."""

    def denoise(x: Tensor, sigma: Tensor, cond: Tensor, sigma_cond: Tensor | None) -> Tensor:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        return denoiser.denoise(x, sigma, cond, act, sigma_cond)

    return denoise


@torch.no_grad()
def predict_low_res(denoiser: Denoiser, sampler: SamplerConfig, obs: Tensor, act: Tensor, randn: Randn,
                    cancel: threading.Event | None = None) -> Tensor:
    """The dynamics model's next frame from obs (B, L, C, h, w), oldest first, and act (B, L) / (B, L, A) whose
    last slot holds the new action."""
    b, n, c, h, w = obs.shape
    x, _ = sample(denoise_fn(denoiser, act, cancel), obs.reshape(b, n * c, h, w), (b, c, h, w), sampler, randn)
    return x


@torch.no_grad()
def upsample_frame(upsampler: Denoiser, sampler: SamplerConfig, low_res: Tensor, prev_full_res: Tensor,
                   randn: Randn, cancel: threading.Event | None = None) -> Tensor:
    """Full-res frame conditioned on the previous full-res frame and the bicubic-upsampled low-res prediction."""
    factor = upsampler.cfg.upsampling_factor
    assert factor is not None
    b, c, h, w = low_res.shape
    cond = torch.cat((prev_full_res, bicubic_upsample(low_res, factor)), dim=1)
    x, _ = sample(denoise_fn(upsampler, None, cancel), cond, (b, c, h * factor, w * factor), sampler, randn)
    return x


def imagine_next_frame(denoiser: Denoiser, upsampler: Denoiser | None, sampling: SamplingConfig, obs: Tensor,
                       act: Tensor, randn: Randn, prev_full_res: Tensor | None = None) -> ImaginedFrame:
    """One imagined frame: dynamics, then (two-stage engines) the upsampler; prev_full_res (B, C, H, W)."""
    low_res = predict_low_res(denoiser, sampling.dynamics, obs, act, randn)
    if upsampler is None:
        return ImaginedFrame(low_res, None)
    if prev_full_res is None or sampling.upsampler is None:
        raise ValueError("a two-stage engine needs the previous full-res frame and an upsampler sampler config")
    return ImaginedFrame(low_res, upsample_frame(upsampler, sampling.upsampler, low_res, prev_full_res, randn))


# ---------------------------------------------------------------------------------------------------------------
# The runtime


def frames_to_tensor(frames: np.ndarray, device: torch.device | str) -> Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return t.movedim(-1, -3).float().div(255).mul(2).sub(1)


def tensor_to_frame(x: Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3), the official (x + 1) / 2 * 255 truncation, clamped."""
    return x.clamp(-1, 1).add(1).div(2).mul(255).byte().movedim(0, -1).cpu().numpy()


@dataclass(frozen=True)
class ExecutionMode:
    """How the engine runs the networks. eager-fp32 is the reference semantics; the others trade exactness
    (within the tolerance documented in the README) for speed."""

    name: str = "eager-fp32"
    bf16: bool = False  # bf16 autocast (CPUs with AVX-512 bf16 / AMX, and GPUs)
    channels_last: bool = False  # NHWC memory layout for the convolutions
    compile: bool = False  # inductor kernels for the networks (CPU: AOTInductor + freezing, cached on disk)
    # Inference-only rewrites of the reference code: one matmul for all the adaptive norms' scales/shifts per
    # network call instead of one per norm; GroupNorm as a per-channel affine from parallel statistics (GPUs); the
    # reward/termination LSTM as a single-step cell.
    inference_kernels: bool = False
    # GPUs only: the whole frame (every dynamics and upsampler step) captured as one CUDA graph and replayed with
    # one launch per frame, its noise drawn beforehand into fixed buffers (see `FrameGraph`).
    cuda_graph: bool = False


EXECUTION_MODES = {
    m.name: m for m in (
        ExecutionMode("eager-fp32"),
        ExecutionMode("eager-bf16", bf16=True, inference_kernels=True),
        ExecutionMode("eager-bf16-cl", bf16=True, channels_last=True, inference_kernels=True),
        ExecutionMode("compiled-fp32", compile=True, inference_kernels=True),
        ExecutionMode("compiled-bf16-cl", bf16=True, channels_last=True, compile=True, inference_kernels=True),
        ExecutionMode("graph-bf16-cl", bf16=True, channels_last=True, inference_kernels=True, cuda_graph=True),
        ExecutionMode("compiled-graph-bf16-cl", bf16=True, channels_last=True, compile=True, inference_kernels=True,
                      cuda_graph=True),
    )
}


def available_execution_modes(device: torch.device) -> list[str]:
    """The modes that run on `device` (CUDA-graph modes need a GPU)."""
    return [name for name, m in EXECUTION_MODES.items() if device.type == "cuda" or not m.cuda_graph]


def check_execution_mode(mode: ExecutionMode, device: torch.device) -> None:
    if mode.cuda_graph and device.type != "cuda":
        raise UserError(f"mode {mode.name} captures CUDA graphs and needs a GPU: on {device.type} use one of "
                        f"{', '.join(available_execution_modes(device))}")


def default_execution_mode(device: torch.device, interactive: bool = False) -> ExecutionMode:
    """bf16 + channels_last where the hardware runs bf16 natively (within one 8-bit level of eager fp32 on a
    step's output, about 1.6x faster on an AVX-512 CPU); eager fp32 elsewhere. On bf16 GPUs the whole frame is
    also replayed as one CUDA graph: eager play there is bound by kernel launches (on an H100, CS:GO quality
    13.1 fps graphed vs 2.3 eager, Atari 34 vs 10), and capture takes about two seconds, not a compile's minute.
    On bf16 CPUs, `interactive` play (a window) takes the compiled mode: it starts eagerly, compiles in the
    background (once; later starts load the cached compile in seconds) and runs about twice as fast after. Not for
    headless runs: the switch point depends on timing, so a seed would no longer reproduce them exactly."""
    if device.type == "cuda":
        return EXECUTION_MODES["graph-bf16-cl"] if torch.cuda.is_bf16_supported() else EXECUTION_MODES["eager-fp32"]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return EXECUTION_MODES["compiled-bf16-cl" if interactive else "eager-bf16-cl"]
    return EXECUTION_MODES["eager-fp32"]


def execution_mode_named(name: str, device: torch.device, interactive: bool = False) -> ExecutionMode:
    """A mode by name, or "auto" for `default_execution_mode`."""
    if name == "auto":
        return default_execution_mode(device, interactive)
    if name not in EXECUTION_MODES:
        raise UserError(f"unknown mode {name!r}: use auto or one of {', '.join(EXECUTION_MODES)}")
    return EXECUTION_MODES[name]


def compiles_ahead_of_time(device: torch.device) -> bool:
    """Whether compiled modes build AOTInductor packages cached on disk (in a child process that a quit can stop)
    rather than torch.compile in the playing process: always on CPUs; on GPUs when DIAMOND_PLAY_GPU_COMPILER=aoti,
    a lever not yet measured on a GPU (scripts/gpu_check.sh, PARTS=target), so not yet the default there."""
    return device.type == "cpu" or os.environ.get("DIAMOND_PLAY_GPU_COMPILER", "torch.compile") == "aoti"


def compile_denoise(den: Denoiser, device: torch.device, per_call_cuda_graphs: bool = True):
    """One compiled graph per denoiser call (preconditioning, U-Net and output rounding), reused by every sampler
    step. On CPUs: AOTInductor with freezing, cached on disk (`compile_cache`), so a restart loads it in
    milliseconds. On GPUs: torch.compile, whose CUDA graphs replay each call with one launch (reduce-overhead),
    unless the whole frame is captured as one graph around the compiled kernels (there AOTInductor can stand in
    for torch.compile: `compiles_ahead_of_time`)."""
    if compiles_ahead_of_time(device) and not (device.type == "cuda" and per_call_cuda_graphs):
        return AOTCompiled(den, "denoise_batch")
    # DIAMOND_PLAY_INDUCTOR_MODE (e.g. max-autotune-no-cudagraphs) overrides the torch.compile mode: a benchmarking
    # lever for GPU runs (scripts/gpu_check.sh, PARTS=autotune), not yet measured enough to be a default.
    mode = os.environ.get("DIAMOND_PLAY_INDUCTOR_MODE") or ("reduce-overhead" if per_call_cuda_graphs else None)
    return torch.compile(den.denoise_batch, dynamic=False, mode=mode)


def store_autocast_weights_in_bf16(model: nn.Module) -> None:
    """Keep convolution and linear weights in bf16, the dtype bf16 autocast casts them to on every call anyway:
    the outputs stay bit-identical while each call stops re-reading and converting all fp32 weights (for the
    330M-parameter CS:GO dynamics model that conversion was a quarter of an eager frame). Norms, embeddings and
    LSTMs keep fp32, as autocast treats them. Inference only: the modules are changed in place."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(torch.bfloat16)


def apply_execution_mode(agent: Agent, mode: ExecutionMode, device: torch.device, compile_now: bool = True) -> None:
    """Prepare the agent's world-model networks for `mode` (in place). Without `compile_now` they stay eager until
    `WorldModelEngine.compile_in_background` swaps the compiled versions in."""
    for model in (agent.denoiser, agent.upsampler, agent.rew_end_model):
        if model is None:
            continue
        if mode.channels_last:
            model.to(memory_format=torch.channels_last)
        if mode.bf16:
            store_autocast_weights_in_bf16(model)
        if mode.inference_kernels:
            if device.type == "cuda":  # on CPUs the native kernel is as fast or faster
                use_inference_group_norm(model)
            for part in model.modules():
                if isinstance(part, NormConditioned):
                    part.fuse_norm_conditioning()
            if isinstance(model, RewEndModel):
                model.fuse_lstm_step(torch.bfloat16 if mode.bf16 else torch.float32)
    for den in (agent.denoiser, agent.upsampler):
        if den is not None:
            compiled = mode.compile and compile_now
            den.fast_denoise = compile_denoise(den, device, not mode.cuda_graph) if compiled else None


def rew_end_step_fn(model: RewEndModel, mode: ExecutionMode, compile_now: bool = True):
    """The reward/termination model's per-frame call (T = 1) for `mode`, compiled in compiled modes."""
    method = "predict_rew_end_one_step" if mode.inference_kernels else "predict_rew_end"
    if not (mode.compile and compile_now):
        return getattr(model, method)
    if compiles_ahead_of_time(next(model.parameters()).device):
        return AOTCompiled(model, method)
    return torch.compile(getattr(model, method), dynamic=False)


class PredrawnNoise:
    """A frame's N(0, 1) draws made ahead of it, into fixed buffers, in the order and shapes the frame takes them.

    A replayed CUDA graph cannot call the random generator (each replay would reuse the captured draws), so the
    engine draws into these buffers from its own generator before every replay: the random stream, and so the
    frame, stays the one eager execution would give for the same seed."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.taken = 0

    @classmethod
    def laid_out_by(cls, frame: Callable[[Randn], object], device: torch.device) -> PredrawnNoise:
        """Buffers for every draw `frame(randn)` makes, found by running it once on a throwaway generator."""
        noise = cls()
        throwaway = torch.Generator(device).manual_seed(0)

        def record(shape: Sequence[int]) -> Tensor:
            noise.buffers.append(torch.randn(tuple(shape), device=device, generator=throwaway))
            return noise.buffers[-1]

        frame(record)
        return noise

    def __call__(self, shape: Sequence[int]) -> Tensor:
        if self.taken == len(self.buffers) or tuple(self.buffers[self.taken].shape) != tuple(shape):
            raise RuntimeError(f"draw {self.taken} of shape {tuple(shape)} does not match the frame's noise layout")
        self.taken += 1
        return self.buffers[self.taken - 1]

    def rewind(self) -> None:
        self.taken = 0

    def draw(self, generator: torch.Generator) -> None:
        """New noise for the next frame, as the eager frame would draw it from `generator`."""
        for buf in self.buffers:
            torch.randn(buf.shape, generator=generator, out=buf)
        self.taken = 0


class FrameGraph:
    """One imagined frame (every dynamics and upsampler sampler step) captured as a CUDA graph: a replay is one
    launch and no host sync, instead of hundreds of kernel launches. The frame reads the engine's fixed buffers
    (frame stack, actions, previous full-res frame) and returns tensors the graph owns, valid until the next
    replay."""

    def __init__(self, frame: Callable[[Randn], tuple[Tensor, Tensor | None]], device: torch.device,
                 networks_version: int = 0) -> None:
        self.networks_version = networks_version  # the engine's networks it captured
        self.noise = PredrawnNoise.laid_out_by(frame, device)
        side = torch.cuda.Stream(device)  # warm-up (allocator, cuBLAS/cuDNN choices) off the capturing stream
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.noise.rewind()
                frame(self.noise)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.noise.rewind()
        with torch.cuda.graph(self.graph):
            self.outputs = frame(self.noise)

    def replay(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        self.noise.draw(generator)
        self.graph.replay()
        return self.outputs


@dataclass
class StepResult:
    frame: np.ndarray  # uint8 (H, W, 3): what to show (full-res for two-stage engines)
    reward: float | None  # sampled clipped reward -1/0/+1, None without a reward/termination model
    end: bool | None
    truncated: bool  # the imagination horizon was reached
    latency_s: float
    component_s: dict[str, float] = field(default_factory=dict)


class WorldModelEngine:
    """Keeps the frame-stacked buffers and imagines one frame per `step(action)` at batch 1, without gradients.

    Buffers are allocated once; a step shifts them in place. Deterministic for a given seed.
    """

    def __init__(self, agent: Agent, sampling: SamplingConfig | None = None, device: torch.device | str = "cpu",
                 seed: int | None = None, horizon: int = 1000, mode: ExecutionMode | None = None,
                 defer_compile: bool = False) -> None:
        """`defer_compile`: a compiled mode's networks stay eager until `compile_in_background` (play starts at
        once) or `compile_networks` (before the first step) compiles them."""
        self.agent = agent.to(device).eval()
        self.mode = mode or ExecutionMode()
        if torch.device(device).type == "cuda" and os.environ.get("DIAMOND_PLAY_CUDNN_BENCHMARK") == "1":
            # Autotuned convolution algorithms for the fixed play shapes: a GPU benchmarking lever (PARTS=target)
            torch.backends.cudnn.benchmark = True
        check_execution_mode(self.mode, torch.device(device))
        # A whole-frame graph is captured around the networks: their compile is deferred only where the build
        # runs in a child process (AOTInductor), else it happens at the first frame, before the capture.
        defer_compile = defer_compile and (not self.mode.cuda_graph or compiles_ahead_of_time(torch.device(device)))
        apply_execution_mode(self.agent, self.mode, torch.device(device), compile_now=not defer_compile)
        self.compile_state = "compiling" if self.mode.compile and defer_compile else (
            "compiled" if self.mode.compile else "eager")
        self.rew_end_step = None if agent.rew_end_model is None else rew_end_step_fn(
            agent.rew_end_model, self.mode, compile_now=not defer_compile)
        self.config = agent.config
        self.sampling = sampling or agent.config.sampling
        if agent.upsampler is not None and self.sampling.upsampler is None:
            raise UserError("these weights have an upsampler but their config has no sampling.upsampler settings: "
                            "add them to config.yaml or pass a sampling preset")
        self.device = torch.device(device)
        self.horizon = horizon
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ()).item()))
        self.randn = make_randn(self.device, generator=self.generator)
        den = agent.denoiser
        self.num_cond = den.num_steps_conditioning
        self.low_res_size = self._low_res_size()
        h, w = self.low_res_size
        self.multi_hot = self.config.kind == "csgo"
        self.obs = torch.zeros(1, self.num_cond, 3, h, w, device=self.device)
        act_shape = (1, self.num_cond, self.config.num_actions) if self.multi_hot else (1, self.num_cond)
        self.act = torch.zeros(act_shape, device=self.device, dtype=torch.float32 if self.multi_hot else torch.long)
        self.full_res: Tensor | None = None
        if agent.upsampler is not None:
            fh, fw = self.config.frame_size
            self.full_res = torch.zeros(1, 3, fh, fw, device=self.device)
        self.rew_end_state: tuple[Tensor, Tensor] | None = None
        self.steps = 0
        self.started = False
        self.cancel_event = threading.Event()  # set from another thread to abandon a step in progress
        self.frame_graph: FrameGraph | None = None  # captured at the first step of a CUDA-graph mode
        # Bumped when compiled networks are swapped in: a frame graph captured before then is captured again.
        self.networks_version = 0
        self.compile_after_capture = False
        self.background_compilers: list[AOTCompiled] = []
        self.compilers_lock = threading.Lock()
        self.compile_thread: threading.Thread | None = None
        self.closed = False

    def compile_in_background(self) -> None:
        """Compile the denoisers on a thread while steps run eagerly, warm them up on dummy inputs of the real
        shapes (same autocast, layout and no-grad state, a separate random generator), then swap them in between
        two steps. Play starts at once; a failed compile leaves the engine eager (`compile_state` says why).
        CUDA-graph modes first capture the eager frame (a capture must not overlap other GPU work), start the
        thread after it, and capture the compiled frame once it is ready."""
        if self.mode.cuda_graph and self.frame_graph is None:
            self.compile_after_capture = True
            return
        self.compile_thread = threading.Thread(target=self.compile_networks, name="diamond-play-compile",
                                               daemon=True)
        self.compile_thread.start()

    def compile_networks(self) -> None:
        """The compile of `compile_in_background`, run in the calling thread: before the first step, it keeps a
        run in one mode from its first frame (a seed then reproduces it exactly)."""
        if self.compile_state != "compiling":  # eager modes, or networks compiled when the engine was made
            return
        started = time.perf_counter()
        try:
            compiled = {}
            randn = make_randn(self.device, generator=torch.Generator(self.device).manual_seed(0))
            den = self.agent.denoiser
            shadow = copy.copy(den)  # shares the parameters; its own fast_denoise
            whole_frame_graph = self.mode.cuda_graph
            shadow.fast_denoise = self._track(compile_denoise(shadow, self.device, not whole_frame_graph))
            with torch.no_grad(), self.autocast():
                low = predict_low_res(shadow, self.sampling.dynamics, self.obs.clone(), self.act.clone(), randn)
                compiled[den] = shadow.fast_denoise
                up = self.agent.upsampler
                if up is not None and self.full_res is not None and self.sampling.upsampler is not None:
                    shadow_up = copy.copy(up)
                    shadow_up.fast_denoise = self._track(
                        compile_denoise(shadow_up, self.device, not whole_frame_graph))
                    upsample_frame(shadow_up, self.sampling.upsampler, low, self.full_res.clone(), randn)
                    compiled[up] = shadow_up.fast_denoise
                rew_end_step = None
                if self.agent.rew_end_model is not None:
                    rew_end_step = self._track(rew_end_step_fn(self.agent.rew_end_model, self.mode))
                    dim = self.agent.rew_end_model.lstm.hidden_size
                    state = (torch.zeros(1, 1, dim, device=self.device), torch.zeros(1, 1, dim, device=self.device))
                    rew_end_step(self.obs[:, -1:].clone(), self.act[:, -1:].clone(), low[:, None], state)
            for module, fn in compiled.items():
                module.fast_denoise = fn  # one attribute store: the next step uses it
            if rew_end_step is not None:
                self.rew_end_step = rew_end_step
            self.networks_version += 1
            self.compile_state = f"compiled in {time.perf_counter() - started:.0f} s"
        except CompileCancelled:
            self.compile_state = "eager (compile cancelled)"
        except Exception as e:  # noqa: BLE001 - compilation is an optimisation: keep playing eagerly
            reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            self.compile_state = f"eager (compile failed: {reason})"

    def _track(self, fn):
        if isinstance(fn, AOTCompiled):
            with self.compilers_lock:
                self.background_compilers.append(fn)
                if self.closed:
                    fn.cancel()
        return fn

    def close(self) -> None:
        """Stop a background compilation still running and wait for its thread: its compiler process would
        outlive play, and a thread still inside torch when the interpreter exits aborts the process."""
        with self.compilers_lock:
            self.closed = True
            for compiler in self.background_compilers:
                compiler.cancel()
        if self.compile_thread is not None:
            self.compile_thread.join(timeout=120)

    def _low_res_size(self) -> tuple[int, int]:
        h, w = self.config.frame_size
        if self.agent.upsampler is not None:
            factor = self.agent.upsampler.cfg.upsampling_factor or 1
            return h // factor, w // factor
        return h, w

    @property
    def has_rew_end(self) -> bool:
        return self.agent.rew_end_model is not None

    @torch.no_grad()
    def reset(self, start: StartState) -> np.ndarray:
        """Fill the buffers from a start state; returns the frame to show."""
        n = self.num_cond
        if len(start.frames) < n or len(start.actions) < n:
            raise UserError(f"a start state needs {n} frames and actions, got {len(start.frames)}")
        frames = frames_to_tensor(start.frames[-n:], self.device)
        if tuple(frames.shape[-2:]) != self.low_res_size:
            raise UserError(f"start frames are {tuple(frames.shape[-2:])} but the model expects {self.low_res_size}")
        self.obs[0].copy_(frames)
        self.act[0].copy_(torch.as_tensor(np.asarray(start.actions[-n:]), device=self.device).to(self.act.dtype))
        if self.full_res is not None:
            if start.full_res_frame is None:
                raise UserError("this two-stage engine needs a full-res start frame (spawn point)")
            self.full_res[0].copy_(frames_to_tensor(start.full_res_frame, self.device))
        self.rew_end_state = None
        if self.agent.rew_end_model is not None and n > 1:
            # Burn the LSTM in on the conditioning frames, as the official world-model env does.
            with self.autocast():
                _, _, state = self.agent.rew_end_model.predict_rew_end(
                    self.obs[:, :-1], self.act[:, :-1], self.obs[:, 1:])
            # fp32 like the per-frame steps' state (autocast may run the burn-in LSTM in bf16): one compiled graph
            self.rew_end_state = (state[0].float(), state[1].float())
        self.steps = 0
        self.started = True
        return self.current_frame()

    def current_frame(self) -> np.ndarray:
        return tensor_to_frame(self.full_res[0] if self.full_res is not None else self.obs[0, -1])

    def current_low_res(self) -> Tensor:
        return self.obs[:, -1]

    def _sample_categorical(self, logits: Tensor) -> int:
        return int(torch.multinomial(logits.softmax(-1).reshape(1, -1), 1, generator=self.generator).item())

    @torch.no_grad()
    def step(self, action: int | np.ndarray | Tensor) -> StepResult:
        if not self.started:
            raise RuntimeError("call reset() before step()")
        with self.autocast():
            return self._step(action)

    def autocast(self) -> torch.autocast:
        """The mode's autocast context: every call into the networks runs inside it (bf16 modes store weights
        in bf16)."""
        # No cast cache under CUDA-graph capture: cached casts would live in the graph's private memory.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mode.bf16,
                              cache_enabled=not self.mode.cuda_graph)

    def _dynamics(self, randn: Randn, cancel: threading.Event | None = None) -> Tensor:
        return predict_low_res(self.agent.denoiser, self.sampling.dynamics, self.obs, self.act, randn, cancel)

    def _upsample(self, low_res: Tensor, randn: Randn, cancel: threading.Event | None = None) -> Tensor | None:
        if self.agent.upsampler is None or self.full_res is None:
            return None
        assert self.sampling.upsampler is not None
        return upsample_frame(self.agent.upsampler, self.sampling.upsampler, low_res, self.full_res, randn, cancel)

    def imagine(self, randn: Randn) -> tuple[Tensor, Tensor | None]:
        """The next frame from the current buffers and `randn`, without moving the buffers on: (low-res,
        full-res or None)."""
        frame = imagine_next_frame(self.agent.denoiser, self.agent.upsampler, self.sampling, self.obs, self.act,
                                   randn, self.full_res)
        return frame.low_res, frame.full_res

    def _step(self, action: int | np.ndarray | Tensor) -> StepResult:
        timer = Timer(self.device)
        self.act[0, -1] = torch.as_tensor(action, device=self.device).to(self.act.dtype)
        if self.mode.cuda_graph:
            if self.frame_graph is None or self.frame_graph.networks_version != self.networks_version:
                self.frame_graph = None  # frees the previous graph's memory before the new capture
                self.frame_graph = FrameGraph(self.imagine, self.device, self.networks_version)
                if self.compile_after_capture:
                    self.compile_after_capture = False
                    self.compile_in_background()
                timer = Timer(self.device)  # capture time is start-up, not frame latency
            low_res, full_res = self.frame_graph.replay(self.generator)
            components = {"frame graph": timer.lap()}
        else:
            low_res = self._dynamics(self.randn, self.cancel_event)
            components = {"dynamics": timer.lap()}
            full_res = self._upsample(low_res, self.randn, self.cancel_event)
            if full_res is not None:
                components["upsampler"] = timer.lap()
        reward = end = None
        if self.agent.rew_end_model is not None:
            assert self.rew_end_step is not None
            rew_logits, end_logits, self.rew_end_state = self.rew_end_step(
                self.obs[:, -1:], self.act[:, -1:], low_res[:, None], self.rew_end_state)
            reward = float(self._sample_categorical(rew_logits) - 1)
            end = bool(self._sample_categorical(end_logits))
            components["rew_end"] = timer.lap()
        for i in range(self.num_cond - 1):  # shift in place: no per-frame allocation
            self.obs[:, i].copy_(self.obs[:, i + 1])
            self.act[:, i].copy_(self.act[:, i + 1])
        self.obs[:, -1].copy_(low_res)
        if self.full_res is not None and full_res is not None:
            self.full_res.copy_(full_res)
        self.steps += 1
        shown = self.current_frame()
        return StepResult(shown, reward, end, self.steps >= self.horizon, timer.total(), components)


class Timer:
    """Wall-clock laps that wait for the GPU, so component times are real."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        lap, self.last = now - self.last, now
        return lap

    def total(self) -> float:
        return self._now() - self.start


# ---------------------------------------------------------------------------------------------------------------
# Start states


class AtariStarts:
    """Start states from the real game: reset the emulator and take its first L frames (no-op actions). The
    emulator then keeps running with the player's actions, so it can be shown beside the world model."""

    def __init__(self, game: str, num_frames: int, size: int, seed: int | None) -> None:
        from diamond_play.envs.atari import AtariEnv

        self.env = AtariEnv(game, size=size, seed=seed)
        self.num_frames = num_frames
        self.history: deque[tuple[np.ndarray, int]] = deque(maxlen=num_frames)
        self.frame: np.ndarray | None = None
        self.restart()

    def restart(self, seed: int | None = None) -> None:
        self.frame, _ = self.env.reset(seed)
        self.history.clear()
        while len(self.history) < self.num_frames:
            self.history.append((self.frame, 0))
            self.frame, _, end, trunc, _ = self.env.step(0)
            if end or trunc:
                self.frame, _ = self.env.reset()
                self.history.clear()

    def start_state(self) -> StartState:
        """The emulator's last L frames and actions."""
        frames = np.stack([f for f, _ in self.history][1:] + [self.frame])
        actions = np.array([a for _, a in self.history][1:] + [0])
        return StartState(frames=frames, actions=actions)

    def step(self, action: int) -> np.ndarray:
        assert self.frame is not None
        self.history.append((self.frame, action))
        self.frame, _, end, trunc, _ = self.env.step(action)
        if end or trunc:
            self.restart()
        return self.frame

    def close(self) -> None:
        self.env.close()


class SpawnStarts:
    """Start states shipped with the weights (CS:GO spawn points): a fixed one or a random one each time."""

    def __init__(self, spawns: list[StartState], index: int | None, rng: np.random.Generator) -> None:
        if index is not None and not 0 <= index < len(spawns):
            raise UserError(f"--spawn {index} is out of range: these weights have {len(spawns)} spawn points "
                            f"(0..{len(spawns) - 1})")
        self.spawns, self.index, self.rng = spawns, index, rng
        self.env = None

    def start_state(self) -> StartState:
        return self.spawns[self.index if self.index is not None else int(self.rng.integers(len(self.spawns)))]

    def close(self) -> None:
        pass
