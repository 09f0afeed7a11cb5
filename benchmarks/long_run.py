"""Long-run benchmark: a multi-day ``consumer_chat`` run through the streaming metrics path.

Prints simulated requests per wall-clock second and peak RSS, plus RSS at every simulated day (it should stay
flat: per-request records are streamed to Parquet in chunks and percentiles come from histograms). The default
is the issue's target: 7 days, ~30 million requests (49.6 req/s mean on the consumer_chat daily × weekly curve).
On a small machine, run fewer days (``--days 1``) and read the extrapolated line.

    .venv/bin/python benchmarks/long_run.py --days 1 [--requests-parquet /tmp/req.parquet]

For the issue's one-command benchmark (wall, CPU and the whole process tree's memory through ``capsim run``) see
``benchmarks/week.py``. ``--slices K [--workers W]`` runs the horizon as K time slices
(``capsim run --stream --no-report --slices K``, summary only) on W local worker processes and prints each slice's
requests, CPU seconds and worker peak RSS, the CPU time of the whole run (this process and its workers) and the
wall time the run would take on N free cores, estimated from the per-slice figures (the slices in longest-first
order on N cores, plus the merge).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.core.config import load_scenario  # noqa: E402
from sim.metrics.streaming import run_streaming  # noqa: E402
from sim.runner.executor import ExecutorSpec  # noqa: E402
from sim.runner.slices import plan_slices, run_slices, streamed_fold  # noqa: E402

TARGET_REQUESTS = 30_000_000
WEEK_S = 7 * 86400.0


def rss_mb() -> float:
    """Current resident set size (MB) from /proc (Linux); peak RSS where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def cpu_s() -> float:
    """CPU seconds (user + sys) of this process and its finished children (pool workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def children_peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def lpt_wall_s(costs: list[float], cores: int) -> float:
    """Makespan of the slices (longest first, each to the least-loaded core) on ``cores`` cores."""
    loads = [0.0] * cores
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def some_slices(sc: object, args: argparse.Namespace) -> None:
    """Only the slices ``args.only`` of the plan, one after the other in this process (per-slice figures, no merge):
    to measure a configuration whose whole run does not fit the time at hand (e.g. ``CAPSIM_PURE_PYTHON=1``)."""
    from sim.runner.slices import run_slice

    plan = plan_slices(sc, args.slices, args.slice_warmup_s, balance=not args.equal_time_bounds)  # type: ignore[arg-type]
    print(f"  {plan.describe()}; only slices {args.only}", flush=True)
    for k in map(int, args.only.split(",")):
        w = plan.windows[k]
        p = run_slice((sc, w, True, None))  # type: ignore[arg-type]
        own, m = p.result.tally.arrived, int(p.result.series.fleet("arrivals").sum())
        print(f"  slice {k}: [{w.keep_from_s / 3600:6.1f} h, {w.keep_to_s / 3600:6.1f} h) {own:,} own requests "
              f"({m:,} simulated), {p.cpu_s:7.1f} CPU-s ({1e6 * p.cpu_s / max(m, 1):.1f} µs/simulated request), "
              f"peak RSS {p.peak_rss_mb:,.0f} MB", flush=True)


def sliced(sc: object, args: argparse.Namespace) -> None:
    """The horizon as ``args.slices`` time slices on ``args.workers`` local workers (summary only)."""
    t0, c0 = time.perf_counter(), cpu_s()
    plan = plan_slices(sc, args.slices, args.slice_warmup_s, balance=not args.equal_time_bounds)  # type: ignore[arg-type]
    print(f"  {plan.describe()}", flush=True)
    fold = run_slices(sc, plan, ExecutorSpec(workers=args.workers), streamed=True)  # type: ignore[arg-type]
    t1, c1 = time.perf_counter(), cpu_s()
    out = streamed_fold(fold, node_table=False)  # summary only, as `capsim run --stream --no-report`
    merge_wall, merge_cpu = time.perf_counter() - t1, cpu_s() - c1
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = out.summary.requests.arrived
    figs = [f for f in fold.figures if f is not None]
    simulated = 0
    for k, (f, w) in enumerate(zip(figs, plan.windows)):
        simulated += f.simulated  # warm-up and tail too
        print(f"  slice {k}: [{w.keep_from_s / 3600:6.1f} h, {w.keep_to_s / 3600:6.1f} h) warm-up "
              f"{w.keep_from_s - w.start_s:5.0f} s, {f.own:,} own requests ({f.simulated:,} simulated), "
              f"{f.cpu_s:7.1f} CPU-s ({1e6 * f.cpu_s / max(f.simulated, 1):.1f} µs/simulated request), worker peak "
              f"RSS {f.peak_rss_mb:,.0f} MB")
    costs = [f.cpu_s for f in figs]
    print(f"requests        {n:,} arrived, {out.summary.requests.completed:,} completed; {simulated:,} simulated "
          f"(+{100 * (simulated / max(n, 1) - 1):.1f} % warm-up and tail)")
    print(f"wall time       {wall:,.1f} s on {args.workers} worker(s) (final merge {merge_wall:.1f} s); "
          f"CPU {cpu:,.1f} s "
          f"(slices {sum(costs):,.1f}, final merge {merge_cpu:.1f}) → {n / cpu:,.0f} requests per CPU-second")
    print(f"RSS             this process peak {peak_rss_mb():,.0f} MB, workers peak {children_peak_rss_mb():,.0f} MB")
    lat = out.summary.latency
    assert lat.ttft_s.p95 is not None and lat.tpot_s.p95 is not None
    print(f"P95 TTFT / TPOT {1000 * lat.ttft_s.p95:,.1f} / {1000 * lat.tpot_s.p95:,.2f} ms (histograms)")
    start = 1.0  # a fresh worker's start-up and imports, CPU-s
    for cores in sorted({1, 2, 4, 7, 8, 16, args.slices}):
        est = lpt_wall_s([c + start for c in costs], cores) + merge_wall
        print(f"  on {cores:2d} free core(s): ~{est:,.0f} s wall (estimated from the per-slice CPU figures)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    ap.add_argument("--rate-rps", type=float, default=TARGET_REQUESTS / WEEK_S,
                    help="mean arrival rate (default: 30M requests per week)")
    ap.add_argument("--nodes", type=int, default=10, help="1-GPU H100 nodes serving Llama-3.1-8B")
    ap.add_argument("--sample-interval-s", type=float, default=10.0, help="fleet time-series sample interval")
    ap.add_argument("--requests-parquet", type=Path, default=None,
                    help="also stream every request to this Parquet file (default: a temporary file)")
    ap.add_argument("--summary-only", action="store_true", help="do not write per-request records at all")
    ap.add_argument("--report-every-h", type=float, default=None,
                    help="print RSS every this many simulated hours (default: 24, or 1 for runs under 2 days)")
    ap.add_argument("--slices", type=int, default=None, help="run as this many time slices (summary only)")
    ap.add_argument("--slice-warmup-s", type=float, default=None, help="every slice's warm-up (default: chosen)")
    ap.add_argument("--workers", type=int, default=2, help="with --slices: local worker processes")
    ap.add_argument("--equal-time-bounds", action="store_true",
                    help="with --slices: bounds at equal times (default: at equal expected arrivals)")
    ap.add_argument("--only", default=None, help="with --slices: run only these slices (comma-separated), here")
    args = ap.parse_args()
    from sim import _native

    print("engine modules:", "compiled (make native)" if _native.compiled() else "pure Python", flush=True)

    duration_s = args.days * 86400.0
    sc = load_scenario(ROOT / "experiments" / "default.yaml", [
        f"duration_s={duration_s}", "warmup_s=0", f"traffic.rate_rps={args.rate_rps}", "traffic.shape=consumer_chat",
        f"fleet.nodes={args.nodes}", f"output.sample_interval_s={args.sample_interval_s}", "name=long-run",
    ])
    if args.slices:
        print(f"long run: consumer_chat, {args.days:g} day(s) at {args.rate_rps:.1f} req/s mean "
              f"(~{args.rate_rps * duration_s / 1e6:.1f} M requests), {args.nodes}x H100 Llama-3.1-8B, "
              f"{args.slices} slices on {args.workers} worker(s), summary only", flush=True)
        (some_slices if args.only else sliced)(sc, args)
        return
    tmp = tempfile.TemporaryDirectory()
    parquet = None if args.summary_only else (args.requests_parquet or Path(tmp.name) / "requests.parquet")
    print(f"long run: consumer_chat, {args.days:g} day(s) at {args.rate_rps:.1f} req/s mean "
          f"(~{args.rate_rps * duration_s / 1e6:.1f} M requests), {args.nodes}x H100 Llama-3.1-8B, "
          f"requests → {parquet or 'summary only'}", flush=True)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    rss0 = rss_mb()
    every_s = 3600.0 * (args.report_every_h or (24.0 if args.days >= 2 else 1.0))
    marks = {"next": 1}

    def progress(t_s: float, total_s: float) -> None:
        while t_s >= marks["next"] * every_s and marks["next"] * every_s <= total_s:
            print(f"  t = {marks['next'] * every_s / 3600:5.1f} h simulated: wall {time.perf_counter() - t0:7,.0f} s, "
                  f"RSS {rss_mb():,.0f} MB", flush=True)
            marks["next"] += 1

    out = run_streaming(sc, parquet, progress)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    n = out.summary.requests.arrived
    rate = n / wall
    cpu_rate = n / cpu
    peak = peak_rss_mb()
    lat = out.summary.latency
    print(f"requests        {n:,} arrived, {out.summary.requests.completed:,} completed, "
          f"{out.requests_written:,} streamed to Parquet")
    print(f"wall time       {wall:,.1f} s  →  {rate:,.0f} simulated requests/s "
          f"({cpu_rate:,.0f} per CPU-second; CPU {cpu:,.1f} s, differs from wall on a busy machine)")
    print(f"RSS             start {rss0:,.0f} MB, end {rss_mb():,.0f} MB, peak {peak:,.0f} MB")
    ttft = lat.ttft_s
    assert ttft.p50 is not None and ttft.p95 is not None and ttft.p99 is not None
    print(f"TTFT P50/P95/P99 {ttft.p50 * 1000:,.0f} / {ttft.p95 * 1000:,.0f} / {ttft.p99 * 1000:,.0f} ms "
          f"(histogram, ±0.12 %)")
    if args.days < 7:
        est_s = TARGET_REQUESTS / cpu_rate
        print(f"extrapolated    7 days / {TARGET_REQUESTS / 1e6:.0f} M requests at this speed: "
              f"{est_s / 60:,.0f} CPU-min "
              f"(one core, unloaded); memory: see the per-day RSS above (flat = independent of run length)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
