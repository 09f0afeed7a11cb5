"""What a run will cost before it starts: requests, memory and a rough wall time, from the scenario alone
(no simulation, no trace parsing: it takes milliseconds).

Model (fitted to this project's benchmarks, README "Performance"; rough on purpose):

* requests = ``rate_rps × duration_s`` (a shape has mean 1); a replayed trace without ``rate_rps``:
  its rows (file size / mean line length of the first MiB) × ``rate_scale``;
* memory = 150 MB base + 1 KB per request kept in the per-request table (none with ``--stream``) + 100 B per
  node and time-series sample (``(duration_s + max_drain_s) / sample_interval_s`` samples);
* wall = requests / 30,000 req/s + node-samples / 500,000 per s (the sampler visits every node slot).

A run is refused when its memory exceeds 80 % of this machine's RAM or its wall time exceeds
:data:`MAX_WALL_S`; ``--force`` runs it anyway.

A run split into parts (``--slices``, ``--shards``: :class:`SplitEstimate`) costs the same per part — each part's
simulated requests (a slice's own, warm-up and tail; a cell's share) and node-samples — plus
:data:`ARRIVAL_DRAW_S` for every arrival a part regenerates only to skip it (each part draws the whole stream up to
its end, to keep the partition exact) and :data:`WORKER_START_S` per part; the wall time is the parts' makespan on
the workers (longest first, each to the worker that frees first), the memory that of the largest part per worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sim.core.config import Scenario
from sim.core.errors import CapsimError

BASE_BYTES = 150e6
BYTES_PER_REQUEST = 1_000.0
BYTES_PER_NODE_SAMPLE = 100.0
REQUESTS_PER_S = 30_000.0
NODE_SAMPLES_PER_S = 500_000.0
MAX_WALL_S = 24 * 3600.0
MEMORY_SHARE = 0.8
ARRIVAL_DRAW_S = 0.3e-6  # regenerating one skipped arrival (0.31 µs measured: docs/scaling.md, the 7-day example)
WORKER_START_S = 1.0  # a fresh worker's start-up and imports, per part


class TooLargeError(CapsimError):
    """The estimate exceeds what this machine can do (exit 2 unless ``--force``)."""


def machine_memory_bytes() -> float:
    """Physical memory of this machine (8 GiB if unknown)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * 2**30


@dataclass(frozen=True)
class Estimate:
    """Rough cost of simulating one or more scenarios (``runs``; ``slots`` of them at a time)."""

    requests: float  # per run (the largest)
    memory_bytes: float  # per process at once: the largest run × slots
    wall_s: float  # all runs, spread over the slots
    runs: int = 1
    slots: int = 1

    def line(self) -> str:
        runs = f"{self.runs:,} runs, " if self.runs > 1 else ""
        return (f"estimate: {runs}~{_si(self.requests)} requests per run, ~{_bytes(self.memory_bytes)} memory, "
                f"~{_duration(self.wall_s)} wall")

    def check(self, force: bool, memory_limit_bytes: float | None = None, max_wall_s: float = MAX_WALL_S) -> None:
        """Raise :class:`TooLargeError` (one line with the estimate) if beyond this machine, unless ``force``."""
        if force:
            return
        limit = MEMORY_SHARE * (memory_limit_bytes or machine_memory_bytes())
        why = []
        if self.memory_bytes > limit:
            why.append(f"needs more memory than this machine has ({_bytes(limit)} usable)")
        if self.wall_s > max_wall_s:
            why.append(f"would run longer than {_duration(max_wall_s)}")
        if why:
            raise TooLargeError(f"{self.line()}: {' and '.join(why)}; shorten duration_s, lower the rate or "
                                "the fleet, use --stream for long runs, or pass --force")


def _si(x: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:,.1f}{unit}"
    return f"{x:,.0f}"


def _bytes(b: float) -> str:
    for unit, div in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= div:
            return f"{b / div:,.1f} {unit}"
    return f"{b / 1e3:,.0f} kB"


def _duration(s: float) -> str:
    if s >= 86400 * 365:
        return f"{s / (86400 * 365):,.0f} years"
    if s >= 86400:
        return f"{s / 86400:,.1f} days"
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 60:
        return f"{s / 60:,.1f} min"
    return f"{s:,.1f} s"


