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

import gc
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
heapify: Final = heapq.heapify
# compiled (`make native`): the queue's own sift loops compare the keys' floats and ints natively (the C heapq's
# generic tuple comparisons were a fifth of a compiled run); pure Python keeps heapq (C beats interpreted loops)
_COMPILED: Final = not __file__.endswith(".py")
# cancelled timers stay in the heap until their time (a heap cannot drop an entry cheaply) unless there are many:
# when more than half of the entries (and at least this many) are cancelled ones, the heap is rebuilt without them
_COMPACT_MIN: Final = 32


# (time, priority, event id, event): unique keys, popped in that order. Typed as a tuple of any length so that
# compiled code moves the tuple objects as they are (a fixed-length tuple type would be unpacked and rebuilt)
Entry = tuple[Any, ...]


def _before(a: Entry, b: Entry) -> bool:
    """Whether entry ``a`` comes before ``b`` (their keys: time, then priority, then event id)."""
    ta: float = a[0]
    tb: float = b[0]
    if ta != tb:
        return ta < tb
    pa: int = a[1]
    pb: int = b[1]
    if pa != pb:
        return pa < pb
    ea: int = a[2]
    eb: int = b[2]
    return ea < eb


def sift_push(queue: list[Entry], entry: Entry) -> None:
    """heapq.heappush(queue, entry) written out, so that compiled it compares the keys natively."""
    queue.append(entry)
    _sift_up(queue, len(queue) - 1, entry)


def _sift_up(queue: list[Entry], pos: int, entry: Entry) -> None:
    """Put ``entry`` into the hole at ``pos``, moving it up past every parent it comes before."""
    while pos > 0:
        parent = (pos - 1) >> 1
        above = queue[parent]
        if not _before(entry, above):
            break
        queue[pos] = above
        pos = parent
    queue[pos] = entry


def sift_pop(queue: list[Entry]) -> Entry:
    """heapq.heappop(queue) written out (the same algorithm: the hole sinks to a leaf, the last entry rises from
    there), so that compiled it compares the keys natively."""
    last = queue.pop()
    n = len(queue)
    if n == 0:
        return last
    top = queue[0]
    pos = 0
    child = 1
    while child < n:
        right = child + 1
        if right < n and not _before(queue[child], queue[right]):
            child = right
        queue[pos] = queue[child]
        pos = child
        child = 2 * pos + 1
    _sift_up(queue, pos, last)
    return top


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
        self._queue: list[Entry] = []
        self._eid = 0
        self._active_proc: Any = None
        self._dead = 0  # cancelled timers still in the queue (cancel())

    @property
    def active_process(self) -> Any:
        """The process running now (SimPy's processes set it)."""
        return self._active_proc

    def schedule(self, event: Any, priority: int = _NORMAL, delay: float = 0) -> None:
        """Schedule ``event`` ``delay`` from now (SimPy calls this for its own events)."""
        self._eid += 1
        if _COMPILED:  # (written out at each use: a helper would cost pure Python a call per event)
            sift_push(self._queue, (self.now + delay, priority, self._eid, event))
        else:
            heappush(self._queue, (self.now + delay, priority, self._eid, event))

    def call_later(self, delay: float, callback: Callback) -> Timer:
        """Call ``callback(timer)`` ``delay`` from now; ordered as ``timeout(delay)`` created now would be."""
        timer = Timer(callback)
        self._eid += 1
        if _COMPILED:
            sift_push(self._queue, (self.now + delay, _NORMAL, self._eid, timer))
        else:
            heappush(self._queue, (self.now + delay, _NORMAL, self._eid, timer))
        return timer

    def cancel(self, timer: Timer) -> None:
        """Cancel a pending timer from :meth:`call_later` (it will not be called; one already fired or cancelled is
        left alone). Cancelled timers are dropped from the queue when they make up most of it: the queue stays as
        deep as the pending calls need — a node cancels the end of its decode run at every arrival that cuts it,
        and the run would otherwise have ended seconds later, so the cut ones outnumbered the live ones ~30:1 — and
        the order of the rest is unchanged (it is that of their unique (time, priority, event id) keys)."""
        callbacks = timer.callbacks
        if callbacks:
            callbacks.clear()
            self._dead += 1
            queue = self._queue
            if self._dead >= _COMPACT_MIN and 2 * self._dead > len(queue):
                queue[:] = [e for e in queue if not isinstance(e[3], Timer) or e[3].callbacks]
                heapify(queue)
                self._dead = 0

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
        t, _, _, event = sift_pop(self._queue) if _COMPILED else heappop(self._queue)
        self.now = t
        self._fire(event)

    def _fire(self, event: Any) -> None:
        if isinstance(event, Timer):
            callbacks = event.callbacks
            event.callbacks = None
            if callbacks:
                for callback in callbacks:
                    callback(event)
            elif callbacks is not None:  # a cancelled timer leaves the queue
                self._dead -= 1
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
        :meth:`simpy.Environment.run`).

        Python's cyclic garbage collector is paused while it runs (and switched back on when it returns or raises,
        if it was on): a run allocates many objects that live for the whole run (requests, their records) and
        almost no cyclic garbage (a few hundred objects in 200,000 requests), so the collections the allocations
        trigger find nothing and cost 7-15 % of the run (more with more nodes). The objects a call allocated are
        collected as usual after it returns: a run is cut into many calls (the caller's progress steps)."""
        if not gc.isenabled():
            return self._run(until)
        gc.disable()
        try:
            return self._run(until)
        finally:
            gc.enable()

    def _run(self, until: Any) -> Any:
        if until is None or isinstance(until, Event):
            return self._run_event(until)
        at = float(until)
        if at <= self.now:
            raise ValueError(f"until ({at}) must be greater than the current simulation time")
        stop = Timer(_no_op)  # SimPy's until event: urgent, so it comes before the normal events at ``at``
        self._eid += 1
        queue = self._queue
        if _COMPILED:
            sift_push(queue, (at, _URGENT, self._eid, stop))
        else:
            heappush(queue, (at, _URGENT, self._eid, stop))
        while True:  # the stop entry is in the queue: it cannot run dry first
            entry = sift_pop(queue) if _COMPILED else heappop(queue)
            t: float = entry[0]
            event = entry[3]
            self.now = t
            if event is stop:
                return None
            if isinstance(event, Timer):  # most events: inline
                callbacks = event.callbacks
                event.callbacks = None
                if callbacks:
                    for callback in callbacks:
                        callback(event)
                elif callbacks is not None:  # a cancelled timer leaves the queue
                    self._dead -= 1
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
