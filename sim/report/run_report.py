"""Plots and the self-contained HTML report of one run.

Each plot is a small function that takes tidy DataFrames and returns a matplotlib Figure; ``write_report``
saves them as PNGs beside the Parquet tables and ``summary.json`` and embeds them in ``report.html``.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sim.core.atomic_io import atomic_write, write_json, write_parquet, write_text
from sim.metrics.summary import SloVerdict, Summary
from sim.report.htmldoc import data_uri

CDF_PCTS = np.linspace(0.1, 99.9, 400)


def latency_curves(req: pd.DataFrame, warmup_s: float = 0.0,
                   classes: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(sorted values, cumulative fraction) of TTFT, TPOT and E2E over the requests the summary's latencies
    describe: served (completed by the fleet or spilled to the API), arrived at or after ``warmup_s``, of
    ``classes`` (the interactive ones; None: every class)."""
    keep = req["status"].isin(["completed", "spilled"]).to_numpy() & (req["arrival_s"] >= warmup_s).to_numpy()
    if classes is not None:
        keep &= req["class"].astype(str).isin(classes).to_numpy()
    done = req[keep]
    out = {}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        x = np.sort(done[col].dropna().to_numpy())
        out[col] = (x, np.arange(1, len(x) + 1) / max(len(x), 1))
    return out


def plot_latency_cdfs(curves: dict[str, tuple[np.ndarray, np.ndarray]], slo: SloVerdict | None = None,
                      n_requests: int | None = None, p95_s: dict[str, float | None] | None = None,
                      population: str = "completed requests") -> Figure:
    """CDFs of TTFT, TPOT and E2E (from :func:`latency_curves`, or quantile curves of a streamed run), with
    the P95 (``p95_s`` by column: the summary's, so the plot and the tables agree; else read off the curve)
    and the SLO targets as vertical lines."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    targets = slo.targets if slo is not None else {}
    for ax, col, title, key in (
        (axes[0], "ttft_s", "Time to first token", "ttft_p95_s"),
        (axes[1], "tpot_s", "Time per output token", "tpot_p95_s"),
        (axes[2], "e2e_s", "End-to-end latency", "e2e_p95_s"),
    ):
        x, frac = curves[col]
        if len(x):
            ax.plot(x, frac, color="C0", lw=1.6)
            given = (p95_s or {}).get(col)
            p95 = float(given) if given is not None else float(np.interp(0.95, frac, x))
            ax.axvline(p95, color="C1", lw=1, label=f"P95 = {p95:.3g} s")
        if key in targets:
            ax.axvline(targets[key].target, color="C3", ls="--", lw=1, label=f"SLO {targets[key].target:g} s")
        ax.axhline(0.95, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log" if len(x) and x.min() > 0 and x.max() / max(x.min(), 1e-9) > 50 else "linear")
        if ax.get_xscale() == "log":  # plain numbers at 1-2-5 (1 only over 3+ decades); minor ticks unlabelled
            decades = float(np.log10(x.max() / x.min()))
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:  # at most 6 ticks: TPOT's 0.0100 … 0.0250 ran together at 7
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlabel(f"{title} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    label = f" ({n_requests:,} {population})" if n_requests is not None else f" ({population})"
    fig.suptitle(f"Latency distributions{label}")
    return fig


def _legend_above(ax: Any, extra_handles: list | None = None, right_of: Any = None) -> None:
    """The legend outside the axes, on the right (the figure's constrained layout makes room): never over
    the data; with ``right_of`` (a twin axis), beyond that axis's tick labels and label."""
    handles, labels = ax.get_legend_handles_labels()
    for h in extra_handles or []:
        handles.append(h)
        labels.append(h.get_label())
    if not handles:
        return
    x0, where = 1.01, ax.transAxes
    if right_of is not None:  # past the twin axis's ticks and label: an offset in inches, which layout keeps
        from matplotlib.transforms import ScaledTranslation

        fig = ax.figure
        fig.canvas.draw()
        beyond_px = right_of.get_tightbbox(fig.canvas.get_renderer()).x1 - ax.bbox.x1
        x0, where = 1.0, ax.transAxes + ScaledTranslation(beyond_px / fig.dpi + 0.08, 0, fig.dpi_scale_trans)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(x0, 1.0), bbox_transform=where, fontsize=8,
              frameon=False, borderaxespad=0.0)


