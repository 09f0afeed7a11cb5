"""A comparison's files: ``compare.csv``, ``compare.json``, ``timelines.csv`` and ``compare.html`` with the
cost-vs-latency, spill-over-time and cost-breakdown plots (each a small function returning a Figure)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.compare.experiment import Experiment, Run
from sim.compare.results import json_records, seed_table
from sim.compare.runner import StrategyResult

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# --- plots -----------------------------------------------------------------------------------------------
def _plt() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (imported on first use: keeps CLI start-up fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err_bars(values: np.ndarray, half: pd.Series) -> np.ndarray:
    """Asymmetric (2, n) error bars for ± ``half``, the lower arm kept above zero (log axes); NaN → none."""
    h = np.nan_to_num(half.to_numpy(float), nan=0.0)
    lower = np.minimum(h, np.where(values > 0, values * (1 - 1e-3), 0.0))
    return np.vstack([lower, h])


def place_labels(ax: Axes, xs: np.ndarray, ys: np.ndarray, texts: list[str], fontsize: int = 8) -> list:
    """Annotate each point with its text at the first of a ring of offsets (growing radius) where the label
    stays inside the axes and overlaps neither an earlier label nor any marker (greedy, in display space);
    returns the annotations."""
    ax.figure.canvas.draw()  # lay out once; extents below use the figure's renderer (any backend)
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    frame = ax.get_window_extent()  # labels stay inside the axes
    r_px = 5.0 * ax.figure.dpi / 72.0  # a marker's reach (half its Pareto ring), in display pixels
    taken: list = []
    out = []
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (x, y), text in zip(zip(xs, ys), texts):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        chosen = None
        for radius in (6, 14, 24, 36, 50, 70):
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6} if radius > 6 else None
            for dx, dy in dirs:
                ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx * radius, dy * radius),
                                  fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                  va="bottom" if dy > 0 else "top" if dy < 0 else "center", arrowprops=leader)
                bb = ann.get_window_extent().expanded(1.05, 1.15)
                inside = (bb.x0 >= frame.x0 and bb.x1 <= frame.x1 and bb.y0 >= frame.y0 and bb.y1 <= frame.y1)
                on_marker = any(bb.x0 - r_px <= qx <= bb.x1 + r_px and bb.y0 - r_px <= qy <= bb.y1 + r_px
                                for qx, qy in pts)
                if inside and not (any(bb.overlaps(t) for t in taken) or on_marker):
                    chosen = ann
                    break
                ann.remove()
            if chosen is not None:
                break
        if chosen is None:  # very crowded: far out, with a leader line, a line further per label already there
            chosen = _stacked_label(ax, text, (x, y), taken, frame, fontsize)
        taken.append(chosen.get_window_extent().expanded(1.05, 1.15))
        out.append(chosen)
    return out


def _text_box(ann: Any) -> Any:
    """The display box of an annotation's text alone (its leader line left out), with a little margin."""
    from matplotlib.text import Text

    renderer = ann.figure.canvas.get_renderer()
    ann.update_positions(renderer)  # the text's place follows its offset only once positions are updated
    return Text.get_window_extent(ann, renderer).expanded(1.05, 1.15)


def _stacked_label(ax: Axes, text: str, xy: tuple[float, float], taken: list, frame: Any, fontsize: int) -> Any:
    """A label 60 pt right of (or left of) its point, moved up (or down) one line at a time until it overlaps no
    label already placed; still inside the axes if it fits there, else the first clear slot (as the sweep plot
    stacks its labels)."""
    leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6}
    line_pt = 1.5 * fontsize
    fallback = None
    for dx, sign in ((60, 1), (-60, 1), (60, -1), (-60, -1)):
        for k in range(40):
            dy = sign * (60 + k * line_pt)
            ann = ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              ha="left" if dx > 0 else "right", va="bottom" if sign > 0 else "top",
                              arrowprops=leader)
            bb = _text_box(ann)
            if not any(bb.overlaps(t) for t in taken):
                if frame.x0 <= bb.x0 and bb.x1 <= frame.x1 and frame.y0 <= bb.y0 and bb.y1 <= frame.y1:
                    if fallback is not None:
                        fallback.remove()
                    return ann
                if fallback is None:
                    fallback = ann
                    break
            ann.remove()
    if fallback is not None:
        return fallback
    return ax.annotate(text, xy, textcoords="offset points", xytext=(60, 60), fontsize=fontsize, arrowprops=leader)


