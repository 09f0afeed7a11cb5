"""sizing.html never shows the busy share of time as if it were load (steps running ≠ capacity used)."""

from __future__ import annotations

import pandas as pd

from sim.report.experiment_pages import size_html


def test_points_table_names_busy_time_and_shows_the_load_factor():
    points = pd.DataFrame({"nodes": [6], "seeds_met": [1], "seeds": [1], "meets_slo": [True],
                           "slo_attainment": [1.0], "load_factor": [0.46], "busy_fraction": [0.999]})
    page = size_html({"scenario": "x", "min_nodes": 6, "node_goodput_rps": 8.7}, {"sizing_points.csv": points}, {}, "")
    assert "<th>busy_fraction</th>" not in page
    assert "steps running (busy, not capacity)" in page
    assert "<th>load factor</th>" in page and "0.46" in page
