"""``capsim size --prefill-nodes``: the prefill:decode split of a disaggregated model (docs/disaggregation.md).

For each prefill node count asked for, the model's prefill pool is set to it and its decode pool is sized with the
pool search of :mod:`sim.sizing.pools` (the smallest decode pool meeting the SLO, other pools fixed); the cheapest
split that meets the SLO (self-hosted $/hour of the model's pools) is the answer. The scenario must serve that model
with exactly one prefill and one decode pool.

**Infeasible splits.** Before a decode pool is searched, the split is simulated once with an *idle* decode side: as
many decode nodes as keep the decode pool's load factor at :data:`IDLE_DECODE_LOAD` at the traffic's peak
10-minute rate (:func:`sim.perf.capacity.node_capacity` of a decode node for the model's mix; at most
``max_nodes``). More decode nodes than that cannot shorten TTFT (its decode part — the decode queue and the first
decode step — is then already near its unloaded value) nor, much, TPOT. If the model misses its SLO there, no decode
pool can meet it with this prefill pool: the search stops for that count, naming the constraint that missed (P95 TTFT:
the prefill side; P95 TPOT: the decode step itself; the attainment target), instead of doubling the decode pool up
to ``--max-nodes``. When the idle split meets the SLO, its decode count caps the search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sim.core.config import Scenario, model_key
from sim.core.errors import ConfigError
from sim.metrics.stats import replication_seeds
from sim.metrics.summary import Summary
from sim.sizing.pools import PoolSizing, Progress, derive_pools, model_summary, size_pools

#: the decode pool's load factor (at the peak rate) of the idle-decode feasibility check
IDLE_DECODE_LOAD = 0.1


def parse_counts(text: str) -> list[int]:
    """``"1-4"`` or ``"1,2,6"`` → node counts (each ≥ 1, ascending, unique); ConfigError on anything else."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if a < 1 or b < a or b - a > 256:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise ConfigError("--prefill-nodes", text, "expected counts >= 1 like 1-4 or 1,2,6") from None
    return sorted(out)


@dataclass
class SplitSizing:
    """One prefill node count and the smallest decode pool that meets the SLO with it; ``infeasible``: why no
    decode pool can (the idle-decode check missed), else None."""

    prefill_nodes: int
    sizing: PoolSizing
    infeasible: str | None = None

    @property
    def total_nodes(self) -> int | None:
        n = self.sizing.min_nodes
        return None if n is None else n + self.prefill_nodes

    def record(self) -> dict[str, Any]:
        return {"prefill_nodes": self.prefill_nodes, "decode_nodes": self.sizing.min_nodes,
                "total_nodes": self.total_nodes, "usd_per_hour": self.sizing.usd_per_hour,
                "usd_per_mtok_output": self.sizing.usd_per_mtok_output,
                "attainment_worst_seed": self.sizing.attainment, "infeasible": self.infeasible}


def disaggregated_pools(scenario: Scenario) -> tuple[int, int]:
    """Indices of the one prefill and the one decode pool of the scenario's disaggregated model."""
    pools = scenario.fleet.pool_list()
    pre = [i for i, p in enumerate(pools) if p.role == "prefill"]
    dec = [i for i, p in enumerate(pools) if p.role == "decode"]
    if len(pre) != 1 or len(dec) != 1 or model_key(pools[pre[0]].model) != model_key(pools[dec[0]].model):
        raise ConfigError(scenario.source, "fleet.pools", "--prefill-nodes needs one prefill and one decode pool "
                          "of one model")
    return pre[0], dec[0]


def idle_decode_nodes(scenario: Scenario, decode: int, max_nodes: int,
                      peak_rps: float | None = None) -> tuple[int, float]:
    """Decode nodes that run at :data:`IDLE_DECODE_LOAD` of their capacity at the peak 10-minute rate of the
    model's classes (``peak_rps`` when the caller knows it; at most ``max_nodes``), and the load factor that count
    gives."""
    from sim.fleet.pools import pool_layout
    from sim.perf.capacity import node_capacity
    from sim.runner.simulation import build_pool_models
    from sim.sizing.rules import traffic_rate_stats
    from sim.traffic.classes import ClassMix

    layout = pool_layout(scenario)
    nm = build_pool_models(scenario)[decode]
    group = layout.pool_group[decode]
    all_classes = scenario.traffic.classes
    mine = [c for c, g in zip(all_classes, layout.class_group) if g == group]
    share = sum(c.share for c in mine) / sum(c.share for c in all_classes)
    mean_in, mean_out = ClassMix(mine, scenario.base_dir, nm.engine.block_size).mean_tokens()
    cap = node_capacity(nm, mean_in, mean_out, 0.0, role="decode").requests_per_s
    peak = traffic_rate_stats(scenario)["peak_rps"] * share if peak_rps is None else peak_rps
    n = min(max_nodes, max(1, math.ceil(peak / (cap * IDLE_DECODE_LOAD))))
    return n, peak / (cap * n)


