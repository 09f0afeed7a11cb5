"""``capsim plan``: the cheapest fleet that meets the SLO, across GPU type, GPUs per node, precision and pricing."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click

from sim.core.config import load_scenario
from sim.core.errors import ConfigError
from sim.core.paths import scenario_path

PROGRESS_EVERY_S = 10.0


@contextmanager
def progress_reporter(quiet: bool) -> Iterator[Callable[[str], None]]:
    """Progress for a long search: a live status line on a terminal (rich), else one stderr line every
    :data:`PROGRESS_EVERY_S` seconds (the latest message), and nothing with ``quiet``."""
    if quiet:
        yield lambda _m: None
        return
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("planning…") as status:
            def live(msg: str) -> None:
                status.update(msg.strip())
                if not msg.startswith(" "):
                    console.log(msg)
            yield live
        return
    t0 = time.monotonic()
    last_print = [-PROGRESS_EVERY_S]
    latest = [""]
    shown = [True]
    lock = threading.Lock()
    stop = threading.Event()

    def emit(text: str) -> None:
        now = time.monotonic() - t0
        last_print[0] = now
        click.echo(f"  [{now:5.0f} s] {text}", err=True)

    def lines(msg: str) -> None:
        with lock:
            latest[0], shown[0] = msg.strip(), False
            if time.monotonic() - t0 - last_print[0] >= PROGRESS_EVERY_S:
                emit(latest[0])
                shown[0] = True

    def heartbeat() -> None:  # a line every PROGRESS_EVERY_S even while one long simulation runs
        while not stop.wait(PROGRESS_EVERY_S / 2):
            with lock:
                if latest[0] and time.monotonic() - t0 - last_print[0] >= PROGRESS_EVERY_S:
                    emit(latest[0] if not shown[0] else f"simulating… (last: {latest[0]})")
                    shown[0] = True

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        yield lines
    finally:
        stop.set()
        beat.join()


def _echo_result(text: str, as_json: bool, files: list[str], out_dir: Path, cache: Path | None) -> None:
    """Print a plan's JSON or text, then (text only) the files written and the cache folder."""
    click.echo(text)
    if not as_json and files:
        click.echo(f"  files      {out_dir}/: {', '.join(files)}")
        if cache is not None:
            click.echo(f"  cache      {cache}/ (simulated points, reused by the next plan)")
    sys.stdout.flush()


def _plan_pools(sc: Any, options: dict[str, Any], pool_names: tuple[str, ...], layouts: tuple[str, ...],
                workers: int | None, quiet: bool, out_dir: Path, cache: Path | None, no_report: bool, as_json: bool,
                single_fleet_options: bool) -> None:
    """``capsim plan`` of a ``fleet.pools`` scenario: per model, the cheapest layout of pools (sim/plan/pools.py)."""
    from sim.core.outdir import result_folder
    from sim.plan.pool_report import format_text, to_json, write_outputs
    from sim.plan.pools import plan_pools

    if single_fleet_options:
        raise ConfigError(sc.source, "fleet.pools", "with pools, plan searches layouts per model (--layout), GPU "
                          "type (--gpu), GPUs per node (--tp), precision (--precision) and way to pay (--pricing); "
                          "--max-num-seqs, --spot-share, --autoscale and --dry-run are single-fleet options "
                          "(docs/pools.md)")
    with (nullcontext(None) if no_report else result_folder(out_dir)) as staging:
        with progress_reporter(quiet) as say:
            res = plan_pools(sc, options["gpus"] or (), options["pricing"] or (), pool_names, options["seeds"],
                             options["max_nodes"], workers, say, options["gpus_per_node"] or (),
                             options["precisions"] or (), layouts, options["explore"], options["top_n"], cache)
        files = [] if staging is None else write_outputs(res, staging)
    _echo_result(json.dumps(to_json(res), indent=2) if as_json else format_text(res), as_json, files, out_dir, cache)


@click.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gpu", "gpus", multiple=True, metavar="GPU", help="GPU type to consider (repeatable; default: the "
              "scenario's plan.gpus, else every GPU in the catalogue).")
@click.option("--tp", "tps", multiple=True, type=int, metavar="N", help="GPUs per node (1, 2, 4, 8; repeatable).")
@click.option("--precision", "precisions", multiple=True, metavar="P[/KV]",
              help="Weights (and KV cache) precision, e.g. bf16, fp8 or fp8/bf16 (repeatable).")
@click.option("--max-num-seqs", "max_num_seqs", multiple=True, type=int, metavar="N",
              help="Engine batch limit to consider (repeatable; default: the scenario's).")
@click.option("--pricing", "pricing", multiple=True,
              type=click.Choice(["on_demand", "reserved_1y", "reserved_3y", "owned"]),
              help="Ways to pay to compare (repeatable; default: all four).")
@click.option("--spot-share", "spot_shares", multiple=True, type=click.FloatRange(0.0, 1.0), metavar="S",
              help="Share of each minimum fleet's nodes to try as spot nodes, 0 to 1 (repeatable; 0 = none; "
                   "default: plan.spot_shares, else none).")
@click.option("--autoscale", "autoscale", multiple=True, type=click.Choice(["fixed", "forecast"]),
              help="fixed: the minimum fleet always up (always ranked); forecast: also a reserved base for the mean "
                   "load plus on-demand nodes the forecast autoscaler starts (repeatable; default: plan.autoscale, "
                   "else fixed).")
@click.option("--layout", "layouts", multiple=True, type=click.Choice(["grow", "single", "disaggregated"]),
              help="fleet.pools: layouts to search per model (repeatable; default: plan.pool_layouts, else grow and "
                   "single for a model served mixed, disaggregated and single for one served disaggregated).")