def plot_load(fleet_ts: pd.DataFrame, kv_capacity_tokens_total: int | None = None) -> Figure:
    """Arrival and completion rates, queue length and running batch, and MFU / MBU, KV-cache use and batch fill
    over time."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True, constrained_layout=True)
    span_s = float(fleet_ts["time_s"].iloc[-1]) if len(fleet_ts) else 0.0
    hours = span_s > 3 * 3600
    t = fleet_ts["time_s"] / (3600.0 if hours else 60.0)
    dt = float(fleet_ts["time_s"].diff().median()) if len(fleet_ts) > 1 else 1.0
    win = max(1, round(max(10.0, span_s / 300) / dt))  # smooth rates over ≥ 10 s
    ax = axes[0]
    ax.plot(t, fleet_ts["arrival_rate_rps"].rolling(win, min_periods=1).mean(), lw=1, color="C0", label="arrivals")
    ax.plot(t, fleet_ts["completion_rate_rps"].rolling(win, min_periods=1).mean(), lw=1, color="C2",
            alpha=0.8, label="completions")
    ax.set_ylabel("requests / s")
    ax.set_title(f"Load (rolling mean over {win * dt:g} s)")
    extra = []
    ax2 = None
    if "nodes_up" in fleet_ts and fleet_ts["nodes_up"].nunique() > 1:
        ax2 = ax.twinx()
        extra = ax2.step(t, fleet_ts["nodes_up"], where="post", color="k", lw=1, alpha=0.6, label="nodes up")
        ax2.set_ylabel("nodes up")
        ax2.set_ylim(0, fleet_ts["nodes_up"].max() * 1.15 + 1)
    _legend_above(ax, extra, right_of=ax2)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t, fleet_ts["running_seqs"], lw=1, color="C1", label="running sequences (batch)")
    ax.plot(t, fleet_ts["queue_len"], lw=1, color="C3", label="waiting in queue")
    ax.set_ylabel("requests (fleet total)")
    ax.set_title("Running batch and queue")
    _legend_above(ax)
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(t, 100 * fleet_ts["kv_fraction"], lw=1, color="C4", label="KV cache in use")
    if "batch_fill" in fleet_ts:
        ax.plot(t, 100 * fleet_ts["batch_fill"], lw=1, color="C1", alpha=0.8,
                label="batch fill (running / max_num_seqs)")
    for col, color, label in (("mfu", "C0", "MFU (model FLOPs / peak)"), ("mbu", "C9", "MBU (HBM bytes / peak)")):
        if col in fleet_ts:
            ax.plot(t, 100 * fleet_ts[col].rolling(win, min_periods=1).mean(), lw=1.2, color=color, label=label)
    ax.plot(t, 100 * fleet_ts["busy_fraction"], lw=1, color="C5", alpha=0.5, ls=":",
            label="steps running (busy, not capacity)")
    ax.set_ylabel("% of capacity")
    ax.set_ylim(0, 105)
    ax.set_xlabel("simulated time (h)" if hours else "simulated time (min)")
    ax.set_title("Compute and bandwidth utilisation, KV-cache use, batch fill")
    _legend_above(ax)
    ax.grid(alpha=0.3)
    return fig


def plot_node_utilisation(node_ts: pd.DataFrame, duration_s: float) -> Figure:
    """Per node over the arrival window, while up: busy time, batch fill (running / max_num_seqs) and KV-cache
    use — a balance check for the router."""
    win = node_ts[node_ts["time_s"] <= duration_s + 1e-9]
    if "up" in win:
        win = win[win["up"]]
    cols = [c for c in ("mfu", "mbu", "batch_fill", "kv_fraction", "busy_fraction") if c in win]
    g = win.groupby("node")[cols].mean()
    pools = win.groupby("node")["pool"].first().astype(str) if "pool" in win else None
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(g) + 3), 3.8), constrained_layout=True)
    x = np.arange(len(g))
    width = 0.8 / len(cols)
    labels = {"busy_fraction": ("steps running", "C5"), "mfu": ("MFU", "C0"), "mbu": ("MBU", "C9"),
              "batch_fill": ("batch fill", "C1"), "kv_fraction": ("KV cache in use", "C4")}
    for i, col in enumerate(cols):
        label, color = labels[col]
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * g[col], width=width, label=label, color=color)
    if pools is not None:  # fleet.pools: each node's pool under its number
        ax.set_xticks(x, [f"{i}\n{pools[i]}" for i in g.index])
        ax.set_xlabel("node (pool)")
    else:
        ax.set_xticks(x, [str(i) for i in g.index])
        ax.set_xlabel("node")
    ax.set_ylabel("% (mean while up)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-node utilisation")
    _legend_above(ax)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_pools(node_ts: pd.DataFrame) -> Figure:
    """Per pool over time (``fleet.pools`` runs): running sequences (sum over the pool's nodes), and mean KV-cache
    use and MFU of its nodes up."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    up = node_ts[node_ts["up"]] if "up" in node_ts else node_ts
    span_s = float(node_ts["time_s"].max()) if len(node_ts) else 0.0
    hours = span_s > 3 * 3600
    scale = 3600.0 if hours else 60.0
    dt = float(np.median(np.diff(np.unique(node_ts["time_s"])))) if node_ts["time_s"].nunique() > 1 else 1.0
    win = max(1, round(max(10.0, span_s / 300) / dt))
    col = node_ts["pool"]
    pools = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.unique())
    for i, name in enumerate(pools):
        mine = up[up["pool"] == name].groupby("time_s")
        if not len(mine):
            continue
        t = np.asarray(mine.size().index) / scale
        color = f"C{i % 10}"
        axes[0].plot(t, mine["running_seqs"].sum().rolling(win, min_periods=1).mean(), lw=1.2, color=color, label=name)
        axes[1].plot(t, 100 * mine["kv_fraction"].mean(), lw=1.2, color=color, label=name)
        axes[2].plot(t, 100 * mine["mfu"].mean().rolling(win, min_periods=1).mean(), lw=1.2, color=color, label=name)
    for ax, ylabel, title in (
        (axes[0], "running sequences",
         f"Running batch per pool (sum over its nodes, rolling mean over {win * dt:g} s)"),
        (axes[1], "% of KV capacity", "KV cache in use per pool (mean over its nodes up)"),
        (axes[2], "% of peak FLOPs", "MFU per pool (mean over its nodes up)"),
    ):
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        _legend_above(ax)
    axes[2].set_xlabel("simulated time (h)" if hours else "simulated time (min)")
    return fig


