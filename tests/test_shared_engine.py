"""Players batched on one engine (`play.shared`): a seat alone steps exactly as an engine of its own, seats
stepped together give exactly what one batched world model gives for their rows (padding included), and a
cancelled or closed seat never hangs its player."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_agent

from diamond_play.accel.modes import EXECUTION_MODES
from diamond_play.data.spawns import StartState
from diamond_play.engine import WorldModelEngine
from diamond_play.frames import tensor_to_frames
from diamond_play.imagine import Cancelled
from diamond_play.play.shared import SharedWorldModel, batch_sizes
from diamond_play.world_model import WorldModel

EAGER = EXECUTION_MODES["eager-fp32"]


def start_state(seed: int) -> StartState:
    rng = np.random.default_rng(seed)
    return StartState(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8), list(rng.integers(0, 4, 4)))


def test_batch_sizes():
    assert batch_sizes(1) == [1] and batch_sizes(4) == [1, 2, 4] and batch_sizes(6) == [1, 2, 4, 6]


def test_one_seat_steps_as_an_engine_of_its_own():
    agent = tiny_agent("atari")
    alone = WorldModelEngine(copy.deepcopy(agent), seed=3, mode=EAGER)
    shared = SharedWorldModel(copy.deepcopy(agent), None, torch.device("cpu"), EAGER, capacity=2, fps=10, seed=3)
    try:
        seat = shared.seat(seed=3)
        assert np.array_equal(alone.reset(start_state(0)), seat.reset(start_state(0)))
        for action in [1, 2, 3, 0, 1, 1]:
            a, b = alone.step(action), seat.step(action)
            assert np.array_equal(a.frame, b.frame) and (a.reward, a.end) == (b.reward, b.end)
        assert seat.last_batch_size == 1 and shared.steps == 6
    finally:
        shared.close()


def test_seats_stepped_together_give_the_rows_of_one_batched_world_model():
    """Three players stepping at once on a capacity-4 engine padded like a compiled mode: one batch of 4 per
    tick (the fourth row repeats the first seat), rows in the order the seats joined."""
    agent = tiny_agent("atari")
    shared = SharedWorldModel(copy.deepcopy(agent), None, torch.device("cpu"), EAGER, capacity=4, fps=1, seed=7,
                              padded=True)
    reference = WorldModel(copy.deepcopy(agent), 4, mode=EAGER, generator=torch.Generator().manual_seed(7))
    starts = [start_state(i) for i in range(3)]
    actions = np.random.default_rng(0).integers(0, 4, (3, 5))
    try:
        seats = [shared.seat() for _ in range(3)]
        for seat, start in zip(seats, starts, strict=True):
            seat.reset(start)
        for row, start in enumerate([*starts, starts[0]]):
            engine = WorldModelEngine(copy.deepcopy(agent), mode=EAGER)  # the seats' own start conversion
            engine.reset(start)
            reference.fill(engine.obs, engine.act, rows=torch.tensor([row]))
        got: list[list] = [[] for _ in seats]
        barrier = threading.Barrier(3)

        def play(i: int) -> None:
            for t in range(actions.shape[1]):
                barrier.wait()
                got[i].append(seats[i].step(int(actions[i, t])))

        threads = [threading.Thread(target=play, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for t in range(actions.shape[1]):
            out = reference.step_batch(torch.tensor([*actions[:, t], actions[0, t]]))
            for i in range(3):
                step = got[i][t]
                assert np.array_equal(step.frame, tensor_to_frames(out.low_res[i]))
                assert (step.reward, step.end) == (float(out.reward[i]), bool(out.end[i]))
        assert all(seat.last_batch_size == 3 for seat in seats) and shared.steps == actions.shape[1]
    finally:
        shared.close()


def test_a_cancelled_or_closed_seat_does_not_hang():
    """A player leaving while its step waits for the other player's is released within a poll, and the engine
    goes on; a full engine refuses a seat; a closed one answers every step with `Cancelled`."""
    shared = SharedWorldModel(tiny_agent("atari"), None, torch.device("cpu"), EAGER, capacity=2, fps=0.1, seed=0)
    waiting, other = shared.seat(), shared.seat()  # `other` joined just now: the batch waits for it (5 s)
    with pytest.raises(RuntimeError, match="seats of this engine are taken"):
        shared.seat()
    for seat in (waiting, other):
        seat.reset(start_state(0))
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(Cancelled, waiting.step, 0)))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and shared.steps == 0  # still gathering
    waiting.cancel_event.set()
    thread.join(2)
    assert not thread.is_alive() and outcome and not shared.requests
    shared.leave(waiting)
    assert other.step(1).frame.shape == (64, 64, 3) and shared.steps == 1  # alone now: no wait
    assert shared.seat() is not None  # the seat was given back
    shared.close()
    with pytest.raises(Cancelled):
        other.step(0)
    assert not shared.thread.is_alive()


def test_a_model_slower_than_the_frame_period_keeps_the_seats_in_one_batch():
    """Two players stepping as fast as the shipped Breakout engine allows, at a pace it cannot keep (20 fps): a seat
    just answered is waited for, so they never fall into taking turns alone."""
    from diamond_play.weights.loading import load_agent

    agent = load_agent(Path(__file__).resolve().parents[1] / "diamond_play" / "shipped" / "atari" / "Breakout")
    shared = SharedWorldModel(agent, None, torch.device("cpu"), EAGER, capacity=2, fps=20, seed=0)
    try:
        seats = [shared.seat(seed=i) for i in range(2)]
        for i, seat in enumerate(seats):
            seat.reset(start_state(i))
        sizes: list[list[int]] = [[], []]

        def play(i: int) -> None:
            for t in range(8):
                seats[i].step(t % 4)
                sizes[i].append(seats[i].last_batch_size)

        threads = [threading.Thread(target=play, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert all(size == 2 for row in sizes for size in row[1:]), sizes
        assert shared.steps <= 9
    finally:
        shared.close()
