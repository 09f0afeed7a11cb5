"""Long-run benchmark: a multi-day ``consumer_chat`` run through the streaming metrics path.

Prints simulated requests per wall-clock second and peak RSS, plus RSS at every simulated day (it should stay
flat: per-request records are streamed to Parquet in chunks and percentiles come from histograms). The default
is the issue's target: 7 days, ~30 million requests (49.6 req/s mean on the consumer_chat daily × weekly curve).
On a small machine, run fewer days (``--days 1``) and read the extrapolated line.

    .venv/bin/python benchmarks/long_run.py --days 1 [--requests-parquet /tmp/req.parquet]
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
    args = ap.parse_args()

    duration_s = args.days * 86400.0
    sc = load_scenario(ROOT / "experiments" / "default.yaml", [
        f"duration_s={duration_s}", "warmup_s=0", f"traffic.rate_rps={args.rate_rps}", "traffic.shape=consumer_chat",
        f"fleet.nodes={args.nodes}", f"output.sample_interval_s={args.sample_interval_s}", "name=long-run",
    ])
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
