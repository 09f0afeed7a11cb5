"""The search behind ``capsim plan``: branch and bound over the candidate space, simulated minimum fleets.

1. Enumerate candidates (:mod:`sim.plan.candidates`); exclude those the hardware rules out or whose lone-request
   latency already misses the SLO; before sizing one, simulate it nearly idle (one node at 2 % of its capacity
   bound) and exclude it if even that misses the SLO.
2. For each remaining candidate, a lower bound on its cost: ``⌈mean rate ÷ capacity bound⌉`` nodes
   (:mod:`sim.plan.bounds`) at its cheapest way to pay, idle.
3. In increasing order of that bound, find the candidate's simulated minimum fleet with
   :func:`sim.sizing.search.size_fleet` (the smallest node count whose every replication meets the SLO; the search
   starts at the peak-rate node count of the capacity bound, brackets by doubling and bisects), all candidates with the
   same seeds (common random numbers). A candidate whose bound is not below the ``plan.explore``-th cheapest
   fleet found so far is skipped: it cannot win (nor enter the top ``explore``); for the others the node-count
   search stops below the node count whose idle cost reaches that figure.
4. Price each minimum fleet every way (:mod:`sim.plan.pricing`) from the same simulations.
5. Spot variants (``plan.spot_shares``): each minimum fleet of ``N`` nodes again with ``round(share × N)`` of
   them spot nodes (the plan's spot discount and eviction rate), simulated with the same seeds — evictions
   re-dispatch requests and cost latency — and kept only if it still meets the SLO in every seed. With spot
   shares the cost bounds of steps 2–3 assume the largest share's spot price for ``share × n + ½`` nodes.
6. Forecast variants (``plan.autoscale: [fixed, forecast]``, shaped traffic only): each minimum fleet of ``N``
   nodes carried the peak 10-minute rate, so one node carries ``peak ÷ N`` req/s; the variant keeps
   ``⌈mean ÷ (peak ÷ N)⌉`` reserved nodes (the mean load's share of the fleet) and lets the forecast autoscaler
   (``schedule`` with ``rps_per_node = peak ÷ N``) start on-demand nodes up to ``N`` ahead of the rate; simulated
   with the same seeds, kept only if it meets the SLO in every seed and priced from the simulated GPU-hours.

Every simulated point is cached on disk under ``cache_dir`` (one JSON per scenario, keyed by a hash of the
resolved scenario, its profiles and the capsim version and code), so a rerun, or a narrower plan, reuses what
was simulated; runs that are not cached go to the process pool of :mod:`sim.runner.executor`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.metrics.summary import Summary
from sim.perf.catalog import get_gpu
from sim.plan.bounds import MixSample, sample_mix
from sim.plan.candidates import Candidate, enumerate_candidates
from sim.plan.pricing import price_summary, pricing_label, spot_usd_per_hour, usd_per_hour_idle
from sim.plan.spec import PlanSpec
from sim.runner.executor import map_summaries
from sim.sizing.results import GoodputResult, Replicates, SizingResult
from sim.sizing.rules import traffic_rate_stats
from sim.sizing.search import size_fleet
from sim.sizing.variants import derive

Progress = Callable[[str], None]


# --- cached runs ------------------------------------------------------------------------------------------
def scenario_key(scenario: Scenario) -> str:
    """Hash of everything that determines a run: the resolved scenario, its data folder, the GPU, model and
    stack profiles it resolves to, and capsim's version and code (:mod:`sim.core.fingerprint`), so a cached point is
    never reused after a profile or the simulator changed."""
    from importlib.metadata import PackageNotFoundError, version

    from sim.core.fingerprint import result_key

    try:
        v = version("capsim")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        v = "dev"
    return result_key(scenario.model_dump(mode="json", exclude={"plan"}), scenario, 24,
                      base=str(scenario.base_dir), capsim=v)


@dataclass
class CachedRunner:
    """Runs scenarios on the process pool, reusing summaries stored under ``cache_dir`` (None: no cache)."""

    cache_dir: Path | None
    workers: int | None = None
    computed: int = 0
    reused: int = 0

    def __call__(self, scenarios: list[Scenario]) -> list[Summary]:
        from sim.sweep.store import PointStore

        store = PointStore(self.cache_dir) if self.cache_dir is not None else None
        keys = [scenario_key(s) for s in scenarios]
        out: list[Summary | None] = [None] * len(scenarios)
        todo: list[int] = []
        for i, k in enumerate(keys):
            rec = store.load(k) if store is not None else None
            if rec is not None and rec["status"] == "ok":
                out[i] = Summary.from_json(rec["summary"])
                self.reused += 1
            else:
                todo.append(i)
        if todo:
            got = map_summaries([scenarios[i] for i in todo], self.workers)
            for i, summ in zip(todo, got):
                out[i] = summ
                if store is not None:
                    store.save({"key": keys[i], "status": "ok", "summary": summ.to_json()})
            self.computed += len(todo)
        return out  # type: ignore[return-value]


# --- results ------------------------------------------------------------------------------------------------
@dataclass
class Evaluated:
    """A simulated candidate: its minimum fleet (None when none up to ``max_nodes`` meets the SLO)."""

    candidate: Candidate
    scenario: Scenario
    sizing: SizingResult
    lower_bound_usd_per_month: float
    search_limit: str = "max_nodes"  # what capped the node search: "max_nodes", "span" or "cost"
    spot_nodes: int = 0  # a spot variant: this many of the min_nodes are spot nodes
    autoscale: str = "fixed"  # "forecast": a reserved base (scenario.fleet.nodes) + on-demand up to min_nodes

    @property
    def spot_share(self) -> float:
        n = self.sizing.min_nodes
        return self.spot_nodes / n if n else 0.0

    @property
    def min_nodes(self) -> int | None:
        return self.sizing.min_nodes


@dataclass
class PlanResult:
    """Everything ``capsim plan`` reports (tables in :mod:`sim.plan.report`)."""

    scenario: Scenario
    spec: PlanSpec
    mix: MixSample
    rate_stats: dict[str, float]
    candidates: list[Candidate]
    evaluated: list[Evaluated]
    skipped_by_bound: list[tuple[Candidate, float, float]]  # (candidate, its bound, best found when skipped)
    seeds: list[int]
    elapsed_s: float = 0.0
    runs_computed: int = 0
    runs_reused: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    spot_variants: list[Evaluated] = field(default_factory=list)  # simulated spot variants, met or not
    forecast_variants: list[Evaluated] = field(default_factory=list)  # simulated forecast variants, met or not
    autoscale_note: str | None = None  # why no forecast variant was tried (constant-rate traffic)

    def ranked(self) -> list[dict[str, Any]]:
        """Every (simulated candidate, way to pay) row, those meeting the SLO first, cheapest per month first
        (ties: higher SLO attainment, then fewer GPUs)."""
        return sorted(self.rows, key=lambda r: (
            not r["meets_slo"], round(r["usd_per_month"], 2) if r["usd_per_month"] is not None else float("inf"),
            -(r.get("slo_attainment") or 0.0), r["gpus"] or 0, r["candidate"]))

    @property
    def winner(self) -> dict[str, Any] | None:
        best = self.ranked()
        return best[0] if best and best[0]["meets_slo"] else None

    def evaluated_by_label(self) -> dict[str, Evaluated]:
        """The sized candidates (no spot variants) by label."""
        return {e.candidate.label: e for e in self.evaluated}

    def evaluated_for(self, row: dict[str, Any]) -> Evaluated:
        """The simulated fleet behind a row (a sized candidate or one of its spot variants)."""
        k = row.get("spot_nodes") or 0
        a = row.get("autoscale") or "fixed"
        return next(e for e in self.evaluated + self.spot_variants + self.forecast_variants
                    if e.candidate.label == row["candidate"] and e.spot_nodes == k and e.autoscale == a)


def _rows(ev: Evaluated, spec: PlanSpec, mean_rps: float) -> list[dict[str, Any]]:
    """One row per way to pay for ``ev``'s minimum fleet (means over seeds)."""
    c, sz = ev.candidate, ev.sizing
    gpu = get_gpu(c.gpu)
    n = sz.min_nodes
    base: dict[str, Any] = {"candidate": c.label, "gpu": c.gpu, "gpus_per_node": c.gpus_per_node,
                            "weights": c.weights, "kv_cache": c.kv_cache, "max_num_seqs": c.max_num_seqs,
                            "spill": c.spill, "spot_nodes": ev.spot_nodes, "spot_share": ev.spot_share,
                            "autoscale": ev.autoscale,
                            "reserved_nodes": ev.scenario.fleet.nodes if ev.autoscale == "forecast" else n,
                            "nodes": n, "gpus": None if n is None else n * c.gpus_per_node,
                            "nodes_lower_bound": (None if c.bounds is None else
                                                  1 if c.spill != "none" else c.bounds.min_nodes_lower(mean_rps)),
                            "meets_slo": n is not None}
    if n is None:
        return [base | {"pricing": p, "pricing_label": pricing_label(p), "usd_per_month": None,
                        "usd_per_mtok_output": None} for p in spec.pricing]
    rep = sz.points[n]
    below = sz.points.get(n - 1)
    cap = c.bounds.capacity_rps * n if c.bounds else None
    common = base | {
        "slo_attainment": rep.mean("slo.attainment"),
        "seeds_met": rep.n_met, "seeds": rep.n,
        "ttft_p95_s": rep.mean("latency.ttft_s.p95"), "tpot_p95_s": rep.mean("latency.tpot_s.p95"),
        "e2e_p95_s": rep.mean("latency.e2e_s.p95"),
        "busy_fraction": rep.mean("utilisation.busy_fraction"),
        "api_request_share": rep.mean("spill.request_share") or 0.0,
        "kv_fraction_p95": rep.mean("utilisation.kv_fraction_p95"),
        "headroom": None if cap is None else 1.0 - mean_rps / cap,
        "below_seeds_met": None if below is None else below.n_met,
        "energy_kwh_per_day": (rep.mean("energy.kwh") or 0.0) * 86_400.0 / ev.scenario.duration_s,
        "avg_power_kw": rep.mean("energy.avg_power_kw"),
        "co2_kg_per_day": (rep.mean("energy.co2_kg") or 0.0) * 86_400.0 / ev.scenario.duration_s,
        "gpu_hours": rep.mean("cost.gpu_hours"),
    }
    rows = []
    # an all-spot fleet costs the same whatever the way to pay: one row
    for p in spec.pricing[:1] if ev.spot_nodes == n else spec.pricing:
        priced = [price_summary(p, s, ev.scenario, gpu, spec) for s in rep.summaries]
        mean: dict[str, float | None] = {}
        for k in priced[0]:
            vals = [x[k] for x in priced]
            mean[k] = sum(v for v in vals if v is not None) / len(vals) if None not in vals else None
        rows.append(common | {"pricing": p, "pricing_label": pricing_label(p, ev.spot_share, ev.autoscale),
                              "usd_per_month": mean["usd_per_month"],
                              "usd_per_mtok_output": mean["usd_per_mtok_output"]})
    return rows