def latency_over_time(req: pd.DataFrame, warmup_s: float, duration_s: float, window_s: float,
                      ttft_target: float | None, tpot_target: float | None) -> pd.DataFrame:
    """Per bin of arrival time (``window_s`` bins, finer when the run is short: at least ~30 bins): P95 TTFT
    and TPOT of served requests, and the share of arrivals served within both targets (E2E targets and
    per-class targets are in ``summary.slo``; this plot is the scenario-wide view)."""
    span = max(duration_s - warmup_s, 1.0)
    width = min(window_s, max(span / 30.0, 1.0))
    w = req[(req["arrival_s"] >= warmup_s) & (req["arrival_s"] < duration_s)]
    k = np.floor((w["arrival_s"].to_numpy() - warmup_s) / width).astype(int)
    served = w["status"].isin(["completed", "spilled"]).to_numpy()
    ttft, tpot = w["ttft_s"].to_numpy(dtype=float), w["tpot_s"].to_numpy(dtype=float)
    ok = served.copy()
    with np.errstate(invalid="ignore"):
        if ttft_target is not None:
            ok &= ttft <= ttft_target
        if tpot_target is not None:
            ok &= np.isnan(tpot) | (tpot <= tpot_target)
    rows = []
    for b in np.unique(k):
        m = k == b
        sm = m & served
        t_ok, p_ok = ttft[sm], tpot[sm & ~np.isnan(tpot)]
        rows.append({"start_s": warmup_s + b * width, "end_s": min(warmup_s + (b + 1) * width, duration_s),
                     "ttft_p95_s": float(np.percentile(t_ok, 95)) if len(t_ok) else np.nan,
                     "tpot_p95_s": float(np.percentile(p_ok, 95)) if len(p_ok) else np.nan,
                     "within_targets": float(ok[m].mean())})
    return pd.DataFrame(rows)