def _trace_rows(path: Path) -> float:
    """Rows of a trace file, from its size and the mean line length of its first MiB."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return 0.0
    lines = head.count(b"\n")
    if lines == 0:
        return 1.0
    return max(0.0, size / (len(head) / lines) - 1)


def scenario_requests(sc: Scenario) -> float:
    """Expected arrivals of one run."""
    tr = sc.traffic
    if tr.rate_rps is not None:
        return float(tr.rate_rps) * float(sc.duration_s)
    if tr.trace is not None:
        path = Path(tr.trace.file)
        if not path.is_absolute():
            path = sc.base_dir / path
        return _trace_rows(path) * float(tr.trace.rate_scale)
    return 0.0


def estimate_scenario(sc: Scenario, stream: bool = False) -> Estimate:
    """Requests, memory and wall time of simulating ``sc`` once."""
    requests = scenario_requests(sc)
    samples = (float(sc.duration_s) + float(sc.max_drain_s)) / float(sc.output.sample_interval_s)
    node_samples = samples * max(1, sc.fleet.max_nodes)
    memory = BASE_BYTES + (0.0 if stream else BYTES_PER_REQUEST * requests) + BYTES_PER_NODE_SAMPLE * node_samples
    wall = requests / REQUESTS_PER_S + node_samples / NODE_SAMPLES_PER_S
    return Estimate(requests, memory, wall)


def estimate_many(scenarios: list[Scenario], slots: int = 1, stream: bool = False, repeat: int = 1) -> Estimate:
    """Several runs (each repeated ``repeat`` times, e.g. a sizing search) on ``slots`` processes at a time."""
    if not scenarios:
        return Estimate(0.0, BASE_BYTES, 0.0, 0, slots)
    each = [estimate_scenario(sc, stream) for sc in scenarios]
    slots = max(1, min(slots, len(each) * repeat))
    biggest = max(each, key=lambda e: e.memory_bytes)
    wall = sum(e.wall_s for e in each) * repeat / slots
    return Estimate(max(e.requests for e in each), biggest.memory_bytes * slots, wall, len(each) * repeat, slots)


def makespan_s(costs_s: list[float], workers: int) -> float:
    """Wall time of independent tasks on ``workers``: longest first, each to the worker that frees first."""
    loads = [0.0] * max(1, workers)
    for c in sorted(costs_s, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


@dataclass(frozen=True)
class SplitEstimate:
    """Rough cost of one run split into parts (time slices or cells) run ``workers`` at a time."""

    unit: str  # "slices" / "cells"
    part_requests: tuple[float, ...]  # simulated per part
    part_cpu_s: tuple[float, ...]
    part_memory_bytes: float  # the largest part (one worker)
    run_requests: float  # the unsplit run's arrivals
    workers: int
    where: str  # e.g. "process pool (2 workers)"

    @property
    def cpu_s(self) -> float:
        return sum(self.part_cpu_s)

    @property
    def wall_s(self) -> float:
        return makespan_s(list(self.part_cpu_s), self.workers)

    def line(self) -> str:
        sim = sum(self.part_requests)
        extra = (f" (+{100 * (sim / self.run_requests - 1):.1f} % warm-up and tail)"
                 if self.unit == "slices" and self.run_requests > 0 else "")
        return (f"split into {len(self.part_cpu_s)} {self.unit}: ~{_si(sim)} requests simulated{extra}, "
                f"largest {self.unit[:-1]} ~{_si(max(self.part_requests))}; ~{_duration(self.cpu_s)} CPU, "
                f"~{_duration(self.wall_s)} wall on {self.where}, ~{_bytes(self.part_memory_bytes)} memory per "
                "worker (the same per-request model, per part)")

    def check(self, force: bool, local_slots: int) -> None:
        """:meth:`Estimate.check` for the split run: ``local_slots`` parts in this machine's memory at once
        (0 on a Dask cluster: only the wall time is checked here)."""
        mem = self.part_memory_bytes * max(local_slots, 1) if local_slots else 0.0
        Estimate(max(self.part_requests), mem, self.wall_s, len(self.part_cpu_s), self.workers).check(force)


def split_estimate(sc: Scenario, unit: str, parts: list[tuple[float, float, float]], stream: bool, workers: int,
                   where: str) -> SplitEstimate:
    """``parts``: per part, (simulated requests, arrivals drawn only to be skipped, node-samples)."""
    cpu = [r / REQUESTS_PER_S + ns / NODE_SAMPLES_PER_S + d * ARRIVAL_DRAW_S + WORKER_START_S for r, d, ns in parts]
    mem = max(BASE_BYTES + (0.0 if stream else BYTES_PER_REQUEST * r) + BYTES_PER_NODE_SAMPLE * ns
              for r, _, ns in parts)
    return SplitEstimate(unit, tuple(r for r, _, _ in parts), tuple(cpu), mem, scenario_requests(sc),
                         workers, where)