#: the node-count search of a candidate stops at this multiple of its capacity bound's peak node count
SEARCH_SPAN = 4
#: the unloaded check: one node at this share of its capacity bound, for about this many requests
UNLOADED_LOAD = 0.02
UNLOADED_REQUESTS = 1500


def _unloaded_miss(scenario: Scenario, c: Candidate, seeds: list[int], runner: CachedRunner) -> str | None:
    """Why ``c`` misses the SLO even on a nearly idle node (None when it does not): one node at
    :data:`UNLOADED_LOAD` of its capacity bound, constant rate, with the plan's seeds. A fleet of any size
    loads its nodes at least this lightly only when it is wastefully large, so a miss here means no fleet
    can meet the SLO (prefill of the long prompts, not queueing, is what misses)."""
    from sim.sizing.variants import goodput_scenario

    assert c.bounds is not None
    rate = UNLOADED_LOAD * c.bounds.capacity_rps
    base = goodput_scenario(scenario, rate, UNLOADED_REQUESTS / rate)
    summaries = runner([derive(base, {"seed": s}) for s in seeds])
    if all(s.slo.met for s in summaries):
        return None
    worst = max(summaries, key=lambda s: s.latency.ttft_s.p95 or 0.0)
    ttft_s = worst.latency.ttft_s.p95 or 0.0
    tpot_s = worst.latency.tpot_s.p95 or 0.0
    return (f"misses the SLO even unloaded (one node at {rate:.3g} req/s: P95 TTFT "
            f"{1000 * ttft_s:,.0f} ms, TPOT {1000 * tpot_s:,.1f} ms)")


