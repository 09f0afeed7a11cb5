"""``capsim compare``: several spill strategies (and fleet sizes) on one traffic shape, side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click


def _plain(v: object) -> Any:
    """A numpy scalar as the Python value."""
    return v.item() if hasattr(v, "item") else v


def _fmt_ci(h: float, kind: str) -> str:
    """A confidence-interval half-width, two significant figures (whole units once large)."""
    from sim.metrics.stats import half_width_text

    if kind == "pct":
        h *= 100
    text = half_width_text(h)
    return {"usd": f"${text}", "usdm": f"${text}", "pct": f"{text}%"}.get(kind, text)


def _fmt(v: Any, kind: str) -> str:
    """A table cell: ``v`` is a DataFrame value (number, string or missing), formatted by ``kind``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if kind == "usd":
        return f"${v:,.0f}"
    if kind == "usdm":
        return f"${v:.3f}"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "s":
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"
    if kind == "x":
        return f"{v:.2f}"
    if kind == "met":  # share of seeds meeting the SLO
        return "yes" if v >= 1 else "no" if v <= 0 else f"{100 * v:.0f}% of seeds"
    return f"{v:,}" if isinstance(v, int) else str(v)


COLS = [
    ("strategy", "strategy", ""), ("fleet_nodes", "nodes", ""), ("total_usd", "total $", "usd"),
    ("usd_per_mtok_output", "$/M out tok", "usdm"), ("usd_per_mtok", "$/M in+out tok", "usdm"),
    ("self_host_usd", "self-host $", "usd"), ("api_usd", "API $", "usd"),
    ("spill_request_share", "spill req", "pct"), ("spill_token_share", "spill tok", "pct"),
    ("ttft_p50_s", "TTFT p50", "s"), ("ttft_p95_s", "p95", "s"),
    ("e2e_p50_s", "E2E p50", "s"), ("e2e_p95_s", "p95", "s"),
    ("slo_attainment", "SLO attain", "pct"), ("slo_met", "SLO met", "met"), ("load_factor_peak", "peak load", "x"),
    ("api_rate_limited", "429s", ""), ("api_retries", "API retries", ""), ("failed", "failed", ""),
    ("timed_out", "timed out", ""), ("client_retries", "client retries", ""),
]


@click.command()
@click.argument("experiment", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for compare.csv, compare.json, timelines.csv and plots (default: out/<experiment name>).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per strategy instead of the table.")
@click.option("--seed", type=int, default=None, help="Override the base scenario's seed (same for every strategy).")
@click.option("--seeds", "n_seeds", type=int, default=None,
              help="Replications per strategy, seeds SEED … SEED+N−1, the same for every strategy (default: the "
                   "experiment's seeds, else 1); the table gives means and 95 % confidence intervals.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field of the base scenario by dotted path (repeatable).")
@click.option("--workers", type=int, default=None, help="Processes to run on (default: all cores; 1 = in-process).")
@click.option("--scheduler", default=None, help="Run on an existing Dask cluster at this address.")
@click.option("--no-files", is_flag=True, help="Write nothing (table or JSON only).")
@click.option("--force", is_flag=True, help="Run even if the estimate exceeds this machine's memory or a day.")
def compare(experiment: Path, out_dir: Path | None, as_json: bool, seed: int | None, n_seeds: int | None,
            overrides: tuple[str, ...], workers: int | None, scheduler: str | None, no_files: bool,
            force: bool) -> None:
    """Run every strategy of EXPERIMENT with the same seed(s) and compare cost, latency and spill.

    OUT is replaced all or nothing; a second command writing the same OUT at the same time fails."""
    from contextlib import nullcontext

    from sim.compare.experiment import load_experiment
    from sim.compare.report import write_outputs
    from sim.compare.results import comparison_table, json_records
    from sim.compare.runner import run_experiment
    from sim.core.outdir import result_folder
    from sim.core.progress import Progress
    from sim.runner.estimate import estimate_many
    from sim.runner.executor import default_workers

    exp, runs = load_experiment(experiment, list(overrides), seed, n_seeds)
    scenarios = [sc for r in runs for sc in r.scenarios]
    estimate_many(scenarios, 1 if scheduler else (workers or default_workers())).check(force)
    target = out_dir or Path("out") / exp.name
    with (nullcontext(None) if no_files else result_folder(target)) as staging:
        with Progress("capsim compare", "runs") as bar:  # a bar on a terminal, else a line every ~10 s on stderr
            bar.update(0, len(scenarios))
            results = run_experiment(runs, workers, scheduler, progress=bar.update)
        df = comparison_table(runs, results)
        if staging is not None:
            write_outputs(staging, exp, runs, results, df)
    if as_json:
        click.echo(json.dumps(json_records(runs, results), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    seeds = runs[0].seeds
    multi = len(seeds) > 1
    title = (f"seed {seeds[0]}" if not multi else
             f"seeds {seeds[0]}–{seeds[-1]} ({len(seeds)} replications, same for every strategy; mean ± 95 % CI)")
    table = Table(title=f"capsim compare · {exp.name} · {title}", show_lines=False)
    for _, head, kind in COLS:
        table.add_column(head, justify="left" if kind == "" and head == "strategy" else "right",
                         no_wrap=head == "strategy")
    for _, r in df.iterrows():
        cells = []
        for col, _, kind in COLS:
            v = _plain(r[col])
            if multi and kind == "" and isinstance(v, float) and not math.isnan(v):  # a count averaged over seeds
                cell = f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"
            else:
                cell = _fmt(v, kind)
            if multi and f"{col}_ci95" in r:
                h = _plain(r[f"{col}_ci95"])
                if h is not None and not math.isnan(h):
                    cell += f" ± {_fmt_ci(float(h), kind)}"
            if col == "strategy" and (r["pareto_e2e"] or r["pareto_ttft"]):
                cell += " *"
            cells.append(cell)
        table.add_row(*cells)
    console = Console(width=220)
    console.print(table)
    console.print("* on the cost / P95-latency Pareto front (TTFT or E2E) among the strategies that meet the SLO; "
                  "peak load: the busiest 10 minutes of traffic ÷ what the fleet alone sustains (> 1: it needs spill "
                  "or "
                  "queues); P99s in compare.csv")
    if not no_files:
        console.print(f"files: {target}/compare.csv, " + ("compare_seeds.csv, " if multi else "")
                      + "compare.json, compare.html, cost_vs_p95_latency.png, spill_over_time.png, cost_breakdown.png")
