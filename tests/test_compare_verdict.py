"""`capsim compare` judged like a run (issue 10): Pareto front only among strategies meeting the SLO, the SLO on
the cost chart, attainment colours over the whole range, labels that do not overlap; the progress helper."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.text import Text

from sim.compare.report import place_labels, plot_cost_breakdown, plot_cost_vs_latency
from sim.compare.results import pareto_mask
from sim.core.progress import Progress


def _table() -> pd.DataFrame:
    """Four strategies: the cheapest and fastest one misses the SLO."""
    df = pd.DataFrame({
        "strategy": ["cheap_but_failing", "fleet", "hybrid", "big_fleet"],
        "total_usd": [10.0, 60.0, 40.0, 600.0], "self_host_usd": [0.0, 60.0, 30.0, 600.0],
        "api_usd": [10.0, 0.0, 10.0, 0.0], "usd_per_mtok_output": [2.0, 12.0, 8.0, 120.0],
        "ttft_p95_s": [0.3, 0.9, 0.8, 0.5], "e2e_p95_s": [9.0, 19.0, 18.0, 16.0],
        "slo_attainment": [0.40, 0.97, 0.96, 0.99], "slo_met": [0.0, 1.0, 1.0, 1.0],
    })
    meets = df["slo_met"].to_numpy() >= 1
    df["pareto_ttft"] = pareto_mask(df["ttft_p95_s"].to_numpy(), df["total_usd"].to_numpy(), meets)
    df["pareto_e2e"] = pareto_mask(df["e2e_p95_s"].to_numpy(), df["total_usd"].to_numpy(), meets)
    return df


def test_pareto_front_only_among_strategies_meeting_the_slo():
    df = _table()
    assert not df["pareto_ttft"][0] and not df["pareto_e2e"][0]  # dominates everything, but misses the SLO
    assert df["pareto_ttft"].tolist() == [False, False, True, True]
    # without the SLO rule it would be the whole front (the old behaviour)
    assert pareto_mask(df["ttft_p95_s"].to_numpy(), df["total_usd"].to_numpy()).tolist() == [True, False, False,
                                                                                              False]


def test_cost_chart_shows_the_slo_and_the_whole_attainment_range():
    fig = plot_cost_vs_latency(_table(), {"ttft_p95_s": 0.7, "e2e_p95_s": None}, 0.95)
    ax_ttft = fig.axes[0]
    vlines = [ln for ln in ax_ttft.lines if np.allclose(ln.get_xdata(), [0.7, 0.7])]
    assert vlines and "SLO" in vlines[0].get_label()
    cbar = fig.axes[-1]
    lo, hi = cbar.get_ylim()
    assert lo <= 0.0 and hi >= 100.0  # 40 % is on the scale, not clipped to the bottom colour
    breakdown = plot_cost_breakdown(_table())
    texts = [t.get_text() for t in breakdown.axes[0].texts]
    assert sum("misses SLO" in t for t in texts) == 1 and any("/M out tok" in t for t in texts)
    plt.close("all")


def test_labels_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.array([1.0, 1.01, 1.02, 1.0, 2.0, 2.01])
    ys = np.array([5.0, 5.02, 4.98, 5.0, 3.0, 3.0])
    ax.scatter(xs, ys)
    ax.set_xlim(0.5, 3)
    ax.set_ylim(2, 6)
    anns = place_labels(ax, xs, ys, [f"strategy_{i}" for i in range(len(xs))])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(r) for a in anns]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i, j)
    plt.close(fig)


def test_progress_lines_without_a_terminal():
    now = [0.0]
    out = io.StringIO()
    p = Progress("capsim compare", "runs", stream=out, tty=False, clock=lambda: now[0], interval_s=10)
    p.update(1, 8)  # at once: quiet
    now[0] = 4.0
    p.update(2, 8)
    assert out.getvalue() == ""
    now[0] = 10.5
    p.update(3, 8)
    now[0] = 12.0
    p.update(4, 8)  # within the interval: no second line
    now[0] = 21.0
    p.sim_time(9000.0, 6000.0)
    lines = out.getvalue().splitlines()
    assert lines == ["capsim compare: 38% (3 of 8 runs), 10 s elapsed",
                     "capsim compare: 100% (6,000 of 6,000 runs), draining, 21 s elapsed"]
    quiet = io.StringIO()
    q = Progress("x", enabled=False, stream=quiet, tty=False, clock=lambda: now[0])
    now[0] = 100.0
    q.update(1, 2)
    assert quiet.getvalue() == ""


def test_crowded_labels_stack_instead_of_piling_up():
    """Points too close for any ring offset (the E2E panel of hybrid_spill.yaml): the far-out labels stack, one
    line apart, instead of sharing one spot."""
    fig, ax = plt.subplots(figsize=(5, 4))
    xs = 1.0 + 0.002 * np.arange(9)
    ys = 5.0 + 0.002 * np.arange(9)
    ax.scatter(xs, ys)
    ax.set_xlim(0.5, 1.6)
    ax.set_ylim(4, 6)
    anns = place_labels(ax, xs, ys, [f"hybrid_strategy_{i}" for i in range(len(xs))])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, r) for a in anns]  # the text, not its leader line
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (anns[i].get_text(), anns[j].get_text())
    plt.close(fig)
