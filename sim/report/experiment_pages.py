"""The HTML reports of ``capsim size`` (``sizing.html``), ``compare`` (``compare.html``) and ``sweep``
(``sweep.html``): one self-contained page each (:mod:`sim.report.htmldoc`) with what was asked, the answer in one
line at the top, the tables and the plots the command writes beside it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from sim.report import htmldoc
from sim.report.htmldoc import esc


def _ms(v: Any) -> str:
    return "–" if v is None or v != v else f"{1000 * v:,.0f} ms"


def _pct(v: Any, digits: int = 1) -> str:
    return "–" if v is None or v != v else f"{100 * v:.{digits}f} %"


def _usd(v: Any, digits: int = 2) -> str:
    """Dollars; ``digits=0`` (totals) keeps cents below $100 so small totals do not all read "$1"."""
    if v is None or v != v:
        return "–"
    return f"${v:,.{digits if digits or abs(v) >= 100 else 2}f}"


def _slo_text(slo: Mapping[str, Any]) -> str:
    parts = [f"{k.replace('_p95_s', '').upper()} P95 ≤ {1000 * slo[k]:g} ms"
             for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s") if slo.get(k) is not None]
    if slo.get("attainment_target") is not None:
        parts.append(f"attainment ≥ {100 * slo['attainment_target']:g} % of all requests after warm-up")
    return ", ".join(parts) or "none"


# --- capsim size ----------------------------------------------------------------------------------------------
def size_verdict(report: Mapping[str, Any]) -> tuple[str, bool]:
    """The answer of a sizing in one line, and whether the SLO can be met."""
    by_gpu = report.get("by_gpu") or []
    if len(by_gpu) > 1:
        best = next((g for g in by_gpu if g.get("cheapest")), None)
        if best is None:
            return f"No GPU type meets the SLO with up to {report.get('max_nodes')} nodes.", False
        return (f"Cheapest GPU type meeting the SLO: {best['gpu']}, {best['min_nodes']} node(s) × "
                f"{best.get('gpus_per_node', 1)} GPU ({_usd(best.get('usd_per_hour'))}/h, "
                f"{_usd(best.get('usd_per_mtok_output'), 3)}/M output tokens, SLO attainment "
                f"{_pct(best.get('slo_attainment'), 2)}).", True)
    n = report.get("min_nodes")
    gpu = report.get("gpu") or ""
    if n is None:
        return f"No fleet of up to {report.get('max_nodes')} {gpu} node(s) meets the SLO in every seed.", False
    conf = (report.get("min_nodes_confidence") or {}).get("statement", "")
    return (f"{n} {gpu} node(s) meet the SLO over the whole traffic shape (one node sustains "
            f"{report['node_goodput_rps']:.2f} req/s within the SLO){'; ' + conf if conf else ''}.", True)


#: sizing tables' headings: the busy share of time is not load (a node with one running sequence is "busy")
SIZE_HEADS = {"load_factor": "load factor", "busy_fraction": "steps running (busy, not capacity)",
              "rate_rps": "rate (req/s)", "slo_attainment": "SLO attain.", "total_usd": "cost $ (run)",
              "usd_per_mtok_output": "$/M out tok", "usd_per_hour": "$/hour", "seeds_met": "seeds met",
              "meets_slo": "meets SLO", "ttft_p95_s": "P95 TTFT", "tpot_p95_s": "P95 TPOT", "e2e_p95_s": "P95 E2E",
              "nodes_vs_min": "nodes vs sim", "usd_vs_min": "$ vs sim", "min_nodes": "min nodes",
              "node_goodput_rps": "goodput (req/s/node)", "usd_per_gpu_hour": "$/GPU-h", "gpus": "GPUs",
              "cheapest": "cheapest", "error": "error"}


def size_html(report: Mapping[str, Any], tables: Mapping[str, pd.DataFrame], images: Mapping[str, bytes],
              text: str) -> str:
    """``sizing.html``: ``report`` is ``sizing.json``; ``tables`` the CSV tables by file name; ``images`` the
    PNGs by file name; ``text`` what the command printed."""
    verdict, good = size_verdict(report)
    tr = report.get("traffic") or {}
    asked = {"scenario": f"{report.get('scenario')} ({report.get('source')})",
             "question": "the smallest fleet that meets the SLO over the whole traffic shape",
             "SLO": _slo_text(report.get("slo") or {}),
             "traffic": f"{tr.get('mean_rps', 0):.2f} req/s mean, {tr.get('peak_rps', 0):.2f} peak "
                        f"({tr.get('basis') or str(report.get('duration_s', 0)) + '-s run'})",
             "GPU types": ", ".join(g["gpu"] for g in report.get("by_gpu") or []) or str(report.get("gpu")),
             "seeds": ", ".join(str(s) for s in report.get("seeds") or [])}
    fmt = {"slo_attainment": lambda v: _pct(v, 2), "busy_fraction": _pct, "usd_per_hour": _usd,
           "load_factor": lambda v: f"{v:.2f}",
           "usd_per_mtok_output": lambda v: _usd(v, 3),
           "total_usd": _usd, "ttft_p95_s": _ms, "tpot_p95_s": _ms, "e2e_p95_s": _ms,
           "usd_vs_min": lambda v: f"{'+' if v >= 0 else '−'}{_usd(abs(v))}",
           "nodes_vs_min": lambda v: f"{int(v):+d}", "usd_per_gpu_hour": _usd,
           "node_goodput_rps": lambda v: f"{v:.2f}"}
    body = htmldoc.asked(asked)
    for name, df in tables.items():
        body += f"<h2>{esc(name)}</h2>{htmldoc.table(df, fmt, SIZE_HEADS)}"
    body += f"<h2>Plots</h2>{htmldoc.figures(images)}<h2>Console report</h2><pre>{esc(text)}</pre>"
    body += ('<p class="note">The SLO is met when every P95 target holds, the attainment target is reached and no '
             "class is clearly below it (<code>slo.every_class</code>); rejected, failed, timed-out and unfinished "
             "requests count as misses. Method: docs/sizing.md.</p>")
    return htmldoc.page(f"capsim size · {report.get('scenario')}", esc(verdict), body, good)


# --- capsim compare -------------------------------------------------------------------------------------------
COMPARE_COLUMNS = {"strategy": "strategy", "fleet_nodes": "nodes", "total_usd": "total $",
                   "usd_per_mtok_output": "$/M out tok", "api_usd": "API $", "spill_request_share": "spill req",
                   "ttft_p95_s": "P95 TTFT", "e2e_p95_s": "P95 E2E", "slo_attainment": "SLO attain.",
                   "slo_met": "SLO met", "load_factor_peak": "peak load", "failed": "failed",
                   "slo_missed": "missed by"}


def compare_verdict(df: pd.DataFrame) -> tuple[str, bool]:
    """The cheapest strategy meeting the SLO in every seed, in one line."""
    ok = df[df["slo_met"] >= 1] if "slo_met" in df else df.iloc[0:0]
    if ok.empty:
        return f"No strategy of the {len(df)} compared meets the SLO.", False
    best = ok.sort_values("total_usd").iloc[0]
    return (f"Cheapest strategy meeting the SLO: {best['strategy']} — {_usd(best['total_usd'])} in total "
            f"({_usd(best.get('usd_per_mtok_output'), 3)}/M output tokens), P95 TTFT {_ms(best.get('ttft_p95_s'))}, "
            f"SLO attainment {_pct(best.get('slo_attainment'), 2)}; {len(ok)} of {len(df)} strategies meet the "
            "SLO.", True)


def compare_html(name: str, asked: Mapping[str, str], df: pd.DataFrame, images: Mapping[str, bytes]) -> str:
    """``compare.html``: ``df`` is the comparison table (compare.csv), ``images`` the PNGs by file name."""
    verdict, good = compare_verdict(df)
    cols = [c for c in COMPARE_COLUMNS if c in df.columns]
    view = df[cols].copy()
    if "slo_met" in view:
        view["slo_met"] = view["slo_met"].map(lambda v: "yes" if v >= 1 else "no" if v <= 0 else f"{100 * v:.0f} %"
                                              " of seeds")
    fmt = {"total_usd": lambda v: _usd(v, 0), "api_usd": lambda v: _usd(v, 0),
           "usd_per_mtok_output": lambda v: _usd(v, 3), "spill_request_share": _pct, "ttft_p95_s": _ms,
           "e2e_p95_s": _ms, "slo_attainment": lambda v: _pct(v, 2), "load_factor_peak": "{:.2f}".format}
    body = (htmldoc.asked(asked) + "<h2>Strategies (mean over seeds; every column in compare.csv)</h2>"
            + htmldoc.table(view, fmt, COMPARE_COLUMNS, classes="t lastwrap")
            + f"<h2>Plots</h2>{htmldoc.figures(images)}"
            + '<p class="note">SLO attainment counts every request that arrived: rejected, failed, timed-out and '
              "unfinished ones are misses. Peak load: the busiest 10 minutes ÷ what the fleet alone sustains.</p>")
    return htmldoc.page(f"capsim compare · {name}", esc(verdict), body, good)


# --- capsim sweep ---------------------------------------------------------------------------------------------
SWEEP_METRICS = {"latency.ttft_s.p95": ("P95 TTFT", _ms), "latency.tpot_s.p95": ("P95 TPOT", _ms),
                 "slo.attainment": ("SLO attain.", lambda v: _pct(v, 2)), "slo.met": ("SLO met (seeds)",
                                                                                       _pct),
                 "throughput.requests_per_s": ("req/s", "{:.2f}".format),
                 "cost.usd_per_mtok_total": ("$/M in+out tok", lambda v: _usd(v, 3))}


def sweep_overview(agg: pd.DataFrame, axis_columns: list[str],
                   missed: Mapping[int, str] | None = None) -> pd.DataFrame:
    """One row per grid point: its axis values, seeds, the means of :data:`SWEEP_METRICS`, the half-widths of
    their 95 % confidence intervals (``<metric>_ci95``; NaN with one seed) and, given ``missed`` (point → why it
    misses the SLO: :func:`sim.sweep.results.missed_by_point`), a ``missed by`` column."""
    rows = []
    if agg is None or agg.empty:
        return pd.DataFrame()
    for _, grp in agg[agg["metric"].isin(list(SWEEP_METRICS))].groupby("point", sort=True):
        by = dict(zip(grp["metric"], grp["mean"]))
        half = dict(zip(grp["metric"], (grp["ci95_high"] - grp["ci95_low"]) / 2))
        first = grp.iloc[0]
        rows.append({**{c: first[c] for c in axis_columns if c in grp.columns}, "seeds": int(grp["n"].max()),
                     **{m: by.get(m) for m in SWEEP_METRICS},
                     **{f"{m}{CI_SUFFIX}": half.get(m) for m in SWEEP_METRICS if m not in NO_CI},
                     **({MISSED_BY: missed.get(int(first["point"]), "")} if missed is not None else {})})
    return pd.DataFrame(rows)


#: the overview's confidence-interval columns: ``<metric>_ci95`` (not for the share of seeds meeting the SLO)
CI_SUFFIX = "_ci95"
NO_CI = ("slo.met",)
#: the overview's column naming why a point misses the SLO (last: it may be long)
MISSED_BY = "missed by"


def axis_text(v: Any) -> str:
    """An axis value for people: a mapping (stored as JSON text) as ``expert=8, tensor=1``; a field a point leaves
    unset (a linked axis value that does not name it) as ``(default)``: the base scenario's value."""
    import json

    if v is None or (isinstance(v, float) and v != v):
        return "(default)"
    if isinstance(v, str) and v.startswith("{"):
        try:
            d = json.loads(v)
        except ValueError:
            return v
        if isinstance(d, dict):
            return ", ".join(f"{k}={x}" for k, x in d.items())
    return str(v)


