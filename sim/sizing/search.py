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

All runs go through :func:`sim.runner.executor.map_summaries` (a process pool over all cores); nothing here holds
global state and every seed is explicit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.core.config import Scenario, set_dotted, validate_scenario
from sim.core.errors import ConfigError
from sim.metrics.access import metric
from sim.metrics.stats import mean_ci95, replication_seeds
from sim.metrics.summary import Summary
from sim.runner.executor import SummaryPool, map_summaries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: goodput runs of shaped or replayed scenarios are at most this long (constant-rate runs use duration_s)
GOODPUT_HORIZON_CAP_S = 1800.0
#: windows over which the traffic P-rates are taken (the guide's and ``capsim traffic``'s 10 minutes)
RATE_WINDOW_S = 600.0
RATE_KEYS = ("mean_rps", "p50_rps", "p90_rps", "p95_rps", "p99_rps", "peak_rps")
SLO_KEYS = ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")
_SLO_LATENCY = {"ttft_p95_s": "ttft_s", "tpot_p95_s": "tpot_s", "e2e_p95_s": "e2e_s"}

Progress = Callable[[str], None]


# --- the guide's rules -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizingRule:
    """A rule of the guide's capacity table: size to ``stat`` × (1 + ``headroom``) (and the peak if
    ``spike_reserve``)."""

    workload: str
    label: str
    stat: str
    headroom: float
    spike_reserve: bool = False

    def rate_rps(self, stats: dict[str, float]) -> float:
        """The rate (requests/s) this rule sizes the fleet for, given the traffic's P-rates."""
        rate = stats[self.stat] * (1.0 + self.headroom)
        if self.spike_reserve:
            rate = max(rate, stats["peak_rps"])
        return rate


RULES: tuple[SizingRule, ...] = (
    SizingRule("steady_b2b", "P95+20%", "p95_rps", 0.20),
    SizingRule("consumer_chat", "P95+30%", "p95_rps", 0.30),
    SizingRule("consumer_chat", "P95+30% + spike reserve", "p95_rps", 0.30, spike_reserve=True),
    SizingRule("voice_agents", "P99+50%", "p99_rps", 0.50),
    SizingRule("internal_batch", "P50", "p50_rps", 0.0),
    SizingRule("healthcare_financial", "P99+100%", "p99_rps", 1.00),
    SizingRule("free_tier", "P90+0%", "p90_rps", 0.0),
)
WORKLOADS: tuple[str, ...] = tuple(dict.fromkeys(r.workload for r in RULES))


def select_rules(workloads: Iterable[str] | None, source: str = "--rule") -> tuple[SizingRule, ...]:
    """The rules of the named workloads (all rules when none are named)."""
    names = list(workloads or [])
    for n in names:
        if n not in WORKLOADS:
            raise ConfigError(source, n, f"unknown workload rule (known: {', '.join(WORKLOADS)})")
    return tuple(r for r in RULES if not names or r.workload in names)


def nodes_for_rate(rate_rps: float, goodput_rps: float) -> int:
    """⌈rate ÷ goodput⌉, at least 1 (a relative 1e-9 slack keeps exact multiples from rounding up)."""
    return max(1, math.ceil(rate_rps / goodput_rps * (1.0 - 1e-9)))


# --- traffic statistics --------------------------------------------------------------------------------------
def _is_constant(scenario: Scenario) -> bool:
    t = scenario.traffic
    return getattr(t, "shape", None) is None and getattr(t, "trace", None) is None


def traffic_rate_stats(scenario: Scenario) -> dict[str, float]:
    """Mean, P50/P90/P95/P99 and peak offered rate (requests/s) over 10-minute windows of the scenario.

    A constant-rate scenario has every P-rate equal to ``rate_rps``. Shaped or replayed traffic uses the
    traffic module's statistics (those ``capsim traffic SCENARIO --json`` prints): the scenario's own
    arrivals (its seed) over its duration, counted in 10-minute windows."""
    if _is_constant(scenario) and scenario.traffic.rate_rps is not None:
        rate = float(scenario.traffic.rate_rps)
        return dict.fromkeys(RATE_KEYS, rate)
    from sim.traffic.arrivals import rate_curve, traffic_chunks
    from sim.traffic.shapes import clock0_hours
    from sim.traffic.stats import traffic_stats

    tr = scenario.traffic
    curve = rate_curve(tr, scenario.base_dir, scenario.source) if tr.trace is None else None
    chunks = traffic_chunks(tr, scenario.base_dir, scenario.duration_s, scenario.seed,
                            scenario.fleet.engine.block_size, scenario.source)
    stats, _ = traffic_stats(chunks, scenario.duration_s, clock0_hours(tr.start_weekday, tr.start_hour), curve,
                             tokens=False)
    if stats.get("p95_rps") is None:
        raise ConfigError(scenario.source, "duration_s", f"needs at least one complete {RATE_WINDOW_S:.0f}-s "
                          "window for the rate percentiles")
    return {k: float(stats[k]) for k in RATE_KEYS}


