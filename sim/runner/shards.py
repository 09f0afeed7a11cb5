"""One run split into cells: ``capsim run --shards N``.

Production fleets are split into cells (regions, clusters) that each take a share of the traffic and never route
to each other. A sharded run models exactly that: the fleet's ``nodes`` are split into ``N`` cells as evenly as
possible (cell ``c`` gets ``n_c``), and every arrival of the scenario is assigned to one cell by a seeded draw with
probability ``n_c / nodes`` (:func:`thin`). Independent thinning of a Poisson process (or an NHPP, or a replayed
trace) gives each cell an exact share of the same arrival stream, which each cell regenerates from the scenario's
seed (the stream costs ~0.1–0.25 µs per arrival, against ~40 µs to simulate one). Cells run in parallel (in this
process, a local process pool or a Dask cluster: :mod:`sim.runner.executor`) and their results are merged:

* counts, GPU-hours, busy time, engine steps and client counters add; the fleet time series adds (per-node
  series are placed side by side, cell by cell, so node ``k`` of cell ``c`` is node ``offset_c + k``);
* in memory (default), each cell sends back its per-request table (columns, not request objects: cheap to
  pickle); the tables are concatenated (in arrival order, renumbered, node numbers offset) and the summary is
  computed from them as for any run, so percentiles are exact over the merged data;
* with ``--stream``, each cell reduces its requests into counters and mergeable histograms
  (:class:`sim.metrics.streaming.StreamingCollector`), which add; percentiles then come from the merged histograms
  (±0.12 %).

The approximation: a request never leaves its cell, so a least-work router balances within a cell only (a cell
can queue while another idles). With cells of tens of nodes this changes tail latencies little (measured in
docs/scaling.md). Per-cell random streams other than the arrivals (power-of-two router, client back-off, step
jitter) restart from the scenario's seed in each cell. A conversation (``session`` ids of prefix-sharing traffic)
stays in one cell: its turns follow one draw per session.

With ``fleet.pools`` every pool's reserved nodes are split over the cells as evenly as possible (each cell gets a
share of every pool; a pool with fewer nodes than cells is refused), each model's arrivals go to the cells in
proportion to the speed-weighted nodes of that model's pools in the cell, and the merged run numbers the nodes as
the unsharded fleet does (pool by pool; each pool's nodes cell by cell): per-pool and per-model sections, the
``pool`` column and a disaggregated run's prefill / decode node columns and KV-transfer figures are merged.

Not supported (one-line error): more shards than nodes, a pool with fewer nodes than shards, autoscaling,
on-demand or spot nodes, a hosted API or spill policy (their state is fleet-wide).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.core.rng import stream
from sim.runner.executor import ExecutorSpec, run_in_order
from sim.runner.simulation import SimResult, Tally, TimeSeries, simulate
from sim.traffic.arrivals import ArrivalChunk
from sim.traffic.request import Status

if TYPE_CHECKING:
    import pandas as pd


def split_nodes(nodes: int, shards: int) -> list[int]:
    """Nodes per cell, as even as possible (the first ``nodes mod shards`` cells get one more)."""
    q, r = divmod(nodes, shards)
    return [q + (1 if c < r else 0) for c in range(shards)]


def check_shardable(scenario: Scenario, shards: int) -> None:
    """One :class:`ConfigError` naming what stops ``scenario`` from being split into ``shards`` cells."""
    fl, src = scenario.fleet, scenario.source
    if shards < 1:
        raise ConfigError("--shards", "", f"must be at least 1 (got {shards})")
    if shards > fl.nodes:
        raise ConfigError("--shards", "", f"{shards} shards but fleet.nodes is {fl.nodes}: at most one shard per node")
    if shards == 1:
        return
    prefix = "fleet" if fl.pools is None else "fleet.pools.{}"
    for i, p in enumerate(fl.pool_list()):
        where = prefix.format(i)
        if fl.pools is not None and p.nodes < shards:
            raise ConfigError(src, f"{where}.nodes", f"pool '{p.name}' has {p.nodes} reserved node(s), fewer than "
                              f"the {shards} cells: every cell needs a share of every pool (at most --shards "
                              f"{min(q.nodes for q in fl.pool_list())})")
        if p.autoscaler.policy != "none" or p.on_demand.max_nodes:
            raise ConfigError(src, f"{where}.autoscaler", "--shards does not support autoscaling or on-demand "
                                                          "nodes (the scaling decision is fleet-wide)")
        if p.spot.nodes:
            raise ConfigError(src, f"{where}.spot", "--shards does not support spot nodes")
    if scenario.api is not None or scenario.spill is not None:
        raise ConfigError(src, "spill", "--shards does not support a hosted API or spill policy (its rate limits "
                                        "and spill decisions are fleet-wide)")


def session_uniform(session_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per conversation id, the same for every turn (splitmix64 of id and seed)."""
    with np.errstate(over="ignore"):
        x = session_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Cell:
    """Cell ``index`` of a sharded run: which arrivals it keeps (cumulative shares of all cells)."""

    index: int
    cum_shares: tuple[float, ...]  # cumulative share of cells 0..c, the last one 1.0
    seed: int
    # several models (fleet.pools): cumulative shares per model group, and each class's group
    group_cum_shares: tuple[tuple[float, ...], ...] = ()
    class_group: tuple[int, ...] = ()

    def thin(self, chunks: Iterator[ArrivalChunk]) -> Iterator[ArrivalChunk]:
        """This cell's arrivals: each arrival of ``chunks`` goes to the cell its uniform draw falls in (the edges of
        its class's model group when the cell has several). Every cell draws the same numbers (one seeded stream,
        one draw per arrival in order), so the cells partition the stream exactly."""
        rng = stream(self.seed, "shards")
        edges = np.asarray(self.cum_shares[:-1])
        group_edges = [np.asarray(c[:-1]) for c in self.group_cum_shares]
        class_group = np.asarray(self.class_group, dtype=np.int64)
        for chunk in chunks:
            u = rng.random(len(chunk))
            if chunk.session is not None:  # a conversation stays in the cell of its session's own draw
                u = np.where(chunk.session >= 0, session_uniform(chunk.session, self.seed), u)
            if len(group_edges) > 1:
                g = class_group[chunk.class_idx]
                cell = np.zeros(len(chunk), dtype=np.int64)
                for k, e in enumerate(group_edges):
                    cell[g == k] = np.searchsorted(e, u[g == k], side="right")
            else:
                cell = np.searchsorted(group_edges[0] if group_edges else edges, u, side="right")
            keep = cell == self.index
            if keep.any():
                prefix = chunk.prefix
                yield ArrivalChunk(chunk.time_s[keep], chunk.class_idx[keep], chunk.prompt_tokens[keep],
                                   chunk.output_tokens[keep], chunk.cached_tokens[keep],
                                   None if prefix is None else [h for h, k in zip(prefix, keep.tolist()) if k],
                                   None if chunk.session is None else chunk.session[keep])


