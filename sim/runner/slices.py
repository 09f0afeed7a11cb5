"""One long run split in time: ``capsim run --slices K``.

The horizon ``[0, duration_s)`` is cut into ``K`` slices at bounds ``b_k`` where the traffic's expected arrivals (∫λ
dt) reach ``k/K`` of the run's, aligned to the sampler's interval — equal work rather than equal time, so on many
cores no slice of peak hours sets the wall time (a replayed trace: where its actual arrivals reach ``k/K``;
constant-rate traffic: ``b_k ≈ k·duration_s/K``). Slice ``k`` simulates,
from an empty fleet, the clock from ``b_k − w_k`` (its warm-up) with exactly the unsliced run's arrivals — every slice
regenerates the scenario's arrival stream from its seed and admits those in ``[b_k − w_k, b_{k+1} + tail)`` — and
keeps only the requests that arrive in ``[b_k, b_{k+1})`` (its own); it stops once its own requests are finished. The
last slice drains as the unsliced run does. Every arrival is therefore one slice's own request, exactly once, with its
class and token counts.

The merge (:class:`SliceFold`, as the slices finish, in slice order: the client holds one slice's output at a time):
counts add; per-request tables are concatenated (in memory) or the streamed
counters and histograms add (``--stream``); the time series are the slices' samples in ``(b_k, b_{k+1}]`` placed end
to end (cumulative per-node series — busy seconds, FLOPs, HBM bytes — continued from the previous slice: the
slice's value minus its value at ``b_k``); per-node busy seconds and engine steps are the differences between the
slice's marks at ``b_k`` and ``b_{k+1}``; GPU-hours are the whole run's (a fleet of reserved nodes only).

The approximation is the state at ``b_k``: requests in flight and queued there are those of the warm-up, served
by a fleet that started empty ``w_k`` earlier instead of the real history, and the requests arriving after
``b_{k+1} + tail`` are missing for the slice's last requests. :func:`plan_slices` chooses ``w_k`` from the
workload: three lifetimes of the longest requests (P99.9 output tokens × the decode step time of a full batch,
:mod:`sim.perf.capacity`; at least 60 s), plus, where a fluid model of the offered rate against the fleet's
capacity has a backlog at ``b_k``, the time since that backlog was last empty (queue drain). Random
streams other than the arrivals (power-of-two router, step-time jitter) restart from the seed in every slice.

What slicing cannot do exactly is refused (one line, exit 2): state that lives longer than a warm-up or is fleet
history — autoscaling and on-demand nodes, spot evictions, deferrable (batch) backlogs, client timeouts and retries,
a hosted API or spill policy (rate limits, budgets), prefix caching and session routing (cache contents), and
prefill / decode pools. Measured in docs/scaling.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.core.rng import stream
from sim.runner.executor import ExecutorSpec, iter_outcomes
from sim.runner.shards import CellOutput, _add_hours, _peak_rss_mb, finish_streamed, merge_tables
from sim.runner.simulation import ProgressFn, SimResult, SimWindow, Tally, TimeSeries, simulate

LIFETIMES = 3.0  # warm-up: this many lifetimes of the longest requests (P99.9 output tokens)
MIN_WARMUP_S = 60.0
DRAIN_UTILISATION = 1.0  # the fluid backlog builds where the offered rate exceeds this share of capacity
FLUID_STEP_S = 60.0  # at most; shorter runs: their step (_align_s)


def check_sliceable(scenario: Scenario, slices: int) -> None:
    """One :class:`ConfigError` naming what stops ``scenario`` from being split into ``slices`` time slices."""
    src = scenario.source
    if slices < 1:
        raise ConfigError("--slices", "", f"must be at least 1 (got {slices})")
    if slices == 1:
        return
    fl = scenario.fleet
    prefix = "fleet" if fl.pools is None else "fleet.pools.{}"
    for i, p in enumerate(fl.pool_list()):
        where = prefix.format(i)
        if p.autoscaler.policy != "none" or p.on_demand.max_nodes:
            raise ConfigError(src, f"{where}.autoscaler", "--slices does not support autoscaling or on-demand "
                                                          "nodes (the fleet's size at a slice's start is history)")
        if p.spot.nodes:
            raise ConfigError(src, f"{where}.spot", "--slices does not support spot nodes (evictions and "
                                                    "replacements carry across slices)")
        if p.role != "mixed":
            raise ConfigError(src, f"{where}.role", "--slices does not support prefill / decode pools")
    if scenario.api is not None or scenario.spill is not None:
        raise ConfigError(src, "spill", "--slices does not support a hosted API or spill policy (rate limits and "
                                        "budgets carry across slices)")
    for i, c in enumerate(scenario.traffic.classes):
        where = f"traffic.classes.{i}"
        if c.deferrable is not None:
            raise ConfigError(src, f"{where}.deferrable", f"--slices does not support deferrable class '{c.name}' "
                                                          "(its backlog can cross a slice boundary)")
        if c.client is not None and c.client.timeout_s is not None:
            raise ConfigError(src, f"{where}.client", f"--slices does not support client timeouts and retries "
                                                      f"(class '{c.name}': a retry storm outlives a warm-up)")
        if c.prefix is not None and c.prefix.conversation is not None:
            raise ConfigError(src, f"{where}.prefix.conversation", "--slices does not support conversations "
                                                                   "(a session's turns and cache cross slices)")
    if any(p.engine.prefix_caching for p in _pool_fleets(scenario)):
        raise ConfigError(src, "fleet.engine.prefix_caching", "--slices does not support prefix caching (the "
                                                              "caches' contents at a slice's start are history)")
    if scenario.router.policy in ("prefix_aware", "session_affinity"):
        raise ConfigError(src, "router.policy", f"--slices does not support the {scenario.router.policy} router "
                                                "(it routes by cache contents and sessions)")
    D = scenario.duration_s
    if D / slices < _align_s(scenario):
        raise ConfigError("--slices", "", f"{slices} slices of {D / slices:g} s are shorter than the run's "
                                          f"{_align_s(scenario):g}-s step (at most --slices "
                                          f"{max(1, int(D // _align_s(scenario)))})")


def _pool_fleets(scenario: Scenario) -> list[Any]:
    fl = scenario.fleet
    return [fl] if fl.pools is None else [fl.pool_fleet(i) for i in range(len(fl.pools))]


def _align_s(scenario: Scenario) -> float:
    """Slice bounds fall on the sampler's grid and on the run loop's steps (:func:`simulate`)."""
    interval = scenario.output.sample_interval_s
    step = max(interval, min(60.0, scenario.duration_s / 50))
    ratio = step / interval
    return step if abs(ratio - round(ratio)) < 1e-9 else interval


@dataclass(frozen=True)
class SlicePlan:
    """The slices of a run and why their warm-ups are what they are."""

    windows: list[SimWindow]
    lifetime_s: float  # P99.9 output tokens × the decode step of a full batch
    tail_s: float
    bounds: str = "equal times"  # or "equal expected arrivals" (:func:`slice_bounds`)

    @property
    def warmups_s(self) -> list[float]:
        return [w.keep_from_s - w.start_s for w in self.windows]

    def describe(self) -> str:
        n = len(self.windows)
        spans = [w.keep_to_s - w.keep_from_s for w in self.windows]
        span = f"{min(spans):,.0f}" if max(spans) - min(spans) < 0.5 else f"{min(spans):,.0f}–{max(spans):,.0f}"
        w = self.warmups_s[1:] or [0.0]
        return (f"{n} slice(s) of {span} s ({self.bounds}), warm-up {min(w):,.0f}–{max(w):,.0f} s "
                f"(longest requests live ~{self.lifetime_s:,.0f} s), tail {self.tail_s:,.0f} s")


def request_lifetime_s(scenario: Scenario) -> float:
    """How long the longest requests live on a loaded node: P99.9 of the output tokens × the decode step time
    of a full batch (the binding concurrency limit of :func:`sim.perf.capacity.node_capacity`), the slowest pool."""
    out_q, (mean_in, mean_out) = _output_tokens_q999(scenario)
    return max(out_q * cap.batch / max(cap.output_tokens_per_s, 1e-9) for cap in _capacities(scenario, mean_in,
                                                                                              mean_out))


def _output_tokens_q999(scenario: Scenario) -> tuple[float, tuple[float, float]]:
    from sim.traffic.classes import ClassMix

    tr = scenario.traffic
    block = scenario.fleet.engine.block_size
    if tr.trace is not None or any(c.output_tokens is None for c in tr.classes):
        from sim.traffic.arrivals import load_trace

        if tr.trace is None:  # pragma: no cover - the config requires a trace for classes without tokens
            raise ConfigError(scenario.source, "traffic.classes", "token distributions or a trace are needed")
        trace = load_trace(tr, scenario.base_dir)
        out = trace.output_tokens.astype(float)
        return float(np.quantile(out, 0.999)), (float(trace.prompt_tokens.mean()), float(out.mean()))
    mix = ClassMix(tr.classes, scenario.base_dir, block)
    rng = stream(scenario.seed, "slice-warmup")
    draws = np.concatenate([s.sample(rng, 20_000) for s in mix.outputs])
    return float(np.quantile(draws, 0.999)), mix.mean_tokens()


def _capacities(scenario: Scenario, mean_in: float, mean_out: float) -> list[Any]:
    from sim.perf.capacity import node_capacity
    from sim.runner.simulation import build_pool_models

    return [node_capacity(nm, mean_in, mean_out, 0.0) for nm in build_pool_models(scenario)]


def fluid_backlog(scenario: Scenario) -> tuple[np.ndarray, np.ndarray] | None:
    """(grid times, backlog in requests) of a fluid queue fed at the traffic's λ(t) and drained at
    :data:`DRAIN_UTILISATION` × the fleet's capacity (Σ nodes × :func:`node_capacity` requests/s for the mix).
    None for a replayed trace (no λ(t))."""
    from sim.runner.simulation import _forecast

    rate_at, _ = _forecast(scenario)
    if rate_at is None:
        return None
    _, (mean_in, mean_out) = _output_tokens_q999(scenario)
    caps = _capacities(scenario, mean_in, mean_out)
    mu = DRAIN_UTILISATION * sum(p.nodes * c.requests_per_s for p, c in zip(scenario.fleet.pool_list(), caps))
    dt = min(FLUID_STEP_S, _align_s(scenario))
    t = np.arange(0.0, scenario.duration_s + dt, dt)
    lam = np.array([rate_at(float(x) + dt / 2) for x in t])
    backlog = np.zeros(len(t))
    for j in range(1, len(t)):
        backlog[j] = max(0.0, backlog[j - 1] + (lam[j - 1] - mu) * dt)
    return t, backlog


def slice_bounds(scenario: Scenario, slices: int, balance: bool = True) -> list[float]:
    """``slices + 1`` bounds from 0 to ``duration_s``, inner ones on the run's step grid. ``balance``: at equal
    arrivals — the k-th bound is the grid point where the arrivals up to it come closest to k/K of the run's: the
    expected ones (∫λ dt, the traffic shape's rate integral) for generated traffic, the actual ones for a replayed
    trace (its arrival times, as the run replays them) — so the slices carry similar work and the longest does not
    set the wall time; otherwise at equal times, ``k·duration_s/slices``."""
    D = scenario.duration_s
    align = _align_s(scenario)
    n_steps = max(1, math.ceil(D / align - 1e-9))  # grid points 0, align, …, below D; then D itself
    grid = np.append(align * np.arange(n_steps), D)
    cum = _arrivals_before(scenario, grid) if _balanced(scenario, balance) else None
    if cum is None:
        target = np.array([k * D / slices for k in range(1, slices)])
        j = np.rint(target / align).astype(int)
    else:
        j = np.array([int(np.argmin(np.abs(cum - k * cum[-1] / slices))) for k in range(1, slices)])
    last = len(grid) - 2  # the last grid point below D
    for i in range(len(j)):  # strictly increasing, leaving a step for every later slice
        j[i] = min(max(j[i], (j[i - 1] if i else 0) + 1), last - (len(j) - 1 - i))
    return [0.0] + [float(grid[x]) for x in j] + [D]


def _arrivals_before(scenario: Scenario, grid: np.ndarray) -> np.ndarray:
    """Arrivals before each grid point: expected (∫λ dt) for generated traffic, counted for a replayed trace."""
    if scenario.traffic.trace is not None:
        from sim.traffic.arrivals import arrival_chunks

        counts = np.zeros(len(grid), dtype=np.int64)
        for chunk in arrival_chunks(scenario):  # the run's own replay: the same times, seed and scaling
            counts += np.searchsorted(chunk.time_s, grid, side="left")
        return counts.astype(float)
    curve = _rate_curve(scenario)
    return np.concatenate([[0.0], np.cumsum(curve.expected_counts(grid))])


def _balanced(scenario: Scenario, balance: bool) -> bool:
    """Whether :func:`slice_bounds` places bounds by arrivals (a shaped λ(t) or a trace), not by time."""
    if not balance:
        return False
    if scenario.traffic.trace is not None:
        return True
    curve = _rate_curve(scenario)
    return curve is not None and not curve.constant


def _rate_curve(scenario: Scenario) -> Any:
    """The traffic's :class:`~sim.traffic.shapes.RateCurve` (None for a replayed trace)."""
    from sim.traffic.arrivals import rate_curve

    tr = scenario.traffic
    if tr.trace is not None or tr.rate_rps is None:
        return None
    return rate_curve(tr, scenario.base_dir, scenario.source)


def plan_slices(scenario: Scenario, slices: int, warmup_s: float | None = None,
                tail_s: float | None = None, balance: bool = True) -> SlicePlan:
    """The slices' windows: bounds at equal expected arrivals on the run's step grid (:func:`slice_bounds`;
    ``balance=False``: equal times), each slice's warm-up ``warmup_s`` if given, else chosen from the workload (see
    the module docstring); ``tail_s`` (default: the lifetime warm-up) of arrivals after a slice's end keep loading
    the fleet while its last requests finish."""
    check_sliceable(scenario, slices)
    D = scenario.duration_s
    align = _align_s(scenario)
    bounds = slice_bounds(scenario, slices, balance)
    if any(b <= a for a, b in itertools.pairwise(bounds)):  # pragma: no cover - check_sliceable keeps slices ≥ align
        raise ConfigError("--slices", "", "slices too short for the run's step")
    life = request_lifetime_s(scenario)
    base = math.ceil(max(MIN_WARMUP_S, LIFETIMES * life) / align) * align
    tail = base if tail_s is None else tail_s
    fluid = fluid_backlog(scenario) if warmup_s is None else None
    windows = []
    for k in range(slices):
        a, b = bounds[k], bounds[k + 1]
        w = base if warmup_s is None else warmup_s
        if fluid is not None and k > 0:
            t, q = fluid
            j = int(np.searchsorted(t, a, side="right")) - 1
            if q[j] > 0:
                empty = np.flatnonzero(q[: j + 1] <= 0)
                drain = a - (t[empty[-1]] if len(empty) else 0.0)
                w = max(w, drain + base)
        start = max(0.0, math.floor((a - w) / align) * align)
        last = k == slices - 1
        windows.append(SimWindow(start, a, b, D if last else min(D, b + tail), last))
    how = "equal times"
    if _balanced(scenario, balance):
        how = "equal arrivals" if scenario.traffic.trace is not None else "equal expected arrivals"
    return SlicePlan(windows, life, tail, how)


def run_slice(task: tuple[Scenario, SimWindow, bool, ProgressFn | None]) -> CellOutput:
    """Simulate one slice (a top-level function: it is pickled to pool and Dask workers). The task's progress
    function (in-process runs only: None on workers) is :func:`simulate`'s ``progress`` hook."""
    import time

    scenario, window, streamed, progress = task
    cpu0 = time.process_time()
    collector = table = None
    if not streamed:
        from sim.metrics.tables import requests_table

        result = simulate(scenario, progress, window=window)
        table = requests_table(result)
        result.requests = []
    else:
        from sim.metrics.streaming import StreamingCollector

        collector = StreamingCollector(scenario)
        result = simulate(scenario, progress, keep_requests=False, on_request_done=collector, window=window)
        collector.flush()
    return CellOutput(result, table, collector, time.process_time() - cpu0, _peak_rss_mb())


def _rows(series: TimeSeries, window: SimWindow) -> np.ndarray:
    """Indices of the slice's own samples: times in (keep_from, keep_to], every later one for the last slice."""
    t, half = series.fleet("time_s"), series.interval_s / 2  # bounds are on the sample grid (clock drift < half)
    own = t > window.keep_from_s + half
    if not window.last:
        own &= t <= window.keep_to_s + half
    return np.flatnonzero(own)


CUMULATIVE = ("busy_s", "flops", "hbm_bytes")  # per-node series that accumulate over the run


class SeriesFold:
    """The run's time series from its slices' own samples, end to end, folded in slice order (:meth:`add`) so a
    slice's whole series can be dropped once its own rows are taken; cumulative per-node series continue from the
    previous slice (each slice's value minus its value at its first bound)."""

    def __init__(self) -> None:
        self.fleet: dict[str, list[np.ndarray]] = {k: [] for k in TimeSeries._FLEET_FIELDS}
        self.per_node: dict[str, list[np.ndarray]] = {k: [] for k in TimeSeries._NODE_FIELDS}
        self.pools: dict[str, list[np.ndarray]] = {k: [] for k in ("arrivals", "completions", "nodes_billed")}
        self.carried: dict[str, np.ndarray] | None = None
        self.interval_s = 0.0
        self.nodes = 0
        self.with_pools = False

    def add(self, series: TimeSeries, w: SimWindow) -> None:
        if self.carried is None:
            self.carried = {k: np.zeros(series.nodes) for k in CUMULATIVE}
            self.interval_s, self.nodes, self.with_pools = series.interval_s, series.nodes, bool(series.pools)
        rows = _rows(series, w)
        t = series.fleet("time_s")
        at = np.flatnonzero(np.abs(t - w.keep_from_s) < series.interval_s / 2)  # the sample at its first bound
        for k in TimeSeries._FLEET_FIELDS:
            self.fleet[k].append(series.fleet(k)[rows])
        for k in TimeSeries._NODE_FIELDS:
            a = series.per_node(k)
            if k in CUMULATIVE:
                base = a[at[0]] if len(at) else np.zeros(a.shape[1])
                own = a[rows] - base + self.carried[k]
                if len(own):
                    self.carried[k] = own[-1]
                self.per_node[k].append(own)
            else:
                self.per_node[k].append(a[rows])
        if self.with_pools:
            for k in self.pools:
                self.pools[k].append(series.per_pool(k)[rows])

    def series(self) -> TimeSeries:
        """The merged series; the folded rows are released field by field as it is built (the client's peak at the
        end of a long run is one copy of the series, not two)."""
        merged = TimeSeries(self.interval_s, self.nodes)
        for parts in (self.fleet, self.per_node):
            for k in list(parts):
                merged.set_field(k, np.concatenate(parts.pop(k)))
        if self.with_pools:
            merged.set_pools({k: np.concatenate(v) for k, v in self.pools.items()})
        self.pools = {}
        return merged


def merge_series(parts: list[TimeSeries], windows: list[SimWindow]) -> TimeSeries:
    """The run's time series from its slices' own samples, end to end (:class:`SeriesFold`)."""
    fold = SeriesFold()
    for series, w in zip(parts, windows):
        fold.add(series, w)
    return fold.series()


@dataclass(frozen=True)
class SliceFigures:
    """What one slice cost (benchmarks, ``--dry-run`` checks): its own requests, the requests it simulated (warm-up
    and tail included), CPU seconds and its worker's peak RSS so far."""

    own: int
    simulated: int
    cpu_s: float
    peak_rss_mb: float


class SliceFold:
    """The whole run folded from its slices as they finish (:meth:`add`, in any order): a slice is folded as soon as
    every earlier one has been — counts, busy seconds and steps, fleet events, its own time-series rows, its
    per-request table (in memory) or its streamed counters and histograms (merged into the first slice's
    collector) — and then dropped, so the client holds one slice's output at a time rather than all of them
    (a slice that finishes early waits for its predecessors; ``release``: a folded slice's time series is emptied
    too, for a caller that keeps its outputs). Everything is added in slice order, as
    :func:`merge_slices` does at once: the same figures, bit for bit."""

    def __init__(self, scenario: Scenario, windows: list[SimWindow], release: bool = False) -> None:
        self.scenario, self.windows, self.release = scenario, windows, release
        self.figures: list[SliceFigures | None] = [None] * len(windows)
        self._waiting: dict[int, CellOutput | SimResult] = {}
        self._next = 0
        self._series = SeriesFold()
        self._busy: np.ndarray | None = None
        self._steps: np.ndarray | None = None
        self._tally = Tally()
        self._requests: list[Any] = []
        self._events: list[Any] = []
        self._wall_s = 0.0
        self._last: SimResult | None = None
        self.tables: list[Any] = []  # per-request tables (in memory)
        self.collector: Any = None  # the merged StreamingCollector (streamed)
        self.node_work: np.ndarray | None = None  # routing balance (streamed)

    def add(self, k: int, part: CellOutput | SimResult) -> None:
        """Slice ``k``'s output (a :class:`CellOutput`, or a bare :class:`SimResult`)."""
        self._waiting[k] = part
        while self._next in self._waiting:
            self._fold(self._waiting.pop(self._next), self.windows[self._next])
            self._next += 1

    def _fold(self, part: CellOutput | SimResult, w: SimWindow) -> None:
        k = self._next
        out = part if isinstance(part, CellOutput) else None
        p = out.result if out is not None else part
        assert isinstance(p, SimResult)
        if self._busy is None or self._steps is None:
            self._busy = np.zeros(len(p.node_busy_s))
            self._steps = np.zeros(len(p.node_busy_s), dtype=np.int64)
        (busy_a, steps_a), (busy_b, steps_b) = p.marks[0], (p.marks[1] if not w.last else
                                                             (p.node_busy_s, p.node_steps))
        self._busy += np.asarray(busy_b) - np.asarray(busy_a)
        self._steps += np.asarray(steps_b, dtype=np.int64) - np.asarray(steps_a, dtype=np.int64)
        tally = self._tally
        tally.arrived += p.tally.arrived
        tally.retries += p.tally.retries
        tally.in_flight += p.tally.in_flight
        tally.by_status = [a + b for a, b in zip(tally.by_status, p.tally.by_status)]
        self._requests.extend(p.requests)
        self._events.extend(e for e in p.fleet_events if e[0] >= w.keep_from_s and (w.last or e[0] < w.keep_to_s))
        self._wall_s = max(self._wall_s, p.wall_s)
        simulated = int(p.series.fleet("arrivals").sum())
        self._series.add(p.series, w)
        if self.release:  # its own rows are folded: release the rest
            p.series = TimeSeries(p.series.interval_s, 0)
        self._last = p
        if out is None:
            return
        self.figures[k] = SliceFigures(p.tally.arrived, simulated, out.cpu_s, out.peak_rss_mb)
        if out.requests is not None:
            self.tables.append(out.requests)
        if out.collector is not None:
            w_ = out.collector.node_work
            if self.collector is None:
                self.collector = out.collector
                self.node_work = np.zeros(len(p.node_busy_s))
            else:
                self.collector.merge(out.collector)
            assert self.node_work is not None
            self.node_work[: len(w_)] += w_[: len(self.node_work)]

    def result(self) -> SimResult:
        """One :class:`SimResult` for the whole horizon (every slice must have been added)."""
        if self._next != len(self.windows) or self._last is None or self._busy is None or self._steps is None:
            raise ValueError(f"{self._next} of {len(self.windows)} slices folded")
        requests = self._requests
        for i, r in enumerate(requests):
            r.rid = i
        last = self._last
        return SimResult(
            scenario=self.scenario,
            node_model=last.node_model,
            class_names=last.class_names,
            requests=requests,
            series=self._series.series(),
            end_s=last.end_s,
            node_busy_s=self._busy.tolist(),
            node_steps=[int(x) for x in self._steps],
            wall_s=self._wall_s,
            tally=self._tally,
            gpu_hours=_add_hours([last.gpu_hours]),  # reserved nodes only: the whole run's, as every slice bills
            fleet_events=self._events,
            spill=None,
            clients=None,
            pool_models=last.pool_models,
            layout=last.layout,
            pool_gpu_hours=last.pool_gpu_hours,
        )


def merge_slices(scenario: Scenario, parts: list[SimResult], windows: list[SimWindow]) -> SimResult:
    """One :class:`SimResult` for the whole horizon from its slices' (see the module docstring; :class:`SliceFold`)."""
    fold = SliceFold(scenario, windows)
    for k, p in enumerate(parts):
        fold.add(k, p)
    return fold.result()


def run_slices(scenario: Scenario, plan: SlicePlan, spec: ExecutorSpec, streamed: bool = False,
               on_done: Callable[[int], None] | None = None,
               on_progress: Callable[[int, float], None] | None = None) -> SliceFold:
    """Simulate every slice on ``spec``'s executor and fold each into a :class:`SliceFold` as it finishes (the
    first failure is raised). ``on_done(k)`` is called as slice ``k`` finishes (in completion order: progress);
    ``on_progress(k, t_s)`` with the simulated clock of a slice running in this process (in-process executor)."""
    fold = SliceFold(scenario, plan.windows, release=True)
    in_process = spec.kind == "in_process" and on_progress is not None
    tasks = [(scenario, w, streamed, _clock(on_progress, k) if in_process else None)
             for k, w in enumerate(plan.windows)]
    for oc in iter_outcomes(run_slice, tasks, spec, window_per_slot=1):
        if oc.error is not None:
            raise oc.error
        fold.add(oc.index, oc.value)
        if on_done is not None:
            on_done(oc.index)
    return fold


def _clock(on_progress: Any, k: int) -> Callable[[float, float], None]:
    return lambda t_s, _duration_s: on_progress(k, t_s)


def run_sliced(scenario: Scenario, plan: SlicePlan, spec: ExecutorSpec,
               on_done: Callable[[int], None] | None = None,
               on_progress: Callable[[int, float], None] | None = None) -> Any:
    """The sliced run in memory: a :class:`sim.runner.pipeline.RunOutput` whose tables and summary are computed
    from the merged slices exactly as for an unsliced run."""
    from sim.metrics.tables import summarize, timeseries_tables
    from sim.runner.pipeline import RunOutput

    fold = run_slices(scenario, plan, spec, on_done=on_done, on_progress=on_progress)
    result = fold.result()
    req = merge_tables(fold.tables, [0] * len(fold.tables))
    fleet_ts, node_ts = timeseries_tables(result)
    return RunOutput(result, summarize(result, req, fleet_ts), req, fleet_ts, node_ts)


def run_sliced_streaming(scenario: Scenario, plan: SlicePlan, spec: ExecutorSpec,
                         on_done: Callable[[int], None] | None = None,
                         on_progress: Callable[[int, float], None] | None = None, node_table: bool = True) -> Any:
    """The sliced run with streamed metrics: the slices' counters and histograms merged, then the streamed summary
    of the whole horizon. Returns a :class:`sim.metrics.streaming.StreamingOutput` (no per-request file;
    ``node_table=False``: no per-node time-series table either, for a summary-only run)."""
    fold = run_slices(scenario, plan, spec, streamed=True, on_done=on_done, on_progress=on_progress)
    return streamed_fold(fold, node_table)


def streamed_fold(fold: SliceFold, node_table: bool = True) -> Any:
    """The streamed slices' :class:`~sim.metrics.streaming.StreamingOutput` from their :class:`SliceFold`."""
    result = fold.result()
    assert fold.node_work is not None
    return finish_streamed(result, fold.collector, fold.node_work, node_table)


def merge_streamed(scenario: Scenario, plan: SlicePlan, parts: list[CellOutput]) -> Any:
    """The streamed slices' :class:`~sim.metrics.streaming.StreamingOutput` (:func:`run_sliced_streaming`)."""
    fold = SliceFold(scenario, plan.windows)
    for k, p in enumerate(parts):
        fold.add(k, p)
    return streamed_fold(fold)


def estimate_slices(scenario: Scenario, plan: SlicePlan, stream: bool, workers: int, where: str) -> Any:
    """The split run's :class:`~sim.runner.estimate.SplitEstimate`: each slice simulates the arrivals from its
    warm-up's start to about one request lifetime after its end (it stops once its own requests are done) and
    draws the arrivals before its warm-up only to skip them; expected counts from the rate integral (a trace:
    in proportion to time)."""
    from sim.runner.estimate import scenario_requests, split_estimate

    D, curve = scenario.duration_s, _rate_curve(scenario)
    total = scenario_requests(scenario)

    def arrivals(a: float, b: float) -> float:
        b = min(b, D)
        if b <= a:
            return 0.0
        return curve.integral(a, b, 60.0) if curve is not None else total * (b - a) / D

    nodes, interval = max(1, scenario.fleet.max_nodes), scenario.output.sample_interval_s
    parts = []
    for w in plan.windows:
        end = D + scenario.max_drain_s if w.last else min(w.stop_arrivals_s, w.keep_to_s + plan.lifetime_s)
        parts.append((arrivals(w.start_s, end), arrivals(0.0, w.start_s), (end - w.start_s) / interval * nodes))
    return split_estimate(scenario, "slices", parts, stream, workers, where)