# --- scenario variants ----------------------------------------------------------------------------------------
def derive(scenario: Scenario, changes: dict[str, Any]) -> Scenario:
    """A validated copy of ``scenario`` with dotted-path ``changes`` (``{"fleet.nodes": 3}``) applied; keeps
    its source and base folder (relative data paths still resolve)."""
    raw = scenario.model_dump()
    for key, value in changes.items():
        set_dotted(raw, key, value, scenario.source)
    return validate_scenario(raw, scenario.source, scenario._base_dir)


def with_slo(scenario: Scenario, targets: dict[str, float | None], source: str = "--slo") -> Scenario:
    """``scenario`` with the given SLO targets (seconds; None switches one off)."""
    for k in targets:
        if k not in SLO_KEYS:
            raise ConfigError(source, k, f"unknown SLO (known: {', '.join(SLO_KEYS)})")
    if not targets:
        return scenario
    try:
        return derive(scenario, {f"slo.{k}": v for k, v in targets.items()})
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None


def seed_list(scenario: Scenario, n_seeds: int) -> list[int]:
    """Independent replications: the scenario's seed and the next ``n_seeds − 1`` integers."""
    return replication_seeds(scenario.seed, n_seeds)


def goodput_scenario(scenario: Scenario, rate_rps: float, horizon_s: float | None = None) -> Scenario:
    """One node at a constant ``rate_rps`` of the scenario's request mix (shape and trace timing removed)."""
    horizon = horizon_s if horizon_s is not None else goodput_horizon_s(scenario)
    warmup = scenario.warmup_s if scenario.warmup_s < 0.5 * horizon else 0.05 * horizon
    changes: dict[str, Any] = {"fleet.nodes": 1, "traffic.rate_rps": float(rate_rps), "duration_s": horizon,
                               "warmup_s": warmup}
    if getattr(scenario.traffic, "shape", None) is not None:
        changes["traffic.shape"] = None
    if getattr(scenario.traffic, "trace", None) is not None:
        changes["traffic.trace.rate_scale"] = 1.0
        changes["traffic.trace.loop"] = True
    return derive(scenario, changes)


def goodput_horizon_s(scenario: Scenario) -> float:
    """Simulated seconds of each goodput run: the scenario's duration, capped for shaped traffic."""
    if _is_constant(scenario):
        return float(scenario.duration_s)
    return float(min(scenario.duration_s, GOODPUT_HORIZON_CAP_S))


# --- replications ---------------------------------------------------------------------------------------------
@dataclass
class Replicates:
    """The summaries of one configuration (a rate or a node count) over the seed set."""

    summaries: list[Summary]

    @property
    def n(self) -> int:
        return len(self.summaries)

    @property
    def n_met(self) -> int:
        return sum(s.slo.met for s in self.summaries)

    @property
    def all_met(self) -> bool:
        return self.n_met == self.n

    def mean(self, path: str) -> float | None:
        return mean_ci95([metric(s, path) for s in self.summaries])[0]

    def ci(self, path: str) -> tuple[float | None, float | None]:
        return mean_ci95([metric(s, path) for s in self.summaries])


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


