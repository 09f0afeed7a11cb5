"""The sweep overview's point labels never overlap, even for points a few ms apart on the log axis."""

from __future__ import annotations

import pandas as pd

from sim.sweep.report import plot_overview


def test_labels_of_nearby_points_do_not_overlap():
    spec = ['–', '{"acceptance_rate": 0.5}', '{"acceptance_rate": 0.7}', '{"acceptance_rate": 0.85}']
    ov = pd.DataFrame({"traffic.rate_rps": [40] * 4, "fleet.speculative": spec,
                       "latency.ttft_s.p95": [0.287, 0.281, 0.269, 0.271], "cost.usd_per_mtok_total": [0.038] * 4,
                       "slo.met": [1.0] * 4})
    fig = plot_overview(ov, ["traffic.rate_rps", "fleet.speculative"], 2.0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
