"""``capsim plan`` for a fleet with ``fleet.pools`` (docs/pools.md, docs/plan.md): per model, the cheapest layout of
pools that meets its SLO — which GPU, GPUs per node and precision, one pool or the pools you have plus a growth
pool, mixed or prefill/decode (and at what ratio) — and how to pay for it.

Method (the single-fleet plan's, :mod:`sim.plan.search`, per model; the other models' pools stay as given):

1. **Space** (:mod:`sim.plan.pool_space`): the model's layouts — ``grow``, ``single``, ``disaggregated`` — over the
   candidates of its classes' mix; each gets a cost lower bound from the capacity model, or the reason it is
   excluded (hardware, memory, lone-request latency of its role). Disaggregated pairs beyond the ``max_pairs``
   lowest bounds are left out (listed).
2. **Branch and bound**: layouts in increasing order of their bound; one whose bound is not below the
   ``plan.explore``-th cheapest layout found so far for the model is skipped; for the others the node search stops
   below the count whose idle cost reaches that figure (and at :data:`~sim.plan.search.SEARCH_SPAN` × the node count
   the capacity model gives for the model's peak rate).
3. **Sizing by simulation** of the whole scenario, every seed of the plan (the same seeds everywhere: common random
   numbers; a layout meets the SLO when its model's ``models.<model>.met`` holds in every seed — the model's P95
   targets over its served requests and its attainment over every arrival, each rejected, failed, timed-out or
   unfinished request a miss). A mixed pool: :func:`sim.core.bisection.smallest_passing` from the bound's
   peak-rate count scaled by how far the bound was from the simulated minimum for the model's layouts sized so
   far. A prefill:decode pair: from the prefill count the capacity model gives for the peak rate upwards, each
   count first checked with an idle decode side (:mod:`sim.sizing.disagg`: if even that misses, the count is
   infeasible and the next is tried), then the smallest decode pool up to that idle count; further prefill counts
   only while their bound is below the cheapest split found (:data:`PREFILL_STEPS` at most).
4. **Pricing** (analytic, from the same runs): the sized pools' reserved GPU-hours under each way to pay of
   ``plan.pricing`` (:func:`sim.plan.pricing.fixed_usd_per_gpu_hour`; owned adds the pool's simulated energy),
   plus the pools a ``grow`` layout keeps at what they cost in the run and the model's hosted-API spend; $/M output
   tokens = that ÷ the model's served output tokens.

Every simulated point is cached on disk (the single-fleet plan's :class:`~sim.plan.search.CachedRunner`).
Not searched for pools: ``max_num_seqs``, spot shares, forecast autoscaling, spill policies.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.core.config import Scenario
from sim.metrics.summary import Summary
from sim.perf.catalog import get_gpu
from sim.plan.pool_space import (
    Layout,
    ModelDemand,
    check_kinds,
    default_kinds,
    enumerate_layouts,
    model_demands,
)
from sim.plan.pricing import HOURS_PER_MONTH, LABELS, fixed_usd_per_gpu_hour
from sim.plan.search import SEARCH_SPAN, CachedRunner
from sim.plan.spec import PlanSpec
from sim.sizing.pools import derive_pools, model_summary

Progress = Callable[[str], None]
#: disaggregated pairs sized per model (the lowest cost bounds); the others are listed as left out
MAX_PAIRS = 4
#: prefill counts tried beyond the first feasible one (while their bound is below the best split found)
PREFILL_STEPS = 2


@dataclass
class SizedLayout:
    """A simulated layout: its node counts at the minimum (per sized pool; None when none met the SLO)."""

    layout: Layout
    nodes: list[int] | None = None
    scenario: Scenario | None = None  # the fleet at the minimum
    runs: list[Summary] = field(default_factory=list)  # every seed at the minimum
    tried: dict[tuple[int, ...], bool] = field(default_factory=dict)
    why: str | None = None  # why none met (no size up to the limit, or every split infeasible)
    infeasible: list[str] = field(default_factory=list)  # prefill counts found infeasible, with the constraint


@dataclass
class PoolPlanResult:
    """Everything the pooled plan reports (outputs in :mod:`sim.plan.pool_report`)."""

    scenario: Scenario
    spec: PlanSpec
    demands: list[ModelDemand]
    seeds: list[int]
    kinds: dict[str, list[str]]
    layouts: dict[str, list[Layout]]
    sized: list[SizedLayout]
    skipped: list[tuple[Layout, float, float]]  # (layout, its bound, the threshold it was not below)
    left_out: list[tuple[Layout, str]]
    rows: list[dict[str, Any]]
    combined: dict[str, dict[str, Any]] = field(default_factory=dict)  # the winners together: per model, its verdict
    elapsed_s: float = 0.0
    runs_computed: int = 0
    runs_reused: int = 0

    def ranked(self, model: str | None = None) -> list[dict[str, Any]]:
        """Rows (of ``model``, or all), per model: those meeting the SLO first, cheapest first (ties: higher
        attainment, fewer GPUs)."""
        order = {d.model: i for i, d in enumerate(self.demands)}
        rows = [r for r in self.rows if model is None or r["model"] == model]
        return sorted(rows, key=lambda r: (order[r["model"]], not r["meets_slo"],
                                           round(r["usd_per_month"], 2) if r["usd_per_month"] is not None
                                           else float("inf"), -(r["slo_attainment"] or 0.0), r["gpus"] or 0,
                                           r["layout"], r["pricing"] or ""))

    def winners(self) -> dict[str, dict[str, Any] | None]:
        """Each model's cheapest row meeting the SLO (None: none does)."""
        out: dict[str, dict[str, Any] | None] = {}
        for d in self.demands:
            best = [r for r in self.ranked(d.model) if r["meets_slo"]]
            out[d.model] = best[0] if best else None
        return out

    def sized_for(self, row: dict[str, Any]) -> SizedLayout:
        return next(s for s in self.sized if s.layout.model == row["model"] and s.layout.label == row["layout"])


