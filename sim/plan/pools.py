"""``capsim plan`` for a fleet with ``fleet.pools`` (docs/pools.md): which GPU type, and how to pay for it, for
each model's growth pool.

Scope: the growth pools of :mod:`sim.sizing.pools` (each model's last pool, or ``--pool``) are sized on every GPU
type of the plan (``--gpu`` / ``plan.gpus``; default: the GPU types of the scenario's pools), keeping each pool's
GPUs per node, precision and engine, and holding the other pools fixed. Each minimum is then priced under every
way to pay of the plan (``plan.pricing``: on-demand, 1- and 3-year reserved at the plan's discounts, owned TCO
without its energy, :func:`sim.plan.pricing.fixed_usd_per_gpu_hour`) for the growth pool, plus the model's other
pools at what they cost in the run (their own pricing). Rows are ranked per model by $/month. The single-fleet
plan's candidate space (GPUs per node, precisions, spot shares, forecast autoscaling, the cost-bound pruning and
the point cache) is not searched here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sim.core.config import Scenario
from sim.perf.catalog import get_gpu
from sim.plan.pricing import HOURS_PER_MONTH, LABELS, fixed_usd_per_gpu_hour
from sim.plan.spec import PlanSpec
from sim.sizing.pools import PoolSizing, size_pools


def plan_pools(scenario: Scenario, gpus: Sequence[str] = (), pricing: Sequence[str] = (),
               pool_names: Sequence[str] = (), n_seeds: int | None = None, max_nodes: int | None = None,
               workers: int | None = None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per model × GPU type × way to pay, cheapest first within each model (module docstring)."""
    spec = scenario.plan or PlanSpec()
    names = list(gpus) or list(spec.gpus or []) or list(dict.fromkeys(p.gpu for p in scenario.fleet.pool_list()))
    options = list(pricing) or list(spec.pricing)
    sized = size_pools(scenario, pool_names, names, n_seeds or spec.seeds, max_nodes or spec.max_nodes, workers,
                       progress)
    pools = {p.name: p for p in scenario.fleet.pool_list()}
    rows = []
    for r in sized:
        rows += _priced(r, pools[r.pool], scenario, spec, options)
    rows.sort(key=lambda x: (x["model"], x["usd_per_month"] is None, x["usd_per_month"] or 0.0))
    for i, row in enumerate(rows):
        row["rank"] = 1 + sum(1 for other in rows[:i] if other["model"] == row["model"])
    return rows


def _priced(r: PoolSizing, pool: Any, scenario: Scenario, spec: PlanSpec, options: list[str]) -> list[dict[str, Any]]:
    gpu = get_gpu(r.gpu, scenario.source)
    gpus = (r.min_nodes or 0) * pool.gpus_per_node
    base = {"model": r.model, "pool": r.pool, "gpu": gpu.name, "gpus_per_node": pool.gpus_per_node,
            "nodes": r.min_nodes, "other_pools": r.fixed_nodes, "attainment_worst_seed": r.attainment}
    if r.min_nodes is None or r.usd_per_hour is None:
        return [{**base, "pricing": None, "usd_per_month": None, "why": "SLO not met within max_nodes"}]
    own = scenario.pricing if pool.pricing is None else pool.pricing
    growth_now = gpus * _run_usd_per_gpu_hour(own, gpu)
    others_usd_h = max(r.usd_per_hour - growth_now, 0.0)  # the model's other pools, at their own pricing
    out = []
    for option in options:
        rate = fixed_usd_per_gpu_hour(option, scenario.model_copy(update={"pricing": own}), gpu, spec)
        usd_h = gpus * rate + others_usd_h
        out.append({**base, "pricing": LABELS[option], "usd_per_month": usd_h * HOURS_PER_MONTH,
                    "usd_per_hour": usd_h, "why": None})
    return out


def _run_usd_per_gpu_hour(pricing: Any, gpu: Any) -> float:
    """The $/GPU-hour the run charged a reserved GPU of this pool (rented price, or owned TCO at full draw)."""
    from sim.metrics.cost import owned_usd_per_gpu_hour

    if pricing.mode == "owned":
        return owned_usd_per_gpu_hour(pricing.owned, gpu)
    return pricing.usd_per_gpu_hour if pricing.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour


def format_pool_plan(rows: list[dict[str, Any]]) -> str:
    """The console table of :func:`plan_pools`."""
    lines = ["capsim plan · pools: GPU type and way to pay for each model's growth pool (other pools fixed)",
             f"  {'#':>2} {'model':<16} {'pool':<8} {'GPU':<15} {'nodes':>5}  {'pricing':<26} {'$/month':>10}"]
    for row in rows:
        nodes = "–" if row["nodes"] is None else str(row["nodes"])
        usd = "–" if row["usd_per_month"] is None else f"{row['usd_per_month']:,.0f}"
        lines.append(f"  {row['rank']:>2} {row['model']:<16} {row['pool']:<8} {row['gpu']:<15} {nodes:>5}  "
                     f"{row['pricing'] or row['why']:<26} {usd:>10}")
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["usd_per_month"] is not None and row["model"] not in best:
            best[row["model"]] = row
    for model, row in best.items():
        lines.append(f"  buy        {model}: {row['nodes']} node(s) × {row['gpus_per_node']}× {row['gpu']} in pool "
                     f"{row['pool']}, {row['pricing']}: ${row['usd_per_month']:,.0f}/month for the model's pools")
    return "\n".join(lines)