# --- per-node goodput -----------------------------------------------------------------------------------------
@dataclass
class GoodputResult:
    """Per-node goodput: ``rate_rps`` passed in every seed, ``upper_rps`` (> rate_rps) failed in at least one."""

    rate_rps: float
    upper_rps: float
    rel_tol: float
    horizon_s: float
    seeds: list[int]
    evaluations: dict[float, Replicates] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per simulated rate: seeds met and mean P95 latencies."""
        rows = [{"rate_rps": r, "seeds_met": rep.n_met, "seeds": rep.n,
                 "slo_attainment": rep.mean("slo.attainment"),
                 "ttft_p95_s": rep.mean("latency.ttft_s.p95"), "tpot_p95_s": rep.mean("latency.tpot_s.p95")}
                for r, rep in sorted(self.evaluations.items())]
        return pd.DataFrame(rows)


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
    lo, hi = None, None
    rate = float(start_rps)
    if passes(rate):
        lo = rate
        for _ in range(30):
            rate *= 2.0
            if not passes(rate):
                hi = rate
                break
            lo = rate
        else:  # pragma: no cover - a node sustaining 2^30 × the start rate means a broken model
            raise ConfigError(scenario.source, "traffic.rate_rps", "goodput search did not find an upper bound")
    else:
        hi = rate
        for _ in range(30):
            rate /= 2.0
            if passes(rate):
                lo = rate
                break
            hi = rate
        else:
            raise ConfigError(scenario.source, "slo", f"one node misses the SLO even at {rate:.3g} req/s; "
                              "the targets are below the unloaded latency")
    assert lo is not None and hi is not None
    while hi - lo > rel_tol * lo:
        mid = 0.5 * (lo + hi)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return GoodputResult(lo, hi, rel_tol, horizon, list(seeds), evals)


# --- feasibility -----------------------------------------------------------------------------------------------
#: the lone-request check: this many requests, one node, spaced LONE_GAP_S apart (each is served alone)
LONE_REQUESTS = 60
LONE_GAP_S = 200.0


class Infeasible(ConfigError):
    """No fleet of this node type can meet the SLO (or not within ``--max-nodes``): said in one line."""


def lone_scenario(scenario: Scenario) -> Scenario:
    """One node serving the scenario's mix one request at a time (:data:`LONE_REQUESTS` requests,
    :data:`LONE_GAP_S` apart on average): the best latency any fleet of this node type can give."""
    horizon = LONE_REQUESTS * LONE_GAP_S
    sc = goodput_scenario(scenario, 1.0 / LONE_GAP_S, horizon)
    return derive(sc, {"warmup_s": 0.0, "output.sample_interval_s": 10.0, "slo.require_worst_window": False})


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
        missed = [f"P95 {k.replace('_p95_s', '').upper()} {_fmt_s(c.actual)} > {_fmt_s(c.target)}"
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


# --- fleet sizing ----------------------------------------------------------------------------------------------
@dataclass
class RuleResult:
    rule: SizingRule
    rate_rps: float
    nodes: int
    reps: Replicates


@dataclass
class SizingResult:
    """Everything ``capsim size`` reports (see :meth:`to_json`)."""

    scenario: Scenario
    seeds: list[int]
    rate_stats: dict[str, float]
    goodput: GoodputResult
    min_nodes: int | None
    max_nodes: int
    points: dict[int, Replicates]
    rules: list[RuleResult]
    elapsed_s: float = 0.0

    # --- derived ------------------------------------------------------------------------------------------
    @property
    def peak_nodes(self) -> int:
        """⌈peak 10-min rate ÷ node goodput⌉: the direct calculation (equals ⌈rate ÷ goodput⌉ at constant rate)."""
        return nodes_for_rate(self.rate_stats["peak_rps"], self.goodput.rate_rps)

    def slo_targets(self) -> dict[str, float]:
        return {k: getattr(self.scenario.slo, k) for k in SLO_KEYS if getattr(self.scenario.slo, k) is not None}

    def confidence(self) -> dict[str, Any]:
        """How sure the minimum is: seeds met, a 95 % lower bound on the per-replication pass probability
        (Clopper–Pearson), and each P95 latency as mean ± 95 % t-interval half-width over seeds."""
        if self.min_nodes is None:
            return {"statement": f"no fleet of up to {self.max_nodes} nodes meets the SLO in every seed"}
        from scipy import stats

        rep = self.points[self.min_nodes]
        lower = float(stats.beta.ppf(0.05, rep.n_met, rep.n - rep.n_met + 1)) if rep.n_met else 0.0
        out: dict[str, Any] = {"seeds_met": rep.n_met, "seeds": rep.n, "pass_probability_lower95": lower}
        parts = [f"meets the SLO in {rep.n_met}/{rep.n} seeds"]
        for key in self.slo_targets():
            m, h = rep.ci(f"latency.{_SLO_LATENCY[key]}.p95")
            out[key] = {"target": getattr(self.scenario.slo, key), "mean": m, "ci95": h}
            if m is not None:
                name = {"ttft_p95_s": "P95 TTFT", "tpot_p95_s": "P95 TPOT", "e2e_p95_s": "P95 E2E"}[key]
                parts.append(f"{name} {_fmt_s(m)}" + ("" if h is None else f" ± {_fmt_s(h, unit=False)}"))
        below = self.points.get(self.min_nodes - 1)
        if below is not None:
            out["below"] = {"nodes": self.min_nodes - 1, "seeds_met": below.n_met, "seeds": below.n}
        statement = "; ".join(parts)
        if below is not None:
            plural = "s" if self.min_nodes - 1 != 1 else ""
            statement += f"; {self.min_nodes - 1} node{plural} meet it in {below.n_met}/{below.n}"
        out["statement"] = statement
        return out

    def points_table(self) -> pd.DataFrame:
        """One row per simulated node count: seeds met, SLO attainment, P95 latencies and cost (means)."""
        rows = []
        for n, rep in sorted(self.points.items()):
            rows.append({
                "nodes": n, "seeds_met": rep.n_met, "seeds": rep.n, "meets_slo": rep.all_met,
                "slo_attainment": rep.mean("slo.attainment"),
                "ttft_p95_s": rep.mean("latency.ttft_s.p95"), "tpot_p95_s": rep.mean("latency.tpot_s.p95"),
                "e2e_p95_s": rep.mean("latency.e2e_s.p95"), "busy_fraction": rep.mean("utilisation.busy_fraction"),
                "total_usd": rep.mean("cost.total_usd"),
                "usd_per_mtok_output": rep.mean("cost.usd_per_mtok_output"),
            })
        return pd.DataFrame(rows)

    def rules_table(self) -> pd.DataFrame:
        """One row per rule: its rate and node count, and that fleet's simulated attainment and cost, with the
        difference to the simulated minimum."""
        base_usd = self.points[self.min_nodes].mean("cost.total_usd") if self.min_nodes else None
        rows = []
        for rr in self.rules:
            usd = rr.reps.mean("cost.total_usd")
            rows.append({
                "rule": rr.rule.label, "workload": rr.rule.workload, "rate_rps": rr.rate_rps, "nodes": rr.nodes,
                "slo_attainment": rr.reps.mean("slo.attainment"), "total_usd": usd,
                "usd_per_mtok_output": rr.reps.mean("cost.usd_per_mtok_output"),
                "usd_per_hour": None if usd is None else usd / (self.scenario.duration_s / 3600.0),
                "seeds_met": rr.reps.n_met, "seeds": rr.reps.n, "meets_slo": rr.reps.all_met,
                "ttft_p95_s": rr.reps.mean("latency.ttft_s.p95"), "tpot_p95_s": rr.reps.mean("latency.tpot_s.p95"),
                "nodes_vs_min": None if self.min_nodes is None else rr.nodes - self.min_nodes,
                "usd_vs_min": None if base_usd is None or usd is None else usd - base_usd,
            })
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """The JSON report: ``node_goodput_rps``, ``min_nodes``, ``min_nodes_summary`` (the first seed's
        ``summary.json`` of the minimum fleet), ``rules`` and the supporting detail."""
        from sim.metrics.tables import _clean

        sc = self.scenario
        min_summary = self.points[self.min_nodes].summaries[0] if self.min_nodes else None
        return _clean({
            "scenario": sc.name,
            "source": sc.source,
            "duration_s": sc.duration_s,
            "seeds": self.seeds,
            "slo": self.slo_targets(),
            "traffic": {**self.rate_stats, "window_s": RATE_WINDOW_S},
            "node_goodput_rps": self.goodput.rate_rps,
            "goodput": {
                "rate_rps": self.goodput.rate_rps, "upper_rps": self.goodput.upper_rps,
                "rel_tol": self.goodput.rel_tol, "horizon_s": self.goodput.horizon_s,
                "criterion": "slo.met (every P95 target and the attainment target, rejections and unfinished "
                             "requests counting as misses) in every seed, one node, constant-rate arrivals",
                "evaluations": self.goodput.table().to_dict(orient="records"),
            },
            "peak_nodes": self.peak_nodes,
            "min_nodes": self.min_nodes,
            "max_nodes": self.max_nodes,
            "min_nodes_confidence": self.confidence(),
            "min_nodes_summary": None if min_summary is None else min_summary.to_json(),
            "rules": self.rules_table().to_dict(orient="records"),
            "points": self.points_table().to_dict(orient="records"),
            "elapsed_s": self.elapsed_s,
        })


def fleet_scenarios(scenario: Scenario, nodes: int, seeds: Sequence[int]) -> list[Scenario]:
    """The scenario at ``nodes`` nodes, once per seed."""
    return [derive(scenario, {"fleet.nodes": int(nodes), "seed": int(s)}) for s in seeds]


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

    def passing() -> list[int]:
        return sorted(n for n, rep in points.items() if rep.all_met)

    # bracket: a passing count, and a failing count below the smallest pass
    if not passing():
        n = max(points)
        while not passing() and n < max_nodes:
            n = min(max_nodes, 2 * n)
            evaluate([n])
    min_nodes: int | None = None
    if passing():
        hi = passing()[0]
        fails_below = [n for n, rep in points.items() if n < hi and not rep.all_met]
        lo = max(fails_below) if fails_below else None
        step = 1  # the rule/peak guesses are usually close: try one node fewer first, then halve
        while lo is None and hi > 1:
            cand = max(1, hi - step)
            step = max(step, hi // 2)
            evaluate([cand])
            if points[cand].all_met:
                hi = cand
            else:
                lo = cand
        while lo is not None and hi - lo > 1:
            mid = (lo + hi) // 2
            evaluate([mid])
            if points[mid].all_met:
                hi = mid
            else:
                lo = mid
        min_nodes = hi
        evaluate([min_nodes - 1])  # already simulated by the bisection, except when min_nodes = 1
    rule_results = [RuleResult(r, rate, n, points[n]) for r, rate, n in rule_nodes_n]
    return SizingResult(scenario, seeds, stats, gp, min_nodes, max_nodes, points, rule_results,
                        time.perf_counter() - t0)


# --- across GPU types ------------------------------------------------------------------------------------------
@dataclass
class GpuSizing:
    """``capsim size`` for one GPU type: its :class:`SizingResult`, or why it could not be sized (``error``,
    e.g. the model does not fit in ``gpus_per_node`` of these GPUs)."""

    gpu: str
    usd_per_gpu_hour: float | None
    result: SizingResult | None = None
    error: str | None = None

    @property
    def meets_slo(self) -> bool:
        return self.result is not None and self.result.min_nodes is not None

    @property
    def min_fleet_usd(self) -> float | None:
        """Mean cost (USD) of the simulated minimum fleet over the run; None when there is none."""
        r = self.result
        return None if r is None or r.min_nodes is None else r.points[r.min_nodes].mean("cost.total_usd")

    def record(self) -> dict[str, Any]:
        """One entry of ``by_gpu``: goodput, simulated minimum, that fleet's cost and SLO attainment."""
        r = self.result
        out: dict[str, Any] = {"gpu": self.gpu, "usd_per_gpu_hour": self.usd_per_gpu_hour, "error": self.error,
                               "node_goodput_rps": None, "min_nodes": None, "gpus": None, "total_usd": None,
                               "usd_per_hour": None, "usd_per_mtok_output": None, "slo_attainment": None,
                               "meets_slo": self.meets_slo}
        if r is None:
            return out
        sc = r.scenario
        out.update({"node_goodput_rps": r.goodput.rate_rps, "goodput_upper_rps": r.goodput.upper_rps,
                    "peak_nodes": r.peak_nodes, "min_nodes": r.min_nodes,
                    "gpus_per_node": sc.fleet.gpus_per_node})
        if r.min_nodes is not None:
            rep = r.points[r.min_nodes]
            usd = self.min_fleet_usd
            out.update({"gpus": r.min_nodes * sc.fleet.gpus_per_node, "total_usd": usd,
                        "usd_per_hour": None if usd is None else usd / (sc.duration_s / 3600.0),
                        "usd_per_mtok_output": rep.mean("cost.usd_per_mtok_output"),
                        "slo_attainment": rep.mean("slo.attainment"), "seeds_met": rep.n_met, "seeds": rep.n})
        out["min_nodes_confidence"] = r.confidence()
        out["rules"] = r.rules_table().to_dict(orient="records")
        return out


