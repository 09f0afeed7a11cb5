"""One scenario, end to end: simulate → tables → summary → (optionally) report files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Scenario
from .metrics import requests_table, summarize, timeseries_tables
from .simulation import ProgressFn, SimResult, simulate


@dataclass
class RunOutput:
    result: SimResult
    summary: dict[str, Any]
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


def write_outputs(out: RunOutput, out_dir: Path) -> dict[str, Path]:
    """Write tables, ``summary.json``, plots and ``report.html`` (each atomically) into ``out_dir``."""
    from .report import write_report

    sc = out.result.scenario
    return write_report(out_dir, out.summary, out.requests, out.timeseries, out.timeseries_nodes, sc.duration_s, sc.name)
