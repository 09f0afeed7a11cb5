"""``capsim size``: per-node goodput, the smallest fleet that meets every SLO, and the guide's sizing rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sim.core.config import load_scenario
from sim.core.errors import ConfigError
from sim.core.paths import scenario_path

if TYPE_CHECKING:
    import pandas as pd

SIZING_RUNS_PER_SEED = 12  # rough: simulations per seed and GPU type, for the up-front estimate


def _parse_slo(items: tuple[str, ...]) -> dict[str, float | None]:
    """``ttft_p95_s=2`` → {"ttft_p95_s": 2.0}; ``none``/``off`` switches a target off."""
    out: dict[str, float | None] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError("--slo", item, "expected KEY=SECONDS, e.g. ttft_p95_s=2")
        key, text = key.strip(), text.strip()
        if text.lower() in {"none", "off", "null"}:
            out[key] = None
            continue
        try:
            out[key] = float(text)
        except ValueError:
            raise ConfigError("--slo", key, f"expected seconds (got {text!r})") from None
    return out


def _with_gpu(df: pd.DataFrame, gpu: str) -> pd.DataFrame:
    """``df`` with a leading ``gpu`` column."""
    df = df.copy()
    df.insert(0, "gpu", gpu)
    return df


def _write_html(out_dir: Path, report: dict, text: str, several: bool) -> None:
    """sizing.html: the verdict, what was asked, the tables and the PNGs already written in ``out_dir``."""
    import pandas as pd

    from sim.core.atomic_io import write_text
    from sim.report.experiment_pages import size_html

    names = (["sizing_gpus.csv"] if several else []) + ["sizing_rules.csv", "sizing_points.csv"]
    titles = {"sizing_gpus.csv": "Per GPU type (sizing_gpus.csv)", "sizing_rules.csv": "The guide's rules against "
              "the simulation (sizing_rules.csv)", "sizing_points.csv": "Every simulated fleet (sizing_points.csv)"}
    tables = {titles[n]: pd.read_csv(out_dir / n) for n in names}
    images = {n: (out_dir / n).read_bytes() for n in ("sizing.png", "sizing_gpus.png") if (out_dir / n).exists()}
    write_text(out_dir / "sizing.html", size_html(report, tables, images, text))


def _size_pools(sc: object, pool_names: tuple[str, ...], gpus: tuple[str, ...], seeds: int, max_nodes: int,
                workers: int | None, progress: object, out_dir: Path, no_report: bool, as_json: bool) -> None:
    """``capsim size`` of a ``fleet.pools`` scenario: pools.json / pools.csv / pools.txt (sim/sizing/pools.py)."""
    from sim.sizing.pools import format_pool_sizing, size_pools

    rows = size_pools(sc, pool_names, gpus, seeds, max_nodes, workers, progress)  # type: ignore[arg-type]
    report = {"pools": [r.record() for r in rows], "seeds": seeds, "max_nodes": max_nodes}
    table = [{k: v for k, v in r.record().items() if k != "tried"} for r in rows]
    _emit("pools", report, table, format_pool_sizing(rows, max_nodes), out_dir, no_report, as_json)


def _size_split(sc: object, counts: str, seeds: int, max_nodes: int, workers: int | None, progress: object,
                out_dir: Path, no_report: bool, as_json: bool) -> None:
    """``capsim size --prefill-nodes``: split.json / split.csv / split.txt (sim/sizing/disagg.py)."""
    from sim.sizing.disagg import best_split, format_split, parse_counts, size_split

    rows = size_split(sc, parse_counts(counts), seeds, max_nodes, workers, progress)  # type: ignore[arg-type]
    best = best_split(rows)
    splits = [r.record() for r in rows]
    report = {"splits": splits, "best": best.record() if best else None, "seeds": seeds,
              "max_nodes": max_nodes}
    _emit("split", report, splits, format_split(rows, max_nodes), out_dir, no_report, as_json)


def _emit(stem: str, report: dict, table: list[dict], text: str, out_dir: Path, no_report: bool,
          as_json: bool) -> None:
    """Write ``<stem>.json`` / ``.csv`` / ``.txt`` into ``out_dir`` as one result set (unless ``no_report``) and
    print the JSON report or the text."""
    if not no_report:
        import pandas as pd

        from sim.core.atomic_io import write_csv, write_json, write_text
        from sim.core.outdir import result_folder

        with result_folder(out_dir) as tmp:
            write_json(tmp / f"{stem}.json", report)
            write_csv(tmp / f"{stem}.csv", pd.DataFrame(table))
            write_text(tmp / f"{stem}.txt", text + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(text)
        if not no_report:
            click.echo(f"  files      {out_dir}/{stem}.{{json,csv,txt}}")
    sys.stdout.flush()


@click.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--slo", "slos", multiple=True, metavar="KEY=SECONDS",
              help="Set a P95 target, e.g. --slo ttft_p95_s=2 --slo tpot_p95_s=0.1 ('none' drops one).")
@click.option("--attainment", "attainment", type=float, default=None, metavar="SHARE",
              help="Share of all requests (rejected and unfinished ones count as misses) that must meet every "
                   "target (default: the scenario's slo.attainment_target, 0.95).")
@click.option("--worst-window", is_flag=True,
              help="Also require the attainment target in the worst slo.window_s window (default 1 h): size for "
                   "the peak hour, not the day's average.")
@click.option("--rule", "rules", multiple=True, metavar="WORKLOAD",
              help="Only this workload's rule(s) from the guide's table (repeatable; default all): steady_b2b, "
                   "consumer_chat, voice_agents, internal_batch, healthcare_financial, free_tier.")
@click.option("--seeds", type=int, default=5, show_default=True, help="Independent replications per fleet size.")
@click.option("--max-nodes", type=int, default=256, show_default=True, help="Largest fleet the search tries.")
@click.option("--tol", "rel_tol", type=float, default=0.01, show_default=True,
              help="Relative tolerance of the goodput bisection.")
@click.option("--gpu", "gpus", multiple=True, metavar="GPU",
              help="Size on this GPU type (repeatable: one sizing per type, then the cheapest meeting the SLO; "
                   "default: the scenario's fleet.gpu).")
@click.option("--pool", "pool_names", multiple=True, metavar="NAME",
              help="fleet.pools: size this pool of its model (repeatable, one per model; default: each model's "
                   "last pool), holding the others fixed (docs/pools.md).")
@click.option("--prefill-nodes", "prefill_nodes", default=None, metavar="COUNTS",
              help="fleet.pools with a prefill and a decode pool: for each prefill pool size (e.g. 1-4 or 1,2,6), "
                   "the smallest decode pool, and the cheapest split (docs/disaggregation.md).")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--scheduler", default=None, help="Run on an existing Dask cluster at this address.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a scenario field.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/size"),
              show_default=True, help="Folder for sizing.json, sizing.png, the tables and min_nodes_summary.json.")
@click.option("--no-report", is_flag=True, help="Write no files.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.option("--force", is_flag=True, help="Run even if the estimate exceeds this machine's memory or a day.")
def size(scenario: Path | None, slos: tuple[str, ...], attainment: float | None, worst_window: bool,
         rules: tuple[str, ...], seeds: int, max_nodes: int,
         rel_tol: float, gpus: tuple[str, ...], pool_names: tuple[str, ...], prefill_nodes: str | None,
         workers: int | None,
         scheduler: str | None,
         overrides: tuple[str, ...], out_dir: Path, no_report: bool, as_json: bool, quiet: bool,
         force: bool) -> None:
    """Size a fleet for SCENARIO (default: the embedded experiments/default.yaml): the simulated minimum node
    count that meets the SLO (every P95 target and the attainment target, every miss counted) over the whole
    traffic shape, beside the node counts the guide's rules give;
    with several --gpu, per GPU type and the cheapest type that meets the SLO."""
    from sim.sizing.report import format_gpu_report, format_report, plot_gpu_costs, plot_sizing
    from sim.sizing.rules import select_rules
    from sim.sizing.search import size_across_gpus
    from sim.sizing.variants import with_slo

    if seeds < 1:
        raise ConfigError("--seeds", "", f"need at least one seed (got {seeds})")
    chosen = select_rules(rules)
    verdict_sets = ([f"slo.attainment_target={attainment}"] if attainment is not None else []) + (
        ["slo.require_worst_window=true"] if worst_window else [])
    sc = with_slo(load_scenario(scenario_path(scenario), list(overrides) + verdict_sets), _parse_slo(slos))
    if not any(getattr(sc.slo, k) is not None for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")):
        raise ConfigError("--slo", "", "every SLO target is off; sizing needs at least one")

    from sim.runner.estimate import estimate_many
    from sim.runner.executor import default_workers

    # a sizing runs each seed at about a dozen fleet sizes per GPU type (goodput bisection + node search)
    estimate_many([sc], 1 if scheduler else (workers or default_workers()),
                  repeat=seeds * SIZING_RUNS_PER_SEED * max(1, len(set(gpus)))).check(force)

    def progress(msg: str) -> None:
        if not quiet:
            click.echo(f"  {msg}", err=True)

    if prefill_nodes is not None:  # the prefill:decode split of a disaggregated model (sim/sizing/disagg.py)
        _size_split(sc, prefill_nodes, seeds, max_nodes, workers, progress, out_dir, no_report, as_json)
        return
    if sc.fleet.pooled:  # several pools: size each model's growth pool (sim/sizing/pools.py)
        _size_pools(sc, pool_names, gpus, seeds, max_nodes, workers, progress, out_dir, no_report, as_json)
        return
    if pool_names:
        raise ConfigError("--pool", ",".join(pool_names), "the scenario has no fleet.pools")

    if len(set(gpus)) > 1 and sc.pricing.mode == "rented" and sc.pricing.usd_per_gpu_hour is not None:
        progress(f"note: pricing.usd_per_gpu_hour = {sc.pricing.usd_per_gpu_hour} applies to every GPU type; "
                 "unset it to use each GPU profile's price")
    multi = size_across_gpus(sc, list(gpus) or None, n_seeds=seeds, rules=chosen, max_nodes=max_nodes,
                             rel_tol=rel_tol, workers=workers, progress=progress, scheduler=scheduler)
    several = len(multi.entries) > 1
    res = multi.primary.result
    assert res is not None
    report = multi.to_json()
    text = format_gpu_report(multi) if several else format_report(res)
    if not no_report:
        import pandas as pd

        from sim.core.atomic_io import atomic_write, write_csv, write_json, write_text
        from sim.core.outdir import result_folder

        final_dir = out_dir
        with result_folder(final_dir) as out_dir:

            write_json(out_dir / "sizing.json", report)
            if report["min_nodes_summary"] is not None:
                write_json(out_dir / "min_nodes_summary.json", report["min_nodes_summary"])
            if several:  # every GPU type's points and rules, with a gpu column; one row per type
                sized = [(e.gpu, e.result) for e in multi.entries if e.result is not None]
                write_csv(out_dir / "sizing_points.csv",
                          pd.concat([_with_gpu(r.points_table(), g) for g, r in sized], ignore_index=True))
                write_csv(out_dir / "sizing_rules.csv",
                          pd.concat([_with_gpu(r.rules_table(), g) for g, r in sized], ignore_index=True))
                write_csv(out_dir / "sizing_gpus.csv", multi.gpu_table())
                gfig = plot_gpu_costs(multi.gpu_rows())
                atomic_write(out_dir / "sizing_gpus.png", lambda p: gfig.savefig(p, dpi=120, format="png"))
            else:
                write_csv(out_dir / "sizing_points.csv", res.points_table())
                write_csv(out_dir / "sizing_rules.csv", res.rules_table())
            write_text(out_dir / "sizing.txt", text + "\n")
            fig = plot_sizing(res.points_table(), res.rules_table(), res.min_nodes, res.scenario.duration_s)
            atomic_write(out_dir / "sizing.png", lambda p: fig.savefig(p, dpi=120, format="png"))
            _write_html(out_dir, report, text, several)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(text)
        if not no_report:
            extra = ", sizing_gpus.{csv,png}" if several else ""
            click.echo(f"  files      {final_dir}/sizing.{{json,png,txt,html}}, sizing_points.csv, sizing_rules.csv"
                       f"{extra}")
    sys.stdout.flush()
