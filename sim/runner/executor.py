"""The one runner that fans out simulations: in-process, a local process pool, or a Dask cluster.

Every experiment that runs many scenarios (``capsim sweep``, ``capsim size``, ``capsim compare``) goes through
here. Pick the executor with an :class:`ExecutorSpec`:

* ``ExecutorSpec(workers=1)`` or ``in_process=True``: run each task in this process (debugging, profiling);
* ``ExecutorSpec(workers=N)`` (default: all cores): a local :class:`~concurrent.futures.ProcessPoolExecutor`;
* ``ExecutorSpec(scheduler="tcp://host:8786")``: an existing Dask ``distributed`` cluster (optional extra
  ``capsim[dask]``); its workers must have the same capsim and data files installed.

:func:`iter_outcomes` keeps at most a small window of tasks in flight (so an interrupted run loses only those)
and yields each outcome as it finishes. If a worker process dies (killed, out of memory) the pool is rebuilt
and the tasks that were in flight are retried one at a time; a task that kills a pool while running alone is
reported as failed.
:func:`map_summaries` is the simple, ordered interface: same scenarios and seeds → same list, whatever the
executor.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sim.core.config import Scenario
from sim.core.errors import ConfigError

if TYPE_CHECKING:
    from sim.metrics.summary import Summary

T = TypeVar("T")
R = TypeVar("R")
ExecutorKind = Literal["in_process", "process", "dask"]

MAX_POOL_RESTARTS = 3  # pools rebuilt after a worker died, per iter_outcomes call
DASK_CONNECT_TIMEOUT_S = 10.0


def run_summary(scenario: Scenario) -> Summary:
    """Simulate one scenario and return its summary (:class:`~sim.metrics.summary.Summary`)."""
    from sim.runner.pipeline import run_scenario

    return run_scenario(scenario).summary


def default_workers() -> int:
    """All cores of this machine."""
    return max(1, os.cpu_count() or 1)


class InProcessExecutor(Executor):
    """Runs each task synchronously inside :meth:`submit` (a debugging executor with the same interface)."""

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, like any executor
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


@dataclass(frozen=True)
class ExecutorSpec:
    """Where tasks run. ``scheduler`` (a Dask address) wins over ``workers``; ``workers=1`` is in-process."""

    workers: int | None = None
    scheduler: str | None = None
    in_process: bool = False

    @property
    def kind(self) -> ExecutorKind:
        if self.scheduler:
            return "dask"
        if self.in_process or (self.workers or default_workers()) <= 1:
            return "in_process"
        return "process"

    def describe(self) -> str:
        """One line for the console, e.g. ``process pool (2 workers)``."""
        if self.kind == "dask":
            return f"Dask cluster at {self.scheduler}"
        if self.kind == "in_process":
            return "in-process"
        return f"process pool ({self.workers or default_workers()} workers)"

    @contextmanager
    def open(self, n_tasks: int | None = None) -> Iterator[tuple[Executor, int]]:
        """Yield ``(executor, slots)``: slots is how many tasks can run at once. On an exception (e.g. Ctrl-C)
        queued tasks are cancelled and local worker processes are stopped instead of waited for."""
        if self.kind == "dask":
            with _dask_executor(self.scheduler or "") as pair:
                yield pair
            return
        if self.kind == "in_process":
            ex: Executor = InProcessExecutor()
            slots = 1
        else:
            slots = self.workers or default_workers()
            if n_tasks is not None:
                slots = max(1, min(slots, n_tasks))
            ex = ProcessPoolExecutor(max_workers=slots, initializer=_worker_init)
        try:
            yield ex, slots
        except BaseException:
            _stop_now(ex)
            raise
        ex.shutdown(wait=True)


def _worker_init() -> None:
    """In a pool worker: SIGTERM ends the process (the driver may have turned SIGTERM into Ctrl-C; a worker
    must not inherit that, or :func:`_stop_now` could not stop it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_now(ex: Executor, grace_s: float = 2.0) -> None:
    """Cancel queued tasks and stop a process pool's workers (they may be mid-simulation): SIGTERM, then
    SIGKILL for any still alive after ``grace_s``; none is left running."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


@contextmanager
def _dask_executor(address: str) -> Iterator[tuple[Executor, int]]:
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler", "", "Dask is not installed: pip install 'capsim[dask]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError("--scheduler", "", f"cannot connect to the Dask scheduler at {address} ({exc})") from None
    try:
        slots = max(1, sum(client.nthreads().values()))
        ex = client.get_executor()
        try:
            yield ex, slots
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    finally:
        client.close()


@dataclass(frozen=True)
class Outcome:
    """The result of task ``index``: ``value`` or ``error`` (the exception it raised)."""

    index: int
    value: Any = None
    error: BaseException | None = None


def iter_outcomes(fn: Callable[[T], R], items: Sequence[T], spec: ExecutorSpec,
                  window_per_slot: int = 2) -> Iterator[Outcome]:
    """Run ``fn(item)`` for every item on ``spec``'s executor, yielding :class:`Outcome` s as they finish
    (not in input order). At most ``window_per_slot × slots`` tasks are submitted at a time. Closing the
    iterator early (or an exception in the consumer) cancels what is still queued.

    A dead worker breaks the whole pool and every task in flight fails with it; which one killed it is not
    known. Those tasks become *suspects*: they run again in a fresh pool **one at a time**, after the other
    tasks, so a suspect that breaks a pool while running alone is the culprit (reported as failed) and the
    bystanders finish. (Retried together, a culprit that dies quickly would take a slow bystander down again.)"""
    pending: deque[int] = deque(range(len(items)))
    suspects: deque[int] = deque()
    unexplained = 0  # pools that broke with no task known to have broken them
    while pending or suspects:
        broken = culprit_found = False
        with spec.open(len(pending) + len(suspects)) as (ex, slots):
            window = max(1, slots * window_per_slot) if spec.kind != "in_process" else 1
            in_flight: dict[Future, int] = {}
            alone: Future | None = None  # a suspect running by itself
            while ((pending or suspects) and not broken) or in_flight:
                while not broken and alone is None:
                    from_suspects = not (pending and len(in_flight) < window)
                    if from_suspects and not (suspects and not in_flight):
                        break
                    queue = suspects if from_suspects else pending
                    i = queue.popleft()
                    try:
                        fut = ex.submit(fn, items[i])
                    except (BrokenProcessPool, RuntimeError):
                        queue.appendleft(i)
                        broken = True
                        break
                    in_flight[fut] = i
                    if from_suspects:
                        alone = fut
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = in_flight.pop(fut)
                    err = fut.exception()
                    was_alone, alone = fut is alone, (None if fut is alone else alone)
                    if isinstance(err, BrokenProcessPool):
                        broken = True
                        culprit_found = culprit_found or was_alone
                        if not was_alone and unexplained < MAX_POOL_RESTARTS:
                            suspects.append(i)  # perhaps an innocent bystander: retried alone
                            continue
                        err = RuntimeError("a worker process died while running this task (killed or out of "
                                           "memory?)")
                    yield Outcome(i, None if err is not None else fut.result(), err)
        if broken and not culprit_found:
            unexplained += 1
        if broken and unexplained > MAX_POOL_RESTARTS:
            for queue in (pending, suspects):
                while queue:
                    yield Outcome(queue.popleft(), None, RuntimeError("worker pool kept dying; task not run"))


def run_in_order(fn: Callable[[T], R], items: Sequence[T], spec: ExecutorSpec,
                 on_done: Callable[[int], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]`` on ``spec``'s executor, one task per slot at a time (the parts of a split
    run: cells, slices); the first failure is raised; ``on_done(i)`` is called as item ``i`` finishes (in
    completion order: progress)."""
    out: list[R | None] = [None] * len(items)
    for oc in iter_outcomes(fn, items, spec, window_per_slot=1):
        if oc.error is not None:
            raise oc.error
        out[oc.index] = oc.value
        if on_done is not None:
            on_done(oc.index)
    return out  # type: ignore[return-value]


def map_summaries(scenarios: Iterable[Scenario], workers: int | None = None, *,
                  scheduler: str | None = None) -> list[Summary]:
    """Summaries of ``scenarios`` in input order, computed on ``workers`` processes (default: all cores;
    1 = in-process) or on the Dask cluster at ``scheduler``. The first failing scenario's error is raised."""
    items = list(scenarios)
    spec = ExecutorSpec(workers=1 if len(items) <= 1 else workers, scheduler=scheduler)
    out: list[Summary | None] = [None] * len(items)
    for oc in iter_outcomes(run_summary, items, spec):
        if oc.error is not None:
            raise oc.error
        out[oc.index] = oc.value
    return out  # type: ignore[return-value]


class SummaryPool:
    """A worker pool kept open across many batches of runs (``capsim size`` bisects in dozens of small steps;
    starting a process pool per step costs more than the runs). Use as a context manager; :meth:`map` is
    :func:`map_summaries` on the open pool. A pool that breaks (a worker killed) is replaced by a fresh
    :func:`map_summaries` call for that batch."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None) -> None:
        self.spec = ExecutorSpec(workers=workers, scheduler=scheduler)
        self._cm: Any = None
        self._ex: Executor | None = None
        self.batches = 0

    def __enter__(self) -> SummaryPool:
        if self.spec.kind != "in_process":
            self._cm = self.spec.open()
            self._ex, _ = self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            cm, self._cm, self._ex = self._cm, None, None
            cm.__exit__(*exc)

    def map(self, scenarios: Iterable[Scenario]) -> list[Summary]:
        """Summaries of ``scenarios`` in input order (the first error is raised)."""
        items = list(scenarios)
        self.batches += 1
        if self._ex is None or len(items) <= 1:
            return map_summaries(items, 1)  # one run (or a one-worker spec): in this process
        try:
            futures = [self._ex.submit(run_summary, s) for s in items]
            return [f.result() for f in futures]
        except BrokenProcessPool:
            self.__exit__(None, None, None)
            return map_summaries(items, self.spec.workers, scheduler=self.spec.scheduler)