def window_label(window_s: float) -> str:
    """``1-h``, ``15-min`` or ``30-s``."""
    if window_s >= 3600 and window_s % 3600 == 0:
        return f"{window_s / 3600:g}-h"
    if window_s >= 60 and window_s % 60 == 0:
        return f"{window_s / 60:g}-min"
    return f"{window_s:g}-s"


def plot_latency_over_time(bins: pd.DataFrame, slo: SloVerdict, duration_s: float) -> Figure:
    """P95 TTFT, P95 TPOT and the share of requests within the targets over arrival time, each with its SLO
    line; the worst ``slo.window_s`` window (lowest attainment) is shaded."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    hours = duration_s > 3 * 3600
    scale = 3600.0 if hours else 60.0
    targets = slo.targets
    worst = slo.worst_window
    many = len(slo.windows) > 1
    panels = (("ttft_p95_s", "P95 time to first token (s)", "ttft_p95_s", "C0"),
              ("tpot_p95_s", "P95 time per output token (s)", "tpot_p95_s", "C1"),
              ("within_targets", "requests within targets (%)", None, "C2"))
    for ax, (col, label, key, color) in zip(axes, panels):
        if len(bins):
            x = np.append(bins["start_s"].to_numpy(), bins["end_s"].to_numpy()[-1]) / scale
            y = bins[col].to_numpy(dtype=float) * (100.0 if col == "within_targets" else 1.0)
            ax.stairs(y, x, color=color, lw=1.6, baseline=None,
                      label=label.replace(" (s)", "").replace(" (%)", ""))
        if key is not None and key in targets:
            target = targets[key].target
            ax.axhline(target, color="C3", ls="--", lw=1.2, label=f"SLO {target:g} s")
            top = np.nanmax([bins[col].max() if len(bins) else 0.0, target])
            if len(bins) and bins[col].max() > 20 * target:
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, 1.15 * top)
        if col == "within_targets":
            goal = 100 * slo.attainment_target
            ax.axhline(goal, color="C3", ls="--", lw=1.2, label=f"attainment target {goal:g} %")
            ax.set_ylim(0, 105)
        if worst is not None and many:
            ax.axvspan(worst.start_s / scale, worst.end_s / scale, color="C3", alpha=0.12,
                       label=f"worst {window_label(slo.window_s)} window "
                             f"({100 * worst.attainment:.1f} % within targets)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        _legend_above(ax)
    axes[-1].set_xlabel("arrival time (h)" if hours else "arrival time (min)")
    fig.suptitle("Latency against the SLO over time (by arrival; served requests for the P95s)")
    return fig


def plot_cost_breakdown(summary: Summary) -> Figure:
    """Where the money goes: self-hosted GPUs by kind (reserved / on-demand / spot) and the hosted API, in USD
    and per million output tokens, the share of GPU spend that buys unused capacity (1 − load factor) marked."""
    cost = summary.cost
    parts = {f"GPUs, {k.replace('_', '-')}": v for k, v in cost.self_host_usd_by_kind.items() if v}
    if cost.self_host_usd_by_pool and len(cost.self_host_usd_by_pool) > 1:  # fleet.pools: each pool's part
        roles = {n: p.role for n, p in (summary.pools or {}).items()}
        parts = {f"GPUs, pool {n}" + (f" ({roles[n]})" if roles.get(n, "mixed") not in ("mixed", n) else ""): v
                 for n, v in cost.self_host_usd_by_pool.items() if v}
    if not parts and cost.self_host_usd:
        parts["GPUs"] = cost.self_host_usd
    if cost.api_usd:
        parts["hosted API"] = cost.api_usd
    total = sum(parts.values()) or 1.0
    per_m = cost.usd_per_mtok_output
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * max(len(parts), 1) + 2.2), constrained_layout=True)
    names = list(parts) or ["(nothing billed)"]
    vals = np.array(list(parts.values()) or [0.0])
    y = np.arange(len(names))
    colors = ["C0" if n.startswith("GPUs") else "C1" for n in names]
    for ax, scale, unit in ((axes[0], 1.0, "USD over the run"), (axes[1], (per_m or 0.0) / total,
                                                                 "USD per M output tokens")):
        v = vals * scale
        ax.barh(y, v, color=colors)
        for i, x in enumerate(v):
            ax.annotate(f"\\${x:,.3g} ({100 * vals[i] / total:.0f} %)", (x, i), textcoords="offset points",
                        xytext=(4, 0), va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.set_xlabel(unit)
        ax.set_xlim(0, max(float(v.max()) * 1.45, 1e-9))
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    lf = summary.utilisation.load_factor
    gpu_usd = sum(v for k, v in parts.items() if k.startswith("GPUs"))
    if lf is not None and gpu_usd > 0 and lf < 1:
        idle = gpu_usd * (1 - lf)
        axes[0].set_title(f"Cost: \\${total:,.2f}; ≈ \\${idle:,.2f} of the GPU spend buys headroom "
                          f"(load factor {lf:.2f})", fontsize=10)
    else:
        axes[0].set_title(f"Cost: \\${total:,.2f}", fontsize=10)
    axes[1].set_title("serving cost" + ("" if per_m is None else f": \\${per_m:,.3f}") + " per M output tokens",
                      fontsize=10)
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


def _headline_html(summary: Summary) -> str:
    """The lines a planner reads first: load / headroom / bottleneck, overload, SLO verdict."""
    from sim.metrics.headline import classes_missed, load_line, overload_line, slo_line

    slo = summary.slo
    over = summary.overload.overloaded
    lines = [("Capacity", load_line(summary.utilisation, over, summary.duration_s),
              "warn" if over or (summary.utilisation.load_factor or 0) >= 1 else ""),
             ("Overload", overload_line(summary), "bad" if over else ""),
             ("SLO", slo_line(slo), "good" if slo.met and not classes_missed(slo) else "bad")]
    return "<div class='headline'>" + "".join(
        f"<p class='{cls}'><b>{html.escape(k)}</b> {html.escape(v)}</p>" for k, v, cls in lines) + "</div>"


def _class_table_html(slo: SloVerdict) -> str:
    """Per-class SLO table: arrivals, completed, attainment, P50/P95 TTFT, TPOT, E2E, verdict."""
    by = slo.by_class
    if not by:
        return ""
    head = ("<tr><th>class</th><th>arrived after warm-up</th><th>completed</th><th>attainment</th>"
            "<th>P50 TTFT (s)</th><th>P95 TTFT (s)</th><th>P50 TPOT (s)</th><th>P95 TPOT (s)</th><th>P95 E2E (s)</th>"
            "<th>SLO</th></tr>")
    rows = []
    for name, r in by.items():
        att = r.attainment
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td>{_fmt(r.arrived)}</td><td>{_fmt(r.completed)}</td>"
            f"<td>{'–' if att is None else f'{100 * att:.1f} %'}</td><td>{_fmt(r.ttft_s.p50)}</td>"
            f"<td>{_fmt(r.ttft_s.p95)}</td><td>{_fmt(r.tpot_s.p50)}</td><td>{_fmt(r.tpot_s.p95)}</td>"
            f"<td>{_fmt(r.e2e_s.p95)}</td><td class='{'good' if r.met else 'bad'}'>"
            f"{'met' if r.met else 'MISSED'}</td></tr>")
    return f"<h2>SLO by class</h2><table class='lat'>{head}{''.join(rows)}</table>"


def _pools_html(summary: Summary) -> str:
    """Per-pool and per-model tables of a ``fleet.pools`` run (empty otherwise)."""
    from sim.metrics.headline import pool_usd_per_mtok_share

    pools, models = summary.pools or {}, summary.models or {}
    if not pools:
        return ""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}&nbsp;%"  # kept on one line in a narrow column

    head = ("<tr><th>pool</th><th>role</th><th>nodes × GPUs</th><th>model</th><th>completed / sent (whole run)</th>"
            "<th>P95 TTFT (s)</th><th>P95 TPOT (s)</th><th>load factor</th><th>KV mean</th><th>MFU mean</th>"
            "<th>GPU-hours</th><th>paid</th><th>self-host $</th><th>$ / M output tokens: its part of the model's</th>"
            "<th>$ / M output tokens it completed</th></tr>")
    rows = []
    for name, p in pools.items():
        u, c, lat = p.utilisation, p.cost, p.latency
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(p.role)}</td>"
            f"<td>{p.nodes} × {p.gpus_per_node}× {html.escape(p.gpu)}"
            + (f" + {p.spot_nodes} spot" if p.spot_nodes else "")
            + (f" + ≤ {p.on_demand_max_nodes} on-demand" if p.on_demand_max_nodes else "")
            + f"</td><td>{html.escape(p.model)}</td><td>{_fmt(p.requests.completed)} / {_fmt(p.requests.sent)}</td>"
            f"<td>{_fmt(lat.ttft_s.p95)}</td>"
            f"<td>{_fmt(lat.tpot_s.p95)}</td><td>{_fmt(u.load_factor)}</td>"
            f"<td>{pct(u.kv_fraction_mean)}</td><td>{pct(u.mfu_mean)}</td><td>{_fmt(c.gpu_hours)}</td>"
            f"<td>{html.escape(c.pricing_mode)}</td><td>{_fmt(c.self_host_usd)}</td>"
            f"<td>{_fmt(pool_usd_per_mtok_share(summary, name))}</td>"
            f"<td>{'–' if p.role != 'mixed' else _fmt(c.usd_per_mtok_output)}</td></tr>")
    note = ("<p class='sub'>The serving cost is the fleet's Cost row and each model's $ / M output tokens below. A "
            "pool's part is its self-host $ ÷ its model's output tokens: the parts of a model's pools (and its API "
            "spend) add up to the model's figure. The $ / M output tokens it completed divides by the tokens "
            "completed on its nodes: a way to compare mixed pools' GPUs, left out for prefill and decode pools, "
            "each of which does half of every request's work.</p>")
    # 15 columns: compact cells, and a box that scrolls rather than spills past the page at any width
    out = f"<h2>Pools</h2><div class='scroll'><table class='lat pools'>{head}{''.join(rows)}</table></div>{note}"
    mhead = ("<tr><th>model</th><th>classes</th><th>pools</th><th>arrived after warm-up</th><th>SLO attainment</th>"
             "<th>SLO</th><th>P95 TTFT (s)</th><th>P95 TPOT (s)</th><th>cost $ (pools + API)</th>"
             "<th>$ / M output tokens</th></tr>")
    mrows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(', '.join(m.classes))}</td>"
        f"<td>{html.escape(', '.join(m.pools))}</td><td>{_fmt(m.arrived)}</td><td>{pct(m.attainment)}</td>"
        f"<td class='{'good' if m.met else 'bad'}'>{'met' if m.met else 'MISSED'}</td>"
        f"<td>{_fmt(m.ttft_s.p95)}</td><td>{_fmt(m.tpot_s.p95)}</td><td>{_fmt(m.cost_usd)}</td>"
        f"<td>{_fmt(m.usd_per_mtok_output)}</td></tr>" for name, m in models.items())
    return out + f"<h2>Models</h2><table class='lat'>{mhead}{mrows}</table>"


def _after_warmup(summary: Summary) -> str:
    if summary.warmup_s > 0:
        return f"the interactive arrivals after the {summary.warmup_s:g}-s warm-up"
    return "all interactive arrivals"


def _warmup_note(summary: Summary) -> str:
    """Where the Requests row's counts and the SLO tables' (arrivals after warm-up) part ways."""
    if summary.warmup_s <= 0:
        return ""
    from sim.metrics.headline import arrived_after_warmup

    after = arrived_after_warmup(summary)
    return (f", warm-up included; {after:,} interactive requests arrived after the {summary.warmup_s:g}-s warm-up: "
            "the SLO, class and model tables count those")


def _summary_html(summary: Summary) -> str:
    req, lat, thr, util, slo, cost = (summary.requests, summary.latency, summary.throughput, summary.utilisation,
                                      summary.slo, summary.cost)
    w = slo.worst_window
    rows = [
        ("Requests", f"{req.arrived:,} arrived · {req.completed:,} completed · {req.rejected:,} rejected · "
         f"{req.spilled:,} spilled · {req.in_flight:,} in flight"
         + (f" · {req.timed_out:,} timed out ({req.retries:,} client retries)"
            if req.timed_out or req.retries else "")
         + f" — over the whole run{_warmup_note(summary)}"),
        ("Throughput", f"{_fmt(thr.offered_requests_per_s)} req/s offered · {_fmt(thr.served_requests_per_s)} "
         f"served · {_fmt(thr.served_output_tokens_per_s)} output tok/s served"),
        ("Utilisation", f"MFU {_fmt(100 * (util.mfu_mean or 0))}% "
         f"(P95 {_fmt(100 * (util.mfu_p95 or 0))}%)"
         f" · MBU {_fmt(100 * (util.mbu_mean or 0))}% (P95 {_fmt(100 * (util.mbu_p95 or 0))}%) · KV mean "
         f"{_fmt(100 * (util.kv_fraction_mean or 0))}% / P95 {_fmt(100 * (util.kv_fraction_p95 or 0))}% · "
         f"steps running {_fmt(100 * (util.busy_fraction or 0))}% of the time"),
        ("SLO", f"attainment {_fmt(100 * (slo.attainment or 0))}% of {_after_warmup(summary)} (target "
         f"{_fmt(100 * slo.attainment_target)}%)"
         + ("" if w is None else f" · worst window {w.start_s:,.0f}–{w.end_s:,.0f} s: "
                                 f"{_fmt(100 * w.attainment)}%")
         + " · P95 targets " + ("met" if slo.percentile_targets_met else "MISSED")),
        ("Cost", f"${_fmt(cost.total_usd)} total (self-host ${_fmt(cost.self_host_usd)}, API "
         f"${_fmt(cost.api_usd)}) · ${_fmt(cost.usd_per_mtok_output)} per M output tokens"
         + (" (serving cost: all pools + API)" if summary.pools else "") + " · "
         f"${_fmt(cost.usd_per_mtok_total)} per M tokens (input + output)"),
    ]
    e = summary.energy  # sim/metrics/energy.py
    rows.append(("Energy", f"{_fmt(e.kwh)} kWh · {_fmt(e.avg_power_kw)} kW mean (PUE {_fmt(e.pue)}) · "
                           f"{_fmt(e.co2_kg)} kg CO2 · ${_fmt(e.usd)} of electricity "
                           f"(inside the {e.paid_in})"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    lat_rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{_fmt(v)}</td>"
                                         for v in (stats.mean, stats.p50, stats.p90, stats.p95, stats.p99))
        + "</tr>"
        for name, stats in (("TTFT (s)", lat.ttft_s), ("TPOT (s)", lat.tpot_s), ("E2E (s)", lat.e2e_s),
                            ("queue wait (s)", lat.queue_wait_s))
    )
    return (
        f"{_headline_html(summary)}<table class='kv'>{body}</table>{_pools_html(summary)}{_class_table_html(slo)}"
        "<h2>Latency</h2>"
        f"<table class='lat'><tr><th></th><th>mean</th><th>P50</th>"
        f"<th>P90</th><th>P95</th><th>P99</th></tr>{lat_rows}</table>"
    )


def write_report(
    out_dir: Path,
    summary: Summary,
    req: pd.DataFrame | None,
    fleet_ts: pd.DataFrame,
    node_ts: pd.DataFrame,
    duration_s: float,
    title: str,
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    n_served: int | None = None,
) -> dict[str, Path]:
    """Write tables, summary, PNG plots and ``report.html`` into ``out_dir``; return the paths.

    With ``req=None`` (a streamed run, whose ``requests.parquet`` is already written) the latency CDFs are
    drawn from ``curves`` (quantile curves of the streamed histograms) and ``n_served`` (the requests they
    describe) titles them, as the in-memory run's count does."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    if req is not None:
        paths["requests"] = write_parquet(out_dir / "requests.parquet", req)
        curves = latency_curves(req, summary.warmup_s, list(summary.slo.by_class) or None)
    paths |= {
        "timeseries": write_parquet(out_dir / "timeseries.parquet", fleet_ts),
        "timeseries_nodes": write_parquet(out_dir / "timeseries_nodes.parquet", node_ts),
        "summary": write_json(out_dir / "summary.json", summary.to_json()),
    }
    images: list[tuple[str, bytes]] = []
    slo = summary.slo
    if req is not None:
        tg = slo.targets
        bins = latency_over_time(req, summary.warmup_s, duration_s, float(slo.window_s or 3600.0),
                                 tg["ttft_p95_s"].target if "ttft_p95_s" in tg else None,
                                 tg["tpot_p95_s"].target if "tpot_p95_s" in tg else None)
    else:  # streamed: the summary's windows
        bins = pd.DataFrame([{"start_s": w.start_s, "end_s": w.end_s, "ttft_p95_s": w.ttft_p95_s,
                              "tpot_p95_s": w.tpot_p95_s, "within_targets": w.attainment}
                             for w in slo.windows], columns=["start_s", "end_s", "ttft_p95_s",
                                                              "tpot_p95_s", "within_targets"])
        bins = bins.astype(float)
    for name, fig in (
        ("latency_over_time.png", plot_latency_over_time(bins, slo, duration_s)),
        ("cost_breakdown.png", plot_cost_breakdown(summary)),
        ("latency_cdf.png", plot_latency_cdfs(
            curves or {}, slo, len(curves["e2e_s"][0]) if req is not None and curves else n_served,
            {c: getattr(summary.latency, c).p95 for c in ("ttft_s", "tpot_s", "e2e_s")},
            "served interactive requests" + (f" that arrived after the {summary.warmup_s:g}-s warm-up"
                                             if summary.warmup_s > 0 else ""))),
        ("load_over_time.png", plot_load(fleet_ts)),
        ("node_utilisation.png", plot_node_utilisation(node_ts, duration_s)),
        *((("pool_load.png", plot_pools(node_ts)),) if summary.pools is not None and "pool" in node_ts else ()),
    ):
        images.append((name, _save_png(out_dir / name, fig)))
        paths[name] = out_dir / name
    imgs = "".join(f"<figure><img alt='{n}' src='{data_uri(b)}'/></figure>" for n, b in images)
    fleet = summary.fleet
    subtitle = (
        f"{fleet.nodes} × {fleet.gpus_per_node}× {fleet.gpu} · {fleet.model} "
        f"({fleet.weights} weights, {fleet.kv_cache} KV) · seed {summary.seed}"
    )
    gh = summary.cost.gpu_hours_by_kind
    if gh.get("on_demand") or gh.get("spot"):  # autoscaled: fleet.nodes are the reserved ones only
        subtitle = (f"{fleet.nodes} reserved + autoscaled (mean {summary.utilisation.nodes_up_mean or 0:.1f} up) "
                    + subtitle.split(" ", 1)[1])
    if summary.pools is not None:
        subtitle = "pools: " + " · ".join(
            f"{n}: {p.nodes} × {p.gpus_per_node}× {p.gpu}, {p.model} ({p.weights} weights)"
            for n, p in summary.pools.items()) + f" · seed {summary.seed}"
    doc = f"""<!doctype html><html><head><meta charset='utf-8'><title>capsim · {html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}
table.lat td{{text-align:right;font-variant-numeric:tabular-nums}}.scroll{{overflow-x:auto}}
table.pools th,table.pools td{{padding:4px 6px}}img{{max-width:100%}}figure{{margin:1.5em 0}}
.sub{{color:#666}}.headline{{border:1px solid #ccc;border-radius:6px;padding:.4em 1em;margin:1em 0;font-size:1.05em}}
.headline p{{margin:.4em 0}}.bad{{color:#b00020}}.good{{color:#1b7f3b}}.warn{{color:#a65e00}}</style></head>
<body><h1>capsim report · {html.escape(title)}</h1>
<p class='sub'>{html.escape(subtitle)}</p>{_summary_html(summary)}<h2>Plots</h2>{imgs}
<p class='sub'>Tables: requests.parquet (one row per request), timeseries.parquet (fleet, one row per sample),
timeseries_nodes.parquet (one row per node and sample), summary.json.</p></body></html>"""
    paths["report"] = write_text(out_dir / "report.html", doc)
    return paths
