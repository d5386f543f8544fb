"""Several play sessions on one engine: each session's engine is a `Seat`, and the shared engine steps the seats
that want a frame together, as one batch through the world model, so a machine with room for a batch serves several
players for little more than the cost of one (README, "Play in a browser").

A seat keeps its own buffers (frame stack, actions, full-res frame, reward/termination state) and its own random
generator for its policy; a tick copies the rows of the seats that asked for a step into a world model of the batch's
size, steps it, and copies each row back. Players keep their own pace: a tick starts as soon as every seat that
was active recently (asked, or was answered) has asked, or `gather_s` after the first request, whichever comes
first: seats answered together ask together, so a model slower than the frame period keeps them in one batch. One
seat alone never waits, so single-player latency is what it was.

Compiled modes compile one graph per batch size: the sizes are powers of two up to the capacity (and the capacity),
a batch is padded up to the next one, and every size is compiled (in the background, cached on disk) before the
compiled networks are swapped in. Whole-frame CUDA-graph modes keep one engine per player (`batchable`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diamond_play.accel.frames import Timer
from diamond_play.accel.modes import ExecutionMode
from diamond_play.accel.networks import CompileStatus, prepare_networks
from diamond_play.config import SamplingConfig
from diamond_play.engine import WorldModelEngine
from diamond_play.imagine import Cancelled
from diamond_play.models.agent import Agent
from diamond_play.play.compile import NetworkCompiler
from diamond_play.threads import as_compute_thread
from diamond_play.world_model import WorldModel, WorldModelStep

RECENT_PERIODS = 2.0  # a seat idle (not asking, not stepped) this many frame periods is not waited for


def batchable(mode: ExecutionMode) -> bool:
    """Whether seats can share an engine in `mode`: a whole-frame CUDA graph is captured per world model."""
    return not mode.cuda_graph


def batch_sizes(capacity: int) -> list[int]:
    """The batch sizes a compiled mode compiles: powers of two below `capacity`, and `capacity`."""
    sizes, size = [], 1
    while size < capacity:
        sizes.append(size)
        size *= 2
    return sizes + [capacity]


@dataclass
class StepRequest:
    seat: Seat
    action: Tensor  # (1,) or (1, A)
    done: threading.Event = field(default_factory=threading.Event)
    running: bool = False
    result: WorldModelStep | None = None
    error: BaseException | None = None


class Seat(WorldModelEngine):
    """One player's engine on a `SharedWorldModel`: a `WorldModelEngine` whose steps run in the shared batch."""

    def __init__(self, shared: SharedWorldModel, seed: int | None, horizon: int) -> None:
        super().__init__(shared.agent, shared.sampling, shared.device, seed, horizon, shared.mode,
                         networks=shared.networks)
        self.shared = shared
        self.last_batch_size = 0  # how many seats the last step shared its batch with (itself included)
        self.last_batch_started = 0.0  # perf_counter() when that batch began: the seats' common tick

    def step_batch(self, act: Tensor, timer: Timer | None = None) -> WorldModelStep:
        return self.shared.step(self, act)


