"""Simulate a comparison's runs (every strategy × fleet size × seed) through
:func:`sim.runner.executor.iter_outcomes`: each run's summary and spill timeline (:class:`SeedRun`), grouped per
strategy with the mean over seeds (:class:`StrategyResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.compare.experiment import Run
from sim.core.config import Scenario
from sim.metrics.summary import Summary


def timeline(req: pd.DataFrame, duration_s: float, bins: int = 192) -> dict[str, list[float]]:
    """Arrival and spill rates (requests/s) in ``bins`` equal bins over [0, duration_s]."""
    edges = np.linspace(0.0, duration_s, bins + 1)
    width = edges[1] - edges[0]
    arr, _ = np.histogram(req["arrival_s"].to_numpy(), edges)
    sp = req["spilled_at_s"].to_numpy() if "spilled_at_s" in req else np.array([])
    spilled, _ = np.histogram(sp[~np.isnan(sp)], edges)
    failed_mask = (req["status"] == "failed").to_numpy() & (req["served_by"] == "api").to_numpy()
    failed, _ = np.histogram(req["arrival_s"].to_numpy()[failed_mask], edges)
    return {
        "time_s": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "arrival_rps": (arr / width).tolist(),
        "spill_rps": (spilled / width).tolist(),
        "api_failed_rps": (failed / width).tolist(),
    }


@dataclass(frozen=True)
class SeedRun:
    """One simulated run of a strategy (one seed): its summary and spill timeline."""

    summary: Summary
    timeline: dict[str, list[float]]


@dataclass(frozen=True)
class StrategyResult:
    """A strategy's runs, one per seed (in seed order), and their mean."""

    seeds: list[int]
    runs: list[SeedRun]

    @property
    def summaries(self) -> list[Summary]:
        return [r.summary for r in self.runs]

    @property
    def mean_summary_json(self) -> dict[str, Any]:
        """The one seed's ``summary.json``, or with several seeds their mean (:func:`mean_summary`)."""
        if len(self.runs) == 1:
            return self.runs[0].summary.to_json()
        return mean_summary([s.to_json() for s in self.summaries])

    @property
    def timeline(self) -> dict[str, list[float]]:
        """The one seed's timeline, or the bin-by-bin mean over seeds."""
        return self.runs[0].timeline if len(self.runs) == 1 else mean_timeline([r.timeline for r in self.runs])


def run_one(scenario: Scenario) -> SeedRun:
    """Simulate one run (in a worker process): its summary and spill timeline."""
    from sim.runner.pipeline import run_scenario

    out = run_scenario(scenario)
    return SeedRun(out.summary, timeline(out.requests, scenario.duration_s))


def run_experiment(runs: list[Run], workers: int | None = None, scheduler: str | None = None,
                   progress: Any = None) -> list[StrategyResult]:
    """Results of every run, in input order (the same experiment and seeds always give the same list).
    ``progress(done, total)`` is called as runs finish."""
    from sim.runner.executor import ExecutorSpec, iter_outcomes

    tasks = [(i, sc) for i, run in enumerate(runs) for sc in run.scenarios]
    spec = ExecutorSpec(workers=1 if len(tasks) <= 1 else workers, scheduler=scheduler)
    flat: list[SeedRun | None] = [None] * len(tasks)
    for done, oc in enumerate(iter_outcomes(run_one, [sc for _, sc in tasks], spec), start=1):
        if oc.error is not None:
            raise oc.error
        flat[oc.index] = oc.value
        if progress is not None:
            progress(done, len(tasks))  # e.g. sim.core.progress.Progress.update
    out: list[StrategyResult] = []
    for i, run in enumerate(runs):
        per_seed = [v for (j, _), v in zip(tasks, flat) if j == i and v is not None]
        out.append(StrategyResult(list(run.seeds), per_seed))
    return out


def mean_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summaries' mean, key by key: numbers → mean over the seeds that have one, booleans → share of
    seeds where true (``slo.met`` 0.6 = met in 3 of 5), other values → the common value (None if they differ);
    the top-level ``seed`` becomes the list of seeds."""

    def merge(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if all(isinstance(v, dict) for v in present):
            keys = list(dict.fromkeys(k for v in present for k in v))
            return {k: merge([v.get(k) for v in present]) for k in keys}
        if all(isinstance(v, bool) for v in present):
            return sum(present) / len(present)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            return float(np.mean(present))
        return present[0] if all(v == present[0] for v in present) else None

    out = merge(summaries)
    if "seed" in out:
        out["seed"] = [s.get("seed") for s in summaries]
    return out


def mean_timeline(timelines: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Bin-by-bin mean of per-seed timelines (same bins)."""
    return {k: np.mean([t[k] for t in timelines], axis=0).tolist() for k in timelines[0]}