def run_usd_per_gpu_hour(pricing: Any, gpu: Any) -> float:
    """The $/GPU-hour the run charges a reserved GPU of a pool (rented price, or owned TCO at full draw)."""
    from sim.metrics.cost import owned_usd_per_gpu_hour

    if pricing.mode == "owned":
        return owned_usd_per_gpu_hour(pricing.owned, gpu)
    return pricing.usd_per_gpu_hour if pricing.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour


# --- the fleet of a layout ----------------------------------------------------------------------------------
def layout_pools(scenario: Scenario, demand: ModelDemand, layout: Layout, nodes: list[int]) -> list[dict[str, Any]]:
    """``fleet.pools`` with the model's pools replaced by ``layout`` at ``nodes`` (the growth pool's settings —
    engine, pricing, interconnect — carried over; its stack only on the same GPU type)."""
    raw = scenario.model_dump(mode="json")["fleet"]["pools"]
    g = raw[demand.growth]
    pools = scenario.fleet.pool_list()
    by_role: dict[str, int] = {p.role: i for i, p in enumerate(pools) if i in demand.pools}

    def make(k: int, name: str) -> dict[str, Any]:
        ch = layout.sized[k]
        d = copy.deepcopy(raw[by_role.get(ch.role, demand.growth)] if layout.kind == "disaggregated" else g)
        if d["gpu"] != ch.gpu:
            d["stack"] = None
        d.update({"name": name, "role": ch.role, "gpu": ch.gpu, "gpus_per_node": ch.gpus_per_node,
                  "weights": ch.weights, "kv_cache": ch.kv_cache, "nodes": int(nodes[k])})
        if ch.role != "mixed":  # prefill/decode pools: reserved nodes only (docs/disaggregation.md)
            for key in ("spot", "on_demand", "autoscaler"):
                d.pop(key, None)
        else:
            d["interconnect"] = None
        return d

    if layout.kind == "grow":
        out = list(raw)
        out[demand.growth] = make(0, g["name"])
        return out
    # new pools are named after the growth pool (pool names are unique, so other models' layouts never clash)
    taken = {p["name"] for i, p in enumerate(raw) if i not in demand.pools}
    if layout.kind == "single":  # the growth pool's name while its GPU type stays, else with the GPU's
        same = get_gpu(g["gpu"]).name == layout.sized[0].gpu
        new = [make(0, _unique(g["name"] if same else f"{g['name']}-{layout.sized[0].gpu.lower()}", taken))]
    else:
        names = [_unique(pools[by_role[r]].name if r in by_role else f"{g['name']}-{r}", taken)
                 for r in ("prefill", "decode")]
        new = [make(0, names[0]), make(1, names[1])]
    first = min(demand.pools)
    rest = [p for i, p in enumerate(raw) if i not in demand.pools]
    before = sum(1 for i in range(first) if i not in demand.pools)
    return rest[:before] + new + rest[before:]


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, … if another model's pool has it."""
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


