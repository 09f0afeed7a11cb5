"""Run an experiment: skip points already on disk, run the rest on an executor, save each as it finishes,
then write the tidy tables.

The driver (this process) writes every point file, so Dask workers need no shared filesystem unless
``save_requests`` is on (then workers write ``OUT/requests/<key>.parquet`` themselves).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sim import __version__
from sim.core.config import Scenario
from sim.runner.executor import ExecutorSpec, iter_outcomes
from sim.sweep.experiment import Experiment, Metrics, Point
from sim.sweep.report import write_report
from sim.sweep.results import aggregates_table, results_table, write_tables
from sim.sweep.store import PointStore


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (picklable)."""

    key: str
    scenario: Scenario
    metrics: Metrics
    requests_path: str | None = None


def run_point(task: PointTask) -> dict[str, Any]:
    """Simulate one point (in a worker). Never raises for a failing simulation: returns a failure record."""
    t0 = time.perf_counter()
    try:
        if task.metrics == "streaming":
            from sim.metrics.streaming import run_streaming

            summary = run_streaming(task.scenario, task.requests_path).summary
        else:
            from sim.runner.pipeline import run_scenario

            out = run_scenario(task.scenario)
            summary = out.summary
            if task.requests_path is not None:
                from sim.core.atomic_io import write_parquet

                write_parquet(Path(task.requests_path), out.requests)
        return {"status": "ok", "summary": summary.to_json(), "error": None, "traceback": None,
                "wall_s": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - a failing point is a result, not a crash of the sweep
        return {"status": "failed", "summary": None, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0}


@dataclass
class SweepReport:
    """What a sweep did. ``computed`` ran now; ``cached`` were on disk; ``failed`` failed (now or before);
    ``missing`` were not run (interrupted)."""

    out_dir: Path
    total: int
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    table: pd.DataFrame | None = None
    aggregates: pd.DataFrame | None = None
    files: dict[str, Path] = field(default_factory=dict)


ProgressHook = Callable[[str, Point | None, dict[str, Any] | None], None]
"""``hook(event, point, record)``: event is ``start`` (point None, record {"total", "todo"}) or ``done``."""


def plan(exp: Experiment, store: PointStore, retry_failed: bool = True, fresh: bool = False
         ) -> tuple[list[Point], dict[str, dict[str, Any]]]:
    """(points to run, stored records to reuse). Points sharing a key (identical scenarios) run once."""
    todo: list[Point] = []
    records: dict[str, dict[str, Any]] = {}
    queued: set[str] = set()
    for p in exp.points:
        if p.key in records or p.key in queued:
            continue
        rec = None if fresh else store.load(p.key)
        if rec is not None and (rec["status"] == "ok" or not retry_failed):
            records[p.key] = rec
        else:
            todo.append(p)
            queued.add(p.key)
    return todo, records


def run_sweep(exp: Experiment, out_dir: Path, spec: ExecutorSpec | None = None, *, retry_failed: bool = True,
              fresh: bool = False, hook: ProgressHook | None = None) -> SweepReport:
    """Run every point of ``exp`` not yet stored under ``out_dir`` and write the tables. On Ctrl-C (or SIGTERM,
    which the CLI turns into Ctrl-C) the points in flight are abandoned and their workers stopped, the tables
    of the finished points are written and ``report.interrupted`` is set. A lock beside ``out_dir`` keeps a
    second sweep from writing the same folder at the same time (it fails with one line)."""
    from sim.core.outdir import locked

    with locked(Path(out_dir)):
        return _run_sweep(exp, Path(out_dir), spec or ExecutorSpec(), retry_failed, fresh, hook)


def _run_sweep(exp: Experiment, out_dir: Path, spec: ExecutorSpec, retry_failed: bool, fresh: bool,
               hook: ProgressHook | None) -> SweepReport:
    t0 = time.perf_counter()
    store = PointStore(Path(out_dir))
    try:
        store.points_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from sim.core.errors import FileError

        raise FileError.from_os(exc, store.points_dir) from None
    store.clean_temporaries()
    todo, records = plan(exp, store, retry_failed, fresh)
    report = SweepReport(Path(out_dir), len({p.key for p in exp.points}))
    report.cached = list(records)
    if hook is not None:
        hook("start", None, {"total": report.total, "todo": len(todo)})
    tasks = [PointTask(p.key, p.scenario, exp.metrics,
                       str(store.requests_path(p.key)) if exp.save_requests else None) for p in todo]
    try:
        for oc in iter_outcomes(run_point, tasks, spec):
            p = todo[oc.index]
            if isinstance(oc.error, KeyboardInterrupt):  # Ctrl-C reached a worker first: an interruption
                raise KeyboardInterrupt
            if oc.error is not None:  # the worker could not even return a record (died, cluster lost, ...)
                res: dict[str, Any] = {"status": "failed", "summary": None,
                                       "error": f"{type(oc.error).__name__}: {oc.error}", "traceback": None,
                                       "wall_s": None}
            else:
                res = oc.value
            rec = {"key": p.key, **res, "experiment": exp.name, "axes": p.axes, "seed": p.seed,
                   "overrides": list(p.overrides), "metrics": exp.metrics, "capsim_version": __version__,
                   "executor": spec.kind, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "scenario": p.scenario.model_dump(mode="json")}
            store.save(rec)
            records[p.key] = rec
            report.computed.append(p.key)
            if hook is not None:
                hook("done", p, rec)
    except KeyboardInterrupt:
        report.interrupted = True
    report.failed = [k for k, r in records.items() if r["status"] == "failed"]
    report.missing = [p.key for p in todo if p.key not in records]
    report.table = results_table(exp, records)
    report.aggregates = aggregates_table(exp, report.table)
    report.files = write_tables(Path(out_dir), report.table, report.aggregates)
    report.files.update(write_report(Path(out_dir), exp, report))
    report.wall_s = time.perf_counter() - t0
    return report