def spot_nodes_for(share: float, nodes: int) -> int:
    """``share × nodes`` rounded half up."""
    return min(nodes, math.floor(share * nodes + 0.5))


def spot_variant_scenario(scenario: Scenario, nodes: int, spot_nodes: int, spec: PlanSpec) -> Scenario:
    """``scenario`` with ``nodes`` nodes of which ``spot_nodes`` are spot nodes at the plan's discount and eviction
    rate (notice, replacement and eviction handling as the scenario's ``fleet.spot``; ``requeue`` without an api)."""
    spot = scenario.fleet.spot.model_dump() | {"nodes": spot_nodes, "discount": spec.spot_discount,
                                               "evictions_per_node_hour": spec.spot_evictions_per_node_hour}
    if spot["on_eviction"] == "spill" and scenario.api is None:
        spot["on_eviction"] = "requeue"
    return derive(scenario, {"fleet.nodes": nodes - spot_nodes, "fleet.spot": spot})


def spot_variants(ev: Evaluated, spec: PlanSpec, seeds: list[int], runner: CachedRunner) -> list[Evaluated]:
    """``ev``'s minimum fleet with each share of ``plan.spot_shares`` as spot nodes, simulated with the same seeds;
    a variant's ``min_nodes`` is None when it misses the SLO in any seed (it is then dropped from the ranking)."""
    n = ev.min_nodes
    if n is None:
        return []
    ks = sorted({spot_nodes_for(x, n) for x in spec.spot_shares if x > 0} - {0})
    if not ks:
        return []
    scenarios = {k: spot_variant_scenario(ev.scenario, n, k, spec) for k in ks}
    summaries = runner([derive(scenarios[k], {"seed": s}) for k in ks for s in seeds])
    out = []
    for i, k in enumerate(ks):
        reps = Replicates(summaries[i * len(seeds):(i + 1) * len(seeds)])
        sz = replace(ev.sizing, scenario=scenarios[k], min_nodes=n if reps.all_met else None, max_nodes=n,
                     points={n: reps})
        out.append(Evaluated(ev.candidate, scenarios[k], sz, ev.lower_bound_usd_per_month, ev.search_limit, k))
    return out


