"""Run many scenarios in parallel and collect their summaries.

This is the one place experiments (sweeps, sizing, strategy comparisons) fan out work. ``workers=1`` runs
in-process (debugging); otherwise a local process pool. Results come back in input order, so the same
scenarios and seeds always give the same list.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterable

from .config import Scenario


def run_summary(scenario: Scenario) -> dict[str, Any]:
    """Simulate one scenario and return its ``summary.json`` dictionary."""
    from .run import run_scenario

    return run_scenario(scenario).summary


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def map_summaries(scenarios: Iterable[Scenario], workers: int | None = None) -> list[dict[str, Any]]:
    """Summaries of ``scenarios`` (in order), computed on ``workers`` processes (default: all cores)."""
    items = list(scenarios)
    n = workers or default_workers()
    if n <= 1 or len(items) <= 1:
        return [run_summary(s) for s in items]
    with ProcessPoolExecutor(max_workers=min(n, len(items))) as pool:
        return list(pool.map(run_summary, items))