@click.option("--pool", "pool_names", multiple=True, metavar="NAME",
              help="fleet.pools: the growth pool of its model for the grow layout (repeatable, one per model; "
                   "default: each model's last pool).")
@click.option("--seeds", type=int, default=None, help="Replications per fleet size (default: plan.seeds, 2).")
@click.option("--max-nodes", type=int, default=None, help="Largest fleet tried per candidate (default 64).")
@click.option("--top", "top_n", type=int, default=None, help="Rows in the ranked table (default 10).")
@click.option("--explore", type=int, default=None,
              help="Simulate until this many candidates beat every remaining bound (default 3; 1 = winner only).")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field by dotted path, e.g. --set slo.ttft_p95_s=0.5 (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/plan"),
              show_default=True, help="Folder for plan.{json,csv,txt,html}, winner.yaml and the plots (replaced "
              "as a whole).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of simulated points reused by later plans (default: OUT.cache beside OUT, e.g. "
                   "out/plan.cache; it is not part of the result set, so replacing OUT keeps it).")
@click.option("--no-cache", is_flag=True, help="Simulate every point again and store none.")
@click.option("--no-report", is_flag=True, help="Write no files (and use no cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--dry-run", is_flag=True, help="Print the candidate count and an estimate of the search; run nothing.")
@click.option("--force", is_flag=True, help="Run even if the estimate exceeds this machine's memory or a day.")
def plan(scenario: Path | None, gpus: tuple[str, ...], tps: tuple[int, ...], precisions: tuple[str, ...],
         max_num_seqs: tuple[int, ...], pricing: tuple[str, ...], spot_shares: tuple[float, ...],
         autoscale: tuple[str, ...], layouts: tuple[str, ...], pool_names: tuple[str, ...], seeds: int | None,
         max_nodes: int | None,
         top_n: int | None, explore: int | None, workers: int | None, overrides: tuple[str, ...], out_dir: Path,
         cache_dir: Path | None, no_cache: bool, no_report: bool, as_json: bool, quiet: bool, dry_run: bool,
         force: bool) -> None:
    """What should we buy? The cheapest fleet meeting SCENARIO's SLO (default: the embedded default scenario),
    over GPU type × GPUs per node × precision × max_num_seqs × way to pay × spot share × fixed or forecast
    autoscaling: candidates the hardware or the performance model rule out are dropped, the rest are sized by
    simulation in order of a cost lower bound,
    and the minimum fleets are priced on-demand, reserved and owned. Writes a ranked table, the winner as a
    scenario YAML (capsim run reproduces it) and an HTML decision report.

    With fleet.pools: per model, the cheapest layout of pools (--layout grow: the pools you have plus a growth
    pool; single: one pool; disaggregated: prefill + decode pools, the ratio searched) over GPU × GPUs per node ×
    precision × way to pay (docs/pools.md).

    OUT is replaced all or nothing (written beside it, then swapped in); a second command writing the same
    OUT at the same time fails with one line. Ctrl-C or SIGTERM stops the workers and exits 130 (the points
    simulated so far stay in the cache)."""
    from sim.core.outdir import result_folder
    from sim.plan.report import format_text, to_json, write_outputs
    from sim.plan.search import candidate_space, estimate_plan, run_plan
    from sim.runner.executor import default_workers

    sc = load_scenario(scenario_path(scenario), list(overrides))
    for name, value in (("--seeds", seeds), ("--max-nodes", max_nodes), ("--top", top_n), ("--explore", explore),
                        ("--workers", workers)):
        if value is not None and value < 1:
            raise ConfigError(name, "", f"must be at least 1 (got {value})")
    options: dict[str, Any] = {
        "gpus": list(gpus) or None, "gpus_per_node": list(tps) or None, "precisions": list(precisions) or None,
        "max_num_seqs": list(max_num_seqs) or None, "pricing": list(pricing) or None, "seeds": seeds,
        "max_nodes": max_nodes, "top_n": top_n, "explore": explore, "spot_shares": list(spot_shares) or None,
        "autoscale": list(autoscale) or None}
    cache = None if (no_cache or no_report) else (cache_dir or out_dir.parent / f"{out_dir.name}.cache")
    if sc.fleet.pooled:  # docs/pools.md: per model, layouts of pools × GPU × TP × precision × way to pay
        _plan_pools(sc, options, pool_names, layouts, workers, quiet, out_dir, cache, no_report, as_json,
                    bool(max_num_seqs or spot_shares or autoscale or dry_run))
        return
    if layouts or pool_names:
        raise ConfigError("--layout" if layouts else "--pool", ",".join(layouts or pool_names),
                          "the scenario has no fleet.pools (docs/pools.md)")
    space = candidate_space(sc, **options)
    est = estimate_plan(sc, space, workers or default_workers())
    n_viable = len(space.viable)
    if dry_run:
        click.echo(f"{sc.name}: {len(space.candidates)} candidates, {n_viable} after the hardware and lone-latency "
                   f"checks; {est.line()} (an upper bound: the cost bound usually skips most candidates)")
        return
    est.check(force)
    with (nullcontext(None) if no_report else result_folder(out_dir)) as staging:
        with progress_reporter(quiet) as say:
            res = run_plan(sc, **options, workers=workers, cache_dir=cache, progress=say)
        files = [] if staging is None else write_outputs(res, staging)
    _echo_result(json.dumps(to_json(res), indent=2) if as_json else format_text(res), as_json, files, out_dir, cache)