def forecast_base(nodes: int, mean_rps: float, peak_rps: float) -> tuple[int, float]:
    """(reserved base, req/s per node) of a forecast variant of a minimum fleet of ``nodes`` sized for ``peak_rps``:
    one node carries ``peak ÷ nodes``; the base is the node count the mean rate needs at that figure."""
    per_node = peak_rps / nodes
    return max(1, math.ceil(mean_rps / per_node - 1e-9)), per_node


def forecast_variant(ev: Evaluated, rate_stats: dict[str, float], seeds: list[int],
                     runner: CachedRunner) -> Evaluated | None:
    """``ev``'s minimum fleet as a reserved base plus forecast-autoscaled on-demand nodes up to its size (rule in
    :func:`forecast_base`), simulated with the same seeds; ``min_nodes`` None when any seed misses the SLO. None
    when there is nothing to autoscale (the base is the whole fleet)."""
    n = ev.min_nodes
    if n is None or ev.spot_nodes:
        return None
    base, per_node = forecast_base(n, rate_stats["mean_rps"], rate_stats["peak_rps"])
    if base >= n:
        return None
    sc = derive(ev.scenario, {"fleet.nodes": base, "fleet.on_demand.max_nodes": n - base,
                              "fleet.autoscaler": {"policy": "schedule", "rps_per_node": per_node}})
    reps = Replicates(runner([derive(sc, {"seed": s}) for s in seeds]))
    sz = replace(ev.sizing, scenario=sc, min_nodes=n if reps.all_met else None, max_nodes=n, points={n: reps})
    return Evaluated(ev.candidate, sc, sz, ev.lower_bound_usd_per_month, ev.search_limit, 0, "forecast")