def _not_axis(c: str) -> bool:
    return c in SWEEP_METRICS or c in ("seeds", MISSED_BY) or c.endswith(CI_SUFFIX)


def _with_ci(overview: pd.DataFrame) -> pd.DataFrame:
    """The overview for display: each metric as ``mean ± half-width`` where it has an interval."""
    out = overview[[c for c in overview.columns if not c.endswith(CI_SUFFIX)]].copy()
    for m, (_, f) in SWEEP_METRICS.items():
        if m not in out:
            continue
        ci = overview.get(f"{m}{CI_SUFFIX}", pd.Series([None] * len(overview), index=overview.index))
        out[m] = [f(v) + ("" if h is None or h != h else f" ± {f(h)}") for v, h in zip(overview[m], ci)]
    return out


def sweep_verdict(overview: pd.DataFrame, n_failed: int, interrupted: bool) -> tuple[str, bool]:
    """How many grid points meet the SLO in every seed, and the cheapest of them, in one line."""
    if overview.empty:
        return "No grid point finished.", False
    met = overview[overview.get("slo.met", pd.Series(dtype=float)) >= 1] if "slo.met" in overview else overview[:0]
    tail = (f"; {n_failed} run(s) failed" if n_failed else "") + ("; interrupted, not every point ran" if
                                                                   interrupted else "")
    if met.empty:
        return f"None of the {len(overview)} grid points meets the SLO in every seed{tail}.", False
    axes = [c for c in overview.columns if not _not_axis(c)]
    best = met.sort_values("cost.usd_per_mtok_total").iloc[0] if "cost.usd_per_mtok_total" in met else met.iloc[0]
    where = "; ".join(f"{c} = {axis_text(best[c])}" for c in axes if not pd.isna(best[c]))
    return (f"{len(met)} of {len(overview)} grid points meet the SLO in every seed; the cheapest per token: "
            f"{where} ({_usd(best.get('cost.usd_per_mtok_total'), 3)}/M tokens, P95 TTFT "
            f"{_ms(best.get('latency.ttft_s.p95'))}){tail}.", True)


