"""``capsim run``: simulate one scenario and write its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from sim.core.config import Scenario, load_scenario
from sim.core.paths import scenario_path
from sim.metrics.headline import load_line, overload_line, pool_usd_per_mtok_share, slo_line, warmup_counts
from sim.metrics.headline import pct as _pct

if TYPE_CHECKING:
    from sim.metrics.summary import Percentiles, Summary
    from sim.runner.estimate import SplitEstimate
    from sim.runner.executor import ExecutorSpec
    from sim.runner.slices import SlicePlan


def _print_summary(summary: Summary, out_dir: Path | None) -> None:
    r, lat, thr, u, slo, c = (summary.requests, summary.latency, summary.throughput, summary.utilisation,
                              summary.slo, summary.cost)
    f = summary.fleet

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{1000 * v:,.0f} ms"

    def p50_95_99(p: Percentiles) -> str:
        return f"P50 {ms(p.p50)}  P95 {ms(p.p95)}  P99 {ms(p.p99)}"

    head = f"{f.nodes} node(s) × {f.gpus_per_node}× {f.gpu} · {f.model}"
    gh = c.gpu_hours_by_kind
    if gh.get("on_demand") or gh.get("spot"):  # autoscaled: fleet.nodes are the reserved ones only
        head = (f"{f.nodes} reserved node(s) + autoscaled (mean {u.nodes_up_mean or 0:.1f} up) × {f.gpus_per_node}× "
                f"{f.gpu} · {f.model}")
    if summary.pools is not None:  # fleet.pools: one line per pool and per model below
        head = f"{len(summary.pools)} pool(s), {f.nodes} reserved node(s) · {f.model}"
    lines = [
        f"capsim · {summary.scenario} · {head}",
        f"  load       {load_line(u, summary.overload.overloaded, summary.duration_s)}",
        f"  requests   {r.arrived:,} arrived{warmup_counts(summary)}, {r.completed:,} completed, "
        f"{r.rejected:,} rejected, {r.spilled:,} spilled, {r.in_flight:,} in flight"
        + (f", {r.timed_out:,} timed out ({r.retries:,} client retries)" if r.timed_out or r.retries else ""),
        f"  TTFT       {p50_95_99(lat.ttft_s)}",
        f"  TPOT       {p50_95_99(lat.tpot_s)}",
        f"  E2E        {p50_95_99(lat.e2e_s)}",
        f"  throughput {thr.offered_requests_per_s:.2f} req/s offered, {thr.served_requests_per_s:.2f} served "
        f"({thr.served_output_tokens_per_s:,.0f} output tok/s)",
        f"  overload   {overload_line(summary)}",
        f"  GPUs       MFU {_pct(u.mfu_mean)} (P95 {_pct(u.mfu_p95)}), MBU {_pct(u.mbu_mean)} "
        f"(P95 {_pct(u.mbu_p95)}), KV cache {_pct(u.kv_fraction_mean)} (P95 {_pct(u.kv_fraction_p95)}), "
        f"mean batch {(u.running_seqs_mean or 0) / max(u.nodes_up_mean or f.nodes, 1):.0f}/node, "
        f"steps running {_pct(u.busy_fraction)} of the time",
        f"  SLO        {slo_line(slo)}",
        f"  cost       ${c.total_usd:,.2f} for {summary.duration_s:,.0f} s "
        f"(${c.usd_per_gpu_hour or 0:.2f}/GPU-h, {c.pricing_mode}) → "
        + ("–" if c.usd_per_mtok_output is None else f"${c.usd_per_mtok_output:.2f} per M output tokens"
           + (" (serving cost: all pools" + (" + API" if c.api_usd else "") + ")" if summary.pools else "")
           + ", ")
        + ("" if c.usd_per_mtok_total is None else f"${c.usd_per_mtok_total:.3f} per M tokens"),
    ]
    e = summary.energy  # sim/metrics/energy.py
    lines.append(f"  energy     {e.kwh:,.2f} kWh ({e.avg_power_kw:,.1f} kW mean incl. PUE {e.pue:g}), "
                 f"{e.co2_kg:,.2f} kg CO2, ${e.usd:,.2f} of electricity (inside the {e.paid_in})")
    sp, api = summary.spill, summary.api
    if sp is not None and api is not None:
        lines.append(
            f"  spill      {sp.policy}: {sp.requests:,} requests ({100 * (sp.request_share or 0):.1f}%, "
            f"{100 * (sp.token_share or 0):.1f}% of tokens) to {api.provider}; {api.rate_limited:,} "
            f"rate-limited (429), {api.retries:,} retries, {api.failed:,} failed; API ${api.usd:,.2f}"
        )
    pc, rt = summary.prefix_cache, summary.routing
    if pc.enabled:  # docs/prefix-cache.md
        lines.append(
            f"  prefix     cache hits {_pct(pc.hit_token_ratio)} of prompt tokens "
            f"({_pct(pc.requests_with_hit)} of requests hit); router {rt.policy}"
            + (f" (state {rt.staleness_s:g} s stale)" if rt.staleness_s else "")
            + ("" if rt.node_work_max_over_mean is None
               else f", busiest node {rt.node_work_max_over_mean:.2f}× the mean work")
        )
    d = summary.disaggregation
    if d is not None:  # sim/fleet/disagg.py
        lines.append(
            f"  disagg     {d.prefill_nodes} prefill + {d.decode_nodes} decode nodes; {d.transfers:,} KV "
            f"transfers ({d.kv_gb_sent:,.1f} GB), after prefill mean {ms(d.transfer_mean_s)} "
            f"(P95 {ms(d.transfer_p95_s)}), links busy {_pct(d.link_busy_mean)}"
        )
    if gh.get("on_demand") or gh.get("spot"):
        lines.append(
            "  fleet      GPU-hours " + ", ".join(f"{k.replace('_', '-')} {v:,.1f}" for k, v in gh.items() if v)
            + f"; mean nodes up {u.nodes_up_mean or 0:.1f}"
        )
    lines += pool_lines(summary)
    b = summary.batch
    if b is not None:
        lines.append(
            f"  batch      {b.arrived:,} deferrable requests, {b.deadline_met:,} met their deadline, "
            f"{b.deadline_missed:,} missed"
        )
    if not slo.met:
        lines.append("  hint       " + _overload_hint(summary))
    if out_dir is not None:
        lines.append(f"  report     {out_dir / 'report.html'}")
    click.echo("\n".join(lines))


def pool_lines(summary: Summary) -> list[str]:
    """One console line per pool and per model of a ``fleet.pools`` run (none otherwise)."""
    out = []
    for name, p in (summary.pools or {}).items():
        lf = p.utilisation.load_factor
        share, model = pool_usd_per_mtok_share(summary, name), (summary.models or {}).get(p.model)
        of_model = ("" if share is None or model is None or model.usd_per_mtok_output is None
                    or len(model.pools) < 2
                    else f" (${share:.2f} of the model's ${model.usd_per_mtok_output:.2f} per M output tokens)")
        out.append(
            f"  pool       {name} ({p.role}): {p.nodes} × {p.gpus_per_node}× {p.gpu} · {p.model} · "
            f"{p.requests.completed:,} completed · load factor {'–' if lf is None else f'{lf:.2f}'} · "
            f"TTFT P95 {_ms(p.latency.ttft_s.p95)} · TPOT P95 {_ms(p.latency.tpot_s.p95)} · "
            f"${p.cost.self_host_usd:,.2f}{of_model}")
    for name, m in (summary.models or {}).items():
        att, per_m = m.attainment, m.usd_per_mtok_output
        out.append(
            f"  model      {name}: {m.arrived:,} arrived after warm-up · SLO attainment "
            f"{'–' if att is None else f'{100 * att:.1f}%'} ({'met' if m.met else 'MISSED'}) · "
            f"TTFT P95 {_ms(m.ttft_s.p95)} · "
            f"${m.cost_usd:,.2f}" + ("" if per_m is None else f" → ${per_m:.2f} per M output tokens"))
    return out


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{1000 * v:,.0f} ms"


def _pool_hint(summary: Summary) -> str | None:
    """With pools, where only some models miss: name them and their busiest pool (the fleet-wide queue and KV
    figures average the missing pool with pools that have room to spare)."""
    models = summary.models or {}
    missed = [m for m, ms in models.items() if not ms.met]
    if summary.pools is None or not missed or len(missed) == len(models):
        return None
    load = summary.utilisation.load_factor_by_pool or {}
    pools = [p for m in missed for p in models[m].pools]
    busiest = max(pools, key=lambda p: load.get(p) or 0.0)
    lf = load.get(busiest)
    at = f" (load factor {lf:.2f})" if lf is not None else ""
    return (f"{', '.join(missed)} misses its SLO, the other model(s) meet theirs: its busiest pool is {busiest}{at}; "
            f"`capsim plan --pool {busiest}` finds what to add to it")


def _overload_hint(summary: Summary) -> str:
    """One line on why the SLO was missed and what to try."""
    u, r = summary.utilisation, summary.requests
    kv_p95, queue = u.kv_fraction_p95 or 0.0, u.queue_len_mean or 0.0
    if r.rejected:
        return (f"{r.rejected:,} requests can never fit a node (context or KV cache too small): "
                "raise fleet.engine.max_model_len, gpus_per_node or use FP8 KV")
    pooled = _pool_hint(summary)
    if pooled:
        return pooled
    if summary.overload.overloaded or kv_p95 > 0.95:
        return (f"the fleet is saturated (KV cache P95 {100 * kv_p95:.0f}%, {queue:,.0f} requests queued on "
                "average): `capsim size` finds the node count that meets the SLO")
    if queue > 1.0:  # a standing queue without a full cache or a growing backlog: close to, not at, saturation
        lf = getattr(u, "load_factor", None)
        at = "" if lf is None else f"load factor {lf:.2f}, "
        return (f"the fleet is near saturation ({at}{queue:,.0f} requests queued on average, KV cache P95 "
                f"{100 * kv_p95:.0f}%): `capsim size` finds the node count that meets the SLO")
    return "latency misses its targets without saturation: check the SLO, max_num_batched_tokens (long " \
           "prefill chunks stretch decode steps) or a faster GPU/precision"


@click.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Folder for tables, plots, summary.json and report.html (replaced as a whole).")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field by dotted path, e.g. --set fleet.nodes=4 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout instead of the text summary.")
@click.option("--no-report", is_flag=True, help="Skip writing files (summary only).")
@click.option("--stream", is_flag=True,
              help="Long runs: stream per-request records to requests.parquet in chunks and compute percentiles "
                   "from histograms (±0.12 %), so memory stays flat in the number of requests. With --no-report: "
                   "the summary only, no files.")
@click.option("--no-requests", is_flag=True,
              help="With --stream: no per-request file (summary, time series and report only), for sweeps of "
                   "long runs.")
@click.option("--dry-run", is_flag=True, help="Print the estimated requests, memory and wall time; run nothing.")
@click.option("--force", is_flag=True, help="Run even if the estimate exceeds this machine's memory or a day.")
@click.option("--shards", type=int, default=None, metavar="N",
              help="Split the fleet into N cells, each taking a seeded, exact thinned share of the arrivals (no "
                   "routing across cells), run them in parallel and merge (docs/scaling.md).")
@click.option("--slices", type=int, default=None, metavar="K",
              help="Long runs: split the horizon into K time slices, each simulated from an empty fleet with a "
                   "warm-up chosen from the workload, run them in parallel and merge (docs/scaling.md).")
@click.option("--slice-warmup-s", type=float, default=None, metavar="S",
              help="With --slices: warm-up of every slice in seconds (default: chosen from the workload).")
@click.option("--workers", "-j", type=int, default=None,
              help="With --shards or --slices: local worker processes (default: min(N, cores); 1 = in-process).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="With --shards or --slices: run on an existing Dask cluster, e.g. tcp://host:8786.")
def run(scenario: Path | None, out_dir: Path, seed: int | None, overrides: tuple[str, ...], as_json: bool,
        no_report: bool, stream: bool, no_requests: bool, dry_run: bool, force: bool, shards: int | None,
        slices: int | None, slice_warmup_s: float | None, workers: int | None, scheduler: str | None) -> None:
    """Simulate SCENARIO (default: the embedded experiments/default.yaml) and write its report.

    OUT is replaced all or nothing (written beside it, then swapped in); a second run into the same OUT at
    the same time fails with one line."""
    from sim.runner.estimate import estimate_scenario

    path = scenario_path(scenario)
    sets = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    sc = load_scenario(path, sets)
    from sim.core.progress import Progress

    if no_requests and not stream:
        raise click.UsageError("--no-requests applies to --stream runs")
    if shards is None and slices is None and (workers is not None or scheduler is not None):
        raise click.UsageError("--workers and --scheduler apply to --shards and --slices runs")
    if shards is not None and slices is not None:
        raise click.UsageError("--shards and --slices cannot be combined")
    if slice_warmup_s is not None and (slices is None or slice_warmup_s < 0):
        raise click.UsageError("--slice-warmup-s needs --slices and a value >= 0")
    if workers is not None and workers < 1:
        raise click.UsageError(f"--workers must be >= 1 (got {workers})")
    if shards is not None:
        from sim.runner.shards import check_shardable

        check_shardable(sc, shards)
        if stream and not (no_requests or no_report):
            raise click.UsageError("--shards with --stream writes no per-request file: add --no-requests")
    if slices is not None:
        from sim.runner.slices import check_sliceable

        check_sliceable(sc, slices)
        if stream and not (no_requests or no_report):
            raise click.UsageError("--slices with --stream writes no per-request file: add --no-requests")
    from sim.runner.simulation import build_node_model

    build_node_model(sc)  # GPU, model, tensor parallelism and memory checks, before any file is touched
    est = estimate_scenario(sc, stream)
    split, spec, plan = _split_estimate(sc, shards, slices, slice_warmup_s, workers, scheduler, stream)
    if dry_run:
        click.echo(f"{sc.name}: {est.line()}")
        if split is not None:
            click.echo(f"{sc.name}: {split.line()}")
        return
    if split is not None and spec is not None:
        split.check(force, 0 if spec.kind == "dask" else split.workers)
    else:
        est.check(force)
    from sim.core.outdir import result_folder
    from sim.runner.pipeline import run_scenario, run_streamed, write_outputs

    if shards is not None or slices is not None:
        if shards is not None:
            summary = _run_sharded(sc, shards, workers, scheduler, stream, no_report, out_dir)
        else:
            assert slices is not None
            assert plan is not None and spec is not None
            summary = _run_sliced(sc, plan, spec, stream, no_report, out_dir)
        if as_json:
            click.echo(json.dumps(summary.to_json(), indent=2))
        else:
            _print_summary(summary, None if no_report else out_dir)
        return
    bar = Progress("capsim run", "s simulated")  # a bar on a terminal, else a line on stderr every ~10 s
    update, stop = bar.sim_time, bar.close
    try:
        if no_report:  # summary only, no files (streamed: histograms, flat memory)
            if stream:
                from sim.metrics.streaming import run_streaming

                summary = run_streaming(sc, None, update).summary
            else:
                summary = run_scenario(sc, update).summary
        else:
            with result_folder(out_dir) as staging:
                if stream:
                    summary = run_streamed(sc, staging, update, requests_file=not no_requests)
                else:
                    out = run_scenario(sc, update)
                    summary = out.summary
                    write_outputs(out, staging)
    finally:
        stop()
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print_summary(summary, None if no_report else out_dir)


def _run_sharded(sc: Scenario, shards: int, workers: int | None, scheduler: str | None, stream: bool, no_report: bool,
                 out_dir: Path) -> Summary:
    """``--shards``: the cells on a local pool (or Dask), merged; the report written from the merged fleet."""
    from sim.runner.executor import ExecutorSpec, default_workers
    from sim.runner.shards import run_sharded, run_sharded_streaming

    spec = ExecutorSpec(workers=workers or min(shards, default_workers()), scheduler=scheduler)
    click.echo(f"capsim run: {shards} cell(s) on {spec.describe()}", err=True)
    on_done, stop, _ = parts_progress("cells", shards)
    runner = run_sharded_streaming if stream else run_sharded
    return _run_split(lambda: runner(sc, shards, spec, on_done), stop, stream, no_report, out_dir)


def _split_estimate(sc: Scenario, shards: int | None, slices: int | None, warmup_s: float | None,
                    workers: int | None, scheduler: str | None, stream: bool
                    ) -> tuple[SplitEstimate | None, ExecutorSpec | None, SlicePlan | None]:
    """``--shards`` / ``--slices``: (the split run's estimate, its executor, the slices' plan); Nones otherwise."""
    from sim.runner.executor import ExecutorSpec, default_workers

    parts = shards or slices
    if parts is None:
        return None, None, None
    spec = ExecutorSpec(workers=workers or min(parts, default_workers()), scheduler=scheduler)
    slots = parts if spec.kind == "dask" else (1 if spec.kind == "in_process" else spec.workers or 1)
    where = (f"{spec.describe()} (if it runs all {parts} at once)" if spec.kind == "dask" else spec.describe())
    if shards is not None:
        from sim.runner.shards import estimate_cells

        return estimate_cells(sc, shards, stream, slots, where), spec, None
    from sim.runner.slices import estimate_slices, plan_slices

    plan = plan_slices(sc, parts, warmup_s)
    return estimate_slices(sc, plan, stream, slots, where), spec, plan


def _run_sliced(sc: Scenario, plan: SlicePlan, spec: ExecutorSpec, stream: bool, no_report: bool,
                out_dir: Path) -> Summary:
    """``--slices``: the time slices on a local pool (or Dask), merged; the report written from the whole run."""
    from sim.runner.slices import run_sliced, run_sliced_streaming

    click.echo(f"capsim run: {plan.describe()} on {spec.describe()}", err=True)
    slices = len(plan.windows)
    on_done, stop, on_clock = parts_progress("slices", slices, [w.keep_to_s - w.keep_from_s for w in plan.windows],
                                             [w.keep_from_s for w in plan.windows])
    if stream:
        return _run_split(lambda: run_sliced_streaming(sc, plan, spec, on_done, on_clock, node_table=not no_report),
                          stop, stream, no_report, out_dir)
    return _run_split(lambda: run_sliced(sc, plan, spec, on_done, on_clock), stop, stream, no_report, out_dir)


def _run_split(run: Callable[[], Any], stop: Callable[[], None], stream: bool, no_report: bool,
               out_dir: Path) -> Summary:
    """Run a split (sharded or sliced) run with its progress stopped after it, then write its report into
    ``out_dir`` all or nothing (streamed: summary, time series and report; in memory: every table)."""
    from sim.core.outdir import result_folder
    from sim.runner.pipeline import write_outputs, write_streamed_report

    try:
        out = run()
    finally:
        stop()
    if not no_report:
        with result_folder(out_dir) as staging:
            (write_streamed_report if stream else write_outputs)(out, staging)
    return cast("Summary", out.summary)


def parts_progress(unit: str, total: int, spans_s: list[float] | None = None, starts_s: list[float] | None = None
                   ) -> tuple[Callable[[int], None], Callable[[], None], Callable[[int, float], None]]:
    """``(on_done, stop, on_clock)``: progress of a split run as its parts (slices, cells) finish, on any executor —
    parts done of ``total`` and, given each slice's span, the simulated time they cover (:class:`sim.core.progress.
    Progress`: a bar from the start on a terminal, else a line on stderr every ~10 s). ``on_clock(k, t_s)``: slice
    ``k`` (starting at ``starts_s[k]``) has simulated up to ``t_s`` — a slice running in this process moves the bar
    as an unsplit run does, not only at its end."""
    from sim.core.progress import Progress

    bar = Progress("capsim run", unit, delay_s=0.0)
    done: list[int] = []

    def note(running_s: float = 0.0) -> str:
        if spans_s is None:
            return ""
        d = int(sum(spans_s) >= 7200)  # hours (one decimal) for long runs, else seconds
        div, u = (3600.0, "h") if d else (1.0, "s")
        covered = sum(spans_s[i] for i in done) + running_s
        return f"{covered / div:,.{d}f} of {sum(spans_s) / div:,.{d}f} {u} simulated"

    def on_done(k: int) -> None:
        done.append(k)
        bar.update(len(done), total, note())

    def on_clock(k: int, t_s: float) -> None:
        if spans_s is None or starts_s is None or k in done:
            return
        covered = t_s - starts_s[k]
        if 0.0 < covered < spans_s[k]:  # its own stretch (not the warm-up before it, nor the drain after it)
            bar.update(len(done) + covered / spans_s[k], total, note(covered))

    bar.update(0, total)
    return on_done, bar.close, on_clock