def layout_scenario(scenario: Scenario, demand: ModelDemand, layout: Layout, nodes: list[int]) -> Scenario:
    return derive_pools(scenario, {"fleet.pools": layout_pools(scenario, demand, layout, nodes)})


def sized_pool_names(scenario: Scenario, demand: ModelDemand, layout: Layout) -> list[str]:
    pools = layout_pools(scenario, demand, layout, [1] * len(layout.sized))
    if layout.kind == "grow":
        return [pools[demand.growth]["name"]]
    names = [p["name"] for p in pools]
    first = min(demand.pools) - sum(1 for i in range(min(demand.pools)) if i in demand.pools)
    return names[first:first + len(layout.sized)]


def combined_scenario(res: PoolPlanResult) -> Scenario | None:
    """The planned scenario with every model's winning layout at its node counts, its sized pools priced at the
    winner's way to pay (reserved rentals at their discounted $/GPU-hour, so a run bills what the plan priced); None
    when a model has no winner."""
    wins = res.winners()
    if any(w is None for w in wins.values()):
        return None
    sc = res.scenario
    orig = [p.name for p in sc.fleet.pool_list()]
    for d in res.demands:
        win = wins[d.model]
        assert win is not None
        sz = res.sized_for(win)
        assert sz.nodes is not None
        names = [p.name for p in sc.fleet.pool_list()]  # the model's own pools keep their names and order
        cur = dataclasses.replace(d, pools=[names.index(orig[q]) for q in d.pools], growth=names.index(orig[d.growth]))
        pools = layout_pools(sc, cur, sz.layout, sz.nodes)
        sized = set(sized_pool_names(sc, cur, sz.layout))
        for p in pools:
            if p["name"] in sized:
                p["pricing"] = _pricing(res.spec, sc, p, win["pricing"])
        sc = derive_pools(sc, {"fleet.pools": pools})
    return sc


def _pricing(spec: PlanSpec, sc: Scenario, pool: dict[str, Any], option: str) -> dict[str, Any]:
    """A sized pool's ``pricing`` section for a way to pay: owned, or rented at the option's $/GPU-hour."""
    from sim.core.config import Pricing

    base = dict(pool.get("pricing") or sc.pricing.model_dump(mode="json"))
    if option == "owned":
        base["mode"] = "owned"
        return base
    rate = fixed_usd_per_gpu_hour(option, sc.model_copy(update={"pricing": Pricing.model_validate(base)}),
                                  get_gpu(pool["gpu"]), spec)
    base.update({"mode": "rented", "usd_per_gpu_hour": rate})
    return base


