"""A null axis value (``fleet.speculative: null``) stays missing in the sweep tables, never the text "nan"."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from sim.sweep.results import aggregates_table


def test_null_axis_value_is_missing_not_nan_text():
    spec = '{"acceptance_rate": 0.7, "method": "eagle"}'
    table = pd.DataFrame({"point": [0, 1], "fleet.speculative": [None, spec], "seed": [1, 1],
                          "status": ["ok", "ok"], "latency.tpot_s.p95": [0.05, 0.03]})
    agg = aggregates_table(SimpleNamespace(axis_columns=["fleet.speculative"]), table)  # type: ignore[arg-type]
    values = agg["fleet.speculative"].tolist()
    assert "nan" not in values
    assert pd.isna(values[0]) and values[1] == spec