def resolve_spec(scenario: Scenario, overrides: dict[str, Any]) -> PlanSpec:
    """The scenario's ``plan:`` section (or the defaults) with ``overrides`` (None values ignored)."""
    from sim.core.config import validate_mapping

    base = scenario.plan.model_dump() if scenario.plan is not None else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return validate_mapping(PlanSpec, base, "plan")


@dataclass
class CandidateSpace:
    """The resolved plan spec, the sampled class mix, the demand's rate statistics and every candidate."""

    spec: PlanSpec
    mix: MixSample
    rate_stats: dict[str, float]
    candidates: list[Candidate]

    @property
    def viable(self) -> list[Candidate]:
        """Candidates the hardware and the lone-request latency do not rule out."""
        return [c for c in self.candidates if c.excluded is None]


def candidate_space(
    scenario: Scenario,
    *,
    gpus: Sequence[str] | None = None,
    gpus_per_node: Sequence[int] | None = None,
    precisions: Sequence[str] | None = None,
    max_num_seqs: Sequence[int] | None = None,
    pricing: Sequence[str] | None = None,
    seeds: int | None = None,
    max_nodes: int | None = None,
    top_n: int | None = None,
    explore: int | None = None,
    spot_shares: Sequence[float] | None = None,
    autoscale: Sequence[str] | None = None,
) -> CandidateSpace:
    """Validate that ``scenario`` can be planned and enumerate its candidates (closed form, no simulation)."""
    spec = resolve_spec(scenario, {
        "gpus": list(gpus) if gpus else None, "gpus_per_node": list(gpus_per_node) if gpus_per_node else None,
        "precisions": list(precisions) if precisions else None,
        "max_num_seqs": list(max_num_seqs) if max_num_seqs else None,
        "pricing": list(pricing) if pricing else None, "seeds": seeds, "max_nodes": max_nodes, "top_n": top_n,
        "explore": explore, "spot_shares": list(spot_shares) if spot_shares else None,
        "autoscale": list(autoscale) if autoscale else None})
    if any(x > 0 for x in spec.spot_shares) and scenario.fleet.spot.nodes > 0:
        raise ConfigError(scenario.source, "plan.spot_shares", "the scenario has its own fleet.spot.nodes; set "
                          "them to 0 to let the plan choose the spot share")
    if "forecast" in spec.autoscale and scenario.fleet.autoscaler.policy != "none":
        raise ConfigError(scenario.source, "plan.autoscale", "the scenario has its own fleet.autoscaler; set its "
                          "policy to none to let the plan compare fixed and forecast autoscaling")
    if scenario.traffic.trace is not None:
        raise ConfigError(scenario.source, "traffic.trace", "capsim plan needs request classes with token "
                          "distributions (a replayed trace has none)")
    if all(getattr(scenario.slo, k) is None for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")):
        raise ConfigError(scenario.source, "slo", "every SLO target is off; a plan needs at least one")
    mix = sample_mix(scenario)
    cands = enumerate_candidates(scenario, spec, mix)
    if all(c.excluded is not None for c in cands):
        raise ConfigError(scenario.source, "plan", "no candidate can meet the SLO: " +
                          "; ".join(sorted({c.excluded or "" for c in cands}))[:400])
    return CandidateSpace(spec, mix, traffic_rate_stats(scenario), cands)


#: rough simulations per seed to size one candidate (the unloaded check, the bracket and the bisection)
RUNS_PER_SEED = 8


def estimate_plan(scenario: Scenario, space: CandidateSpace, slots: int) -> Any:
    """An upper bound on the search's cost (:class:`sim.runner.estimate.Estimate`): every viable candidate sized, each
    about :data:`RUNS_PER_SEED` runs per seed at the largest fleet its search may try. The cost bound usually
    skips most candidates, so the real search is several times cheaper."""
    from sim.runner.estimate import estimate_many

    peak = space.rate_stats["peak_rps"]
    scenarios = []
    for c in space.viable:
        assert c.bounds is not None
        peak_nodes = max(1, math.ceil(peak / c.bounds.capacity_rps)) if c.bounds.capacity_rps > 0 else 1
        nodes = min(space.spec.max_nodes, max(SEARCH_SPAN, SEARCH_SPAN * peak_nodes))
        scenarios.append(derive(scenario, c.changes(scenario) | {"fleet.nodes": nodes}))
    n_variants = sum(x > 0 for x in space.spec.spot_shares) + ("forecast" in space.spec.autoscale)
    return estimate_many(scenarios, slots, repeat=space.spec.seeds * (RUNS_PER_SEED + n_variants))


def run_plan(
    scenario: Scenario,
    *,
    workers: int | None = None,
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
    **narrowing: Any,
) -> PlanResult:
    """Search ``scenario``'s candidate space (method in the module docstring); ``narrowing``: the keyword
    arguments of :func:`candidate_space` (``gpus``, ``precisions``, ``spot_shares``, …)."""
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    space = candidate_space(scenario, **narrowing)
    spec, mix, stats, cands = space.spec, space.mix, space.rate_stats, space.candidates
    mean_rps = stats["mean_rps"]
    viable = space.viable
    say(f"{len(cands)} candidates, {len(viable)} after the hardware and lone-latency checks "
        f"(demand {mean_rps:.2f} req/s mean, {stats['peak_rps']:.2f} peak 10-min)")
    runner = CachedRunner(Path(cache_dir) if cache_dir is not None else None, workers)
    hours_per_month = 730.0

    def node_lower_usd(c: Candidate) -> float:
        """$/month of one node of ``c`` at its cheapest way to pay, idle: no fleet of n nodes costs less than n ×."""
        sc_gpu = get_gpu(c.gpu)
        cand_sc = derive(scenario, c.changes(scenario))
        return min(usd_per_hour_idle(p, cand_sc, sc_gpu, spec, c.gpus_per_node) for p in spec.pricing) \
            * hours_per_month

    per_node = {c.key: node_lower_usd(c) for c in viable}
    per_spot = {c.key: spot_usd_per_hour(derive(scenario, c.changes(scenario)), get_gpu(c.gpu), spec,
                                         c.gpus_per_node) * hours_per_month for c in viable}
    share_max = max(spec.spot_shares)

    def fleet_lower_usd(c: Candidate, n: int) -> float:
        """$/month lower bound of ``n`` nodes of ``c`` or any spot variant of them (at most ``share × n + ½``
        spot nodes, rounding)."""
        a, b = per_node[c.key], per_spot[c.key]
        lo = n * a
        if share_max > 0 and b < a:
            lo -= min(n, share_max * n + 0.5) * (a - b)
        if "forecast" in spec.autoscale and stats["peak_rps"] > mean_rps:  # a forecast variant's reserved base
            lo = min(lo, forecast_base(n, mean_rps, stats["peak_rps"])[0] * a)
        return lo

    def nodes_lower(c: Candidate) -> int:
        """With spill the API can take any share of the load: one node is all that is certain."""
        assert c.bounds is not None
        return 1 if c.spill != "none" else c.bounds.min_nodes_lower(mean_rps)

    bounded = sorted(((fleet_lower_usd(c, nodes_lower(c)), c) for c in viable if c.bounds is not None),
                     key=lambda t: (t[0], t[1].label))
    seed_list = [scenario.seed + i for i in range(spec.seeds)]
    evaluated: list[Evaluated] = []
    skipped: list[tuple[Candidate, float, float]] = []
    rows: list[dict[str, Any]] = []
    spot_evs: list[Evaluated] = []
    forecast_evs: list[Evaluated] = []
    shaped = stats["peak_rps"] > stats["mean_rps"] * (1.0 + 1e-9)
    autoscale_note = None
    if "forecast" in spec.autoscale and not shaped:
        autoscale_note = "forecast autoscaling skipped: the traffic rate is constant (nothing to follow)"
        say(autoscale_note)
    found: list[float] = []  # cheapest $/month of each candidate meeting the SLO
    ratios: list[float] = []  # simulated minimum ÷ (peak rate ÷ capacity bound), per sized candidate

    def threshold() -> float:
        """A candidate bounded at or above this cannot enter the top ``explore``."""
        return sorted(found)[spec.explore - 1] if len(found) >= spec.explore else float("inf")

    for i, (lb, c) in enumerate(bounded):
        if lb >= threshold():
            skipped.append((c, lb, threshold()))
            continue
        assert c.bounds is not None
        cand_sc = derive(scenario, c.changes(scenario))
        # the search starts at ⌈peak rate ÷ capacity⌉ nodes, scaled by how far the bound has been from the
        # simulated minimum for the candidates sized so far (a starting guess only; the bracket corrects it)
        cap = c.bounds.capacity_rps / (sorted(ratios)[len(ratios) // 2] if ratios else 1.0)
        gp = GoodputResult(cap, cap, 0.0, scenario.duration_s, seed_list)
        say(f"[{i + 1}/{len(bounded)}] {c.label}: ≥ {nodes_lower(c)} node(s) by the bound, "
            f"≥ ${lb:,.0f}/month; simulating")
        unloaded = _unloaded_miss(cand_sc, c, seed_list, runner) if c.spill == "none" else None
        if unloaded is not None:
            c.excluded = unloaded
            say(f"    {c.label}: {unloaded}")
            continue
        # fleets dearer than the explore-th best cannot enter the top: search only below that; and no further
        # than SEARCH_SPAN × the node count the capacity bound gives for the peak
        limit = threshold()
        peak_nodes = max(1, math.ceil(stats["peak_rps"] / c.bounds.capacity_rps))
        max_n = min(spec.max_nodes, max(SEARCH_SPAN, SEARCH_SPAN * peak_nodes))
        why_limit = "max_nodes" if max_n == spec.max_nodes else "span"
        if limit != float("inf"):  # the largest fleet whose lower bound is below the limit
            n_cap = max_n
            while n_cap > 1 and fleet_lower_usd(c, n_cap) >= limit:
                n_cap -= 1
            if n_cap < max_n:
                max_n, why_limit = n_cap, "cost"
        def fleet_progress(msg: str, label: str = c.label) -> None:
            if not msg.startswith("goodput"):  # the capacity guess size_fleet reports as a "goodput"
                say(f"    {label}: {msg}")

        sz = size_fleet(cand_sc, n_seeds=spec.seeds, rules=(), max_nodes=max_n, goodput=gp, runner=runner,
                        progress=fleet_progress)
        if sz.min_nodes is not None:
            ratios.append(sz.min_nodes / max(1.0, stats["peak_rps"] / c.bounds.capacity_rps))
        ev = Evaluated(c, cand_sc, sz, lb, why_limit)
        evaluated.append(ev)
        new_rows = _rows(ev, spec, mean_rps)
        for var in spot_variants(ev, spec, seed_list, runner):
            spot_evs.append(var)
            n_met = var.sizing.points[var.sizing.max_nodes].n_met
            if var.min_nodes is not None:
                new_rows.extend(_rows(var, spec, mean_rps))
                say(f"    {c.label}: {var.spot_nodes} of {var.min_nodes} node(s) as spot meet the SLO")
            else:
                say(f"    {c.label}: {var.spot_nodes} spot node(s) miss the SLO ({n_met}/{len(seed_list)} seeds)")
        fv = forecast_variant(ev, stats, seed_list, runner) if "forecast" in spec.autoscale and shaped else None
        if fv is not None:
            forecast_evs.append(fv)
            if fv.min_nodes is not None:
                new_rows.extend(_rows(fv, spec, mean_rps))
                say(f"    {c.label}: {fv.scenario.fleet.nodes} reserved + forecast on-demand up to {fv.min_nodes} "
                    "node(s) meet the SLO")
            else:
                n_met = fv.sizing.points[fv.sizing.max_nodes].n_met
                say(f"    {c.label}: forecast autoscaling misses the SLO ({n_met}/{len(seed_list)} seeds)")
        rows.extend(new_rows)
        costs = [r["usd_per_month"] for r in new_rows if r["meets_slo"] and r["usd_per_month"] is not None]
        if costs:
            found.append(min(costs))
            say(f"    {c.label}: {sz.min_nodes} node(s) meet the SLO, from ${min(costs):,.0f}/month "
                f"(best so far ${min(found):,.0f})")
        else:
            say(f"    {c.label}: no fleet of up to {max_n} nodes meets the SLO")
    res = PlanResult(scenario, spec, mix, stats, cands, evaluated, skipped, seed_list,
                     time.perf_counter() - t0, runner.computed, runner.reused, rows, spot_evs,
                     forecast_evs, autoscale_note)
    return res