def _cumulative(weights: list[float]) -> tuple[float, ...]:
    cum = tuple(float(x) for x in np.cumsum(weights) / sum(weights))
    return cum[:-1] + (1.0,)


def cells(scenario: Scenario, shards: int) -> list[tuple[Scenario, Cell]]:
    """The cell scenarios (``fleet.nodes`` = the cell's nodes; with ``fleet.pools``, each pool's nodes split over
    the cells: :func:`pool_cells`) and their arrival filters."""
    if scenario.fleet.pools is not None:
        return pool_cells(scenario, shards)
    sizes = split_nodes(scenario.fleet.nodes, shards)
    cum = _cumulative([float(n) for n in sizes])
    out = []
    for c, n in enumerate(sizes):
        fleet = scenario.fleet.model_copy(update={"nodes": n})
        out.append((scenario.model_copy(update={"fleet": fleet}), Cell(c, cum, scenario.seed)))
    return out


def pool_sizes(scenario: Scenario, shards: int) -> list[list[int]]:
    """Nodes of each pool in each cell ([cell][pool]): every pool's reserved nodes split as evenly as possible."""
    per_pool = [split_nodes(p.nodes, shards) for p in scenario.fleet.pool_list()]
    return [[sizes[c] for sizes in per_pool] for c in range(shards)]