class SharedWorldModel:
    """One agent's world model serving up to `capacity` seats, stepped by its own thread."""

    def __init__(self, agent: Agent, sampling: SamplingConfig | None, device: torch.device, mode: ExecutionMode,
                 capacity: int, fps: float, seed: int | None = None, padded: bool | None = None) -> None:
        """`padded`: batches padded up to `batch_sizes(capacity)` (default: in compiled modes, which compile one
        graph per size) rather than run at their own size."""
        if not batchable(mode):
            raise ValueError(f"{mode.name} captures a CUDA graph per engine: give each player its own engine")
        self.agent, self.device, self.mode, self.capacity = agent.to(device).eval(), device, mode, capacity
        self.networks = prepare_networks(agent, mode, device, compile_now=False)
        self.sampling = sampling or agent.config.sampling
        self.period = 1.0 / fps
        self.gather_s = self.period / 2
        self.generator = torch.Generator(device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ()).item()))
        self.sizes = batch_sizes(capacity) if (mode.compile if padded is None else padded) else list(
            range(1, capacity + 1))
        self.models = {size: self._world_model(size) for size in (batch_sizes(capacity) if mode.compile else [1])}
        self.compiler = NetworkCompiler(self.models[1], [self.models[s] for s in self.models if s > 1])
        self.compiler.start()
        self.seats: dict[Seat, float] = {}  # seat -> when it last asked, was answered, or joined
        self.seat_order: dict[Seat, int] = {}  # rows are in the order seats joined: a batch's noise rows follow it
        self.joined = 0
        self.requests: list[StepRequest] = []
        self.condition = threading.Condition()
        self.closed = False
        self.steps = 0  # ticks run
        self.thread = threading.Thread(target=self._run, name="diamond-play shared engine", daemon=True)
        self.thread.start()

    @property
    def compile_status(self) -> CompileStatus:
        return self.networks.status

    def _world_model(self, size: int) -> WorldModel:
        return WorldModel(self.agent, size, self.sampling, self.device, self.mode, self.generator,
                          networks=self.networks)

    def seat(self, seed: int | None = None, horizon: int | None = None) -> Seat:
        seat = Seat(self, seed, horizon or self.agent.config.game_kind.play_horizon)
        with self.condition:
            if len(self.seats) >= self.capacity:
                raise RuntimeError(f"all {self.capacity} seats of this engine are taken")
            self.seats[seat] = time.perf_counter()
            self.joined += 1
            self.seat_order[seat] = self.joined
        return seat

    def leave(self, seat: WorldModelEngine) -> None:
        with self.condition:
            self.seats.pop(seat, None)  # type: ignore[call-overload]
            self.seat_order.pop(seat, None)  # type: ignore[call-overload]
            self.condition.notify_all()

    def step(self, seat: Seat, act: Tensor) -> WorldModelStep:
        """Called from the seat's player thread: queue the step, wait for its batch. A step still queued when the
        seat's `cancel_event` is set is withdrawn (`Cancelled`); one already running finishes within the batch."""
        request = StepRequest(seat, act.reshape((1, *act.shape[1:])))
        with self.condition:
            if self.closed:
                raise Cancelled()
            self.seats[seat] = time.perf_counter()
            self.requests.append(request)
            self.condition.notify_all()
        while not request.done.wait(0.05):
            if seat.cancel_event.is_set():
                with self.condition:
                    if not request.running:
                        self.requests.remove(request)
                        raise Cancelled()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _gather(self) -> list[StepRequest] | None:
        """The next batch: wait for a first request, then for the other recent seats' or the gather deadline
        (None: closed). A request withdrawn meanwhile (`step` cancelled) may leave nothing: wait again."""
        with self.condition:
            while not self.closed:
                while not self.requests and not self.closed:
                    self.condition.wait()
                deadline = time.perf_counter() + self.gather_s
                while not self.closed and self.requests:
                    now = time.perf_counter()
                    asked = {r.seat for r in self.requests}
                    waiting_for = [s for s, last in self.seats.items()
                                   if s not in asked and now - last < RECENT_PERIODS * self.period]
                    if not waiting_for or now >= deadline or len(self.requests) >= self.capacity:
                        break
                    self.condition.wait(deadline - now)
                batch, self.requests = self.requests[:self.capacity], self.requests[self.capacity:]
                if batch and not self.closed:
                    batch.sort(key=lambda r: self.seat_order.get(r.seat, 0))
                    for request in batch:
                        request.running = True
                    return batch
                self.requests = batch + self.requests  # closing: `close` answers them
            return None

    def _run(self) -> None:
        as_compute_thread()
        while True:
            batch = self._gather()
            if batch is None:
                return
            try:
                results = self._step_rows([r.seat for r in batch], torch.cat([r.action for r in batch]))
                for request, result in zip(batch, results, strict=True):
                    request.result = result
            except BaseException as e:  # every seat in the batch reports it; the next batch tries again
                for request in batch:
                    request.error = e
            with self.condition:  # just answered: its player asks again at once when the model is the slower
                answered = time.perf_counter()
                for request in batch:
                    if request.seat in self.seats:
                        self.seats[request.seat] = answered
            for request in batch:
                request.done.set()

    @torch.no_grad()
    def _step_rows(self, seats: list[Seat], act: Tensor) -> list[WorldModelStep]:
        k, started = len(seats), time.perf_counter()
        size = next(s for s in self.sizes if s >= k)
        model = self.models.get(size) or self.models.setdefault(size, self._world_model(size))
        rows = [*seats, *[seats[0]] * (size - k)]  # padding rows repeat the first seat; their results are dropped
        act = torch.cat([act, act[:1].expand(size - k, *act.shape[1:])])
        for i, seat in enumerate(rows):
            model.obs[i].copy_(seat.obs[0])
            model.act[i].copy_(seat.act[0])
            if model.full_res is not None and seat.full_res is not None:
                model.full_res[i].copy_(seat.full_res[0])
        if all(seat.rew_end_state is not None for seat in rows):
            states = [seat.rew_end_state for seat in rows]
            model.rew_end_state = (torch.cat([s[0] for s in states], dim=1),  # type: ignore[index]
                                   torch.cat([s[1] for s in states], dim=1))  # type: ignore[index]
        out = model.step_batch(act, Timer(self.device))
        self.steps += 1
        results = []
        for i, seat in enumerate(seats):
            seat.obs.copy_(model.obs[i:i + 1])
            seat.act.copy_(model.act[i:i + 1])
            if seat.full_res is not None and model.full_res is not None:
                seat.full_res.copy_(model.full_res[i:i + 1])
            if model.rew_end_state is not None:
                h, c = model.rew_end_state
                seat.rew_end_state = (h[:, i:i + 1].clone(), c[:, i:i + 1].clone())
            seat.last_batch_size, seat.last_batch_started = k, started
            results.append(WorldModelStep(
                model.obs[i:i + 1, -1].clone(), None if out.full_res is None else out.full_res[i:i + 1].clone(),
                None if out.reward is None else out.reward[i:i + 1],
                None if out.end is None else out.end[i:i + 1],
                None if out.end_probability is None else out.end_probability[i:i + 1], dict(out.component_s)))
        return results

    def close(self) -> None:
        """Stop the thread (seats still waiting get `Cancelled`) and any compile in progress."""
        with self.condition:
            self.closed = True
            pending, self.requests = self.requests, []
            self.condition.notify_all()
        for request in pending:
            request.error = Cancelled()
            request.done.set()
        self.thread.join(timeout=30)
        self.compiler.close()
