"""`capsim run`'s first line does not call an autoscaled fleet by its reserved node count alone."""

from __future__ import annotations

import dataclasses

from scenarios import make_scenario

from sim.cli.run import _print_summary
from sim.report.run_report import write_report
from sim.runner.pipeline import run_scenario


def test_autoscaled_head_names_reserved_and_mean_nodes_up(capsys, tmp_path):
    out = run_scenario(make_scenario(duration_s=5, **{"traffic.rate_rps": 2.0}))
    s = out.summary
    _print_summary(s, None)
    assert "autoscaled" not in capsys.readouterr().out.splitlines()[0]
    scaled = dataclasses.replace(
        s, cost=dataclasses.replace(s.cost, gpu_hours_by_kind={"reserved": 1.0, "on_demand": 1.6}),
        utilisation=dataclasses.replace(s.utilisation, nodes_up_mean=2.6))
    _print_summary(scaled, None)
    head = capsys.readouterr().out.splitlines()[0]
    assert f"{s.fleet.nodes} reserved node(s) + autoscaled (mean 2.6 up)" in head
    write_report(tmp_path, scaled, out.requests, out.timeseries, out.timeseries_nodes, 5.0, "x")
    assert f"{s.fleet.nodes} reserved + autoscaled (mean 2.6 up) × " in (tmp_path / "report.html").read_text()


def test_requests_line_names_the_arrivals_after_warm_up(capsys):
    """The requests line counts every arrival, the SLO and model lines those after warm-up: the line says both."""
    s = run_scenario(make_scenario(**{"duration_s": 30, "warmup_s": 10, "traffic.rate_rps": 4.0})).summary
    after = sum(c.arrived for c in s.slo.by_class.values())
    assert 0 < after < s.requests.arrived
    _print_summary(s, None)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("requests"))
    assert f"{s.requests.arrived:,} arrived ({after:,} after the 10-s warm-up)," in line


def test_load_plot_legend_clears_the_nodes_up_axis():
    """With autoscaling the load panel has a 'nodes up' axis on the right: the legend sits beyond its tick labels."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from sim.report.run_report import plot_load

    t = np.arange(0.0, 600.0, 1.0)
    ts = pd.DataFrame({"time_s": t, "arrival_rate_rps": 5.0, "completion_rate_rps": 5.0, "nodes_up": 1 + (t > 300),
                       "running_seqs": 3, "queue_len": 0, "kv_fraction": 0.1, "busy_fraction": 1.0})
    fig = plot_load(ts)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    twin = next(a for a in fig.axes if a is not ax and a.bbox.bounds == ax.bbox.bounds)
    assert ax.get_legend().get_window_extent(r).x0 >= twin.get_tightbbox(r).x1
    plt.close(fig)


def test_busiest_ten_minutes_are_named_only_in_a_longer_run():
    """In a run of 10 minutes or less the 'peak' window is the whole run: the load line does not call it the busiest
    10 minutes."""
    from sim.metrics.headline import load_line

    s = run_scenario(make_scenario(duration_s=5, **{"traffic.rate_rps": 2.0})).summary
    u = dataclasses.replace(s.utilisation, load_factor=0.5, load_factor_peak=0.8)
    assert "0.80 in the busiest 10 minutes" in load_line(u, duration_s=3600.0)
    short = load_line(u, duration_s=120.0)
    assert "busiest 10 minutes" not in short and "headroom ×1.2" in short


def test_cdf_tick_labels_do_not_run_together():
    """A TPOT axis from 8 to 25 ms: its tick labels stay apart (seven 0.0100-style labels ran together)."""
    import itertools

    import matplotlib.pyplot as plt
    import numpy as np

    from sim.report.run_report import plot_latency_cdfs

    frac = np.linspace(0.001, 1.0, 200)
    curves = {"ttft_s": (np.linspace(0.05, 1.7, 200), frac), "tpot_s": (np.linspace(0.008, 0.025, 200), frac),
              "e2e_s": (np.linspace(0.5, 11.0, 200), frac)}
    fig = plot_latency_cdfs(curves, None, 100)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes = [b for b in boxes if ax.bbox.x0 - 20 <= b.x0 and b.x1 <= ax.bbox.x1 + 20]
        assert all(a.x1 + 2 < b.x0 for a, b in itertools.pairwise(boxes)), [t.get_text() for t in ax.get_xticklabels()]
    plt.close(fig)
