"""``capsim size --prefill-nodes``: the prefill:decode split of a disaggregated model (docs/disaggregation.md).

For each prefill node count asked for, the model's prefill pool is set to it and its decode pool is sized with the
pool search of :mod:`sim.sizing.pools` (the smallest decode pool meeting the SLO, other pools fixed); the cheapest
split that meets the SLO (self-hosted $/hour of the model's pools) is the answer. The scenario must serve that model
with exactly one prefill and one decode pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sim.core.config import Scenario, model_key
from sim.core.errors import ConfigError
from sim.sizing.pools import PoolSizing, Progress, derive_pools, size_pools


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
    """One prefill node count and the smallest decode pool that meets the SLO with it."""

    prefill_nodes: int
    sizing: PoolSizing

    @property
    def total_nodes(self) -> int | None:
        n = self.sizing.min_nodes
        return None if n is None else n + self.prefill_nodes

    def record(self) -> dict[str, Any]:
        return {"prefill_nodes": self.prefill_nodes, "decode_nodes": self.sizing.min_nodes,
                "total_nodes": self.total_nodes, "usd_per_hour": self.sizing.usd_per_hour,
                "usd_per_mtok_output": self.sizing.usd_per_mtok_output,
                "attainment_worst_seed": self.sizing.attainment}


def disaggregated_pools(scenario: Scenario) -> tuple[int, int]:
    """Indices of the one prefill and the one decode pool of the scenario's disaggregated model."""
    pools = scenario.fleet.pool_list()
    pre = [i for i, p in enumerate(pools) if p.role == "prefill"]
    dec = [i for i, p in enumerate(pools) if p.role == "decode"]
    if len(pre) != 1 or len(dec) != 1 or model_key(pools[pre[0]].model) != model_key(pools[dec[0]].model):
        raise ConfigError(scenario.source, "fleet.pools", "--prefill-nodes needs one prefill and one decode pool "
                          "of one model")
    return pre[0], dec[0]


def size_split(scenario: Scenario, prefill_counts: Sequence[int], n_seeds: int = 3, max_nodes: int = 64,
               workers: int | None = None, progress: Progress | None = None) -> list[SplitSizing]:
    """For each prefill node count, the smallest decode pool that meets the SLO (module docstring)."""
    p, d = disaggregated_pools(scenario)
    pools = scenario.fleet.pool_list()
    out = []
    for k in prefill_counts:
        sc = derive_pools(scenario, {f"fleet.pools.{p}.nodes": k})
        if progress is not None:
            progress(f"prefill pool {pools[p].name} × {k}: sizing decode pool {pools[d].name}")
        rows = size_pools(sc, [pools[d].name], (), n_seeds, max_nodes, workers, progress)
        out.append(SplitSizing(k, rows[0]))
    return out


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
        lines.append(
            f"  {r.prefill_nodes:>7} {f'> {max_nodes}' if s.min_nodes is None else s.min_nodes:>7} "
            f"{'–' if r.total_nodes is None else r.total_nodes:>6} "
            f"{'–' if s.usd_per_hour is None else f'{s.usd_per_hour:,.2f}':>9} "
            f"{'–' if s.usd_per_mtok_output is None else f'{s.usd_per_mtok_output:,.2f}':>8} "
            f"{'–' if s.attainment is None else f'{100 * s.attainment:.1f}%':>10}")
    best = best_split(rows)
    if best is None:
        lines.append("  best       no split meets the SLO")
    else:
        lines.append(f"  best       {best.prefill_nodes} prefill + {best.sizing.min_nodes} decode nodes "
                     f"(${best.sizing.usd_per_hour:,.2f}/hour)")
    return "\n".join(lines)