def sweep_html(name: str, asked: Mapping[str, str], overview: pd.DataFrame, images: Mapping[str, bytes],
               n_failed: int = 0, interrupted: bool = False) -> str:
    """``sweep.html``: the per-point overview (means across seeds; CIs in aggregates.csv) and the plots."""
    verdict, good = sweep_verdict(overview, n_failed, interrupted)
    heads = {m: h for m, (h, _) in SWEEP_METRICS.items()}
    n_axes = sum(1 for c in overview.columns if not _not_axis(c))
    # the axis columns wrap (a linked axis's values are long), so the 'missed by' column stays in view
    axes_wrap = (f"<style>table.sweep td:nth-child(-n+{n_axes}){{white-space:normal;min-width:6em}}</style>"
                 if n_axes else "")
    multi = bool(len(overview)) and int(overview["seeds"].max()) > 1
    shown = _with_ci(overview) if multi else overview[[c for c in overview.columns if not c.endswith(CI_SUFFIX)]]
    shown = shown.copy()
    for c in shown.columns:
        if not _not_axis(c):
            shown[c] = [axis_text(v) for v in shown[c]]
    fmt = {} if multi else {m: f for m, (_, f) in SWEEP_METRICS.items()}
    body = (htmldoc.asked(asked) + "<h2>Grid points ("
            + ("mean ± 95 % confidence interval across seeds" if multi else "one seed each: --seeds N for intervals")
            + "; every run in results.csv)</h2>" + axes_wrap
            + htmldoc.table(shown, fmt, heads, classes="t lastwrap sweep")
            + (f"<h2>Plots</h2>{htmldoc.figures(images)}" if images else ""))
    return htmldoc.page(f"capsim sweep · {name}", esc(verdict), body, good)