# --- the search -------------------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    scenario: Scenario
    spec: PlanSpec
    seeds: list[int]
    runner: CachedRunner
    say: Progress

    def runs(self, sc: Scenario) -> list[Summary]:
        return self.runner([sc.model_copy(update={"seed": s}) for s in self.seeds])


def _met(runs: list[Summary], model: str) -> bool:
    return all(model_summary(r, model).met for r in runs)


def _size_mixed(ctx: _Ctx, demand: ModelDemand, lay: Layout, start: int, ceiling: int,
                limit_why: str = "max_nodes") -> SizedLayout:
    from sim.core.bisection import drive, smallest_passing

    out = SizedLayout(lay)
    cache: dict[int, tuple[Scenario, list[Summary]]] = {}

    def passes(n: int) -> bool:
        sc = layout_scenario(ctx.scenario, demand, lay, [n])
        runs = ctx.runs(sc)
        cache[n] = (sc, runs)
        out.tried[(n,)] = met = _met(runs, demand.model)
        ctx.say(f"    {lay.label}: {n} node(s) → SLO {'met' if met else 'missed'}")
        return met

    n_min = drive(smallest_passing(start, lay.floors[0], ceiling), passes)
    if n_min is None:
        out.why = f"no pool of up to {ceiling} node(s) met the SLO in every seed" + {
            "cost": " (larger pools cost more than the layouts already found)",
            "span": f" (searched up to {SEARCH_SPAN}× the node count the capacity model gives for the peak)",
        }.get(limit_why, "")
    else:
        out.nodes = [n_min]
        out.scenario, out.runs = cache[n_min]
    return out


def _size_split(ctx: _Ctx, demand: ModelDemand, lay: Layout, ceiling: int, limit_usd: float) -> SizedLayout:
    """The cheapest prefill:decode split of a disaggregated layout (module docstring, step 3)."""
    from sim.core.bisection import drive, smallest_passing
    from sim.sizing.disagg import idle_decode_nodes, infeasible_reason

    out = SizedLayout(lay)
    p_lo, d_lo = lay.nodes_lower(demand.peak_rps)
    p_lo = min(max(1, p_lo), ceiling)
    best_usd = limit_usd
    steps_after_feasible = 0
    pool_names = sized_pool_names(ctx.scenario, demand, lay)
    base = layout_scenario(ctx.scenario, demand, lay, [p_lo, 1])
    dec = next(i for i, q in enumerate(base.fleet.pool_list()) if q.name == pool_names[1])
    n_idle, load = idle_decode_nodes(base, dec, ceiling, demand.peak_rps)  # the same for every prefill count
    for p in range(p_lo, ceiling + 1):
        if lay.lower_usd_per_month([p, lay.nodes_lower(demand.mean_rps)[1]]) >= best_usd:
            break
        sc_idle = layout_scenario(ctx.scenario, demand, lay, [p, n_idle])
        runs_idle = ctx.runs(sc_idle)
        why = infeasible_reason(runs_idle, demand.model, sc_idle, pool_names[0], p, n_idle, load)
        out.tried[(p, n_idle)] = why is None
        if why is not None:
            out.infeasible.append(why)
            ctx.say(f"    {lay.label}: {p} prefill node(s) infeasible — {why}")
            continue
        cache: dict[int, tuple[Scenario, list[Summary]]] = {n_idle: (sc_idle, runs_idle)}

        def passes(d: int, p: int = p, cache: dict[int, tuple[Scenario, list[Summary]]] = cache) -> bool:
            if d in cache:
                return _met(cache[d][1], demand.model)
            sc = layout_scenario(ctx.scenario, demand, lay, [p, d])
            runs = ctx.runs(sc)
            cache[d] = (sc, runs)
            out.tried[(p, d)] = met = _met(runs, demand.model)
            ctx.say(f"    {lay.label}: {p} prefill + {d} decode node(s) → SLO {'met' if met else 'missed'}")
            return met

        d_min = drive(smallest_passing(max(d_lo, 1), 1, n_idle), passes)
        assert d_min is not None  # n_idle passed
        usd = _usd_per_month_min(ctx, demand, lay, [p, d_min], cache[d_min][1])
        if out.nodes is None or usd < best_usd:
            best_usd = usd
            out.nodes, (out.scenario, out.runs) = [p, d_min], cache[d_min]
        steps_after_feasible += 1
        if steps_after_feasible > PREFILL_STEPS:
            break
    if out.nodes is None:
        out.why = (f"no prefill count from {p_lo} met the SLO with an idle decode side" if out.infeasible
                   else "no split below the cost of the layouts already found")
    return out


