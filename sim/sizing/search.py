"""Capacity sizing: per-node goodput, the smallest fleet that meets every SLO, and the guide's sizing rules.

**Per-node goodput** (:func:`node_goodput`). One node (``gpus_per_node`` GPUs) serves the scenario's request
mix at a *constant* rate λ (the traffic shape removed, its dispersion and classes kept) for a horizon
``H = duration_s`` (capped at :data:`GOODPUT_HORIZON_CAP_S` for shaped or replayed traffic). λ *passes* when
every seed of a fixed seed set meets every P95 target of ``slo`` (``summary.slo.met``). The seeds are the
same at every λ (common random numbers: arrival gaps are standard exponentials scaled by 1/λ and request
attributes come from their own stream, so a higher rate replays the same requests compressed in time, and
"passes" is very nearly monotone in λ). The search brackets by doubling/halving from the scenario's per-node
rate, then bisects until ``hi − lo ≤ rel_tol · lo``; goodput is ``lo``, the highest rate shown to pass
(so the true finite-horizon goodput lies in ``[lo, hi)``).

**Simulated minimum fleet** (:func:`size_fleet`). The whole scenario (its traffic shape over its whole
duration) at n nodes, with independent replications (seeds ``seed, seed+1, …``, the same for every n). n
*passes* when every replication meets every P95 target. Assumes passing is monotone in n: the node counts
the rules give are simulated first (one parallel batch), then the search brackets by doubling/halving and
bisects on integers, so ``min_nodes − 1`` is always simulated too (and fails).

**Rules** (:data:`RULES`, the guide's 2026 capacity table). Rule rate = a percentile of the offered rate over
10-minute windows × (1 + headroom); nodes = ⌈rule rate ÷ node goodput⌉. "Spike reserve" (consumer chat) is
taken as capacity for the peak 10-minute rate of the shape: rate = max(1.3 × P95, peak).

Both searches walk and bisect with :mod:`sim.core.bisection`. The rules and rate statistics are in
:mod:`sim.sizing.rules`, the simulated scenario variants in :mod:`sim.sizing.variants`, the results and their
tables in :mod:`sim.sizing.results`, text and plots in :mod:`sim.sizing.report`. All runs go through
:func:`sim.runner.executor.map_summaries` (a process pool over all cores) or a pool kept open across steps;
nothing here holds global state and every seed is explicit.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sim.core.bisection import bisect, walk
from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.metrics.summary import Summary
from sim.runner.executor import SummaryPool, map_summaries
from sim.sizing.results import GoodputResult, GpuSizing, MultiGpuSizing, Replicates, RuleResult, SizingResult, fmt_s
from sim.sizing.rules import RULES, SizingRule, nodes_for_rate, traffic_rate_stats
from sim.sizing.variants import derive, fleet_scenarios, goodput_horizon_s, goodput_scenario, lone_scenario, seed_list

#: the goodput search doubles (or halves) the start rate at most this many times to bracket the threshold
GOODPUT_MAX_STEPS = 30


Progress = Callable[[str], None]
Runner = Callable[[list[Scenario]], list[Summary]]


def replicate(scenarios_by_key: dict[Any, list[Scenario]], workers: int | None,
              scheduler: str | None = None, runner: Runner | None = None,
              pool: SummaryPool | None = None) -> dict[Any, Replicates]:
    """Run every scenario of every key in one parallel batch (``runner``, e.g. a caching one; else ``pool``, a
    worker pool kept open across steps; else local processes or the Dask cluster at ``scheduler``); group the
    summaries back by key."""
    flat = [(k, s) for k, group in scenarios_by_key.items() for s in group]
    if runner is not None:
        summaries = runner([s for _, s in flat])
    elif pool is not None:
        summaries = pool.map([s for _, s in flat])
    else:
        summaries = map_summaries([s for _, s in flat], workers, scheduler=scheduler)
    out: dict[Any, list[Summary]] = {k: [] for k in scenarios_by_key}
    for (k, _), summ in zip(flat, summaries):
        out[k].append(summ)
    return {k: Replicates(v) for k, v in out.items()}


def node_goodput(
    scenario: Scenario,
    seeds: Sequence[int],
    rel_tol: float = 0.01,
    workers: int | None = None,
    horizon_s: float | None = None,
    start_rps: float | None = None,
    progress: Progress | None = None,
    scheduler: str | None = None,
    pool: SummaryPool | None = None,
) -> GoodputResult:
    """Highest constant arrival rate (requests/s) at which one node meets the SLO (``summary.slo.met``: every
    P95 target and the attainment target, counting rejections) in every seed.

    Bracketing (×2 / ÷2 from ``start_rps``, default the scenario's mean rate per node) then bisection to
    ``hi − lo ≤ rel_tol · lo``, with the same ``seeds`` at every rate."""
    if not 0 < rel_tol < 1:
        raise ConfigError("--tol", "", f"relative tolerance must be in (0, 1) (got {rel_tol})")
    horizon = horizon_s if horizon_s is not None else goodput_horizon_s(scenario)
    say = progress or (lambda _msg: None)
    evals: dict[float, Replicates] = {}

    def passes(rate: float) -> bool:
        group = [derive(goodput_scenario(scenario, rate, horizon), {"seed": s}) for s in seeds]
        rep = replicate({rate: group}, workers, scheduler, pool=pool)[rate]
        evals[rate] = rep
        say(f"goodput: {rate:8.3f} req/s on one node → SLO met in {rep.n_met}/{rep.n} seeds")
        return rep.all_met

    if start_rps is None:
        mean_rps = scenario.traffic.rate_rps or traffic_rate_stats(scenario)["mean_rps"]
        start_rps = mean_rps / scenario.fleet.nodes
    start = float(start_rps)
    lowest = start / 2.0 ** GOODPUT_MAX_STEPS

    def double(r: float) -> float | None:
        return r * 2.0 if r < start * 2.0 ** GOODPUT_MAX_STEPS else None

    def halve(r: float) -> float | None:
        return r / 2.0 if r > lowest else None

    lo, hi = walk(passes, start, double, keep=True)  # (highest pass, first fail) going up
    if lo is None:  # the start rate fails: go down to the first pass
        last_fail, lo = walk(passes, start / 2.0, halve, keep=False)
        if lo is None:
            raise ConfigError(scenario.source, "slo", f"one node misses the SLO even at {lowest:.3g} req/s; "
                              "the targets are below the unloaded latency")
        hi = last_fail if last_fail is not None else start
    if hi is None:  # pragma: no cover - a node sustaining 2^30 × the start rate means a broken model
        raise ConfigError(scenario.source, "traffic.rate_rps", "goodput search did not find an upper bound")
    lo, hi = bisect(passes, lo, hi, lambda good, bad: 0.5 * (good + bad) if bad - good > rel_tol * good else None)
    return GoodputResult(lo, hi, rel_tol, horizon, list(seeds), evals)


class Infeasible(ConfigError):
    """No fleet of this node type can meet the SLO (or not within ``--max-nodes``): said in one line."""


def check_feasible(scenario: Scenario, peak_rps: float, max_nodes: int) -> dict[str, Any]:
    """Fail fast (seconds, not a minutes-long bisection) when no fleet can meet the SLO: requests served one at
    a time already miss it (they never fit a node, or the targets are below the unloaded latency), or the
    demand needs more than ``max_nodes`` nodes even at the node's full sustainable throughput
    (:mod:`sim.perf.capacity`). Returns the lone run's facts (``capacity_per_node_rps``) when feasible."""
    from sim.runner.executor import run_summary

    s = run_summary(lone_scenario(scenario))
    target = scenario.slo.attainment_target
    f = scenario.fleet
    what = f"{f.model} on {f.gpus_per_node}× {f.gpu}"
    if not s.slo.met:
        arrived = s.requests.arrived
        rejected = s.requests.rejected / arrived if arrived else 0.0
        if rejected > 1.0 - target:
            raise Infeasible(scenario.source, "slo", (
                f"{100 * rejected:.0f} % of requests can never fit one node of {what} (context over "
                f"max_model_len or KV cache too small), so SLO attainment cannot reach {100 * target:g} %: "
                "raise gpus_per_node or max_model_len" + ("" if f.kv_cache in ("fp8", "int8", "fp4", "int4")
                                                            else ", or use FP8 KV")))
        missed = [f"P95 {k.replace('_p95_s', '').upper()} {fmt_s(c.actual)} > {fmt_s(c.target)}"
                  for k, c in s.slo.targets.items() if not c.met]
        attainment = s.slo.attainment or 0
        detail = "; ".join(missed) if missed else (f"only {100 * attainment:.1f} % of requests "
                                                   f"meet every target, below {100 * target:g} %")
        raise Infeasible(scenario.source, "slo", (
            f"one node of {what} misses the SLO even serving one request at a time ({detail}): the targets are "
            "below this node's unloaded latency; relax them or use a faster GPU, more GPUs per node or FP8"))
    cap = s.utilisation.capacity_per_node_requests_per_s
    if cap is None or cap <= 0:
        cap = float("inf")
    need = math.ceil(peak_rps / cap) if math.isfinite(cap) else 1
    if need > max_nodes:
        raise Infeasible(scenario.source, "fleet", (
            f"the peak of {peak_rps:,.2f} req/s needs at least {need:,} nodes of {what} (one node sustains at "
            f"most {cap:.3g} req/s of this mix, before any latency target), more than --max-nodes {max_nodes}"))
    return {"capacity_per_node_rps": cap, "lone_summary": s}


def size_fleet(
    scenario: Scenario,
    n_seeds: int = 5,
    rules: Sequence[SizingRule] = RULES,
    max_nodes: int = 256,
    rel_tol: float = 0.01,
    workers: int | None = None,
    progress: Progress | None = None,
    goodput: GoodputResult | None = None,
    scheduler: str | None = None,
    runner: Runner | None = None,
    pool: SummaryPool | None = None,
) -> SizingResult:
    """Per-node goodput, the simulated minimum node count, and each rule's node count with its simulated
    SLO attainment and cost (method in the module docstring). A ``goodput`` already measured (with the same
    seeds) is reused instead of searched again; ``runner`` replaces the process pool (``capsim plan`` passes a
    caching one); otherwise one ``pool`` serves every step (opened here when not given)."""
    if pool is None and runner is None:
        with SummaryPool(workers, scheduler) as own:
            return size_fleet(scenario, n_seeds, rules, max_nodes, rel_tol, workers, progress, goodput, scheduler,
                              pool=own)
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    if max_nodes < 1:
        raise ConfigError("--max-nodes", "", f"must be at least 1 (got {max_nodes})")
    seeds = seed_list(scenario, n_seeds)
    stats = traffic_rate_stats(scenario)
    start = stats["mean_rps"] / scenario.fleet.nodes
    if goodput is None:
        feas = check_feasible(scenario, stats["peak_rps"], max_nodes)
        say(f"check: one request at a time meets the SLO; one node sustains at most "
            f"{feas['capacity_per_node_rps']:.2f} req/s of this mix")
        start = min(start, feas["capacity_per_node_rps"])
    gp = goodput or node_goodput(scenario, seeds, rel_tol=rel_tol, workers=workers, progress=say,
                                 start_rps=start, scheduler=scheduler, pool=pool)
    say(f"goodput: {gp.rate_rps:.3f} req/s per node (failed at {gp.upper_rps:.3f})")

    points: dict[int, Replicates] = {}

    def evaluate(ns: Iterable[int]) -> None:
        todo = sorted({n for n in ns if n not in points and 1 <= n <= max_nodes})
        if not todo:
            return
        got = replicate({n: fleet_scenarios(scenario, n, seeds) for n in todo}, workers, scheduler, runner, pool)
        points.update(got)
        for n in todo:
            say(f"fleet: {n:4d} node(s) → SLO met in {got[n].n_met}/{got[n].n} seeds")

    rule_nodes = [(r, r.rate_rps(stats)) for r in rules]
    rule_nodes_n = [(r, rate, min(nodes_for_rate(rate, gp.rate_rps), max_nodes)) for r, rate in rule_nodes]
    direct = min(nodes_for_rate(stats["peak_rps"], gp.rate_rps), max_nodes)
    evaluate([n for _, _, n in rule_nodes_n] + [direct])

    def passes(n: int) -> bool:
        evaluate([n])
        return points[n].all_met

    def passing() -> list[int]:
        return sorted(n for n, rep in points.items() if rep.all_met)

    # bracket: a passing count (doubling up from the largest guess), and a failing count below the smallest pass
    if not passing() and max(points) < max_nodes:
        walk(passes, min(max_nodes, 2 * max(points)),
             lambda n: min(max_nodes, 2 * n) if n < max_nodes else None, keep=False)
    min_nodes: int | None = None
    if passing():
        hi = passing()[0]
        fails_below = [n for n, rep in points.items() if n < hi and not rep.all_met]
        lo = max(fails_below) if fails_below else None
        if lo is None and hi > 1:  # the rule/peak guesses are usually close: one node fewer first, then halve
            step = 1

            def down(n: int) -> int | None:
                nonlocal step
                if n <= 1:
                    return None
                cand, step = max(1, n - step), max(step, n // 2)
                return cand

            first = down(hi)
            assert first is not None
            last_pass, lo = walk(passes, first, down, keep=True)
            hi = last_pass if last_pass is not None else hi
        if lo is not None:
            hi, lo = bisect(passes, hi, lo, lambda good, bad: (good + bad) // 2 if good - bad > 1 else None)
        min_nodes = hi
        evaluate([min_nodes - 1])  # already simulated by the bisection, except when min_nodes = 1
    rule_results = [RuleResult(r, rate, n, points[n]) for r, rate, n in rule_nodes_n]
    return SizingResult(scenario, seeds, stats, gp, min_nodes, max_nodes, points, rule_results,
                        time.perf_counter() - t0)


def check_gpu(scenario: Scenario, gpu: str) -> tuple[Scenario, float, str | None]:
    """``scenario`` on ``gpu``, that GPU's hourly price, and why it cannot run (None when it can). An
    unknown GPU name is a :class:`ConfigError`; a model that does not fit is returned as the reason."""
    from sim.metrics.cost import usd_per_gpu_hour
    from sim.perf.catalog import get_gpu
    from sim.runner.simulation import build_node_model

    spec = get_gpu(gpu, "--gpu", "")
    sc = scenario if gpu == scenario.fleet.gpu else derive(scenario, {"fleet.gpu": spec.name})
    try:
        build_node_model(sc)
    except ConfigError as exc:
        return sc, usd_per_gpu_hour(sc, spec), exc.problem
    return sc, usd_per_gpu_hour(sc, spec), None


def size_across_gpus(
    scenario: Scenario,
    gpus: Sequence[str] | None = None,
    n_seeds: int = 5,
    rules: Sequence[SizingRule] = RULES,
    max_nodes: int = 256,
    rel_tol: float = 0.01,
    workers: int | None = None,
    progress: Progress | None = None,
    scheduler: str | None = None,
) -> MultiGpuSizing:
    """:func:`size_fleet` for each GPU type in ``gpus`` (default: the scenario's), everything else of the
    scenario kept (``gpus_per_node``, engine, pricing mode; a GPU's rental price is its profile's unless the
    scenario sets ``pricing.usd_per_gpu_hour``). A type the model does not fit on is reported with the reason;
    with a single type that is an error, as is a list where no type fits."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    names = list(dict.fromkeys(gpus or [scenario.fleet.gpu]))
    checked = [(g, *check_gpu(scenario, g)) for g in names]
    if all(err is not None for *_, err in checked):
        _, sc, _, err = checked[0]
        raise ConfigError(scenario.source, "fleet.model", err or "")
    entries: list[GpuSizing] = []
    with SummaryPool(workers, scheduler) as pool:  # one pool for every step of every GPU type
        for g, sc, price, err in checked:
            if err is not None:
                say(f"{g}: skipped ({err})")
                entries.append(GpuSizing(sc.fleet.gpu, price, None, err))
                continue
            tag = f"{sc.fleet.gpu}: " if len(names) > 1 else ""
            try:
                def progress(m: str, tag: str = tag) -> None:
                    say(tag + m)

                res = size_fleet(sc, n_seeds=n_seeds, rules=rules, max_nodes=max_nodes, rel_tol=rel_tol,
                                 workers=workers, progress=progress, scheduler=scheduler, pool=pool)
            except Infeasible as exc:
                if len(names) == 1:
                    raise
                say(f"{tag}infeasible ({exc.problem})")
                entries.append(GpuSizing(sc.fleet.gpu, price, None, exc.problem))
                continue
            entries.append(GpuSizing(sc.fleet.gpu, price, res))
    if all(e.result is None for e in entries):
        raise ConfigError(scenario.source, "slo", "no GPU type can meet the SLO: " + "; ".join(
            f"{e.gpu}: {e.error}" for e in entries))
    return MultiGpuSizing(entries, time.perf_counter() - t0)
