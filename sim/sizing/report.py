"""``capsim size`` for people: the plain-text tables and the plots (goodput and the minimum fleet against the
rules; cost per GPU type)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.sizing.results import MultiGpuSizing, SizingResult
from sim.sizing.rules import rate_basis

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def format_report(res: SizingResult) -> str:
    """The plain-text table ``capsim size`` prints."""
    sc = res.scenario
    f = sc.fleet
    st = res.rate_stats
    slo = ", ".join(f"{k.replace('_p95_s', '').upper()} P95 ≤ {v:g} s" for k, v in res.slo_targets().items())
    gp = res.goodput
    hours = sc.duration_s / 3600.0
    lines = [
        f"capsim size · {sc.name} · {f.model} on {f.gpus_per_node}× {f.gpu} per node · SLO {slo or 'none'}",
        f"  traffic    mean {st['mean_rps']:.2f} · P50 {st['p50_rps']:.2f} · P90 {st['p90_rps']:.2f} · "
        f"P95 {st['p95_rps']:.2f} · P99 {st['p99_rps']:.2f} · peak {st['peak_rps']:.2f} req/s "
        f"({rate_basis(sc)})",
        f"  goodput    {gp.rate_rps:.2f} req/s per node (one node meets the SLO in {len(gp.seeds)}/{len(gp.seeds)} "
        f"seeds; fails at {gp.upper_rps:.2f}; bisection to {100 * gp.rel_tol:g} %, {gp.horizon_s:,.0f}-s runs)",
        f"  direct     ⌈peak {st['peak_rps']:.2f} ÷ {gp.rate_rps:.2f}⌉ = {res.peak_nodes} node(s)",
    ]
    if res.min_nodes is None:
        lines.append(f"  simulated  no fleet of up to {res.max_nodes} nodes meets the SLO in every seed")
    else:
        rep = res.points[res.min_nodes]
        usd = rep.mean("cost.total_usd")
        lines.append(f"  simulated  {res.min_nodes} node(s): {res.confidence()['statement']}")
        per_m = rep.mean("cost.usd_per_mtok_output")
        usd_run = "–" if usd is None else f"${usd:,.2f}"
        usd_h = "–" if usd is None else f"${usd / hours:,.2f}"
        lines.append(f"             cost {usd_run} for the {sc.duration_s:,.0f}-s run ({usd_h}/h, "
                     + ("–" if per_m is None else f"${per_m:.3f} per M output tokens")
                     + f"), SLO attainment {100 * (rep.mean('slo.attainment') or 0):.2f} % of arrivals"
                     + (" after warm-up" if sc.warmup_s > 0 else "")
                     + f" (target {100 * sc.slo.attainment_target:g} %"
                     + (", worst window too" if sc.slo.require_worst_window else "") + ")")
    lines.append("")
    header = (f"  {'rule':<25}{'workload':<22}{'rate req/s':>11}{'nodes':>7}{'vs sim':>8}{'seeds met':>11}"
              f"{'SLO attain':>12}{'cost USD':>12}{'vs sim USD':>12}{'$/M out tok':>13}")
    lines.append(header)
    lines.append("  " + "─" * (len(header) - 2))
    for row in res.rules_table().to_dict(orient="records"):
        att = row["slo_attainment"]
        dn = row["nodes_vs_min"]
        du = row["usd_vs_min"]
        pm = row.get("usd_per_mtok_output")
        lines.append(
            f"  {row['rule']:<25}{row['workload']:<22}{row['rate_rps']:>11.2f}{row['nodes']:>7d}"
            f"{'–' if dn is None else f'{dn:+d}':>8}{str(row['seeds_met']) + '/' + str(row['seeds']):>11}"
            f"{'–' if att is None else f'{100 * att:.2f} %':>12}{row['total_usd']:>12,.2f}"
            f"{'–' if du is None else f'{du:+,.2f}':>12}"
            f"{'–' if pm is None else f'{pm:.3f}':>13}"
        )
    lines.append("")
    lines.append(f"  {sum(r.n for r in res.points.values()) + sum(r.n for r in gp.evaluations.values())} runs in "
                 f"{res.elapsed_s:.1f} s wall")
    return "\n".join(lines)


def format_gpu_report(multi: MultiGpuSizing) -> str:
    """The plain-text report over several GPU types: each type's :func:`format_report`, then one line per type
    (goodput, simulated minimum, cost of that fleet) and the cheapest type meeting the SLO."""
    parts = [format_report(e.result) for e in multi.entries if e.result is not None]
    prim = multi.primary.result
    assert prim is not None
    hours = prim.scenario.duration_s / 3600.0
    header = (f"  {'GPU type':<16}{'$/GPU-h':>9}{'goodput req/s/node':>20}{'min nodes':>11}{'GPUs':>6}"
              f"{'cost USD':>12}{'USD/h':>10}{'$/M out tok':>13}{'SLO attain':>12}")
    lines = [f"capsim size · {prim.scenario.name} · across GPU types ({hours * 3600:,.0f}-s runs, "
             f"{len(prim.seeds)} seed(s))", header, "  " + "─" * (len(header) - 2)]
    best = multi.cheapest
    for row in multi.gpu_rows():
        price = "–" if row["usd_per_gpu_hour"] is None else f"{row['usd_per_gpu_hour']:.2f}"
        if row["error"]:
            lines.append(f"  {row['gpu']:<16}{price:>9}   cannot run: {row['error']}")
            continue
        if row["min_nodes"] is None:
            lines.append(f"  {row['gpu']:<16}{price:>9}{row['node_goodput_rps']:>20.2f}   no fleet meets the SLO")
            continue
        mark = "  ← cheapest" if row["cheapest"] else ""
        lines.append(f"  {row['gpu']:<16}{price:>9}{row['node_goodput_rps']:>20.2f}{row['min_nodes']:>11d}"
                     f"{row['gpus']:>6d}{row['total_usd']:>12,.2f}{row['usd_per_hour']:>10,.2f}"
                     f"{'–' if row['usd_per_mtok_output'] is None else format(row['usd_per_mtok_output'], '.3f'):>13}"
                     f"{100 * row['slo_attainment']:>10.2f} %{mark}")
    lines.append("")
    if best is None:
        lines.append("  no GPU type meets the SLO")
    else:
        r = best.result
        assert r is not None and r.min_nodes is not None
        lines.append(f"  cheapest meeting the SLO: {best.gpu} — {r.min_nodes} node(s) × "
                     f"{r.scenario.fleet.gpus_per_node} GPU, ${(best.min_fleet_usd or 0) / hours:,.2f}/h")
    runs = sum(sum(x.n for x in e.result.points.values()) + sum(x.n for x in e.result.goodput.evaluations.values())
               for e in multi.entries if e.result is not None)
    lines.append(f"  {runs} runs in {multi.elapsed_s:.1f} s wall")
    return "\n\n".join(parts + ["\n".join(lines)])


def plot_gpu_costs(rows: list[dict[str, Any]]) -> Figure:
    """Bars: cost per hour of each GPU type's simulated minimum fleet (node count and goodput annotated),
    the cheapest highlighted; types with no fleet meeting the SLO are shown as empty slots. ``rows``:
    :meth:`MultiGpuSizing.gpu_rows`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 5), constrained_layout=True)
    x = np.arange(len(rows))
    usd_h = np.array([np.nan if r["usd_per_hour"] is None else r["usd_per_hour"] for r in rows], dtype=float)
    colors = ["C2" if r["cheapest"] else "C0" for r in rows]
    ax.bar(x, np.nan_to_num(usd_h), color=colors)
    for i, row in enumerate(rows):
        if row["min_nodes"] is None:
            text = "cannot run" if row["error"] else "no fleet\nmeets the SLO"
            ax.annotate(text, (i, 0), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
            continue
        ax.annotate(f"${usd_h[i]:,.2f}/h\n{int(row['min_nodes'])} node(s)\n{row['node_goodput_rps']:.2f} req/s/node",
                    (i, usd_h[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, [r["gpu"] for r in rows])
    ax.set_xlabel("GPU type")
    ax.set_ylabel("cost of the simulated minimum fleet (USD per hour)")
    ax.set_ylim(0, (np.nanmax(usd_h) if np.isfinite(usd_h).any() else 1.0) * 1.3)
    ax.set_title("Smallest fleet meeting the SLO, per GPU type (green: cheapest)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_sizing(points: pd.DataFrame, rules: pd.DataFrame, min_nodes: int | None, duration_s: float) -> Figure:
    """Cost (USD per hour) and SLO attainment (% of requests) against node count, every simulated count as a
    marker (filled: all seeds meet the SLO), with the rules' node counts and the simulated minimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    hours = duration_s / 3600.0
    pts = points.sort_values("nodes")
    usd_h = pts["total_usd"] / hours
    ax.plot(pts["nodes"], usd_h, color="C0", lw=1.5, marker="o", label="cost")
    ax.set_xlabel("nodes in the fleet")
    ax.set_ylabel("cost (USD per hour)", color="C0")
    ax.tick_params(axis="y", colors="C0")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    att = 100 * pts["slo_attainment"].astype(float)
    ax2.plot(pts["nodes"], att, color="C2", lw=1.5, label="SLO attainment")
    met = pts["meets_slo"].astype(bool).to_numpy()
    ax2.scatter(pts["nodes"][met], att[met], color="C2", zorder=3, label="meets the SLO (all seeds)")
    ax2.scatter(pts["nodes"][~met], att[~met], facecolor="white", edgecolor="C3", zorder=3,
                label="misses the SLO (some seed)")
    ax2.set_ylabel("SLO attainment (% of requests meeting every target)", color="C2")
    ax2.tick_params(axis="y", colors="C2")
    ax2.set_ylim(min(90.0, float(np.nanmin(att)) - 2 if len(att) else 90.0), 100.5)
    if min_nodes is not None:
        ax.axvline(min_nodes, color="k", lw=2, alpha=0.7)
        ax.annotate(f"simulated minimum: {min_nodes}", (min_nodes, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, ha="right", va="bottom", fontsize=8)
    by_nodes: dict[int, list[str]] = {}
    for row in rules.to_dict(orient="records"):
        by_nodes.setdefault(int(row["nodes"]), []).append(row["rule"])
    for n, labels in sorted(by_nodes.items()):
        ax.axvline(n, color="C1", ls="--", lw=1)
        # right of its line: the simulated minimum's label is left of its own line, which may be the same
        ax.annotate(", ".join(labels), (n, 0.5), xycoords=("data", "axes fraction"), rotation=90,
                    xytext=(2, 0), textcoords="offset points", ha="left", va="center", fontsize=8, color="C1",
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    h1.append(Line2D([], [], color="C1", ls="--"))
    l1.append("node count a rule gives")
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8,
              frameon=False)  # below the axes: never over the data
    ax.set_title("Fleet size: cost and SLO attainment (mean over seeds), sizing rules marked")
    return fig