@dataclass
class MultiGpuSizing:
    """``capsim size`` over several GPU types (one :class:`GpuSizing` each, in the order asked)."""

    entries: list[GpuSizing]
    elapsed_s: float = 0.0

    @property
    def cheapest(self) -> GpuSizing | None:
        """The GPU type whose simulated minimum fleet costs least (ties: fewer GPUs, then the order asked)."""
        ok = [(e, e.result) for e in self.entries if e.meets_slo and e.min_fleet_usd is not None
              and e.result is not None]
        if not ok:
            return None
        return min(ok, key=lambda er: (round(er[0].min_fleet_usd or 0.0, 9),
                                       (er[1].min_nodes or 0) * er[1].scenario.fleet.gpus_per_node))[0]

    @property
    def primary(self) -> GpuSizing:
        """The entry the top-level report describes: the cheapest, else the first that could be sized."""
        return self.cheapest or next(e for e in self.entries if e.result is not None)

    def gpu_rows(self) -> list[dict[str, Any]]:
        """One record per GPU type: goodput, simulated minimum, that fleet's cost, and the cheapest marked."""
        best = self.cheapest
        rows = []
        for e in self.entries:
            rec = e.record()
            rows.append({k: rec.get(k) for k in ("gpu", "usd_per_gpu_hour", "node_goodput_rps", "min_nodes",
                                                 "gpus", "total_usd", "usd_per_hour", "usd_per_mtok_output",
                                                 "slo_attainment",
                                                 "meets_slo", "error")} | {"cheapest": e is best})
        return rows

    def gpu_table(self) -> pd.DataFrame:
        """:meth:`gpu_rows` as a DataFrame (node and GPU counts as nullable integers)."""
        return pd.DataFrame(self.gpu_rows()).astype({"min_nodes": "Int64", "gpus": "Int64"})

    def to_json(self) -> dict[str, Any]:
        """The primary GPU's report (the keys of :meth:`SizingResult.to_json`, unchanged for one GPU type)
        plus ``gpu``, ``cheapest_gpu`` (None when no type meets the SLO) and ``by_gpu`` (one entry per type:
        :meth:`GpuSizing.record`)."""
        from sim.metrics.tables import _clean

        prim = self.primary
        assert prim.result is not None
        best = self.cheapest
        out = prim.result.to_json()
        out["gpu"] = prim.gpu
        out["cheapest_gpu"] = None if best is None else best.gpu
        out["by_gpu"] = _clean([e.record() | {"cheapest": e is best} for e in self.entries])
        if len(self.entries) > 1:
            out["elapsed_s"] = self.elapsed_s
        return out


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


