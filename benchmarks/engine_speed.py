"""Engine speed: simulated requests per wall-clock second, and peak memory.

Runs (1) the embedded default scenario and (2) a 16-node fleet at the same per-node load for 200,000
requests, each in a fresh process so peak RSS is per run. Timing uses time.perf_counter around
``simulate()`` (the engine) and around the whole ``run_scenario()`` (engine + tables + summary).

    python benchmarks/engine_speed.py            # both runs
    python benchmarks/engine_speed.py --quick    # default scenario only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _one(label: str, overrides: list[str]) -> dict:
    sys.path.insert(0, str(ROOT))
    from sim.config import load_scenario
    from sim.metrics import requests_table, summarize, timeseries_tables
    from sim.simulation import simulate

    sc = load_scenario(ROOT / "experiments" / "default.yaml", overrides)
    t0 = time.perf_counter()
    result = simulate(sc)
    t1 = time.perf_counter()
    req = requests_table(result)
    fleet_ts, _ = timeseries_tables(result)
    summarize(result, req, fleet_ts)
    t2 = time.perf_counter()
    n = result.counts()["arrived"]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "run": label,
        "requests": n,
        "engine_wall_s": round(t1 - t0, 3),
        "engine_requests_per_s": round(n / (t1 - t0)),
        "total_wall_s": round(t2 - t0, 3),
        "total_requests_per_s": round(n / (t2 - t0)),
        "peak_rss_mb": round(rss_mb, 1),
        "engine_steps": int(sum(result.node_steps)),
    }


RUNS = {
    "default": [],
    "16 nodes, 200k requests": ["fleet.nodes=16", "traffic.rate_rps=96", "duration_s=2083.4", "warmup_s=0"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the default scenario")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, RUNS[args.child])))
        return
    names = ["default"] if args.quick else list(RUNS)
    print(f"{'run':<26}{'requests':>10}{'engine req/s':>14}{'with tables req/s':>19}{'peak RSS MB':>13}")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{r['run']:<26}{r['requests']:>10,}{r['engine_requests_per_s']:>14,}{r['total_requests_per_s']:>19,}"
              f"{r['peak_rss_mb']:>13,.0f}")


if __name__ == "__main__":
    main()
