"""``capsim size`` for a fleet with ``fleet.pools`` (docs/pools.md): how many nodes of each model's growth pool.

Scope (what is searched, and what is held fixed):

* Per model, one pool is sized — its *growth pool*: the last pool serving that model in ``fleet.pools`` (the
  earlier ones are capacity you already have: "can last year's A100s carry part of the load, and how many H100s
  do we add?"), or the pool named with ``--pool``. Every other pool keeps its node count; spot, on-demand and
  autoscaler settings stay as given.
* The growth pool's reserved node count is the smallest that lets its model meet the SLO in every seed: the
  scenario's P95 targets over that model's served requests and its attainment target over all its interactive
  arrivals (``models.<model>.met`` in ``summary.json``). Search (:func:`sim.core.bisection.smallest_passing`): from
  the pool's current count, doubling until the model meets the SLO (or ``max_nodes``), then bisection; the least
  count is 0 when other pools serve the model.
* With ``--gpu`` (several), the growth pools are sized once per GPU type and the cheapest type per model
  (self-hosted $/hour of that model's pools at the minimum) is reported.
* Models are sized together, one simulation of the whole fleet per step: pools of different models share no
  nodes, so a model's verdict depends only on its own pools — except through a shared hosted API's rate limits,
  which this search does not separate.

It answers with simulations of the whole scenario (its shape, spill, clients), not with a per-node goodput, so
the guide's rules are not compared here (``capsim size`` on a single-pool scenario does that).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.core.config import Scenario, set_dotted, validate_scenario
from sim.core.errors import ConfigError
from sim.metrics.stats import replication_seeds
from sim.metrics.summary import ModelSummary, Summary
from sim.runner.executor import map_summaries


def derive_pools(scenario: Scenario, changes: dict[str, Any]) -> Scenario:
    """A validated copy of a pooled ``scenario`` with dotted ``changes`` (``{"fleet.pools.1.nodes": 3}``); the
    fleet's node total follows the pools'."""
    raw = scenario.model_dump()
    raw["fleet"].pop("nodes", None)
    for key, value in changes.items():
        set_dotted(raw, key, value, scenario.source)
    return validate_scenario(raw, scenario.source, scenario._base_dir)


def growth_pools(scenario: Scenario, names: Sequence[str] = ()) -> dict[str, int]:
    """Model (catalogue key) → index of its growth pool (module docstring); ``names`` picks pools by name."""
    from sim.fleet.pools import pool_layout

    layout = pool_layout(scenario)
    pools = [p.name for p in layout.pools]
    out: dict[int, int] = {}
    for g in range(len(layout.group_models)):
        out[g] = layout.group_pools(g)[-1]
    for name in names:
        if name not in pools:
            raise ConfigError("--pool", name, f"no such pool (pools: {', '.join(pools)})")
        out[layout.pool_group[pools.index(name)]] = pools.index(name)
    if len(set(names)) != len(names) or len({layout.pool_group[pools.index(n)] for n in names}) != len(names):
        raise ConfigError("--pool", ",".join(names), "name at most one pool per model")
    return {layout.group_models[g]: p for g, p in out.items()}


@dataclass
class PoolSizing:
    """The minimum node count of one growth pool (None: not met within ``max_nodes``) and its figures there."""

    model: str
    pool: str
    gpu: str
    min_nodes: int | None
    fixed_nodes: dict[str, int]  # the model's other pools
    usd_per_hour: float | None = None  # self-hosted, every pool of the model, at the minimum
    usd_per_mtok_output: float | None = None
    attainment: float | None = None  # worst seed
    tried: dict[int, bool] = field(default_factory=dict)  # node count -> met in every seed

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "pool": self.pool, "gpu": self.gpu, "min_nodes": self.min_nodes,
                "other_pools": self.fixed_nodes, "usd_per_hour": self.usd_per_hour,
                "usd_per_mtok_output": self.usd_per_mtok_output, "attainment_worst_seed": self.attainment,
                "tried": {str(k): v for k, v in sorted(self.tried.items())}}


Progress = Callable[[str], None]


def size_pools(scenario: Scenario, pool_names: Sequence[str] = (), gpus: Sequence[str] = (), n_seeds: int = 3,
               max_nodes: int = 64, workers: int | None = None, progress: Progress | None = None) -> list[PoolSizing]:
    """Size every model's growth pool (module docstring); one :class:`PoolSizing` per model and GPU type."""
    from sim.perf.catalog import get_gpu

    if not scenario.fleet.pooled:
        raise ConfigError(scenario.source, "fleet.pools", "pool sizing needs fleet.pools")
    growth = growth_pools(scenario, pool_names)
    pools = scenario.fleet.pool_list()
    seeds = replication_seeds(scenario.seed, n_seeds)
    out: list[PoolSizing] = []
    choices: list[str | None] = list(dict.fromkeys(gpus)) or [None]
    for gpu in choices:
        base = scenario
        if gpu is not None:
            spec = get_gpu(gpu, "--gpu", "--gpu")
            base = derive_pools(scenario, {f"fleet.pools.{i}.gpu": spec.name for i in growth.values()})
        out += _search(base, growth, seeds, max_nodes, workers, progress, pools)
    return out