# --- presentation ---------------------------------------------------------------------------------------------
def _fmt_s(v: float | None, unit: bool = True) -> str:
    if v is None:
        return "–"
    if not unit:
        return f"{v:.2g}"
    return f"{v:.3g} s" if abs(v) < 1 else f"{v:.2f} s"


def format_report(res: SizingResult) -> str:
    """The plain-text table ``capsim size`` prints."""
    sc = res.scenario
    f = sc.fleet
    st = res.rate_stats
    slo = ", ".join(f"{k.replace('_p95_s', '').upper()} P95 ≤ {v:g} s" for k, v in res.slo_targets().items())
    gp = res.goodput
    hours = sc.duration_s / 3600.0
    lines = [
        f"capsim size · {sc.name} · {f.model} on {f.gpus_per_node}× {f.gpu} per node · SLO {slo or 'none'}",
        f"  traffic    mean {st['mean_rps']:.2f} · P50 {st['p50_rps']:.2f} · P90 {st['p90_rps']:.2f} · "
        f"P95 {st['p95_rps']:.2f} · P99 {st['p99_rps']:.2f} · peak {st['peak_rps']:.2f} req/s "
        f"(10-min windows, {sc.duration_s:,.0f} s)",
        f"  goodput    {gp.rate_rps:.2f} req/s per node (one node meets the SLO in {len(gp.seeds)}/{len(gp.seeds)} "
        f"seeds; fails at {gp.upper_rps:.2f}; bisection to {100 * gp.rel_tol:g} %, {gp.horizon_s:,.0f}-s runs)",
        f"  direct     ⌈peak {st['peak_rps']:.2f} ÷ {gp.rate_rps:.2f}⌉ = {res.peak_nodes} node(s)",
    ]
    if res.min_nodes is None:
        lines.append(f"  simulated  no fleet of up to {res.max_nodes} nodes meets the SLO in every seed")
    else:
        rep = res.points[res.min_nodes]
        usd = rep.mean("cost.total_usd")
        lines.append(f"  simulated  {res.min_nodes} node(s): {res.confidence()['statement']}")
        per_m = rep.mean("cost.usd_per_mtok_output")
        usd_run = "–" if usd is None else f"${usd:,.2f}"
        usd_h = "–" if usd is None else f"${usd / hours:,.2f}"
        lines.append(f"             cost {usd_run} for the {sc.duration_s:,.0f}-s run ({usd_h}/h, "
                     + ("–" if per_m is None else f"${per_m:.3f} per M output tokens")
                     + f"), SLO attainment {100 * (rep.mean('slo.attainment') or 0):.2f} % of requests "
                     f"(target {100 * sc.slo.attainment_target:g} %"
                     + (", worst window too" if sc.slo.require_worst_window else "") + ")")
    lines.append("")
    header = (f"  {'rule':<25}{'workload':<22}{'rate req/s':>11}{'nodes':>7}{'vs sim':>8}{'seeds met':>11}"
              f"{'SLO attain':>12}{'cost USD':>12}{'vs sim USD':>12}{'$/M out tok':>13}")
    lines.append(header)
    lines.append("  " + "─" * (len(header) - 2))
    for row in res.rules_table().to_dict(orient="records"):
        att = row["slo_attainment"]
        dn = row["nodes_vs_min"]
        du = row["usd_vs_min"]
        pm = row.get("usd_per_mtok_output")
        lines.append(
            f"  {row['rule']:<25}{row['workload']:<22}{row['rate_rps']:>11.2f}{row['nodes']:>7d}"
            f"{'–' if dn is None else f'{dn:+d}':>8}{str(row['seeds_met']) + '/' + str(row['seeds']):>11}"
            f"{'–' if att is None else f'{100 * att:.2f} %':>12}{row['total_usd']:>12,.2f}"
            f"{'–' if du is None else f'{du:+,.2f}':>12}"
            f"{'–' if pm is None else f'{pm:.3f}':>13}"
        )
    lines.append("")
    lines.append(f"  {sum(r.n for r in res.points.values()) + sum(r.n for r in gp.evaluations.values())} runs in "
                 f"{res.elapsed_s:.1f} s wall")
    return "\n".join(lines)