def price_rows(ctx: _Ctx, demand: ModelDemand, sz: SizedLayout) -> list[dict[str, Any]]:
    """One row per way to pay for a sized layout (means over seeds), or one row saying none met the SLO."""
    lay = sz.layout
    sc = ctx.scenario
    names = sized_pool_names(sc, demand, lay)
    base: dict[str, Any] = {"model": demand.model, "layout": lay.label, "kind": lay.kind,
                            "lower_bound_usd_per_month": lay.lower_bound_usd_per_month, "seeds": len(ctx.seeds)}
    if sz.nodes is None or sz.scenario is None:
        return [base | {"pools": [], "pools_label": lay.label, "nodes": None, "gpus": None, "pricing": None,
                        "pricing_label": None, "usd_per_month": None, "usd_per_mtok_output": None,
                        "slo_attainment": None, "attainment_worst_seed": None, "slo_misses": None,
                        "seeds_met": 0, "ttft_p95_s": None, "tpot_p95_s": None, "meets_slo": False,
                        "why": sz.why}]
    ms = [model_summary(r, demand.model) for r in sz.runs]
    mine = [p for p in sz.scenario.fleet.pool_list() if p.name in ms[0].pools]
    pools_desc: list[dict[str, Any]] = [
        {"pool": p.name, "role": p.role, "gpu": get_gpu(p.gpu).name, "gpus_per_node": p.gpus_per_node,
         "weights": p.weights, "kv_cache": p.kv_cache, "nodes": p.nodes, "sized": p.name in names} for p in mine]
    hours = sc.duration_s / 3600.0
    att = [m.attainment or 0.0 for m in ms]
    common = base | {
        "pools": pools_desc,
        "pools_label": " + ".join(f"{d['pool']} ({d['role']}) {d['nodes']}× {d['gpu']} ×{d['gpus_per_node']} "
                                  f"{_prec(d)}" + ("" if d["sized"] else " (kept)") for d in pools_desc),
        "nodes": sum(d["nodes"] for d in pools_desc), "gpus": sum(d["nodes"] * d["gpus_per_node"] for d in pools_desc),
        "slo_attainment": sum(att) / len(att), "attainment_worst_seed": min(att),
        "slo_misses": sum(m.arrived - round((m.attainment or 0.0) * m.arrived) for m in ms) / len(ms),
        "arrived": sum(m.arrived for m in ms) / len(ms),
        "seeds_met": sum(m.met for m in ms), "meets_slo": all(m.met for m in ms),
        "ttft_p95_s": _mean([m.ttft_s.p95 for m in ms]), "tpot_p95_s": _mean([m.tpot_s.p95 for m in ms]),
        "why": None,
    }
    rows = []
    for option in ctx.spec.pricing:
        usd = [_usd_run(ctx, sz.scenario, names, option, r, demand.model) for r in sz.runs]
        out_mtok = [m.served_output_tokens / 1e6 for m in ms]
        per_m = [u / t for u, t in zip(usd, out_mtok) if t > 0]
        rows.append(common | {"pricing": option, "pricing_label": LABELS[option],
                              "usd_per_month": sum(usd) / len(usd) / hours * HOURS_PER_MONTH,
                              "usd_per_mtok_output": sum(per_m) / len(per_m) if per_m else None})
    return rows


