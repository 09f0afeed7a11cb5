"""A comparison as tables: one row per run (cost, spill share, latency percentiles, SLO attainment,
utilisation, API errors; with several seeds the mean and a 95 % Student-t half-width for the headline columns),
one row per run × seed, the cost–latency Pareto front, and the ``--json`` records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.compare.experiment import Run
from sim.compare.runner import StrategyResult
from sim.metrics.access import metric
from sim.metrics.summary import Summary

COLUMNS: list[tuple[str, str]] = [
    ("total_usd", "cost.total_usd"),
    ("usd_per_mtok", "cost.usd_per_mtok_total"),
    ("usd_per_mtok_output", "cost.usd_per_mtok_output"),
    ("self_host_usd", "cost.self_host_usd"),
    ("api_usd", "cost.api_usd"),
    ("spill_request_share", "spill.request_share"),
    ("spill_token_share", "spill.token_share"),
    ("ttft_p50_s", "latency.ttft_s.p50"),
    ("ttft_p95_s", "latency.ttft_s.p95"),
    ("ttft_p99_s", "latency.ttft_s.p99"),
    ("e2e_p50_s", "latency.e2e_s.p50"),
    ("e2e_p95_s", "latency.e2e_s.p95"),
    ("e2e_p99_s", "latency.e2e_s.p99"),
    ("slo_attainment", "slo.attainment"),
    ("slo_met", "slo.met"),
    ("load_factor", "utilisation.load_factor"),
    ("load_factor_peak", "utilisation.load_factor_peak"),
    ("mfu", "utilisation.mfu_mean"),
    ("gpu_busy_fraction", "utilisation.busy_fraction"),
    ("arrived", "requests.arrived"),
    ("spilled", "requests.spilled"),
    ("failed", "requests.failed"),
    ("timed_out", "requests.timed_out"),
    ("client_retries", "requests.retries"),
    ("in_flight", "requests.in_flight"),
    ("api_calls", "api.calls"),
    ("api_rate_limited", "api.rate_limited"),
    ("api_retries", "api.retries"),
    ("api_failed", "api.failed"),
]


#: columns reported with a 95 % confidence interval when there are several seeds
HEADLINE: tuple[str, ...] = ("total_usd", "usd_per_mtok", "usd_per_mtok_output", "ttft_p95_s", "e2e_p95_s",
                             "slo_attainment", "spill_request_share", "spill_token_share")


def _row_values(summary: Summary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, path in COLUMNS:
        v = metric(summary, path)
        out[col] = 0 if v is None and col.startswith(("api_", "spill_")) else v
    if isinstance(out.get("slo_met"), bool):
        out["slo_met"] = float(out["slo_met"])  # share of seeds meeting the SLO once averaged
    return out


def _missed(summaries: list[Summary], require_worst_window: bool) -> str:
    """Why the SLO is missed, over the seeds (each reason once, in first-seen order, with its figure only for a single
    seed; empty when every seed met)."""
    from sim.metrics.headline import slo_miss_items

    seen: dict[str, None] = {}
    for s in summaries:
        if not s.slo.met:
            for reason, figure in slo_miss_items(s.slo, require_worst_window):
                seen.setdefault(reason + figure if len(summaries) == 1 else reason)
    return "; ".join(seen)


def _run_info(run: Run) -> dict[str, Any]:
    return {"strategy": run.label, "policy": run.scenario.spill.policy if run.scenario.spill else "never",
            "fleet_nodes": run.fleet_nodes}


def seed_table(runs: list[Run], results: list[StrategyResult]) -> pd.DataFrame:
    """One row per run × seed (the table's columns, unaveraged)."""
    rows = []
    for run, res in zip(runs, results):
        for seed, s in zip(run.seeds, res.summaries):
            rows.append({**_run_info(run), "seed": seed, **_row_values(s),
                         "slo_missed": _missed([s], run.scenario.slo.require_worst_window)})
    return pd.DataFrame(rows)


def comparison_table(runs: list[Run], results: list[StrategyResult]) -> pd.DataFrame:
    """One row per run: cost, spill share, latency percentiles, SLO attainment, utilisation, API errors.

    With several seeds every metric is the mean over seeds, ``seeds`` counts them, and each :data:`HEADLINE`
    column has ``<column>_ci95``: the half-width of the 95 % Student-t interval of the mean."""
    from sim.metrics.stats import mean_ci95

    multi = any(len(r.scenarios) > 1 for r in runs)
    rows = []
    for run, res in zip(runs, results):
        row: dict[str, Any] = _run_info(run)
        if not multi:
            row.update(_row_values(res.summaries[0]))
        else:
            per_seed = [_row_values(s) for s in res.summaries]
            row["seeds"] = len(per_seed)
            for col, _ in COLUMNS:
                row[col] = mean_ci95([p[col] for p in per_seed])[0]
            for col in HEADLINE:
                row[f"{col}_ci95"] = mean_ci95([p[col] for p in per_seed])[1]
        row["slo_missed"] = _missed(list(res.summaries), run.scenario.slo.require_worst_window)
        rows.append(row)
    df = pd.DataFrame(rows)
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9  # every seed meets the SLO
    df["pareto_e2e"] = pareto_mask(df["e2e_p95_s"].to_numpy(float), df["total_usd"].to_numpy(float), meets)
    df["pareto_ttft"] = pareto_mask(df["ttft_p95_s"].to_numpy(float), df["total_usd"].to_numpy(float), meets)
    return df


def pareto_mask(latency: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """True for ``eligible`` points (default all; ``comparison_table`` passes "meets the SLO in every seed")
    that no other eligible point beats on both latency and cost (ties: neither dominates). A strategy that
    misses the SLO is never on the front, however cheap."""
    n = len(latency)
    ok = ~(np.isnan(latency) | np.isnan(cost))
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    for i in range(n):
        if not ok[i]:
            continue
        dominated = ok & (latency <= latency[i]) & (cost <= cost[i]) & ((latency < latency[i]) | (cost < cost[i]))
        mask[i] = not dominated.any()
    return mask


def json_records(runs: list[Run], results: list[StrategyResult], per_seed: bool = False) -> list[dict[str, Any]]:
    """``--json``: one object per run, ``strategy`` (and ``fleet_nodes``) plus the keys of summary.json.

    With several seeds the summary keys hold the means over seeds (:func:`mean_summary`; ``seed`` is the list
    of seeds), ``seeds`` counts them and ``ci95`` gives, for each headline column of the table, ``{mean,
    half_width, low, high}`` (95 % Student t); ``per_seed=True`` adds every seed's own summary."""
    out = []
    multi = any(len(r.scenarios) > 1 for r in runs)
    df = comparison_table(runs, results) if multi else None
    for i, (r, res) in enumerate(zip(runs, results)):
        rec: dict[str, Any] = {"strategy": r.label, "fleet_nodes": r.fleet_nodes, **res.mean_summary_json}
        if df is not None:
            row = df.iloc[i]
            rec["seeds"] = len(r.scenarios)
            rec["ci95"] = {}
            for col in HEADLINE:
                m, h = _num(row[col]), _num(row[f"{col}_ci95"])
                rec["ci95"][col] = {"mean": m, "half_width": h, "low": None if m is None or h is None else m - h,
                                    "high": None if m is None or h is None else m + h}
            if per_seed:
                rec["per_seed"] = [s.to_json() for s in res.summaries]
        out.append(rec)
    return out


def _num(v: Any) -> float | None:
    """A finite float, or None (NaN, None)."""
    if v is None:
        return None
    f = float(v)
    return f if f == f else None
