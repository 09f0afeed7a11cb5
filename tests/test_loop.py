"""The fast engine's event loop (sim.engine.loop) runs events in exactly SimPy's order, SimPy's own events included."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.loop import Environment, call_later

# each op: (delay, kind) — kind 0: a bare timer / a timeout with a callback, 1: a process that waits twice
OPS = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25]), st.integers(0, 1)), min_size=1,
               max_size=30)


def _trace(env: simpy.Environment, ops: list[tuple[float, int]], untils: list[float]) -> list[tuple[float, str]]:
    """Schedule ``ops`` on ``env`` (each callback schedules a follow-up at the same delay once), run it in pieces
    up to each of ``untils`` and then to the end, and list what ran when."""
    seen: list[tuple[float, str]] = []

    def timer(tag: str, again: bool):
        def fire(_event: object) -> None:
            seen.append((env.now, tag))
            if again:
                call_later(env, 0.25, timer(tag + "'", False))
        return fire

    def proc(tag: str, delay: float):
        yield env.timeout(delay)
        seen.append((env.now, tag + ":a"))
        yield env.timeout(0)
        seen.append((env.now, tag + ":b"))

    for k, (delay, kind) in enumerate(ops):
        if kind == 0:
            call_later(env, delay, timer(f"t{k}", True))
        else:
            env.process(proc(f"p{k}", delay))
    for t in untils:
        if t > env.now:
            env.run(until=t)
            seen.append((env.now, "until"))
    env.run()
    return seen


@settings(max_examples=60, deadline=None)
@given(ops=OPS, untils=st.lists(st.sampled_from([0.5, 1.0, 1.75, 3.0]), max_size=3).map(sorted))
def test_same_order_as_simpy(ops, untils):
    ours = _trace(Environment(), ops, untils)  # type: ignore[arg-type]  # the loop stands in for SimPy's
    assert ours == _trace(simpy.Environment(), ops, untils)


def test_cancelled_timer_does_nothing_and_until_stops_before_normal_events():
    env = Environment()
    fired: list[str] = []
    t = env.call_later(1.0, lambda _e: fired.append("cancelled"))
    env.call_later(2.0, lambda _e: fired.append("at 2"))
    assert t.callbacks is not None
    t.callbacks.clear()
    env.run(until=2.0)
    assert env.now == 2.0 and fired == []  # the stop comes before the normal events at its time, as in SimPy
    env.run()
    assert fired == ["at 2"] and env.peek() == float("inf")


def test_a_failing_process_raises_as_in_simpy():
    env = Environment()

    def boom():
        yield env.timeout(1)
        raise ValueError("boom")

    env.process(boom())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boom"):
        env.run()
    with pytest.raises(ValueError, match="must be greater"):
        env.run(until=0.5)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.integers(0, 1)),
                    max_size=60))
def test_own_heap_pops_in_heapq_order(ops):
    """The loop's sift functions (used when compiled) pop the same entries in the same order as heapq."""
    import heapq

    from sim.engine.loop import sift_pop, sift_push

    ours: list = []
    ref: list = []
    for eid, (push, t, prio) in enumerate(ops):
        if push or not ref:
            entry = (t, prio, eid, None)
            sift_push(ours, entry)
            heapq.heappush(ref, entry)
        else:
            assert sift_pop(ours) == heapq.heappop(ref)
    while ref:
        assert sift_pop(ours) == heapq.heappop(ref)
    assert ours == []


def test_cancelled_timers_are_dropped_when_they_pile_up():
    """Cancelled timers leave the queue once they are most of it; the live ones still fire, in order."""
    env = Environment()
    fired: list[float] = []
    timers = [env.call_later(float(k), lambda _e: fired.append(env.now)) for k in range(1, 201)]
    for t in timers[::2] + timers[1:100:2]:
        env.cancel(t)
    assert len(env._queue) < 120  # compacted (150 cancelled of 200)
    env.run()
    assert fired == [float(k) for k in range(102, 201, 2)]
