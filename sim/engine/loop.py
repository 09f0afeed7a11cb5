"""The event loop of a fast-engine run: SimPy's :class:`simpy.Environment`, with bare timers.

:class:`Environment` does what SimPy's does — one heap of ``(time, priority, event id, event)``, popped in that
order, each event's callbacks called in turn — and runs SimPy's own events and processes (timeouts, processes,
conditions: the sampler, autoscaler, clients and stale views keep using them). What it adds is
:meth:`Environment.call_later`: a callback at a time, as a :class:`Timer` (a list of callbacks, nothing else)
instead of a :class:`simpy.Timeout` — what the fast engine schedules at every step and decode-run end, and the
arrival driver at every arrival time. A timer takes the next event id and the normal priority, exactly as
``env.timeout(delay)`` would, so a run's events happen in the same order on either loop and its results are the
same (the reference engine's runs stay on SimPy's own loop; ``tests/test_engine_equivalence.py`` compares them).
Compiled by ``make native`` (:mod:`sim._native`), where most of a run's events pass through :meth:`Environment.run`
without the interpreter.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import AllOf, AnyOf, Event, Process, ProcessGenerator, Timeout

_NORMAL: Final = 1  # simpy.events.NORMAL
_URGENT: Final = 0  # simpy.events.URGENT
Callback = Callable[[Any], None]
# Final: `make native` keeps them in C variables instead of looking them up by name at every event
heappush: Final = heapq.heappush
heappop: Final = heapq.heappop


class Timer:
    """A pending call: its ``callbacks`` (None once fired). Clearing the list cancels it (it fires doing nothing)."""

    def __init__(self, callback: Callback) -> None:
        self.callbacks: list[Callback] | None = [callback]
        self._ok = True  # what a SimPy event that succeeded reports (a process never waits on a timer)
        self._value: object = None


class Environment:
    """SimPy's environment (same interface and event order) with :meth:`call_later`; see the module docstring."""

    def __init__(self, initial_time: float = 0.0) -> None:
        self.now = initial_time  # the current simulation time (SimPy's is a read-only property)
        self._queue: list[tuple[float, int, int, Any]] = []
        self._eid = 0
        self._active_proc: Any = None

    @property
    def active_process(self) -> Any:
        """The process running now (SimPy's processes set it)."""
        return self._active_proc

    def schedule(self, event: Any, priority: int = _NORMAL, delay: float = 0) -> None:
        """Schedule ``event`` ``delay`` from now (SimPy calls this for its own events)."""
        self._eid += 1
        heappush(self._queue, (self.now + delay, priority, self._eid, event))

    def call_later(self, delay: float, callback: Callback) -> Timer:
        """Call ``callback(timer)`` ``delay`` from now; ordered as ``timeout(delay)`` created now would be."""
        timer = Timer(callback)
        self._eid += 1
        heappush(self._queue, (self.now + delay, _NORMAL, self._eid, timer))
        return timer

    def timeout(self, delay: float = 0, value: Any = None) -> Timeout:
        return Timeout(cast(simpy.Environment, self), delay, value)

    def event(self) -> Event:
        return Event(cast(simpy.Environment, self))

    def process(self, generator: ProcessGenerator) -> Process:
        return Process(cast(simpy.Environment, self), generator)

    def all_of(self, events: Iterable[Event]) -> AllOf:
        return AllOf(cast(simpy.Environment, self), events)

    def any_of(self, events: Iterable[Event]) -> AnyOf:
        return AnyOf(cast(simpy.Environment, self), events)

    def peek(self) -> float:
        """The time of the next event (inf if none)."""
        return self._queue[0][0] if self._queue else float("inf")

    def step(self) -> None:
        """Process the next event (:class:`simpy.core.EmptySchedule` if there is none)."""
        if not self._queue:
            raise EmptySchedule()
        t, _, _, event = heappop(self._queue)
        self.now = t
        self._fire(event)

    def _fire(self, event: Any) -> None:
        if isinstance(event, Timer):
            callbacks = event.callbacks
            event.callbacks = None
            if callbacks:
                for callback in callbacks:
                    callback(event)
            return
        # a SimPy event: exactly simpy.Environment.step
        callbacks = event.callbacks
        event.callbacks = None
        k = 0
        try:
            for k, callback in enumerate(callbacks):  # noqa: B007 (k: where a StopSimulation came from)
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[k + 1:]
            self.schedule(event, -1)
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc

    def run(self, until: Any = None) -> Any:
        """Run until the queue is empty, until time ``until``, or until the event ``until`` has happened (as
        :meth:`simpy.Environment.run`)."""
        if until is None or isinstance(until, Event):
            return self._run_event(until)
        at = float(until)
        if at <= self.now:
            raise ValueError(f"until ({at}) must be greater than the current simulation time")
        stop = Timer(_no_op)  # SimPy's until event: urgent, so it comes before the normal events at ``at``
        self._eid += 1
        queue = self._queue
        heappush(queue, (at, _URGENT, self._eid, stop))
        while True:  # the stop entry is in the queue: it cannot run dry first
            t, _, _, event = heappop(queue)
            self.now = t
            if event is stop:
                return None
            if isinstance(event, Timer):  # most events: inline
                callbacks = event.callbacks
                event.callbacks = None
                if callbacks:
                    for callback in callbacks:
                        callback(event)
            else:
                self._fire(event)

    def _run_event(self, until: Event | None) -> Any:
        if until is not None:
            if until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        try:
            while True:
                self.step()
        except StopSimulation as exc:
            return exc.args[0]
        except EmptySchedule:
            if until is not None:
                raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}') from None
        return None


def _no_op(_event: Any) -> None:
    pass


def call_later(env: simpy.Environment, delay: float, callback: Callback) -> Any:
    """Call ``callback`` ``delay`` from now on ``env``: a bare :class:`Timer` on this module's loop, a SimPy timeout
    on SimPy's. Returns what holds the callbacks (clear them to cancel)."""
    loop = cast(Any, env)
    if isinstance(loop, Environment):
        return loop.call_later(delay, callback)
    ev = env.timeout(delay)
    ev.callbacks.append(callback)
    return ev


def make_environment(initial_time: float = 0.0) -> simpy.Environment:
    """A fresh :class:`Environment` starting at ``initial_time``, typed as SimPy's (the rest of the simulator knows it
    by that interface)."""
    return cast(simpy.Environment, Environment(initial_time))