def pool_cells(scenario: Scenario, shards: int) -> list[tuple[Scenario, Cell]]:
    """Cells of a fleet with pools: cell ``c`` gets a share of every pool (:func:`pool_sizes`), and of each model's
    arrivals the share of that model's serving speed in the cell: Σ nodes × node speed over the model's pools
    (:func:`sim.runner.simulation.pool_speeds`; prefill and decode pools both count). A pool split unevenly
    therefore gives its larger cells a little more of its model's traffic."""
    from sim.fleet.pools import pool_layout
    from sim.runner.simulation import build_pool_models, pool_speeds

    layout = pool_layout(scenario)
    speeds = pool_speeds(scenario, layout, build_pool_models(scenario))
    sizes = pool_sizes(scenario, shards)
    groups = range(len(layout.group_models))
    weight = [[sum(sizes[c][p] * speeds[p] for p in layout.group_pools(g)) for c in range(shards)] for g in groups]
    group_cum = tuple(_cumulative(w) for w in weight)
    total = [float(sum(row)) for row in sizes]
    out = []
    for c in range(shards):
        pools = [p.model_copy(update={"nodes": n}) for p, n in zip(scenario.fleet.pools or [], sizes[c])]
        fleet = scenario.fleet.model_copy(update={"nodes": sum(sizes[c]), "pools": pools})
        cell = Cell(c, _cumulative(total), scenario.seed, group_cum, layout.class_group)
        out.append((scenario.model_copy(update={"fleet": fleet}), cell))
    return out


@dataclass
class CellOutput:
    """What a cell sends back: its raw result (per-request records unless streamed) and, when streamed, its
    reduced counters and histograms."""

    result: SimResult  # its per-request records dropped (they travel as ``requests``)
    requests: pd.DataFrame | None = None  # the cell's per-request table (in memory; None when streamed)
    collector: Any = None  # sim.metrics.streaming.StreamingCollector when streamed
    cpu_s: float = 0.0  # CPU time the cell took in its worker (for sizing a cluster: docs/scaling.md)
    peak_rss_mb: float = 0.0  # the worker process's peak RSS so far (an upper bound for the cell)


def run_cell(task: tuple[Scenario, Cell, bool]) -> CellOutput:
    """Simulate one cell (a top-level function: it is pickled to pool and Dask workers)."""
    scenario, cell, streamed = task
    cpu0 = time.process_time()
    collector = table = None
    if not streamed:
        from sim.metrics.tables import requests_table

        result = simulate(scenario, arrivals=cell.thin)
        table = requests_table(result)
        result.requests = []
    else:
        from sim.metrics.streaming import StreamingCollector

        collector = StreamingCollector(scenario)
        result = simulate(scenario, keep_requests=False, on_request_done=collector, arrivals=cell.thin)
        collector.flush()
    return CellOutput(result, table, collector, time.process_time() - cpu0, _peak_rss_mb())


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0.0
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def merge_series(parts: list[TimeSeries], maps: list[np.ndarray] | None = None) -> TimeSeries:
    """The fleet's time series from its cells' (cells that finished draining earlier are extended: idle, their
    cumulative series and node counts held at their last value). Cell ``c``'s node ``k`` becomes fleet node
    ``maps[c][k]`` (default: the cells side by side); per-pool series add."""
    length = max(len(p) for p in parts)
    held = {"busy_s", "up", "flops", "hbm_bytes", "nodes_up", "nodes_billed"}  # else 0 once drained
    if maps is None:
        maps = _side_by_side([p.nodes for p in parts])
    total = sum(len(m) for m in maps)

    def pad(a: np.ndarray, name: str) -> np.ndarray:
        if len(a) == length:
            return a
        tail = a[-1:] if name in held and len(a) else np.zeros((1,) + a.shape[1:], a.dtype)
        return np.concatenate([a, np.repeat(tail, length - len(a), axis=0)])

    longest = next(p for p in parts if len(p) == length)
    fleet = {k: np.sum([pad(p.fleet(k), k) for p in parts], axis=0) for k in TimeSeries._FLEET_FIELDS
             if k != "time_s"}
    fleet["time_s"] = longest.fleet("time_s")
    per_node = {}
    for k in TimeSeries._NODE_FIELDS:
        cols = [pad(p.per_node(k), k) for p in parts]
        out = np.zeros((length, total), dtype=cols[0].dtype)
        for a, m in zip(cols, maps):
            out[:, m] = a
        per_node[k] = out
    merged = TimeSeries.from_arrays(parts[0].interval_s, fleet, per_node)
    if parts[0].pools:
        merged.set_pools({k: np.sum([pad(p.per_pool(k), k) for p in parts], axis=0)
                          for k in ("arrivals", "completions", "nodes_billed")})
    return merged


