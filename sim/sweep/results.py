"""The tidy results of a sweep.

``results.parquet`` / ``results.csv``: one row per point × seed, in experiment order. Columns: ``point``
(grid index), ``key``, one column per axis field (named by its dotted field), ``seed``, ``status`` (``ok`` or
``failed``), ``error``, ``wall_s``, ``slo_missed`` (why the run misses its SLO, with figures; empty when it meets
it) and ``slo_missed_reasons`` (the same without figures), then every ``summary.json`` metric flattened to its
dotted path (``latency.ttft_s.p95``, ``cost.usd_per_mtok_output``, ...). Where an axis field is also a summary path
(``fleet.nodes``) the axis column holds the value as written in the experiment.

``aggregates.parquet`` / ``aggregates.csv``: long format, one row per grid point × numeric metric, over the
seeds that succeeded: ``n`` (seeds), ``mean``, ``std`` (sample), ``ci95_low``, ``ci95_high`` (Student-t 95 %
interval of the mean; NaN with fewer than two seeds), ``min``, ``max``. Booleans (``slo.met``) average to the
share of seeds that met them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.core.atomic_io import write_csv, write_parquet
from sim.metrics.stats import t_half_width
from sim.sweep.experiment import Experiment

BOOKKEEPING = ["point", "key", "seed", "status", "error", "wall_s", "slo_missed", "slo_missed_reasons"]


def _slo_missed(rec: dict[str, Any], require_worst_window: bool) -> tuple[str | None, str | None]:
    """Why a finished run misses its SLO (:func:`sim.metrics.headline.slo_miss_items`): the reasons with their
    figures (``class code (90.1%)``) and the reasons alone (``class code``), each ``"; "``-joined; empty when it
    meets it, None for a failed run (or a summary this version cannot read)."""
    if rec.get("status") != "ok" or not rec.get("summary"):
        return None, None
    from sim.metrics.headline import slo_miss_items
    from sim.metrics.summary import Summary

    try:
        slo = Summary.from_json(rec["summary"]).slo
    except (KeyError, TypeError, ValueError):  # a record this version cannot read: no reason rather than no table
        return None, None
    items = [] if slo.met else slo_miss_items(slo, require_worst_window)
    return "; ".join(r + f for r, f in items), "; ".join(r for r, _ in items)


def missed_by_point(table: pd.DataFrame | None) -> dict[int, str]:
    """Per grid point, why it misses the SLO over its seeds: each reason once in first-seen order, with its figure
    when the point ran one seed (as ``capsim compare``'s "missed by"); empty when every seed met it."""
    out: dict[int, str] = {}
    if table is None or not len(table) or "slo_missed" not in table:
        return out
    ok = table[table["status"] == "ok"]
    for _point, grp in ok.groupby("point", sort=True):
        col = "slo_missed" if len(grp) == 1 else "slo_missed_reasons"
        seen: dict[str, None] = {}
        for text in grp[col].dropna():
            for reason in str(text).split("; "):
                if reason:
                    seen.setdefault(reason)
        out[int(grp["point"].iloc[0])] = "; ".join(seen)
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, (list, tuple)):
            out[name] = json.dumps(v)
        else:
            out[name] = v
    return out


def _tidy_column(values: list[Any]) -> list[Any]:
    """Make an axis column storable: non-scalars become JSON text; mixed scalar types become text; a missing
    value (None, or the NaN a pandas text column reads it back as) stays None, never the text "nan"."""
    values = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    if any(isinstance(v, (dict, list, tuple)) for v in values):
        return [None if v is None else json.dumps(v, sort_keys=True) for v in values]
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} or len(kinds) <= 1:
        return values
    return [None if v is None else str(v) for v in values]


