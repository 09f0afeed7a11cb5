"""``capsim sweep``: run every point × seed of an experiment file in parallel, resumably, into tidy tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sim.core.errors import ConfigError
from sim.metrics.access import check_metric_name

if TYPE_CHECKING:
    from sim.sweep.experiment import Experiment, Point
    from sim.sweep.runner import ProgressHook, SweepReport

#: the overview's columns: summary metric -> (header, scale, decimals, unit); names checked on import
OVERVIEW_METRICS: dict[str, tuple[str, float, int, str]] = {
    check_metric_name(k): v for k, v in {
        "latency.ttft_s.p95": ("P95 TTFT", 1000, 0, " ms"), "latency.tpot_s.p95": ("P95 TPOT", 1000, 1, " ms"),
        "slo.attainment": ("SLO attain", 100, 1, "%"), "throughput.requests_per_s": ("req/s", 1, 2, ""),
        "cost.usd_per_mtok_total": ("$/M in+out tok", 1, 3, "")}.items()}


def _progress(enabled: bool) -> tuple[ProgressHook | None, Callable[[], None]]:
    """(hook, stop): progress over runs (grid points × seeds; :class:`sim.core.progress.Progress`: a bar with ETA
    on a terminal, a line on stderr every ~10 s otherwise); a failed point is reported on stderr as it happens."""
    if not enabled:
        return None, lambda: None
    from sim.core.progress import Progress

    bar = Progress("capsim sweep", "runs")
    state: dict[str, Any] = {"todo": 0, "done": 0, "failed": 0}

    def hook(event: str, point: Point | None, record: dict[str, Any] | None) -> None:
        rec = record or {}
        if event == "start":
            state["todo"] = rec.get("todo", 0)
        elif event == "done" and point is not None and state["todo"]:
            state["done"] += 1
            if rec.get("status") != "ok":
                state["failed"] += 1
                click.echo(f"failed {point.label()}: {rec.get('error')}", err=True)
            note = f"{state['failed']} failed" if state["failed"] else ""
            bar.update(state["done"], state["todo"], note)

    return hook, bar.close


def _fmt(v: Any, scale: float = 1.0, digits: int = 0, suffix: str = "") -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v * scale:,.{digits}f}{suffix}"


def _fmt_ci(half: Any, scale: float = 1.0, suffix: str = "") -> str:
    """`` ± h`` for a confidence-interval half-width, two significant figures as ``capsim compare`` prints them
    (empty when undefined: one seed)."""
    from sim.metrics.stats import half_width_text

    if half is None or math.isnan(half):
        return ""
    return f" ± {half_width_text(half * scale)}{suffix}"


def _print_overview(report: SweepReport, exp: Experiment, max_rows: int = 60) -> None:
    """Per grid point, means across seeds of the headline metrics (plain text, any width)."""
    import pandas as pd

    from sim.report.experiment_pages import axis_text
    from sim.sweep.results import missed_by_point

    agg = report.aggregates
    if agg is None or not len(agg):
        return
    missed = missed_by_point(report.table)
    wanted = OVERVIEW_METRICS
    rows = []
    multi = False
    for _point, grp in agg[agg["metric"].isin(list(wanted))].groupby("point", sort=True):
        by = {m: (mean, (hi - lo) / 2) for m, mean, lo, hi in zip(grp["metric"], grp["mean"], grp["ci95_low"],
                                                                  grp["ci95_high"])}
        first = grp.iloc[0]
        multi |= int(grp["n"].max()) > 1
        rows.append({**{c: axis_text(first[c]) for c in exp.axis_columns},
                     "seeds": int(grp["n"].max()),
                     **{name: _fmt(by.get(m, (None, None))[0], sc, d, u) + _fmt_ci(by.get(m, (None, None))[1], sc, u)
                        for m, (name, sc, d, u) in wanted.items()},
                     "missed by": missed.get(int(first["point"]), "")})
    if not rows:
        return
    if not any(r["missed by"] for r in rows):
        for r in rows:
            del r["missed by"]
    click.echo(f"{exp.name}: " + ("mean ± 95% CI across seeds (every run in results.csv, intervals in "
                                  "aggregates.csv)" if multi else "one seed per grid point (--seeds N for "
                                                                  "replications and confidence intervals)"))
    click.echo(pd.DataFrame(rows[:max_rows]).to_string(index=False))
    if len(rows) > max_rows:
        click.echo(f"… {len(rows) - max_rows} more grid point(s) in results.csv")


@click.command()
@click.argument("experiment", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workers", "-j", type=int, default=None,
              help="Local worker processes (default: all cores; 1 = in-process).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Run on an existing Dask cluster, e.g. tcp://host:8786 (needs capsim[dask]).")
@click.option("--in-process", is_flag=True, help="Run every point in this process (debugging).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: out/sweeps/<experiment name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a base-scenario field for every point (repeatable).")
@click.option("--seeds", "n_seeds", type=int, default=None,
              help="Replications per grid point, seeds SEED … SEED+N−1 (SEED: the base scenario's), the same for "
                   "every point (default: the file's seeds, else 1); the overview gives means and 95 % confidence "
                   "intervals.")
@click.option("--metrics", type=click.Choice(["exact", "streaming"]), default=None,
              help="exact percentiles, or streaming histograms (constant memory; ±0.12%). Default: the file's.")
@click.option("--retry-failed/--skip-failed", default=True, show_default=True,
              help="Re-run points whose stored result is a failure.")
@click.option("--fresh", is_flag=True, help="Ignore stored results and recompute every point.")
@click.option("--dry-run", is_flag=True, help="List the points and which are already done; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of the text overview.")
@click.option("--force", is_flag=True, help="Run even if the estimate exceeds this machine's memory or a day.")
def sweep(experiment: Path, workers: int | None, scheduler: str | None, in_process: bool, out_dir: Path | None,
          overrides: tuple[str, ...], n_seeds: int | None, metrics: str | None, retry_failed: bool, fresh: bool,
          dry_run: bool, as_json: bool, force: bool) -> None:
    """Run every point × seed of EXPERIMENT (a YAML experiment file: base scenario, axes, seeds).

    Finished points are saved one file each under OUT/points/ and skipped when the sweep is run again, so an
    interrupted sweep (Ctrl-C or SIGTERM: exit 130, the finished points' tables are written) resumes where it
    stopped. Writes OUT/results.{parquet,csv} (one row per point × seed)
    and OUT/aggregates.{parquet,csv} (mean and 95% CI across seeds). Exit code 1 if any point failed.
    """
    from sim.runner.estimate import estimate_many
    from sim.runner.executor import ExecutorSpec, default_workers
    from sim.sweep import load_experiment, run_sweep
    from sim.sweep.runner import plan
    from sim.sweep.store import PointStore

    if workers is not None and workers < 1:
        raise ConfigError("--workers", "", f"must be >= 1 (got {workers})")
    if scheduler is not None and in_process:
        raise ConfigError("--scheduler", "", "cannot be combined with --in-process")
    exp = load_experiment(experiment, list(overrides), metrics, n_seeds)  # type: ignore[arg-type]
    out = out_dir or Path("out") / "sweeps" / exp.name
    spec = ExecutorSpec(workers=workers, scheduler=scheduler, in_process=in_process)
    n_keys = len({p.key for p in exp.points})

    todo, _ = plan(exp, PointStore(out), retry_failed, fresh)
    slots = 1 if spec.kind == "in_process" else (workers or default_workers()) if spec.kind == "process" else 1
    est = estimate_many([p.scenario for p in todo], slots, stream=exp.metrics == "streaming")
    if dry_run:
        todo_keys = {p.key for p in todo}
        for p in exp.points:
            click.echo(f"{'todo' if p.key in todo_keys else 'done'}  {p.key}  {p.label()}")
        click.echo(f"{len(todo_keys)} of {n_keys} point(s) to run on {spec.describe()} → {out}")
        click.echo(est.line())
        return
    est.check(force)

    if not as_json:
        click.echo(f"capsim sweep · {exp.name} · {exp.n_grid} grid point(s) × {len(exp.seeds)} seed(s) = "
                   f"{len(exp.points)} run(s) on {spec.describe()} → {out}", err=True)
    hook, stop = _progress(not as_json)
    try:
        report = run_sweep(exp, out, spec, retry_failed=retry_failed, fresh=fresh, hook=hook)
    finally:
        stop()
    if as_json:
        click.echo(json.dumps({
            "experiment": exp.name, "out": str(out), "points": report.total, "computed": len(report.computed),
            "cached": len(report.cached), "failed": len(report.failed), "missing": len(report.missing),
            "interrupted": report.interrupted, "wall_s": report.wall_s,
            "files": {k: str(v) for k, v in report.files.items()},
        }, indent=2))
    else:
        _print_overview(report, exp)
        click.echo(f"{len(report.computed)} computed, {len(report.cached)} reused, {len(report.failed)} failed"
                   + (f", {len(report.missing)} not run (interrupted)" if report.interrupted else "")
                   + f" in {report.wall_s:,.1f} s → {report.files.get('results.parquet', out)}")
        if report.failed:
            click.echo(f"failed points: see the 'error' column of {out / 'results.csv'} "
                       f"(tracebacks in {out / 'points'}/<key>.json)", err=True)
    if report.interrupted:
        click.echo("interrupted: re-run the same command to finish the remaining points", err=True)
        sys.exit(130)
    if report.failed:
        sys.exit(1)