def _side_by_side(sizes: list[int]) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    return [np.arange(n, dtype=np.int64) + off for n, off in zip(sizes, offsets)]


def node_offsets(parts: list[SimResult]) -> list[int]:
    """Fleet number of each cell's node 0 (cells side by side, in order)."""
    return np.concatenate([[0], np.cumsum([len(p.node_busy_s) for p in parts])[:-1]]).astype(int).tolist()


def node_maps(scenario: Scenario, parts: list[SimResult]) -> list[np.ndarray]:
    """Fleet node number of each node of each cell. Without pools, the cells side by side (cell ``c``'s node ``k`` is
    ``offset_c + k``); with pools, the fleet's own numbering, pool by pool (:func:`sim.fleet.pools.pool_layout`),
    each pool's nodes cell by cell: the merged run reads like the unsharded one."""
    if scenario.fleet.pools is None:
        return _side_by_side([len(p.node_busy_s) for p in parts])
    from sim.fleet.pools import pool_layout

    n_pools = len(scenario.fleet.pools)
    start = np.concatenate([[0], np.cumsum([p.nodes for p in scenario.fleet.pools])[:-1]]).astype(np.int64)
    taken = np.zeros(n_pools, dtype=np.int64)  # nodes of each pool placed by the earlier cells
    maps = []
    for part in parts:
        layout = part.layout if part.layout is not None else pool_layout(part.scenario)
        slot_pool = np.asarray(layout.slot_pool, dtype=np.int64)
        m = np.empty(len(slot_pool), dtype=np.int64)
        for p in range(n_pools):
            local = np.flatnonzero(slot_pool == p)
            m[local] = start[p] + taken[p] + np.arange(len(local))
            taken[p] += len(local)
        maps.append(m)
    return maps


NODE_COLUMNS = ("node", "prefill_node", "decode_node")  # per-request columns holding a node number


def merge_tables(tables: list[pd.DataFrame], maps: list[np.ndarray] | list[int]) -> pd.DataFrame:
    """The fleet's per-request table from its cells' (arrival order, ``request_id`` renumbered, node numbers
    mapped by ``maps``, :func:`node_maps`; or offset by ``maps[c]`` when given cell offsets)."""
    import pandas as pd

    shifted = []
    for t, m in zip(tables, maps):
        t = t.copy()
        for col in NODE_COLUMNS:
            if col in t:
                node = t[col].to_numpy()
                mapped = node + m if np.isscalar(m) else np.asarray(m)[np.maximum(node, 0)]
                t[col] = np.where(node >= 0, mapped, node)
        shifted.append(t)
    out = pd.concat(shifted, ignore_index=True)
    out = out.iloc[np.argsort(out["arrival_s"].to_numpy(), kind="stable")].reset_index(drop=True)
    out["request_id"] = np.arange(len(out), dtype=np.int64)
    return out


def _placed(values: list[list[Any]], maps: list[np.ndarray]) -> list[Any]:
    """Per-node values of the cells at their fleet node numbers."""
    out: list[Any] = [None] * sum(len(m) for m in maps)
    for vals, m in zip(values, maps):
        for v, k in zip(vals, m.tolist()):
            out[k] = v
    return out