def _prec(d: dict[str, Any]) -> str:
    return d["weights"] if d["weights"] == d["kv_cache"] else f"{d['weights']}/{d['kv_cache']}"


def _mean(vals: Sequence[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return sum(xs) / len(xs) if xs else None


def _usd_run(ctx: _Ctx, sc: Scenario, sized: list[str], option: str, run: Summary, model: str) -> float:
    """One run's cost of the model under ``option``: its sized pools' reserved GPU-hours at the option's price
    (owned: plus their simulated energy; their spot and autoscaled on-demand nodes as billed in the run), its other
    pools as billed in the run, its API spend."""
    assert run.pools is not None
    m = model_summary(run, model)
    hours = sc.duration_s / 3600.0
    usd = m.api_usd
    for p in sc.fleet.pool_list():
        if p.name not in m.pools:
            continue
        if p.name not in sized:
            usd += run.pools[p.name].cost.self_host_usd
            continue
        pricing = sc.pricing if p.pricing is None else p.pricing
        rate = fixed_usd_per_gpu_hour(option, sc.model_copy(update={"pricing": pricing}), get_gpu(p.gpu), ctx.spec)
        usd += p.nodes * p.gpus_per_node * rate * hours
        by_kind = run.pools[p.name].cost.self_host_usd_by_kind  # its spot / autoscaled nodes, as billed in the run
        usd += by_kind.get("spot", 0.0) + by_kind.get("on_demand", 0.0)
        if option == "owned":  # the energy of the reserved (owned) share of its GPU-hours
            cost = run.pools[p.name].cost
            share = cost.gpu_hours_by_kind.get("reserved", 0.0) / cost.gpu_hours if cost.gpu_hours > 0 else 1.0
            usd += run.pools[p.name].energy.usd * share
    return usd


def _usd_per_month_min(ctx: _Ctx, demand: ModelDemand, lay: Layout, nodes: list[int], runs: list[Summary]) -> float:
    sc = layout_scenario(ctx.scenario, demand, lay, nodes)
    names = sized_pool_names(ctx.scenario, demand, lay)
    hours = sc.duration_s / 3600.0
    return min(sum(_usd_run(ctx, sc, names, o, r, demand.model) for r in runs) / len(runs) / hours
               for o in ctx.spec.pricing) * HOURS_PER_MONTH


def plan_pools(scenario: Scenario, gpus: Sequence[str] = (), pricing: Sequence[str] = (),
               pool_names: Sequence[str] = (), n_seeds: int | None = None, max_nodes: int | None = None,
               workers: int | None = None, progress: Progress | None = None, tps: Sequence[int] = (),
               precisions: Sequence[str] = (),
               kinds: Sequence[str] = (), explore: int | None = None, top_n: int | None = None,
               cache_dir: Path | None = None, max_pairs: int = MAX_PAIRS) -> PoolPlanResult:
    """Search every model's layouts (module docstring) and return the ranked result."""
    t0 = time.perf_counter()
    spec = scenario.plan or PlanSpec()
    given: dict[str, Any] = {"gpus": list(gpus) or None, "gpus_per_node": list(tps) or None,
                             "precisions": list(precisions) or None, "pricing": list(pricing) or None,
                             "seeds": n_seeds, "max_nodes": max_nodes, "explore": explore, "top_n": top_n}
    raw = spec.model_dump(exclude_unset=True) | {k: v for k, v in given.items() if v is not None}
    spec = PlanSpec.model_validate(raw)
    say = progress or (lambda _m: None)
    runner = CachedRunner(cache_dir, workers)
    seeds = [scenario.seed + i for i in range(spec.seeds)]
    ctx = _Ctx(scenario, spec, seeds, runner, say)
    demands = model_demands(scenario, list(pool_names))
    asked = check_kinds(list(kinds) or list(spec.pool_layouts or []))
    all_layouts: dict[str, list[Layout]] = {}
    kinds_used: dict[str, list[str]] = {}
    sized: list[SizedLayout] = []
    skipped: list[tuple[Layout, float, float]] = []
    left_out: list[tuple[Layout, str]] = []
    rows: list[dict[str, Any]] = []
    for demand in demands:
        ks = asked or default_kinds(demand, scenario)
        _, layouts, out = enumerate_layouts(scenario, spec, demand, ks, max_pairs)
        ks = [k for k in ks if any(lay.kind == k for lay in layouts + [lo for lo, _ in out])]  # those that apply
        kinds_used[demand.model] = ks
        all_layouts[demand.model] = layouts
        left_out += out
        viable = sorted((lay for lay in layouts if lay.excluded is None),
                        key=lambda lay: (lay.lower_bound_usd_per_month, lay.label))
        say(f"{demand.model}: {len(layouts) + len(out)} layout(s) ({', '.join(ks)}), {len(viable)} viable; "
            f"{demand.mean_rps:.2f} req/s mean, {demand.peak_rps:.2f} peak")
        found: list[float] = []  # cheapest $/month of each layout of this model meeting the SLO
        ratios: list[float] = []
        for i, lay in enumerate(viable):
            # a layout bounded at or above the explore-th cheapest found cannot enter the model's top explore
            limit = sorted(found)[spec.explore - 1] if len(found) >= spec.explore else float("inf")
            if lay.lower_bound_usd_per_month >= limit:
                skipped.append((lay, lay.lower_bound_usd_per_month, limit))
                continue
            peak_nodes = lay.nodes_lower(demand.peak_rps)
            max_n = min(spec.max_nodes, max(SEARCH_SPAN, SEARCH_SPAN * max(peak_nodes)))
            say(f"[{demand.model} {i + 1}/{len(viable)}] {lay.label}: ≥ ${lay.lower_bound_usd_per_month:,.0f}/month "
                "by the bound; simulating")
            if lay.kind == "disaggregated":
                sz = _size_split(ctx, demand, lay, max_n, limit)
            else:
                n_cap = max_n
                limit_why = "max_nodes" if max_n == spec.max_nodes else "span"
                while n_cap > lay.floors[0] and lay.lower_usd_per_month([n_cap]) >= limit:
                    n_cap, limit_why = n_cap - 1, "cost"
                ratio = sorted(ratios)[len(ratios) // 2] if ratios else 1.0
                start = max(lay.floors[0], min(n_cap, math.ceil(peak_nodes[0] * ratio)))
                sz = _size_mixed(ctx, demand, lay, start, n_cap, limit_why)
                if sz.nodes is not None and peak_nodes[0] > 0:
                    ratios.append(sz.nodes[0] / peak_nodes[0])
            sized.append(sz)
            new = price_rows(ctx, demand, sz)
            rows += new
            costs = [r["usd_per_month"] for r in new if r["meets_slo"]]
            if costs:
                found.append(min(costs))
                say(f"    {lay.label}: meets the SLO from ${min(costs):,.0f}/month (best so far ${min(found):,.0f})")
            else:
                say(f"    {lay.label}: {sz.why}")
    res = PoolPlanResult(scenario, spec, demands, seeds, kinds_used, all_layouts, sized, skipped, left_out, rows)
    combined = combined_scenario(res)
    if combined is not None and len(demands) > 1:  # each model was sized beside the others' pools as given
        say("checking the winners together")
        runs = ctx.runs(combined)
        for d in demands:
            ms = [model_summary(r, d.model) for r in runs]
            res.combined[d.model] = {"seeds_met": sum(m.met for m in ms), "seeds": len(ms),
                                     "attainment": sum(m.attainment or 0.0 for m in ms) / len(ms)}
    res.elapsed_s, res.runs_computed, res.runs_reused = time.perf_counter() - t0, runner.computed, runner.reused
    return res
