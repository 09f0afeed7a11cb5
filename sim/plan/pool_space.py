"""The candidate space of ``capsim plan`` on a fleet with ``fleet.pools``: per model, *layouts* of pools.

A layout is one way to serve a model's traffic (the other models' pools stay as the scenario gives them):

* ``grow`` — the model's pools as given, its growth pool (the last pool of the model, or ``--pool``) on a candidate
  GPU × GPUs per node × precision and sized; the other pools keep their node counts (capacity you already have:
  "can last year's A100s carry part of the load, and what do we add?"). Only for a model served mixed by several
  pools.
* ``single`` — the model's pools replaced by one mixed pool of a candidate, sized ("one pool").
* ``disaggregated`` — a prefill pool of one candidate and a decode pool of another (the same weight and KV-cache
  precision: the KV moves from one to the other; the GPU type and GPUs per node may differ, e.g. H100 prefill +
  A100 decode), the prefill:decode node counts searched. The default for a model the scenario serves
  disaggregated; ``--layout disaggregated`` (``plan.pool_layouts``) adds it for a model served mixed.

Candidates are :mod:`sim.plan.candidates`' (hardware, memory and lone-request checks against the model's own classes),
per role: a prefill pool is held only to the lone-request TTFT, a decode pool only to the lone-request TPOT (its
TTFT share is one decode step), a mixed pool to all three.

**Lower bounds** (to order and prune layouts before simulating any): a mixed pool sustains at most its closed-form
capacity bound (:mod:`sim.plan.bounds`); a prefill or decode node the steady-state capacity of its role
(:func:`sim.perf.capacity.node_capacity`, an estimate of the kind a benchmark reaches). A layout needs at least
``⌈(model's mean rate − fixed pools' capacity) ÷ capacity⌉`` nodes of each sized pool (at least one; zero for a
growth pool beside other pools of its role), costed at the cheapest way to pay, idle, plus the fixed pools at their
configured price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.perf.catalog import get_gpu
from sim.plan.bounds import MixSample, sample_mix
from sim.plan.candidates import Candidate, enumerate_candidates
from sim.plan.pricing import HOURS_PER_MONTH, usd_per_hour_idle
from sim.plan.spec import PlanSpec

LAYOUT_KINDS: tuple[str, ...] = ("grow", "single", "disaggregated")


@dataclass(frozen=True)
class PoolChoice:
    """What one sized pool of a layout is made of."""

    role: str
    gpu: str
    gpus_per_node: int
    weights: str
    kv_cache: str

    @property
    def precision(self) -> str:
        return self.weights if self.weights == self.kv_cache else f"{self.weights}/{self.kv_cache}"

    @property
    def label(self) -> str:
        return f"{self.gpu} ×{self.gpus_per_node} {self.precision}"


@dataclass
class ModelDemand:
    """One model of the fleet: its pools, classes, share of the traffic, rates and request mix."""

    model: str  # the catalogue's spelling: the key of summary.models
    pools: list[int]  # indices into fleet.pools
    growth: int  # index of its growth pool
    classes: list[str]
    share: float  # of the arrivals (static class shares)
    mean_rps: float
    peak_rps: float  # busiest 10-minute window
    mix: MixSample
    view: Scenario  # a single-fleet scenario: the growth pool alone, serving this model's classes


@dataclass
class Layout:
    """One way to serve a model (module docstring) and what is known before simulating it."""

    model: str
    kind: str
    sized: list[PoolChoice]
    capacity_rps: list[float] = field(default_factory=list)  # per node of each sized pool (bound / estimate)
    floors: list[int] = field(default_factory=list)  # least node count of each sized pool
    fixed_capacity_rps: float = 0.0  # the pools a ``grow`` layout keeps
    fixed_usd_per_hour: float = 0.0  # what those cost as configured
    node_usd_per_hour_min: list[float] = field(default_factory=list)  # cheapest way to pay, idle, per node
    excluded: str | None = None
    lower_bound_usd_per_month: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "disaggregated":
            return f"prefill {self.sized[0].label} + decode {self.sized[1].label}"
        head = "grow" if self.kind == "grow" else "one pool"
        return f"{head}: {self.sized[0].label}"

    def nodes_lower(self, rate_rps: float) -> list[int]:
        """Fewest nodes of each sized pool that keep up with ``rate_rps`` (the fixed pools' capacity first)."""
        out = []
        for cap, floor in zip(self.capacity_rps, self.floors):
            need = max(0.0, rate_rps - self.fixed_capacity_rps) / cap if cap > 0 else math.inf
            out.append(max(floor, math.ceil(need * (1.0 - 1e-9))) if math.isfinite(need) else 10**6)
        return out

    def lower_usd_per_month(self, nodes: list[int]) -> float:
        return (sum(n * c for n, c in zip(nodes, self.node_usd_per_hour_min)) + self.fixed_usd_per_hour) \
            * HOURS_PER_MONTH


def model_demands(scenario: Scenario, pool_names: tuple[str, ...] | list[str] = ()) -> list[ModelDemand]:
    """Every model the fleet serves, with its growth pool, rates and mix (module docstring)."""
    from sim.fleet.pools import pool_layout
    from sim.perf.catalog import get_model
    from sim.sizing.pools import growth_pools
    from sim.sizing.rules import traffic_rate_stats

    layout = pool_layout(scenario)
    growth = growth_pools(scenario, pool_names)
    stats = traffic_rate_stats(scenario)
    classes = scenario.traffic.classes
    total = sum(c.share for c in classes)
    pools = scenario.fleet.pool_list()
    out = []
    for g, key in enumerate(layout.group_models):
        mine = [c for c, cg in zip(classes, layout.class_group) if cg == g]
        share = sum(c.share for c in mine) / total
        idx = growth[key]
        p = pools[idx]
        fleet = scenario.fleet.pool_fleet(idx).model_copy(update={"nodes": 1})
        own = sum(c.share for c in mine)  # the view's classes: this model's, their shares summing to 1
        traffic = scenario.traffic.model_copy(update={"classes": [c.model_copy(update={"share": c.share / own})
                                                                  for c in mine]})
        update: dict[str, Any] = {"fleet": fleet, "traffic": traffic}
        if p.pricing is not None:
            update["pricing"] = p.pricing
        view = scenario.model_copy(update=update)
        out.append(ModelDemand(get_model(p.model, scenario.source).name, layout.group_pools(g), idx,
                               [c.name for c in mine], share, stats["mean_rps"] * share, stats["peak_rps"] * share,
                               sample_mix(view), view))
    return out


def narrowed_spec(spec: PlanSpec, scenario: Scenario, demand: ModelDemand) -> PlanSpec:
    """``spec`` with the lists the user did not set narrowed to what the model's pools use now (their GPU types,
    GPUs per node and precisions): a pooled plan widens the space only where asked (``--gpu``, ``--tp``,
    ``--precision`` or ``plan.*``)."""
    pools = [scenario.fleet.pool_list()[q] for q in demand.pools]
    given = spec.model_fields_set
    update: dict[str, Any] = {"spill": ["none"], "max_num_seqs": [demand.view.fleet.engine.max_num_seqs]}
    if "gpus" not in given or not spec.gpus:
        update["gpus"] = list(dict.fromkeys(p.gpu for p in pools))
    if "gpus_per_node" not in given:
        update["gpus_per_node"] = sorted({p.gpus_per_node for p in pools})
    if "precisions" not in given:
        update["precisions"] = list(dict.fromkeys(p.weights if p.weights == p.kv_cache else f"{p.weights}/{p.kv_cache}"
                                                  for p in pools))
    return spec.model_copy(update=update)


def role_excluded(c: Candidate, role: str, scenario: Scenario) -> str | None:
    """Why candidate ``c`` cannot serve ``role`` at any size: the hardware checks, and the lone-request latency that
    role is held to (prefill: TTFT; decode: TPOT; mixed: TTFT, TPOT and E2E)."""
    if c.bounds is None:
        return c.excluded or "no bounds"
    slo, b = scenario.slo, c.bounds
    checks = {"mixed": ((slo.ttft_p95_s, b.ttft_lone_p95_s, "TTFT"), (slo.tpot_p95_s, b.tpot_lone_p95_s, "TPOT"),
                        (slo.e2e_p95_s, b.e2e_lone_p95_s, "E2E")),
              "prefill": ((slo.ttft_p95_s, b.ttft_lone_p95_s, "TTFT"),),
              "decode": ((slo.tpot_p95_s, b.tpot_lone_p95_s, "TPOT"),)}[role]
    for target, lone, name in checks:
        if target is not None and lone > target:
            return f"lone-request P95 {name} {lone * 1000:,.0f} ms > {target * 1000:,.0f} ms"
    return None


def _choice(c: Candidate, role: str) -> PoolChoice:
    return PoolChoice(role, c.gpu, c.gpus_per_node, c.weights, c.kv_cache)


def _node_usd_min(view: Scenario, c: Candidate, spec: PlanSpec) -> float:
    """Cheapest hourly cost of one idle node of ``c`` over the plan's ways to pay."""
    sc = view.model_copy(update={"fleet": view.fleet.model_copy(update={"gpus_per_node": c.gpus_per_node})})
    return min(usd_per_hour_idle(p, sc, get_gpu(c.gpu), spec, c.gpus_per_node) for p in spec.pricing)


def role_capacity_rps(view: Scenario, c: Candidate, role: str, mix: MixSample) -> float:
    """Requests/s one node of ``c`` sustains in ``role``: the closed-form bound for a mixed node, the steady-state
    capacity of its role for a prefill or decode node."""
    if role == "mixed":
        assert c.bounds is not None
        return c.bounds.capacity_rps
    from sim.perf.capacity import node_capacity
    from sim.runner.simulation import build_node_model
    from sim.sizing.variants import derive

    changes: dict[str, Any] = {"fleet.gpu": c.gpu, "fleet.gpus_per_node": c.gpus_per_node,
                               "fleet.weights": c.weights, "fleet.kv_cache": c.kv_cache}
    if view.fleet.stack is not None and get_gpu(view.fleet.gpu).name != c.gpu:
        changes["fleet.stack"] = None
    nm = build_node_model(derive(view, changes))
    return node_capacity(nm, mix.mean_prompt, mix.mean_output, float(mix.cached.mean()), role=role).requests_per_s


def enumerate_layouts(scenario: Scenario, spec: PlanSpec, demand: ModelDemand, kinds: list[str],
                      max_pairs: int) -> tuple[list[Candidate], list[Layout], list[tuple[Layout, str]]]:
    """The model's candidates, its layouts (each with its lower bound or why it is excluded), and the
    disaggregated pairs left out of the short list (``max_pairs`` cheapest by bound are kept)."""
    sp = narrowed_spec(spec, scenario, demand)
    cands = enumerate_candidates(demand.view, sp, demand.mix)
    pools = scenario.fleet.pool_list()
    mine = [pools[q] for q in demand.pools]
    served_mixed = all(p.role == "mixed" for p in mine)
    layouts: list[Layout] = []
    for kind in kinds:
        if kind == "grow" and not (served_mixed and len(mine) > 1):
            continue  # one pool: "grow" is "single"; disaggregated: the disaggregated layout sizes both roles
        if kind == "disaggregated":
            continue
        fixed_cap, fixed_usd, floor = 0.0, 0.0, 1
        if kind == "grow":
            others = [q for q in demand.pools if q != demand.growth]
            fixed_cap, fixed_usd = _fixed_pools(scenario, spec, demand, others)
            floor = 0 if any(pools[q].nodes for q in others) else 1
        for c in cands:
            lay = Layout(demand.model, kind, [_choice(c, "mixed")], fixed_capacity_rps=fixed_cap,
                         fixed_usd_per_hour=fixed_usd, floors=[floor])
            lay.excluded = role_excluded(c, "mixed", demand.view)
            if lay.excluded is None:
                lay.capacity_rps = [role_capacity_rps(demand.view, c, "mixed", demand.mix)]
                lay.node_usd_per_hour_min = [_node_usd_min(demand.view, c, sp)]
                lay.lower_bound_usd_per_month = lay.lower_usd_per_month(lay.nodes_lower(demand.mean_rps))
            layouts.append(lay)
    left_out: list[tuple[Layout, str]] = []
    if "disaggregated" in kinds:
        pairs = _pairs(scenario, sp, demand, cands)
        ok = sorted((p for p in pairs if p.excluded is None), key=lambda lay: (lay.lower_bound_usd_per_month,
                                                                                 lay.label))
        for lay in ok[max_pairs:]:
            left_out.append((lay, f"not among the {max_pairs} disaggregated pairs with the lowest cost bound "
                                  f"(≥ ${lay.lower_bound_usd_per_month:,.0f}/month)"))
        layouts += [p for p in pairs if p.excluded is not None] + ok[:max_pairs]
    return cands, layouts, left_out


def _pairs(scenario: Scenario, spec: PlanSpec, demand: ModelDemand, cands: list[Candidate]) -> list[Layout]:
    """Prefill × decode candidates of one precision (the KV moves from one to the other)."""
    roles: dict[str, list[tuple[Candidate, str | None, float, float]]] = {"prefill": [], "decode": []}
    for c in cands:
        for role in roles:
            why = role_excluded(c, role, demand.view)
            cap = role_capacity_rps(demand.view, c, role, demand.mix) if why is None else 0.0
            usd = _node_usd_min(demand.view, c, spec) if why is None else 0.0
            roles[role].append((c, why, cap, usd))
    out = []
    for cp, why_p, cap_p, usd_p in roles["prefill"]:
        for cd, why_d, cap_d, usd_d in roles["decode"]:
            if (cp.weights, cp.kv_cache) != (cd.weights, cd.kv_cache):
                continue
            lay = Layout(demand.model, "disaggregated", [_choice(cp, "prefill"), _choice(cd, "decode")],
                         floors=[1, 1])
            if why_p is not None or why_d is not None:
                lay.excluded = "; ".join(f"{r}: {w}" for r, w in (("prefill", why_p), ("decode", why_d)) if w)
            else:
                lay.capacity_rps, lay.node_usd_per_hour_min = [cap_p, cap_d], [usd_p, usd_d]
                lay.lower_bound_usd_per_month = lay.lower_usd_per_month(lay.nodes_lower(demand.mean_rps))
            out.append(lay)
    return out


def _fixed_pools(scenario: Scenario, spec: PlanSpec, demand: ModelDemand, others: list[int]) -> tuple[float, float]:
    """Capacity bound (req/s) and configured $/hour of the pools a ``grow`` layout keeps."""
    from sim.plan.pools import run_usd_per_gpu_hour

    pools = scenario.fleet.pool_list()
    cap, usd = 0.0, 0.0
    for q in others:
        p = pools[q]
        one = spec.model_copy(update={"gpus": [p.gpu], "gpus_per_node": [p.gpus_per_node],
                                      "precisions": [p.weights if p.weights == p.kv_cache else
                                                     f"{p.weights}/{p.kv_cache}"],
                                      "max_num_seqs": [p.engine.max_num_seqs], "spill": ["none"]})
        view = demand.view.model_copy(update={"fleet": scenario.fleet.pool_fleet(q)})
        (c,) = enumerate_candidates(view, one, demand.mix)
        if c.bounds is not None:
            cap += p.nodes * c.bounds.capacity_rps
        pricing = scenario.pricing if p.pricing is None else p.pricing
        usd += p.nodes * p.gpus_per_node * run_usd_per_gpu_hour(pricing, get_gpu(p.gpu, scenario.source))
    return cap, usd


def check_kinds(kinds: list[str]) -> list[str]:
    bad = [k for k in kinds if k not in LAYOUT_KINDS]
    if bad:
        raise ConfigError("--layout", ",".join(bad), f"expected {', '.join(LAYOUT_KINDS)}")
    return list(dict.fromkeys(kinds))


def default_kinds(demand: ModelDemand, scenario: Scenario) -> list[str]:
    """``grow`` and ``single`` for a model served mixed; ``disaggregated`` and ``single`` for one served
    disaggregated."""
    pools = scenario.fleet.pool_list()
    if any(pools[q].role != "mixed" for q in demand.pools):
        return ["disaggregated", "single"]
    return ["grow", "single"]