def format_gpu_report(multi: MultiGpuSizing) -> str:
    """The plain-text report over several GPU types: each type's :func:`format_report`, then one line per type
    (goodput, simulated minimum, cost of that fleet) and the cheapest type meeting the SLO."""
    parts = [format_report(e.result) for e in multi.entries if e.result is not None]
    prim = multi.primary.result
    assert prim is not None
    hours = prim.scenario.duration_s / 3600.0
    header = (f"  {'GPU type':<16}{'$/GPU-h':>9}{'goodput req/s/node':>20}{'min nodes':>11}{'GPUs':>6}"
              f"{'cost USD':>12}{'USD/h':>10}{'$/M out tok':>13}{'SLO attain':>12}")
    lines = [f"capsim size · {prim.scenario.name} · across GPU types ({hours * 3600:,.0f}-s runs, "
             f"{len(prim.seeds)} seed(s))", header, "  " + "─" * (len(header) - 2)]
    best = multi.cheapest
    for row in multi.gpu_rows():
        price = "–" if row["usd_per_gpu_hour"] is None else f"{row['usd_per_gpu_hour']:.2f}"
        if row["error"]:
            lines.append(f"  {row['gpu']:<16}{price:>9}   cannot run: {row['error']}")
            continue
        if row["min_nodes"] is None:
            lines.append(f"  {row['gpu']:<16}{price:>9}{row['node_goodput_rps']:>20.2f}   no fleet meets the SLO")
            continue
        mark = "  ← cheapest" if row["cheapest"] else ""
        lines.append(f"  {row['gpu']:<16}{price:>9}{row['node_goodput_rps']:>20.2f}{row['min_nodes']:>11d}"
                     f"{row['gpus']:>6d}{row['total_usd']:>12,.2f}{row['usd_per_hour']:>10,.2f}"
                     f"{'–' if row['usd_per_mtok_output'] is None else format(row['usd_per_mtok_output'], '.3f'):>13}"
                     f"{100 * row['slo_attainment']:>10.2f} %{mark}")
    lines.append("")
    if best is None:
        lines.append("  no GPU type meets the SLO")
    else:
        r = best.result
        assert r is not None and r.min_nodes is not None
        lines.append(f"  cheapest meeting the SLO: {best.gpu} — {r.min_nodes} node(s) × "
                     f"{r.scenario.fleet.gpus_per_node} GPU, ${(best.min_fleet_usd or 0) / hours:,.2f}/h")
    runs = sum(sum(x.n for x in e.result.points.values()) + sum(x.n for x in e.result.goodput.evaluations.values())
               for e in multi.entries if e.result is not None)
    lines.append(f"  {runs} runs in {multi.elapsed_s:.1f} s wall")
    return "\n\n".join(parts + ["\n".join(lines)])