def infeasible_reason(runs: list[Summary], model: str, scenario: Scenario, prefill: str, k: int, decode_nodes: int,
                      decode_load: float) -> str | None:
    """Why ``runs`` (the idle-decode split, one per seed) miss the model's SLO, naming the constraint; None when
    every seed meets it."""
    ms = [model_summary(r, model) for r in runs]
    if all(m.met for m in ms):
        return None
    slo = scenario.slo
    ttft = max((m.ttft_s.p95 or 0.0) for m in ms)
    tpot = max((m.tpot_s.p95 or 0.0) for m in ms)
    att = min((m.attainment or 0.0) for m in ms)
    idle = f"even with an idle decode side ({decode_nodes} decode node(s), load factor {decode_load:.2f} at the peak)"
    if slo.ttft_p95_s is not None and ttft > slo.ttft_p95_s:
        return (f"P95 TTFT {ttft:,.2f} s > {slo.ttft_p95_s:g} s {idle}: {k} prefill node(s) of pool {prefill} "
                "cannot meet the TTFT target")
    if slo.tpot_p95_s is not None and tpot > slo.tpot_p95_s:
        return (f"P95 TPOT {1000 * tpot:,.1f} ms > {1000 * slo.tpot_p95_s:g} ms {idle}: the decode step itself "
                "misses the TPOT target")
    e2e = max((r.latency.e2e_s.p95 or 0.0) for r in runs)
    if slo.e2e_p95_s is not None and e2e > slo.e2e_p95_s:
        return f"P95 E2E {e2e:,.2f} s > {slo.e2e_p95_s:g} s {idle}"
    return (f"SLO attainment {100 * att:.1f} % < {100 * slo.attainment_target:g} % target {idle}: too many "
            "requests miss a target with this prefill pool")


def size_split(scenario: Scenario, prefill_counts: Sequence[int], n_seeds: int = 3, max_nodes: int = 64,
               workers: int | None = None, progress: Progress | None = None) -> list[SplitSizing]:
    """For each prefill node count, the smallest decode pool that meets the SLO, or why none can (module
    docstring)."""
    from sim.runner.executor import map_summaries

    p, d = disaggregated_pools(scenario)
    pools = scenario.fleet.pool_list()
    seeds = replication_seeds(scenario.seed, n_seeds)
    model = _model_name(scenario, d)
    idle_n, idle_load = idle_decode_nodes(scenario, d, max_nodes)  # the decode side does not depend on the split
    out = []
    for k in prefill_counts:
        sc = derive_pools(scenario, {f"fleet.pools.{p}.nodes": k})
        idle = derive_pools(sc, {f"fleet.pools.{d}.nodes": idle_n})
        runs = map_summaries([idle.model_copy(update={"seed": s}) for s in seeds], workers)
        why = infeasible_reason(runs, model, sc, pools[p].name, k, idle_n, idle_load)
        if why is not None:
            if progress is not None:
                progress(f"prefill pool {pools[p].name} × {k}: infeasible — {why}")
            others = {pools[p].name: k}
            ms = [model_summary(r, model) for r in runs]
            sizing = PoolSizing(model, pools[d].name, pools[d].gpu, None, others,
                                attainment=min(m.attainment or 0.0 for m in ms), tried={idle_n: False})
            out.append(SplitSizing(k, sizing, why))
            continue
        if progress is not None:
            progress(f"prefill pool {pools[p].name} × {k}: {idle_n} decode node(s) meet the SLO; sizing decode pool "
                     f"{pools[d].name} up to that")
        rows = size_pools(sc, [pools[d].name], (), n_seeds, idle_n, workers, progress)
        out.append(SplitSizing(k, rows[0]))
    return out


def _model_name(scenario: Scenario, pool: int) -> str:
    """The catalogue's spelling of ``pool``'s model (its key in ``summary.models``)."""
    from sim.perf.catalog import get_model

    return get_model(scenario.fleet.pool_list()[pool].model, scenario.source).name


def best_split(rows: list[SplitSizing]) -> SplitSizing | None:
    """The cheapest split that meets the SLO (fewest nodes on a tie), or None."""
    ok = [r for r in rows if r.sizing.usd_per_hour is not None]
    return min(ok, key=lambda r: (r.sizing.usd_per_hour or 0.0, r.total_nodes or 0)) if ok else None


def format_split(rows: list[SplitSizing], max_nodes: int) -> str:
    """The console table of :func:`size_split`."""
    lines = ["capsim size · prefill:decode split: the smallest decode pool for each prefill pool size",
             f"  {'prefill':>7} {'decode':>7} {'total':>6} {'$/hour':>9} {'$/M out':>8} {'attainment':>10}"]
    for r in rows:
        s = r.sizing
        decode = "none" if r.infeasible else f"> {max_nodes}" if s.min_nodes is None else s.min_nodes
        lines.append(
            f"  {r.prefill_nodes:>7} {decode:>7} "
            f"{'–' if r.total_nodes is None else r.total_nodes:>6} "
            f"{'–' if s.usd_per_hour is None else f'{s.usd_per_hour:,.2f}':>9} "
            f"{'–' if s.usd_per_mtok_output is None else f'{s.usd_per_mtok_output:,.2f}':>8} "
            f"{'–' if s.attainment is None else f'{100 * s.attainment:.1f}%':>10}")
    for r in rows:
        if r.infeasible:
            lines.append(f"  infeasible {r.prefill_nodes} prefill: {r.infeasible}")
    best = best_split(rows)
    if best is None:
        lines.append("  best       no split meets the SLO")
    else:
        lines.append(f"  best       {best.prefill_nodes} prefill + {best.sizing.min_nodes} decode nodes "
                     f"(${best.sizing.usd_per_hour:,.2f}/hour)")
    return "\n".join(lines)