def results_table(exp: Experiment, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per point × seed that has a record (``records``: key → stored record), in experiment order."""
    rows: list[dict[str, Any]] = []
    axis_values: dict[str, list[Any]] = {c: [] for c in exp.axis_columns}
    metric_cols: list[str] = []
    seen: set[str] = set()
    for p in exp.points:
        rec = records.get(p.key)
        if rec is None:
            continue
        row: dict[str, Any] = {"point": p.index, "key": p.key, "seed": p.seed, "status": rec["status"],
                               "error": rec.get("error"), "wall_s": rec.get("wall_s"),
                               **dict(zip(("slo_missed", "slo_missed_reasons"),
                                          _slo_missed(rec, p.scenario.slo.require_worst_window)))}
        for c in exp.axis_columns:
            axis_values[c].append(p.axes.get(c))
        metrics = flatten(rec.get("summary") or {})
        for k in (*exp.axis_columns, *BOOKKEEPING):
            metrics.pop(k, None)  # "seed" is a bookkeeping column; axis columns win over summary paths
        for k in metrics:
            if k not in seen:
                seen.add(k)
                metric_cols.append(k)
        row.update({f"m:{k}": v for k, v in metrics.items()})
        rows.append(row)
    cols = ["point", "key", *exp.axis_columns, "seed", "status", "error", "wall_s", "slo_missed", "slo_missed_reasons",
            *metric_cols]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df = pd.DataFrame(rows)
    for c in exp.axis_columns:
        df[c] = _tidy_column(axis_values[c])
    df = df.rename(columns={f"m:{k}": k for k in metric_cols})
    for c in cols:
        if c not in df:
            df[c] = None
    df = df[cols]
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    for c in metric_cols:  # columns only failed rows lack: keep numeric dtypes where the values are numbers
        if df[c].dtype == object:
            non_null = df[c].dropna()
            if len(non_null) and all(isinstance(v, (int, float, bool, np.number)) for v in non_null):
                df[c] = pd.to_numeric(df[c].astype(float))
    return df.reset_index(drop=True)


def aggregates_table(exp: Experiment, table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % confidence interval across seeds, per grid point and numeric metric (long format)."""

    axis_cols = list(exp.axis_columns)
    out_cols = ["point", *axis_cols, "metric", "n", "mean", "std", "ci95_low", "ci95_high", "min", "max"]
    ok = table[table["status"] == "ok"] if len(table) else table
    skip = set(BOOKKEEPING) | set(axis_cols)
    metrics = [c for c in ok.columns if c not in skip and (pd.api.types.is_numeric_dtype(ok[c])
                                                         or pd.api.types.is_bool_dtype(ok[c]))]
    rows: list[dict[str, Any]] = []
    for _, grp in ok.groupby("point", sort=True):
        first = grp.iloc[0]
        base = {"point": int(first["point"]), **{c: first[c] for c in axis_cols}}
        for m in metrics:
            x = grp[m].astype(float).to_numpy()
            x = x[~np.isnan(x)]
            n = len(x)
            mean = float(x.mean()) if n else math.nan
            std = float(x.std(ddof=1)) if n > 1 else math.nan
            if n > 1:
                half = t_half_width(std, n)
                lo, hi = mean - half, mean + half
            else:
                lo = hi = math.nan
            rows.append({**base, "metric": m, "n": n, "mean": mean, "std": std, "ci95_low": lo, "ci95_high": hi,
                         "min": float(x.min()) if n else math.nan, "max": float(x.max()) if n else math.nan})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in out_cols})
    df = pd.DataFrame(rows, columns=out_cols)
    for c in axis_cols:
        df[c] = _tidy_column(df[c].tolist())
    return df


def write_tables(out_dir: Path, table: pd.DataFrame, agg: pd.DataFrame) -> dict[str, Path]:
    """Write the results and aggregates as Parquet and CSV (each atomically)."""
    return {
        "results.parquet": write_parquet(out_dir / "results.parquet", table),
        "results.csv": write_csv(out_dir / "results.csv", table),
        "aggregates.parquet": write_parquet(out_dir / "aggregates.parquet", agg),
        "aggregates.csv": write_csv(out_dir / "aggregates.csv", agg),
    }
