"""Per-pool and per-model results of a run with ``fleet.pools`` (docs/pools.md).

Each pool is measured as a fleet of its own: :func:`pool_view` restricts a :class:`SimResult` to the pool's slots
(its node model, its scenario with its pricing, its GPU-hours), so the single-fleet code computes its time
series, utilisation and load factor (:mod:`sim.metrics.tables`), energy (:mod:`sim.metrics.energy`) and cost
(:mod:`sim.metrics.cost`). The fleet's figures then combine the pools':

* cost: the sum of the pools' self-hosted cost (each pool's GPU-hours × its own price, or its owned TCO with its
  own simulated energy) plus the hosted-API spend; $/M tokens = that total ÷ the tokens served (fleet or API);
* energy: the sum of the pools' kWh, CO2 and energy cost;
* utilisation: ``load_factor`` = requests offered to the pools ÷ the sum of what each pool sustains for the mix it
  was sent (:mod:`sim.perf.capacity`; a model's prefill and decode pools count once, as the smaller of the two);
  ``bottleneck`` and ``load_factor_peak`` are the busiest pool's; KV, batch,
  MFU and MBU figures are over every node up, each against its own capacity and peak.

A pool's own $/M tokens divides its self-hosted cost by the tokens completed on its nodes. A model's
(``models.*``) divides the cost of the pools serving it plus the API spend on its classes by the tokens its classes
were served; its SLO attainment counts every interactive arrival of its classes after warm-up, as the fleet's does,
and ``met`` asks the scenario's P95 targets of its served requests and the attainment target (a model can miss while
the fleet as a whole meets its SLO: the fleet's verdict weighs the models by their traffic).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from sim.metrics.tables import fleet_frame
from sim.runner.simulation import SimResult, pool_scenario


class PoolSeries:
    """The time series of one pool: the run's per-node series restricted to the pool's slots, and its per-pool
    counts (requests sent to it, completed on it, nodes billed) as the fleet series."""

    def __init__(self, parent: Any, pool: int, slots: list[int]) -> None:
        self.parent = parent
        self.pool = pool
        self.slots = slots
        self.interval_s = parent.interval_s
        self.nodes = len(slots)

    def __len__(self) -> int:
        return len(self.parent)

    def fleet(self, name: str) -> np.ndarray:
        if name == "time_s":
            return self.parent.fleet("time_s")
        if name == "nodes_up":
            return self.per_node("up").sum(axis=1)
        if name == "deferred":
            return np.zeros(len(self), dtype=np.int64)
        pp = self.parent.per_pool(name)
        return pp[:, self.pool] if pp.shape[1] else np.zeros(len(self), dtype=np.int64)

    def per_node(self, name: str) -> np.ndarray:
        return self.parent.per_node(name)[:, self.slots]


def pool_view(result: SimResult, pool: int) -> SimResult:
    """``result`` seen as a run of pool ``pool`` alone (see the module docstring)."""
    assert result.layout is not None  # every simulated result carries its layout
    slots = result.layout.pool_slots(pool)
    return dataclasses.replace(
        result,
        scenario=pool_scenario(result.scenario, pool),
        node_model=result.pool_models[pool],
        series=PoolSeries(result.series, pool, slots),  # type: ignore[arg-type]
        node_busy_s=[result.node_busy_s[s] for s in slots],
        node_steps=[result.node_steps[s] for s in slots],
        gpu_hours=result.pool_gpu_hours[pool],
        pool_models=[result.pool_models[pool]],
        layout=None,
        pool_gpu_hours=[result.pool_gpu_hours[pool]],
    )


def pooled_timeseries(result: SimResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fleet, per-node) time series of a pooled run: as :func:`sim.metrics.tables.timeseries_tables`, with KV,
    batch fill, MFU and MBU of each node against its own pool's capacity and peaks, and a ``pool`` column."""
    from sim.metrics.tables import timeseries_tables

    assert result.layout is not None
    n_pools = len(result.pool_models)
    parts = [timeseries_tables(pool_view(result, p)) for p in range(n_pools)]
    s = result.series
    t = s.fleet("time_s")
    if len(t) == 0:
        empty = pd.DataFrame(columns=["time_s"])
        return empty, empty
    slot_pool = np.array(result.layout.slot_pool)
    names = [p.name for p in result.layout.pools]
    # per-node rows in global slot order
    node_rows = []
    for p, (_, nts) in enumerate(parts):
        slots = np.array(result.layout.pool_slots(p))
        if len(nts) == 0:
            continue
        nts = nts.copy()
        nts["node"] = slots[nts["node"].to_numpy()]
        nts.insert(2, "pool", names[p])
        node_rows.append(nts)
    per_node = pd.concat(node_rows).sort_values(["time_s", "node"], kind="stable").reset_index(drop=True)
    per_node["pool"] = pd.Categorical(per_node["pool"], categories=names)
    caps = np.array([result.pool_models[p].memory.kv_capacity_blocks for p in slot_pool], dtype=float)
    seqs = np.array([result.pool_models[p].engine.max_num_seqs for p in slot_pool], dtype=float)
    up = s.per_node("up").astype(bool)
    waiting = s.per_node("waiting").astype(np.int64)
    running = s.per_node("running").astype(np.int64)
    kv = s.per_node("kv_used_blocks").astype(np.int64)
    n_up = up.sum(axis=1)
    up_safe = np.maximum(n_up, 1)
    cap_up = np.maximum((up * caps).sum(axis=1), 1.0)
    seq_up = np.maximum((up * seqs).sum(axis=1), 1.0)

    def pool_sum(col: str) -> np.ndarray:
        return np.sum([f[col].to_numpy(dtype=float) * f["nodes_up"].to_numpy(dtype=float) for f, _ in parts],
                      axis=0)

    fleet = fleet_frame(s, waiting, running, kv, kv_capacity_blocks=cap_up, busy_sum=pool_sum("busy_fraction"),
                        mfu_sum=pool_sum("mfu"), mbu_sum=pool_sum("mbu"), seq_capacity=seq_up, up_safe=up_safe)
    return fleet, per_node


