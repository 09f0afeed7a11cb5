"""One scenario, end to end: simulate → tables → summary → (optionally) report files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sim.core.config import Scenario
from sim.metrics.summary import Summary
from sim.metrics.tables import requests_table, summarize, timeseries_tables
from sim.runner.simulation import ProgressFn, SimResult, simulate

if TYPE_CHECKING:
    from sim.metrics.streaming import StreamingOutput


@dataclass
class RunOutput:
    result: SimResult
    summary: Summary
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    timeseries_nodes: pd.DataFrame


def run_scenario(scenario: Scenario, progress: ProgressFn | None = None) -> RunOutput:
    """Simulate ``scenario`` and compute its tables and summary (no I/O)."""
    result = simulate(scenario, progress)
    req = requests_table(result)
    fleet_ts, node_ts = timeseries_tables(result)
    summary = summarize(result, req, fleet_ts)
    return RunOutput(result, summary, req, fleet_ts, node_ts)


def run_streamed(scenario: Scenario, out_dir: Path, progress: ProgressFn | None = None,
                 requests_file: bool = True) -> Summary:
    """Long-run path: per-request records streamed to ``out_dir/requests.parquet`` in chunks (none with
    ``requests_file=False``), percentiles from mergeable histograms (see :mod:`sim.metrics.streaming`), then the same
    summary, tables, plots and report. Memory stays flat in the number of requests. Returns the summary."""
    from sim.metrics.streaming import run_streaming

    out = run_streaming(scenario, Path(out_dir) / "requests.parquet" if requests_file else None, progress)
    write_streamed_report(out, out_dir)
    return out.summary


def write_streamed_report(out: StreamingOutput, out_dir: Path) -> None:
    """Summary, time series, plots and report of a streamed run (latency CDFs from its histograms)."""
    import numpy as np

    from sim.report.run_report import CDF_PCTS, write_report

    scenario = out.result.scenario
    curves = {}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        q = out.histograms[f"latency.{col}"].quantiles(list(CDF_PCTS))
        if q and q[0] is not None:
            curves[col] = (np.array(q, dtype=float), CDF_PCTS / 100.0)
        else:
            curves[col] = (np.array([]), np.array([]))
    write_report(out_dir, out.summary, None, out.timeseries, out.timeseries_nodes, scenario.duration_s,
                 scenario.name, curves, n_served=out.histograms["latency.e2e_s"].total)


def write_outputs(out: RunOutput, out_dir: Path) -> dict[str, Path]:
    """Write tables, ``summary.json``, plots and ``report.html`` (each atomically) into ``out_dir``."""
    from sim.report.run_report import write_report

    sc = out.result.scenario
    return write_report(
        out_dir, out.summary, out.requests, out.timeseries, out.timeseries_nodes, sc.duration_s, sc.name
    )