def plot_gpu_costs(rows: list[dict[str, Any]]) -> Figure:
    """Bars: cost per hour of each GPU type's simulated minimum fleet (node count and goodput annotated),
    the cheapest highlighted; types with no fleet meeting the SLO are shown as empty slots. ``rows``:
    :meth:`MultiGpuSizing.gpu_rows`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 5), constrained_layout=True)
    x = np.arange(len(rows))
    usd_h = np.array([np.nan if r["usd_per_hour"] is None else r["usd_per_hour"] for r in rows], dtype=float)
    colors = ["C2" if r["cheapest"] else "C0" for r in rows]
    ax.bar(x, np.nan_to_num(usd_h), color=colors)
    for i, row in enumerate(rows):
        if row["min_nodes"] is None:
            text = "cannot run" if row["error"] else "no fleet\nmeets the SLO"
            ax.annotate(text, (i, 0), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
            continue
        ax.annotate(f"${usd_h[i]:,.2f}/h\n{int(row['min_nodes'])} node(s)\n{row['node_goodput_rps']:.2f} req/s/node",
                    (i, usd_h[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, [r["gpu"] for r in rows])
    ax.set_xlabel("GPU type")
    ax.set_ylabel("cost of the simulated minimum fleet (USD per hour)")
    ax.set_ylim(0, (np.nanmax(usd_h) if np.isfinite(usd_h).any() else 1.0) * 1.3)
    ax.set_title("Smallest fleet meeting the SLO, per GPU type (green: cheapest)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_sizing(points: pd.DataFrame, rules: pd.DataFrame, min_nodes: int | None, duration_s: float) -> Figure:
    """Cost (USD per hour) and SLO attainment (% of requests) against node count, every simulated count as a
    marker (filled: all seeds meet the SLO), with the rules' node counts and the simulated minimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    hours = duration_s / 3600.0
    pts = points.sort_values("nodes")
    usd_h = pts["total_usd"] / hours
    ax.plot(pts["nodes"], usd_h, color="C0", lw=1.5, marker="o", label="cost")
    ax.set_xlabel("nodes in the fleet")
    ax.set_ylabel("cost (USD per hour)", color="C0")
    ax.tick_params(axis="y", colors="C0")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    att = 100 * pts["slo_attainment"].astype(float)
    ax2.plot(pts["nodes"], att, color="C2", lw=1.5, label="SLO attainment")
    met = pts["meets_slo"].astype(bool).to_numpy()
    ax2.scatter(pts["nodes"][met], att[met], color="C2", zorder=3, label="meets the SLO (all seeds)")
    ax2.scatter(pts["nodes"][~met], att[~met], facecolor="white", edgecolor="C3", zorder=3,
                label="misses the SLO (some seed)")
    ax2.set_ylabel("SLO attainment (% of requests meeting every target)", color="C2")
    ax2.tick_params(axis="y", colors="C2")
    ax2.set_ylim(min(90.0, float(np.nanmin(att)) - 2 if len(att) else 90.0), 100.5)
    if min_nodes is not None:
        ax.axvline(min_nodes, color="k", lw=2, alpha=0.7)
        ax.annotate(f"simulated minimum: {min_nodes}", (min_nodes, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, ha="right", va="bottom", fontsize=8)
    by_nodes: dict[int, list[str]] = {}
    for row in rules.to_dict(orient="records"):
        by_nodes.setdefault(int(row["nodes"]), []).append(row["rule"])
    for n, labels in sorted(by_nodes.items()):
        ax.axvline(n, color="C1", ls="--", lw=1)
        # right of its line: the simulated minimum's label is left of its own line, which may be the same
        ax.annotate(", ".join(labels), (n, 0.5), xycoords=("data", "axes fraction"), rotation=90,
                    xytext=(2, 0), textcoords="offset points", ha="left", va="center", fontsize=8, color="C1",
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    h1.append(Line2D([], [], color="C1", ls="--"))
    l1.append("node count a rule gives")
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8,
              frameon=False)  # below the axes: never over the data
    ax.set_title("Fleet size: cost and SLO attainment (mean over seeds), sizing rules marked")
    return fig
