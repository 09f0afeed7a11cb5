"""The run report's latency CDFs describe the same requests as the summary's latency tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.report.run_report import latency_curves, plot_latency_cdfs


def _req() -> pd.DataFrame:
    return pd.DataFrame({
        "arrival_s": [1.0, 40.0, 50.0, 60.0, 70.0, 80.0],
        "class": ["chat", "chat", "chat", "batch", "chat", "chat"],
        "status": ["completed", "completed", "spilled", "completed", "rejected", "completed"],
        "ttft_s": [9.0, 0.1, 0.2, 5.0, np.nan, 0.3],
        "tpot_s": [0.5, 0.01, 0.02, 0.4, np.nan, 0.03],
        "e2e_s": [90.0, 1.0, 2.0, 50.0, np.nan, 3.0],
    })


def test_curves_cover_served_interactive_requests_after_warm_up():
    curves = latency_curves(_req(), warmup_s=30.0, classes=["chat"])
    # the warm-up arrival (1 s), the batch request and the rejected one are left out; the spilled one is served
    np.testing.assert_allclose(curves["ttft_s"][0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(curves["e2e_s"][1], [1 / 3, 2 / 3, 1.0])


def test_p95_line_is_the_summarys_and_the_title_names_the_population():
    curves = latency_curves(_req(), warmup_s=30.0, classes=["chat"])
    fig = plot_latency_cdfs(curves, None, 3, {"ttft_s": 0.123, "tpot_s": None, "e2e_s": 2.5}, "served requests")
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert "P95 = 0.123 s" in labels and "P95 = 2.5 s" in labels
    assert "(3 served requests)" in fig.get_suptitle()


def test_log_axes_label_major_ticks_only():
    x = np.geomspace(0.0127, 0.8, 200)  # one major tick in view: matplotlib would label the minor ticks too
    curves = {c: (x, np.arange(1, 201) / 200) for c in ("ttft_s", "tpot_s", "e2e_s")}
    fig = plot_latency_cdfs(curves)
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