def plot_cost_vs_latency(df: pd.DataFrame, slo: dict[str, float | None] | None = None,
                         attainment_target: float = 0.95) -> Any:
    """Total cost vs P95 TTFT and P95 E2E, one point per run coloured by SLO attainment (0–100 %, centred on
    the target), hollow when the run misses the SLO; the Pareto front among the runs that meet it; the SLO
    targets as vertical lines; labels placed so they do not overlap. With several seeds the points are means
    with 95 % confidence-interval error bars on both axes."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    slo = slo or {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True, sharey=True)
    goal = 100 * attainment_target
    norm = TwoSlopeNorm(vmin=0.0, vcenter=min(max(goal, 1.0), 99.0), vmax=100.0)
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9 if "slo_met" in df else np.ones(len(df), bool)
    sc = None
    for ax, col, pcol, title, key in ((axes[0], "ttft_p95_s", "pareto_ttft", "P95 time to first token", "ttft_p95_s"),
                                      (axes[1], "e2e_p95_s", "pareto_e2e", "P95 end-to-end latency", "e2e_p95_s")):
        if f"{col}_ci95" in df:  # several seeds: 95 % intervals of the means
            x, y = df[col].to_numpy(float), df["total_usd"].to_numpy(float)
            ax.errorbar(x, y, xerr=_err_bars(x, df[f"{col}_ci95"]), yerr=_err_bars(y, df["total_usd_ci95"]),
                        fmt="none", ecolor="0.35", elinewidth=1, capsize=3, zorder=2.5, label="95 % CI (seeds)")
        att = df["slo_attainment"].to_numpy(float) * 100
        sc = ax.scatter(df[col][meets], df["total_usd"][meets], c=att[meets], cmap="RdYlGn", norm=norm, s=60,
                        zorder=3, edgecolors="k", label="meets the SLO")
        if (~meets).any():
            ax.scatter(df[col][~meets], df["total_usd"][~meets], c=att[~meets], cmap="RdYlGn", norm=norm, s=80,
                       zorder=3, edgecolors="k", marker="X", label="misses the SLO")
        front = df[df[pcol]].sort_values(col)
        if len(front):
            ax.step(front[col], front["total_usd"], where="post", color="tab:blue", lw=1.5, zorder=2,
                    label="Pareto front (runs meeting the SLO)")
            ax.scatter(front[col], front["total_usd"], s=220, facecolors="none", edgecolors="tab:blue", zorder=4)
        target = slo.get(key)
        if target is not None:
            ax.axvline(target, color="C3", ls="--", lw=1.2, label=f"SLO: P95 ≤ {target:g} s")
            ax.axvspan(target, max(float(np.nanmax(df[col])) * 10, target * 10), color="C3", alpha=0.06)
        ax.set_xscale("log")
        ax.set_yscale("log")

        ax.set_xlabel(f"{title} (s, log scale)")
        if ax is axes[0]:
            ax.set_ylabel("total cost for the period (USD, log scale)")
        ax.set_title(f"Cost vs {title}")
        ax.grid(True, alpha=0.3, which="both")
        xs = df[col].to_numpy(float)
        if np.isfinite(xs).any():
            lo, hi = np.nanmin(xs), np.nanmax(xs)
            if target is not None:
                lo, hi = min(lo, target), max(hi, target)
            ax.set_xlim(lo / 2, hi * 2)
        ys = df["total_usd"].to_numpy(float)
        if np.isfinite(ys).any():
            ax.set_ylim(np.nanmin(ys) / 1.6, np.nanmax(ys) * 1.6)
        for axis, (lo_v, hi_v) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            decades = np.log10(max(hi_v, 1e-12) / max(lo_v, 1e-12))
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=8, ncol=2, frameon=False)
    cb = fig.colorbar(sc, ax=axes, label="SLO attainment (% of all arrivals after warm-up)",
                      shrink=0.8)
    ticks = sorted({0.0, 25.0, 50.0, 75.0, goal, 100.0})
    cb.set_ticks(ticks, labels=[f"{t:g} (target)" if t == goal else f"{t:g}" for t in ticks])
    cb.ax.axhline(goal, color="k", lw=1.5)
    fig.canvas.draw()  # settle the layout (colorbar, legends) before placing labels in display space
    fig.set_layout_engine("none")
    for ax, col in ((axes[0], "ttft_p95_s"), (axes[1], "e2e_p95_s")):
        place_labels(ax, df[col].to_numpy(float), df["total_usd"].to_numpy(float), [str(v) for v in df["strategy"]])
    return fig


def plot_spill_timeline(runs: list[Run], results: list[StrategyResult]) -> Figure:
    """Arrival rate (same for every run: common random numbers) and each run's spill rate over time."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    tl0 = results[0].timeline
    hours = np.asarray(tl0["time_s"]) / 3600.0
    ax.fill_between(hours, tl0["arrival_rps"], color="0.85", label="arrivals (traffic curve)", step="mid")
    for run, res in zip(runs, results):
        tl = res.timeline
        sp = np.asarray(tl["spill_rps"])
        if sp.sum() == 0 or (sp == np.asarray(tl["arrival_rps"])).all():
            continue  # never spills, or spills everything (= the traffic curve)
        ax.plot(hours, sp, lw=1.3, label=f"{run.label}: spilled to API")
    ax.set_yscale("symlog", linthresh=1.0)  # the daily curve stays visible under a 50x spike
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))  # 1, 10, 100 — not 10⁰ beside 0
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("requests per second (linear below 1, log above)")
    ax.set_title("Spill rate over time against the traffic curve")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_cost_breakdown(df: pd.DataFrame) -> Figure:
    """Stacked bars: self-hosted GPU cost and hosted-API spend per run, with $/M output tokens on top; runs
    that miss the SLO are hatched and say so (a cheap run that misses it is not a saving)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(df) + 2), 5.5), constrained_layout=True)
    x = np.arange(len(df))
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9 if "slo_met" in df else np.ones(len(df), bool)
    hatch = ["" if m else "//" for m in meets]
    ax.bar(x, df["self_host_usd"], label="self-hosted GPUs", color="tab:blue", hatch=hatch, edgecolor="white")
    ax.bar(x, df["api_usd"], bottom=df["self_host_usd"], label="hosted API", color="tab:orange", hatch=hatch,
           edgecolor="white")
    per_col = "usd_per_mtok_output" if "usd_per_mtok_output" in df else "usd_per_mtok"
    unit = "/M out tok" if per_col == "usd_per_mtok_output" else "/M tok"
    for i, (_, r) in enumerate(df.iterrows()):
        per = r[per_col]
        txt = f"\\${r['total_usd']:,.0f}" + (f"\n\\${per:.2f}{unit}" if per is not None and not np.isnan(per) else "")
        txt += "" if meets[i] else "\nmisses SLO"
        ax.annotate(txt, (i, r["total_usd"]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
                    color="black" if meets[i] else "C3")
    ax.set_xticks(x, df["strategy"], rotation=30, ha="right")
    ax.set_ylabel("cost for the period (USD)")
    ax.set_title("Cost breakdown per strategy (hatched: misses the SLO)")
    top = float(np.nanmax(df["total_usd"].to_numpy(float))) if len(df) else 1.0
    ax.set_ylim(0, max(top, 1e-9) * 1.3)  # room for the labels above the tallest bar
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="tab:blue"), Patch(facecolor="tab:orange")]
    labels = ["self-hosted GPUs", "hosted API"]
    if not meets.all():
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="//"))
        labels.append("misses the SLO")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def write_outputs(out_dir: Path, exp: Experiment, runs: list[Run], results: list[StrategyResult],
                  df: pd.DataFrame) -> dict[str, Path]:
    """compare.csv, compare.json (full summaries), timelines.csv and the three plots; with several seeds also
    compare_seeds.csv (one row per run × seed), and timelines.csv has a ``seed`` column."""
    from sim.core.atomic_io import atomic_write, write_csv, write_json, write_text

    multi = any(len(r.scenarios) > 1 for r in runs)
    paths = {
        "table": out_dir / "compare.csv",
        "json": out_dir / "compare.json",
        "timelines": out_dir / "timelines.csv",
        "cost_vs_latency": out_dir / "cost_vs_p95_latency.png",
        "spill_timeline": out_dir / "spill_over_time.png",
        "cost_breakdown": out_dir / "cost_breakdown.png",
    }
    write_csv(paths["table"], df, float_format="%.6g")
    write_json(paths["json"], json_records(runs, results, per_seed=True))
    if multi:
        paths["seeds_table"] = out_dir / "compare_seeds.csv"
        write_csv(paths["seeds_table"], seed_table(runs, results), float_format="%.6g")
    tl = []
    for run, res in zip(runs, results):
        for seed, one in zip(run.seeds, res.runs):
            t = pd.DataFrame(one.timeline)
            if multi:
                t.insert(0, "seed", seed)
            t.insert(0, "strategy", run.label)
            tl.append(t)
    write_csv(paths["timelines"], pd.concat(tl), float_format="%.6g")
    plt = _plt()
    base_slo = runs[0].scenario.slo
    targets = {k: getattr(base_slo, k) for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
    for key, fig in (("cost_vs_latency", plot_cost_vs_latency(df, targets, base_slo.attainment_target)),
                     ("spill_timeline", plot_spill_timeline(runs, results)),
                     ("cost_breakdown", plot_cost_breakdown(df))):
        def save(p: Path, fig: Figure = fig) -> None:
            fig.savefig(p, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})

        atomic_write(paths[key], save)
        plt.close(fig)
    paths["html"] = out_dir / "compare.html"
    write_text(paths["html"], _html(exp, runs, df, {paths[k].name: paths[k].read_bytes() for k in
                                                    ("cost_vs_latency", "spill_timeline", "cost_breakdown")}))
    return paths


def _html(exp: Experiment, runs: list[Run], df: pd.DataFrame, images: dict[str, bytes]) -> str:
    """compare.html (:func:`sim.report.experiment_pages.compare_html`): experiment, SLO, seeds, table, plots."""
    from sim.report.experiment_pages import _slo_text, compare_html

    sc = runs[0].scenario
    seeds = runs[0].seeds
    asked = {"experiment": f"{exp.name} ({sc.source.split(':')[0]})",
             "question": "which strategy serves this traffic within the SLO at the lowest cost",
             "strategies": ", ".join(r.label for r in runs), "SLO": _slo_text(sc.slo.model_dump()),
             "fleet": f"{sc.fleet.gpus_per_node}× {sc.fleet.gpu} per node, {sc.fleet.model}",
             "seeds": ", ".join(str(s) for s in seeds) + (" (the same for every strategy)" if len(seeds) > 1 else "")}
    return compare_html(exp.name, asked, df, images)