def _search(scenario: Scenario, growth: dict[str, int], seeds: list[int], max_nodes: int, workers: int | None,
            progress: Progress | None, pools: list[Any]) -> list[PoolSizing]:
    """Every model's :func:`sim.core.bisection.smallest_passing` search, driven in lockstep: each step simulates
    the whole fleet once per seed with every model's next growth-pool count."""
    from sim.core.bisection import smallest_passing
    from sim.fleet.pools import pool_layout

    layout = pool_layout(scenario)
    key_of = {m: layout.group_models.index(m) for m in growth}
    results: dict[str, PoolSizing] = {}
    searches: dict[str, Generator[int, bool, int | None]] = {}
    summaries: dict[tuple[str, int], list[Summary]] = {}
    probe: dict[str, int] = {}
    for model, p in growth.items():
        others = {pools[q].name: pools[q].nodes for q in layout.group_pools(key_of[model]) if q != p}
        # with other pools serving the model, none may be needed (a prefill or decode pool: others of its role)
        floor = 0 if any(pools[q].nodes for q in layout.group_pools(key_of[model])
                         if q != p and pools[q].role == pools[p].role) else 1
        results[model] = PoolSizing(_model_name(layout, key_of[model], scenario), pools[p].name,
                                    scenario.fleet.pool_list()[p].gpu, None, others)
        searches[model] = smallest_passing(scenario.fleet.pool_list()[p].nodes, floor, max(max_nodes, floor))
        probe[model] = next(searches[model])
    while probe:
        changes = {f"fleet.pools.{growth[m]}.nodes": n for m, n in probe.items()}
        sc = derive_pools(scenario, changes)
        runs = map_summaries([sc.model_copy(update={"seed": s}) for s in seeds], workers)
        nxt: dict[str, int] = {}
        for model, n in probe.items():
            res = results[model]
            met = all(model_summary(r, res.model).met for r in runs)
            res.tried[n] = met
            summaries[(model, n)] = runs
            if progress is not None:
                progress(f"{model}: {res.pool} × {n} node(s) → SLO {'met' if met else 'missed'}")
            try:
                nxt[model] = searches[model].send(met)
            except StopIteration as done:
                res.min_nodes = done.value
        probe = nxt
    hours = scenario.duration_s / 3600.0
    for model, res in results.items():
        if res.min_nodes is None:
            continue
        ms = [model_summary(r, res.model) for r in summaries[(model, res.min_nodes)]]
        res.attainment = min(m.attainment or 0.0 for m in ms)
        res.usd_per_hour = sum(m.self_host_usd for m in ms) / len(ms) / hours
        vals = [m.usd_per_mtok_output for m in ms if m.usd_per_mtok_output]
        res.usd_per_mtok_output = sum(vals) / len(vals) if vals else None
    return list(results.values())


def model_summary(summary: Summary, name: str) -> ModelSummary:
    """The ``models.<name>`` section of a pooled run's summary."""
    if summary.models is None or name not in summary.models:
        raise KeyError(f"the summary has no models.{name} section")
    return summary.models[name]


def _model_name(layout: Any, group: int, scenario: Scenario) -> str:
    """The key of model group ``group`` in ``summary.models`` (the catalogue's spelling of its name)."""
    from sim.perf.catalog import get_model

    return get_model(layout.group_models[group], scenario.source).name


def format_pool_sizing(rows: list[PoolSizing], max_nodes: int) -> str:
    """The console table of :func:`size_pools`."""
    lines = ["capsim size · pools: the smallest growth pool per model that meets the SLO (others fixed)",
             f"  {'model':<18} {'pool':<10} {'GPU':<16} {'nodes':>5}  {'other pools':<22} {'$/hour':>8} "
             f"{'$/M out':>8} {'attainment':>10}"]
    for r in rows:
        others = ", ".join(f"{k} {v}" for k, v in r.fixed_nodes.items()) or "–"
        nodes = f"> {max_nodes}" if r.min_nodes is None else str(r.min_nodes)
        lines.append(
            f"  {r.model:<18} {r.pool:<10} {r.gpu:<16} {nodes:>5}  {others:<22} "
            f"{'–' if r.usd_per_hour is None else f'{r.usd_per_hour:,.2f}':>8} "
            f"{'–' if r.usd_per_mtok_output is None else f'{r.usd_per_mtok_output:,.2f}':>8} "
            f"{'–' if r.attainment is None else f'{100 * r.attainment:.1f}%':>10}")
    by_model: dict[str, list[PoolSizing]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    for model, rs in by_model.items():
        ok = [r for r in rs if r.usd_per_hour is not None]
        if len(rs) > 1 and ok:
            best = min(ok, key=lambda r: r.usd_per_hour or 0.0)
            lines.append(f"  cheapest   {model}: {best.min_nodes} × {best.gpu} in pool {best.pool} "
                         f"(${best.usd_per_hour:,.2f}/hour for the model's pools)")
    return "\n".join(lines)