def merge_results(scenario: Scenario, parts: list[SimResult]) -> SimResult:
    """One :class:`SimResult` for the whole fleet from its cells' (see the module docstring)."""
    maps = node_maps(scenario, parts)
    requests = []
    for p, m in zip(parts, maps):
        for r in p.requests:
            r.node = int(m[r.node]) if r.node >= 0 else r.node
            requests.append(r)
    requests.sort(key=lambda r: r.arrival_s)
    for i, r in enumerate(requests):
        r.rid = i
    tally = Tally()
    tally.arrived = sum(p.tally.arrived for p in parts)
    tally.retries = sum(p.tally.retries for p in parts)
    tally.in_flight = sum(p.tally.in_flight for p in parts)
    tally.by_status = [sum(p.tally.by_status[s] for p in parts) for s in range(len(Status))]
    events = sorted(((t, int(m[slot]), kind, what) for p, m in zip(parts, maps)
                     for t, slot, kind, what in p.fleet_events), key=lambda e: (e[0], e[1]))
    clients: dict[str, int] | None = None
    if any(p.clients is not None for p in parts):
        clients = {}
        for p in parts:
            for k, v in (p.clients or {}).items():
                clients[k] = clients.get(k, 0) + v
    pooled: dict[str, Any] = {}
    if scenario.fleet.pools is not None:
        from sim.fleet.pools import pool_layout

        pooled = {
            "pool_models": parts[0].pool_models,
            "layout": pool_layout(scenario),
            "pool_gpu_hours": [_add_hours([p.pool_gpu_hours[k] for p in parts])
                               for k in range(len(scenario.fleet.pools))],
            "disagg": merge_disagg(parts),
        }
    return SimResult(
        scenario=scenario,
        node_model=parts[0].node_model,
        class_names=parts[0].class_names,
        requests=requests,
        series=merge_series([p.series for p in parts], maps),
        end_s=max(p.end_s for p in parts),
        node_busy_s=_placed([p.node_busy_s for p in parts], maps),
        node_steps=_placed([p.node_steps for p in parts], maps),
        wall_s=max(p.wall_s for p in parts),
        tally=tally,
        gpu_hours=_add_hours([p.gpu_hours for p in parts]),
        fleet_events=events,
        spill=None,
        clients=clients,
        **pooled,
    )