def _pool_rows(df: pd.DataFrame, result: SimResult, pool: int) -> np.ndarray:
    """Rows of requests whose last attempt ran on a node of ``pool`` (not served by the API)."""
    assert result.layout is not None
    slots = np.array(result.layout.pool_slots(pool), dtype=np.int64)
    return (np.isin(df["node"].to_numpy(), slots) & (df["served_by"] != "api").to_numpy())


def _model_rows(df: pd.DataFrame, result: SimResult, pool: int) -> pd.DataFrame:
    """Rows of the requests whose class asks for ``pool``'s model (not served by the API)."""
    assert result.layout is not None
    layout = result.layout
    names = [n for k, n in enumerate(result.class_names) if layout.class_group[k] == layout.pool_group[pool]]
    return df[df["class"].isin(names).to_numpy() & (df["served_by"] != "api").to_numpy()]


def pool_request_stats(result: SimResult, df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per pool, what :func:`pool_sections` reads from the per-request table: completions on its nodes (count,
    input and output tokens, latency statistics) and the mix it was offered (``sim.metrics.tables._mix_means``;
    a prefill pool finishes no request, its decode pool does: its mix is its model's arrivals). The streamed
    summary computes the same from its reductions (:class:`sim.metrics.streaming.StreamingCollector`)."""
    from sim.metrics.tables import _mix_means, _stats

    assert result.layout is not None
    out = []
    for p, pool in enumerate(result.layout.pools):
        rows = df[_pool_rows(df, result, p)]
        done = rows[rows["status"] == "completed"]
        mix_rows = _model_rows(df, result, p) if pool.role == "prefill" else rows
        out.append({
            "completed": len(done),
            "input_tokens": float(done["input_tokens"].sum()),
            "output_tokens": float(done["output_tokens"].sum()),
            "latency": {col: _stats(done[col].to_numpy()) for col in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")},
            "mix": _mix_means(mix_rows),
        })
    return out


def pool_sections(result: SimResult, df: pd.DataFrame,
                  stats: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``pools.<name>``: what each pool is, what it was sent and served, its latency, utilisation, energy and
    cost (module docstring); ``stats``: :func:`pool_request_stats` (default: from ``df``)."""
    from sim.metrics.cost import cost_breakdown
    from sim.metrics.energy import energy_section
    from sim.metrics.tables import timeseries_tables, utilisation_section

    assert result.layout is not None
    if stats is None:
        stats = pool_request_stats(result, df)
    out: dict[str, dict[str, Any]] = {}
    duration = result.scenario.duration_s
    for p, pool in enumerate(result.layout.pools):
        view = pool_view(result, p)
        sc, nm = view.scenario, view.node_model
        fts, _ = timeseries_tables(view)
        ts = fts[fts["time_s"] <= duration + 1e-9] if len(fts) else fts
        st = stats[p]
        sent = float(view.series.fleet("arrivals").sum()) if len(view.series) else 0.0
        util = utilisation_section(ts, view, sent / duration, st["mix"], 1.0, pool.role)
        energy = energy_section(sc, nm.gpu, fts)
        cost = cost_breakdown(sc, nm.gpu, st["input_tokens"], st["output_tokens"],
                              gpu_hours=view.gpu_hours, energy_usd=energy["usd"])
        out[pool.name] = {
            "role": pool.role,
            "gpu": nm.gpu.name,
            "gpus_per_node": pool.gpus_per_node,
            "model": nm.model.name,
            "weights": pool.weights,
            "kv_cache": pool.kv_cache,
            "stack": pool.stack,
            "nodes": pool.nodes,
            "spot_nodes": pool.spot.nodes,
            "on_demand_max_nodes": pool.on_demand.max_nodes,
            "kv_capacity_tokens_per_node": nm.memory.kv_capacity_tokens,
            "weight_gb_per_node": nm.memory.weight_bytes / 1e9,
            "engine_steps": int(sum(view.node_steps)),
            "requests": {"sent": int(sent), "completed": st["completed"]},
            "latency": st["latency"],
            "throughput": {"requests_per_s": st["completed"] / duration,
                           "output_tokens_per_s": st["output_tokens"] / duration},
            "utilisation": util,
            "energy": energy,
            "cost": cost,
        }
    return out


def combine_cost(pools: dict[str, dict[str, Any]], api_usd: float, input_tokens: float,
                 output_tokens: float) -> dict[str, Any]:
    """The fleet's ``cost`` section from its pools' (module docstring); same keys as a single fleet's."""
    costs = [p["cost"] for p in pools.values()]
    self_host = sum(c["self_host_usd"] for c in costs)
    hours = sum(c["gpu_hours"] for c in costs)
    by_kind: dict[str, float] = {}
    hours_by_kind: dict[str, float] = {}
    for c in costs:
        for k, v in c["self_host_usd_by_kind"].items():
            by_kind[k] = by_kind.get(k, 0.0) + v
        for k, v in c["gpu_hours_by_kind"].items():
            hours_by_kind[k] = hours_by_kind.get(k, 0.0) + v
    modes = sorted({c["pricing_mode"] for c in costs})
    owned = [c["owned_energy_usd"] for c in costs if c["owned_energy_usd"] is not None]
    total = self_host + api_usd
    out_m, all_m = output_tokens / 1e6, (input_tokens + output_tokens) / 1e6
    return {
        "total_usd": total,
        "self_host_usd": self_host,
        "api_usd": api_usd,
        "gpu_hours": hours,
        "usd_per_gpu_hour": self_host / hours if hours > 0 else costs[0]["usd_per_gpu_hour"],
        "self_host_usd_by_kind": by_kind,
        "gpu_hours_by_kind": hours_by_kind,
        "pricing_mode": modes[0] if len(modes) == 1 else "+".join(modes),
        "owned_energy_usd": sum(owned) if owned else None,
        "usd_per_mtok_output": total / out_m if out_m > 0 else None,
        "usd_per_mtok_total": total / all_m if all_m > 0 else None,
        "self_host_usd_by_pool": {name: p["cost"]["self_host_usd"] for name, p in pools.items()},
    }


def combine_energy(pools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fleet's ``energy`` section: sums of the pools' kWh, power, CO2 and cost; the per-GPU idle and TDP draw are
    GPU-hour-weighted means over the pools."""
    es = [p["energy"] for p in pools.values()]
    if len(es) == 1:
        return dict(es[0])
    kwh = sum(e["kwh"] for e in es)
    co2 = sum(e["co2_kg"] for e in es)
    first = es[0]
    hours = [p["cost"]["gpu_hours"] for p in pools.values()]
    weights = hours if sum(hours) > 0 else [1.0] * len(es)

    def per_gpu(key: str) -> float:  # a GPU-hour-weighted mean over the pools
        return sum(w * e[key] for w, e in zip(weights, es)) / sum(weights)

    return {
        "kwh": kwh,
        "avg_power_kw": sum(e["avg_power_kw"] for e in es),
        "co2_kg": co2,
        "usd": sum(e["usd"] for e in es),
        "usd_per_kwh": first["usd_per_kwh"],
        "pue": first["pue"],
        "gpu_idle_w": per_gpu("gpu_idle_w"),
        "gpu_tdp_w": per_gpu("gpu_tdp_w"),
        "kg_co2_per_kwh_mean": co2 / kwh if kwh > 0 else None,
        "paid_in": _paid_in([e["paid_in"] for e in es]),
    }


def _paid_in(each: list[str]) -> str:
    """Where the pools' electricity is paid: one place, or (rented and owned pools side by side) both."""
    kinds = list(dict.fromkeys(each))
    if len(kinds) == 1:
        return kinds[0]
    return "rental price of the rented pools and the owned TCO of the owned ones"


def combine_utilisation(pools: dict[str, dict[str, Any]], fleet_util: dict[str, Any]) -> dict[str, Any]:
    """The fleet's load factor, capacity and bottleneck from its pools' (module docstring); the time-sampled
    figures (KV, batch, MFU, MBU, busy, queue) stay those of the whole fleet's series."""
    us = [p["utilisation"] for p in pools.values()]
    # mixed pools serve side by side (capacities add); a model's prefill and decode pools serve in series: the pair
    # sustains the smaller of the two roles' capacities and is offered its prefill pools' arrivals
    stages: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in pools.values():
        stages.setdefault((p.get("model", ""), p.get("role", "mixed")), []).append(p["utilisation"])
    offered, cap_sum, cap_tok = 0.0, 0.0, 0.0
    for (model, role), group in stages.items():
        if role == "decode":
            continue
        cap_g = sum(u.get("capacity_requests_per_s") or 0.0 for u in group)
        tok_g = sum(u.get("capacity_output_tokens_per_s") or 0.0 for u in group)
        offered += sum((u["load_factor"] or 0.0) * u["capacity_requests_per_s"] for u in group
                       if u.get("load_factor") is not None and u.get("capacity_requests_per_s"))
        if role == "prefill":
            dec = stages.get((model, "decode"), [])
            cap_g = min(cap_g, sum(u.get("capacity_requests_per_s") or 0.0 for u in dec))
            tok_g = min(tok_g, sum(u.get("capacity_output_tokens_per_s") or 0.0 for u in dec))
        cap_sum += cap_g
        cap_tok += tok_g
    cap = cap_sum or None
    busiest = max(us, key=lambda u: u.get("load_factor") or 0.0)
    peaks = [u["load_factor_peak"] for u in us if u.get("load_factor_peak") is not None]
    nodes_up = fleet_util.get("nodes_up_mean")
    out = dict(fleet_util)
    out.update({
        "load_factor": offered / cap if cap else None,
        "bottleneck": busiest.get("bottleneck", "none"),
        "limit_at_saturation": busiest.get("limit_at_saturation"),
        "capacity_requests_per_s": cap,
        "capacity_per_node_requests_per_s": cap / nodes_up if cap and nodes_up else None,
        "capacity_output_tokens_per_s": cap_tok or None,
        "saturation_batch_per_node": None,
        "load_factor_peak": max(peaks) if peaks else None,
        "load_factor_by_pool": {name: p["utilisation"].get("load_factor") for name, p in pools.items()},
    })
    return out


def model_classes(result: SimResult) -> list[list[str]]:
    """The class names of each model group (``layout.group_models`` order)."""
    assert result.layout is not None
    names = [c.name for c in result.scenario.traffic.classes]
    return [[n for n, cg in zip(names, result.layout.class_group) if cg == g]
            for g in range(len(result.layout.group_models))]


def model_request_stats(result: SimResult, df: pd.DataFrame, window: pd.DataFrame,
                        ok: np.ndarray) -> list[dict[str, Any]]:
    """Per model group, what :func:`model_sections` reads from the per-request table: interactive arrivals after
    warm-up (``window``), how many were served and met their targets (``ok``), latency statistics of those served,
    API spend on its classes and the tokens its classes were served (fleet or API, whole run)."""
    from sim.metrics.tables import _stats

    out = []
    wcls = window["class"].astype(str).to_numpy()
    dcls = df["class"].astype(str).to_numpy()
    for classes in model_classes(result):
        wmask = np.isin(wcls, classes)
        w = window[wmask]
        served_w = w[w["status"].isin(["completed", "spilled"])]
        rows = df[np.isin(dcls, classes) & df["status"].isin(["completed", "spilled"]).to_numpy()]
        out_tok = float(rows["output_tokens"].sum())
        out.append({
            "arrived": int(wmask.sum()),
            "served": len(served_w),
            "ok": int(ok[wmask].sum()),
            **{col: _stats(served_w[col].to_numpy()) for col in ("ttft_s", "tpot_s", "e2e_s")},
            "api_usd": float(df.loc[np.isin(dcls, classes), "api_cost_usd"].sum()),
            "output_tokens": out_tok,
            "tokens": out_tok + float(rows["input_tokens"].sum()),
        })
    return out


def model_sections(result: SimResult, df: pd.DataFrame, window: pd.DataFrame, ok: np.ndarray,
                   pools: dict[str, dict[str, Any]],
                   stats: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``models.<name>``: per model, its classes and pools, SLO attainment and P95s of its interactive requests,
    what it was served and what it cost (module docstring); ``stats``: :func:`model_request_stats` (default: from
    the tables)."""
    assert result.layout is not None
    layout, sc = result.layout, result.scenario
    if stats is None:
        stats = model_request_stats(result, df, window, ok)
    pool_names = [p.name for p in layout.pools]
    out: dict[str, dict[str, Any]] = {}
    for g, classes in enumerate(model_classes(result)):
        model = result.pool_models[layout.group_pools(g)[0]].model.name  # the catalogue's spelling
        mine = [pool_names[p] for p in layout.group_pools(g)]
        st = stats[g]
        api_usd = st["api_usd"]
        self_host = sum(pools[n]["cost"]["self_host_usd"] for n in mine)
        total = self_host + api_usd
        out_tok, all_tok = st["output_tokens"], st["tokens"]
        att = st["ok"] / st["arrived"] if st["arrived"] else None
        p95_ok = all(target is None or (stats_["p95"] is not None and stats_["p95"] <= target)
                     for target, stats_ in ((sc.slo.ttft_p95_s, st["ttft_s"]), (sc.slo.tpot_p95_s, st["tpot_s"]),
                                            (sc.slo.e2e_p95_s, st["e2e_s"])))
        out[model] = {
            "classes": classes,
            "pools": mine,
            "arrived": st["arrived"],
            "served": st["served"],
            "attainment": att,
            "attainment_target": sc.slo.attainment_target,
            "met": bool(p95_ok and (att is None or att >= sc.slo.attainment_target)),
            "ttft_s": st["ttft_s"],
            "tpot_s": st["tpot_s"],
            "cost_usd": total,
            "self_host_usd": self_host,
            "api_usd": api_usd,
            "served_output_tokens": out_tok,
            "usd_per_mtok_output": total / (out_tok / 1e6) if out_tok > 0 else None,
            "usd_per_mtok_total": total / (all_tok / 1e6) if all_tok > 0 else None,
        }
    return out


def fleet_labels(result: SimResult) -> dict[str, Any]:
    """The summary's ``fleet`` section of a pooled run: totals, and each label joined over the pools (``H100-SXM
    + A100-SXM-80GB``) where they differ (the pools themselves: the ``pools`` section)."""
    assert result.layout is not None
    pools = result.layout.pools
    models = result.pool_models

    def joined(values: list[Any]) -> Any:
        uniq = list(dict.fromkeys(values))
        return uniq[0] if len(uniq) == 1 else " + ".join(str(v) for v in uniq)

    return {
        "nodes": sum(p.nodes for p in pools),
        "gpu": joined([m.gpu.name for m in models]),
        "gpus_per_node": joined([p.gpus_per_node for p in pools]),
        "model": joined([m.model.name for m in models]),
        "weights": joined([p.weights for p in pools]),
        "kv_cache": joined([p.kv_cache for p in pools]),
        "kv_capacity_tokens_per_node": joined([m.memory.kv_capacity_tokens for m in models]),
        "weight_gb_per_node": joined([m.memory.weight_bytes / 1e9 for m in models]),
        "engine_steps": int(sum(result.node_steps)),
    }
