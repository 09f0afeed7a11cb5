"""``sweep.html`` and ``sweep_overview.png``: the per-point overview of a sweep (means across seeds) and its
cost against P95 TTFT, one self-contained page (:func:`sim.report.experiment_pages.sweep_html`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.core.atomic_io import atomic_write, write_text
from sim.report.experiment_pages import SWEEP_METRICS, axis_text, sweep_html, sweep_overview
from sim.sweep.experiment import Experiment


def _label(row: pd.Series, axes: list[str]) -> str:
    """``nodes=3, policy=never``: the point's axis values (missing ones left out)."""
    return ", ".join(f"{c.split('.')[-1]}=" + (f"({axis_text(row[c])})" if str(row[c]).startswith("{")
                                               else axis_text(row[c])) for c in axes if not pd.isna(row[c]))


def _annotate_without_overlap(ax: Any, labels: list[str], x: np.ndarray, y: np.ndarray,
                              fontsize: float = 7.0) -> None:
    """Label each point just above-right of it; a label whose line would cross an earlier one (its text box
    estimated from its length, in points on the figure) moves up one line until it is clear."""
    to_pt = 72.0 / ax.figure.dpi
    line_pt = 1.4 * fontsize
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) in figure points
    for text, xi, yi in zip(labels, x, y, strict=True):
        if not (np.isfinite(xi) and np.isfinite(yi)):
            continue
        px, py = (v * to_pt for v in ax.transData.transform((xi, yi)))
        left, right = px + 6, px + 6 + 0.6 * fontsize * len(text)
        k = 0
        while any(abs(py + 4 + line_pt * k - b) < 0.99 * line_pt and left < r and lo < right
                  for lo, r, b in placed):
            k += 1
        placed.append((left, right, py + 4 + line_pt * k))
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(6, 4 + line_pt * k), fontsize=fontsize)


def plot_overview(overview: pd.DataFrame, axes: list[str], slo_ttft_s: float | None) -> Any:
    """$/M tokens against P95 TTFT per grid point (mean across seeds), green where every seed met the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    ok = overview["slo.met"] >= 1 if "slo.met" in overview else pd.Series(False, index=overview.index)
    x = 1000 * overview["latency.ttft_s.p95"]
    y = overview["cost.usd_per_mtok_total"]
    ax.scatter(x[ok], y[ok], color="C2", s=45, label="meets the SLO in every seed", zorder=3)
    ax.scatter(x[~ok], y[~ok], color="C3", marker="x", s=45, label="misses the SLO (in some seed)", zorder=3)
    if slo_ttft_s is not None:
        ax.axvline(1000 * slo_ttft_s, color="C3", ls="--", lw=1.1, label=f"SLO: P95 TTFT ≤ {1000 * slo_ttft_s:g} ms")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.set_ylim(bottom=0, top=max(float(y.max()) * 1.2, 1e-6) if y.notna().any() else 1)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("P95 time to first token (ms, mean across seeds, log scale)")
    ax.set_ylabel("USD per million tokens (input + output)")
    ax.set_title("Sweep: cost against latency per grid point")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if len(overview) <= 30:
        fig.canvas.draw()  # lay the figure out first: the overlap test works in its final coordinates
        _annotate_without_overlap(ax, [_label(r, axes) for _, r in overview.iterrows()], x.to_numpy(float),
                                  y.to_numpy(float))
    return fig


def write_report(out_dir: Path, exp: Experiment, report: Any) -> dict[str, Path]:
    """Write ``sweep_overview.png`` (when there are finished points) and ``sweep.html``; return their paths."""
    from sim.report.htmldoc import fig_png
    from sim.sweep.results import missed_by_point

    overview = sweep_overview(report.aggregates, exp.axis_columns, missed_by_point(report.table))
    files: dict[str, Path] = {}
    images: dict[str, bytes] = {}
    needed = {"latency.ttft_s.p95", "cost.usd_per_mtok_total"}
    if not overview.empty and needed <= set(overview.columns) and overview[list(needed)].notna().all(axis=None):
        import matplotlib.pyplot as plt

        slo = exp.points[0].scenario.slo.ttft_p95_s if exp.points else None
        fig = plot_overview(overview, exp.axis_columns, slo)
        png = fig_png(fig)
        plt.close(fig)
        files["sweep_overview.png"] = atomic_write(out_dir / "sweep_overview.png",
                                                   lambda p: p.write_bytes(png))
        images["sweep_overview.png"] = png
    seeds = sorted({p.seed for p in exp.points})
    asked = {"experiment": f"{exp.name} ({exp.source})", "description": exp.description or "–",
             "axes": "; ".join(exp.axis_columns) or "none (one point)",
             "grid": f"{exp.n_grid} point(s) × {len(seeds)} seed(s) = {len(exp.points)} run(s)",
             "seeds": ", ".join(str(s) for s in seeds), "metrics": exp.metrics,
             "shown": ", ".join(h for h, _ in SWEEP_METRICS.values()) + ", missed by (why a point misses the SLO)"}
    doc = sweep_html(exp.name, asked, overview, images, len(report.failed), report.interrupted)
    files["sweep.html"] = write_text(out_dir / "sweep.html", doc)
    return files
