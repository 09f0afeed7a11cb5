"""Plots and the self-contained HTML report of one run.

Each plot is a small function that takes tidy DataFrames and returns a matplotlib Figure; ``write_report``
saves them as PNGs beside the Parquet tables and ``summary.json`` and embeds them in ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .io import atomic_write, write_json, write_parquet, write_text  # noqa: E402


CDF_PCTS = np.linspace(0.1, 99.9, 400)


def latency_curves(req: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(sorted values, cumulative fraction) of TTFT, TPOT and E2E over completed requests."""
    done = req[req["status"] == "completed"]
    out = {}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        x = np.sort(done[col].dropna().to_numpy())
        out[col] = (x, np.arange(1, len(x) + 1) / max(len(x), 1))
    return out


def plot_latency_cdfs(curves: dict[str, tuple[np.ndarray, np.ndarray]], slo: dict[str, Any] | None = None,
                      n_requests: int | None = None) -> Figure:
    """CDFs of TTFT, TPOT and E2E (from :func:`latency_curves`, or quantile curves of a streamed run), with
    the P95 and the SLO targets as vertical lines."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    targets = (slo or {}).get("targets", {})
    for ax, col, title, key in (
        (axes[0], "ttft_s", "Time to first token", "ttft_p95_s"),
        (axes[1], "tpot_s", "Time per output token", "tpot_p95_s"),
        (axes[2], "e2e_s", "End-to-end latency", "e2e_p95_s"),
    ):
        x, frac = curves[col]
        if len(x):
            ax.plot(x, frac, color="C0", lw=1.6)
            p95 = float(np.interp(0.95, frac, x))
            ax.axvline(p95, color="C1", lw=1, label=f"P95 = {p95:.3g} s")
        if key in targets:
            ax.axvline(targets[key]["target"], color="C3", ls="--", lw=1, label=f"SLO {targets[key]['target']:g} s")
        ax.axhline(0.95, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log" if len(x) and x.min() > 0 and x.max() / max(x.min(), 1e-9) > 50 else "linear")
        ax.set_xlabel(f"{title} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    label = f" ({n_requests:,} completed requests)" if n_requests is not None else ""
    fig.suptitle(f"Latency distributions{label}")
    return fig


def plot_load(fleet_ts: pd.DataFrame, kv_capacity_tokens_total: int | None = None) -> Figure:
    """Arrival and completion rates, queue length and running batch, and KV-cache use over time."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    span_s = float(fleet_ts["time_s"].iloc[-1]) if len(fleet_ts) else 0.0
    hours = span_s > 3 * 3600
    t = fleet_ts["time_s"] / (3600.0 if hours else 60.0)
    dt = float(fleet_ts["time_s"].diff().median()) if len(fleet_ts) > 1 else 1.0
    win = max(1, int(round(max(10.0, span_s / 300) / dt)))  # smooth rates over ≥ 10 s
    ax = axes[0]
    ax.plot(t, fleet_ts["arrival_rate_rps"].rolling(win, min_periods=1).mean(), lw=1, color="C0", label="arrivals")
    ax.plot(t, fleet_ts["completion_rate_rps"].rolling(win, min_periods=1).mean(), lw=1, color="C2",
            alpha=0.8, label="completions")
    ax.set_ylabel("requests / s")
    ax.set_title(f"Load (rolling mean over {win * dt:g} s)")
    if "nodes_up" in fleet_ts and fleet_ts["nodes_up"].nunique() > 1:
        ax2 = ax.twinx()
        ax2.step(t, fleet_ts["nodes_up"], where="post", color="k", lw=1, alpha=0.6, label="nodes up")
        ax2.set_ylabel("nodes up")
        ax2.set_ylim(0, fleet_ts["nodes_up"].max() * 1.15 + 1)
        ax2.legend(loc="upper left", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t, fleet_ts["running_seqs"], lw=1, color="C1", label="running sequences (batch)")
    ax.plot(t, fleet_ts["queue_len"], lw=1, color="C3", label="waiting in queue")
    ax.set_ylabel("requests (fleet total)")
    ax.set_title("Running batch and queue")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(t, 100 * fleet_ts["kv_fraction"], lw=1, color="C4", label="KV cache in use")
    if "batch_fill" in fleet_ts:
        ax.plot(t, 100 * fleet_ts["batch_fill"], lw=1, color="C1", alpha=0.8,
                label="batch fill (running / max_num_seqs)")
    ax.plot(t, 100 * fleet_ts["busy_fraction"], lw=1, color="C5", alpha=0.5, label="GPU busy (executing steps)")
    ax.set_ylabel("% of capacity")
    ax.set_ylim(0, 105)
    ax.set_xlabel("simulated time (h)" if hours else "simulated time (min)")
    ax.set_title("KV-cache use, batch fill and busy time")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_node_utilisation(node_ts: pd.DataFrame, duration_s: float) -> Figure:
    """Per node over the arrival window, while up: busy time, batch fill (running / max_num_seqs) and KV-cache
    use — a balance check for the router."""
    win = node_ts[node_ts["time_s"] <= duration_s + 1e-9]
    if "up" in win:
        win = win[win["up"]]
    cols = [c for c in ("busy_fraction", "batch_fill", "kv_fraction") if c in win]
    g = win.groupby("node")[cols].mean()
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(g) + 3), 3.6), constrained_layout=True)
    x = np.arange(len(g))
    width = 0.8 / len(cols)
    labels = {"busy_fraction": ("busy (executing steps)", "C5"),
              "batch_fill": ("batch fill (running / max_num_seqs)", "C1"),
              "kv_fraction": ("KV cache in use", "C4")}
    for i, col in enumerate(cols):
        label, color = labels[col]
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * g[col], width=width, label=label, color=color)
    ax.set_xticks(x, [str(i) for i in g.index])
    ax.set_xlabel("node")
    ax.set_ylabel("% (mean while up)")
    ax.set_ylim(0, 118)
    ax.set_title("Per-node utilisation")
    ax.legend(fontsize=8, loc="upper center", ncol=len(cols))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _save_png(path: Path, fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    atomic_write(path, lambda p: p.write_bytes(data))
    return data


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3g}{unit}" if abs(v) < 1000 else f"{v:,.0f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def _summary_html(summary: dict[str, Any]) -> str:
    req, lat, thr, util, slo, cost = (
        summary["requests"],
        summary["latency"],
        summary["throughput"],
        summary["utilisation"],
        summary["slo"],
        summary["cost"],
    )
    rows = [
        ("Requests", f"{req['arrived']:,} arrived · {req['completed']:,} completed · {req['rejected']:,} rejected · "
         f"{req['spilled']:,} spilled · {req['in_flight']:,} in flight"
         + (f" · {req.get('timed_out', 0):,} timed out ({req.get('retries', 0):,} client retries)"
            if req.get("timed_out") or req.get("retries") else "")),
        ("Throughput", f"{_fmt(thr['requests_per_s'])} req/s · {_fmt(thr['output_tokens_per_s'])} output tok/s · "
         f"{_fmt(thr['input_tokens_per_s'])} input tok/s"),
        ("Utilisation", f"busy {_fmt(100 * (util['busy_fraction'] or 0))}% · KV mean "
         f"{_fmt(100 * (util['kv_fraction_mean'] or 0))}% / P95 {_fmt(100 * (util['kv_fraction_p95'] or 0))}%"),
        ("SLO", f"attainment {_fmt(100 * (slo['attainment'] or 0))}% · "
         + ("all P95 targets met" if slo["met"] else "P95 targets MISSED")),
        ("Cost", f"${_fmt(cost['total_usd'])} total (self-host ${_fmt(cost['self_host_usd'])}, API "
         f"${_fmt(cost['api_usd'])}) · ${_fmt(cost['usd_per_mtok_output'])} per M output tokens · "
         f"${_fmt(cost['usd_per_mtok_total'])} per M tokens"),
    ]
    if "energy" in summary:  # sim/energy.py
        e = summary["energy"]
        rows.append(("Energy", f"{_fmt(e['kwh'])} kWh · {_fmt(e['avg_power_kw'])} kW mean (PUE {_fmt(e['pue'])}) · "
                               f"{_fmt(e['co2_kg'])} kg CO2 · ${_fmt(e['usd'])} of electricity "
                               f"(inside the {e['paid_in']})"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    lat_rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{_fmt(lat[key][p])}</td>" for p in ("mean", "p50", "p90", "p95", "p99"))
        + "</tr>"
        for name, key in (("TTFT (s)", "ttft_s"), ("TPOT (s)", "tpot_s"), ("E2E (s)", "e2e_s"), ("queue wait (s)", "queue_wait_s"))
    )
    return (
        f"<table class='kv'>{body}</table><h2>Latency</h2><table class='lat'><tr><th></th><th>mean</th><th>P50</th>"
        f"<th>P90</th><th>P95</th><th>P99</th></tr>{lat_rows}</table>"
    )


def write_report(
    out_dir: Path,
    summary: dict[str, Any],
    req: pd.DataFrame | None,
    fleet_ts: pd.DataFrame,
    node_ts: pd.DataFrame,
    duration_s: float,
    title: str,
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write tables, summary, PNG plots and ``report.html`` into ``out_dir``; return the paths.

    With ``req=None`` (a streamed run, whose ``requests.parquet`` is already written) the latency CDFs are
    drawn from ``curves`` (quantile curves of the streamed histograms)."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    if req is not None:
        paths["requests"] = write_parquet(out_dir / "requests.parquet", req)
        curves = latency_curves(req)
    paths |= {
        "timeseries": write_parquet(out_dir / "timeseries.parquet", fleet_ts),
        "timeseries_nodes": write_parquet(out_dir / "timeseries_nodes.parquet", node_ts),
        "summary": write_json(out_dir / "summary.json", summary),
    }
    images: list[tuple[str, bytes]] = []
    for name, fig in (
        ("latency_cdf.png", plot_latency_cdfs(curves or {}, summary.get("slo"),
                                              summary.get("requests", {}).get("completed"))),
        ("load_over_time.png", plot_load(fleet_ts)),
        ("node_utilisation.png", plot_node_utilisation(node_ts, duration_s)),
    ):
        images.append((name, _save_png(out_dir / name, fig)))
        paths[name] = out_dir / name
    imgs = "".join(
        f"<figure><img alt='{n}' src='data:image/png;base64,{base64.b64encode(b).decode()}'/></figure>" for n, b in images
    )
    fleet = summary.get("fleet", {})
    subtitle = (
        f"{fleet.get('nodes')} × {fleet.get('gpus_per_node')}× {fleet.get('gpu')} · {fleet.get('model')} "
        f"({fleet.get('weights')} weights, {fleet.get('kv_cache')} KV) · seed {summary.get('seed')}"
    )
    doc = f"""<!doctype html><html><head><meta charset='utf-8'><title>capsim · {html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}
table.lat td{{text-align:right;font-variant-numeric:tabular-nums}}img{{max-width:100%}}figure{{margin:1.5em 0}}
.sub{{color:#666}}</style></head><body><h1>capsim report · {html.escape(title)}</h1>
<p class='sub'>{html.escape(subtitle)}</p>{_summary_html(summary)}<h2>Plots</h2>{imgs}
<p class='sub'>Tables: requests.parquet (one row per request), timeseries.parquet (fleet, one row per sample),
timeseries_nodes.parquet (one row per node and sample), summary.json.</p></body></html>"""
    paths["report"] = write_text(out_dir / "report.html", doc)
    return paths
