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


def test_rules_table_headings_are_words_not_field_names():
    rules = pd.DataFrame({"rule": ["P95+30%"], "workload": ["consumer_chat"], "rate_rps": [31.2], "nodes": [4],
                          "slo_attainment": [0.9998], "total_usd": [0.83], "usd_per_mtok_output": [0.573],
                          "usd_per_hour": [10.0], "seeds_met": [1], "seeds": [1], "meets_slo": [True],
                          "ttft_p95_s": [0.236], "tpot_p95_s": [0.023], "nodes_vs_min": [1], "usd_vs_min": [0.21]})
    page = size_html({"scenario": "x", "min_nodes": 3, "node_goodput_rps": 9.5}, {"sizing_rules.csv": rules}, {}, "")
    for field in ("rate_rps", "usd_per_mtok_output", "ttft_p95_s", "nodes_vs_min", "usd_vs_min", "meets_slo"):
        assert f"<th>{field}</th>" not in page, field
    assert "<th>$/M out tok</th>" in page and "+$0.21" in page and "+1" in page and "236 ms" in page