def _add_hours(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for hours in parts:
        for k, v in hours.items():
            out[k] = out.get(k, 0.0) + v
    return out


def merge_disagg(parts: list[SimResult]) -> dict[str, float] | None:
    """The ``disaggregation`` section of the cells together: counts and bytes add, the transfer mean and P95 over
    every cell's transfers, each link kind's mean utilisation over all links of the fleet and the longest cell."""
    stats = [p.disagg for p in parts if p.disagg is not None]
    if not stats:
        return None
    if len(parts) == 1:
        return parts[0].disagg
    t = np.concatenate([p.transfer_s for p in parts if p.transfer_s is not None])
    end = max(max(p.end_s for p in parts), 1e-9)

    def busy(key: str, nodes: str) -> float:
        links = sum(s[nodes] for s in stats)
        return sum(s[key] * s[nodes] * max(p.end_s, 1e-9) for s, p in zip(stats, parts)) / max(1, links) / end

    return {
        "prefill_nodes": sum(s["prefill_nodes"] for s in stats),
        "decode_nodes": sum(s["decode_nodes"] for s in stats),
        "transfers": int(t.size),
        "transfer_mean_s": float(t.mean()) if t.size else 0.0,
        "transfer_p95_s": float(np.percentile(t, 95)) if t.size else 0.0,
        "kv_gb_sent": sum(s["kv_gb_sent"] for s in stats),
        "link_busy_mean": busy("link_busy_mean", "prefill_nodes"),
        "ingress_busy_mean": busy("ingress_busy_mean", "decode_nodes"),
    }


def run_cells(scenario: Scenario, shards: int, spec: ExecutorSpec, streamed: bool = False,
              on_done: Callable[[int], None] | None = None) -> list[CellOutput]:
    """Simulate every cell on ``spec``'s executor; outputs in cell order (the first failure is raised).
    ``on_done(c)`` is called as cell ``c`` finishes (in completion order: progress)."""
    check_shardable(scenario, shards)
    tasks = [(sc, cell, streamed) for sc, cell in cells(scenario, shards)]
    return run_in_order(run_cell, tasks, spec, on_done)


def run_sharded(scenario: Scenario, shards: int, spec: ExecutorSpec,
                on_done: Callable[[int], None] | None = None) -> Any:
    """The sharded run in memory: a :class:`sim.runner.pipeline.RunOutput` whose tables and summary are computed
    from the merged cells exactly as for an unsharded run."""
    from sim.metrics.tables import summarize, timeseries_tables
    from sim.runner.pipeline import RunOutput

    parts = run_cells(scenario, shards, spec, on_done=on_done)
    results = [p.result for p in parts]
    maps = node_maps(scenario, results)
    result = merge_results(scenario, results)
    req = merge_tables([p.requests for p in parts], maps)  # type: ignore[misc]
    fleet_ts, node_ts = timeseries_tables(result)
    return RunOutput(result, summarize(result, req, fleet_ts), req, fleet_ts, node_ts)


def run_sharded_streaming(scenario: Scenario, shards: int, spec: ExecutorSpec,
                          on_done: Callable[[int], None] | None = None) -> Any:
    """The sharded run with streamed metrics: each cell's counters and histograms merged, then the streamed
    summary of the merged fleet. Returns a :class:`sim.metrics.streaming.StreamingOutput` (no per-request file)."""
    parts = run_cells(scenario, shards, spec, streamed=True, on_done=on_done)
    results = [p.result for p in parts]
    maps = node_maps(scenario, results)
    result = merge_results(scenario, results)
    node_work = np.zeros(sum(len(m) for m in maps))  # each cell's routing balance at its fleet node numbers
    for p, m in zip(parts, maps):
        w = p.collector.node_work
        np.add.at(node_work, m[: len(w)], w[: len(m)])
    parts[0].collector.scenario = scenario
    parts[0].collector.layout = result.layout
    return streamed_output(result, parts, node_work)


def streamed_output(result: Any, parts: list[CellOutput], node_work: np.ndarray) -> Any:
    """The merged parts' (cells') :class:`~sim.metrics.streaming.StreamingOutput`: their collectors merged into the
    first, then :func:`finish_streamed`."""
    collector = parts[0].collector
    for p in parts[1:]:
        collector.merge(p.collector)
    return finish_streamed(result, collector, node_work)


def finish_streamed(result: Any, collector: Any, node_work: np.ndarray, node_table: bool = True) -> Any:
    """The :class:`~sim.metrics.streaming.StreamingOutput` of a split run (cells, slices) from its merged
    ``collector``, with ``node_work`` (already merged at the whole fleet's node numbers) set on it: the streamed
    summary of the merged ``result``. ``node_table=False`` skips the per-node time-series table (a summary-only
    run: on a week of 10 nodes it is the client's largest object)."""
    from sim.metrics.streaming import StreamingOutput
    from sim.metrics.tables import timeseries_tables

    collector.node_work = node_work
    fleet_ts, node_ts = timeseries_tables(result, per_node=node_table)
    summary = collector.summary(result, fleet_ts)
    return StreamingOutput(result, summary, collector.hist, fleet_ts, node_ts, None, 0)


def estimate_cells(scenario: Scenario, shards: int, stream: bool, workers: int, where: str) -> Any:
    """The split run's :class:`~sim.runner.estimate.SplitEstimate`: each cell simulates its share of the arrivals
    (its share of the nodes) and draws the rest only to skip them; its node-samples are its nodes'."""
    from sim.runner.estimate import scenario_requests, split_estimate

    total = scenario_requests(scenario)
    sizes = [sum(row) for row in pool_sizes(scenario, shards)]
    samples = (scenario.duration_s + scenario.max_drain_s) / scenario.output.sample_interval_s
    parts = [(total * n / sum(sizes), total * (1 - n / sum(sizes)), samples * n) for n in sizes]
    return split_estimate(scenario, "cells", parts, stream, workers, where)
