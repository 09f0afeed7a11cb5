"""Stream 7 days of consumer_chat arrivals at 50 req/s mean (≈ 30 M requests) through
:func:`sim.traffic.arrivals.arrival_chunks` and report throughput and peak RSS, which must stay flat: RSS after
day 1 and after day 7 are printed side by side.

    .venv/bin/python benchmarks/traffic_memory.py [--days 7] [--rate 50] [--shape consumer_chat]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.core.config import load_scenario
from sim.traffic.arrivals import arrival_chunks


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--shape", default="consumer_chat")
    a = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    scen = load_scenario(root / "experiments" / "default.yaml",
                         [f"duration_s={a.days * 86400}", f"traffic.rate_rps={a.rate}", f"traffic.shape={a.shape}",
                          "warmup_s=0"])
    t0 = time.perf_counter()
    rss0 = rss_mb()
    n = 0
    tokens = 0
    day_rss: dict[int, float] = {}
    last = -1.0
    for ch in arrival_chunks(scen):
        n += len(ch)
        tokens += int(ch.prompt_tokens.sum()) + int(ch.output_tokens.sum())
        assert ch.time_s[0] >= last
        last = float(ch.time_s[-1])
        day = int(last // 86400)
        day_rss[day] = rss_mb()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"shape={a.shape} rate={a.rate} req/s days={a.days}: {n:,} arrivals, {tokens:,} tokens, "
          f"{wall:.1f} s ({n / wall / 1e6:.2f} M arrivals/s)")
    days = ", ".join(f"d{d}={v:.0f}" for d, v in sorted(day_rss.items()))
    print(f"RSS before {rss0:.0f} MB; end of each day: {days}")
    print(f"peak RSS {peak:.0f} MB (all arrivals in memory would need ≥ {n * 40 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
