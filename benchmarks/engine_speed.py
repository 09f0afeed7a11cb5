"""Engine speed: simulated requests per CPU-second (engine, engine + tables, whole process), and peak memory.

Runs, each in a fresh process (so peak RSS and start-up are per run):

1. the embedded default scenario (4 nodes, 600 s);
2. 16 nodes at the same per-node load for ~200,000 requests (the issue's reference benchmark);
3. 1,000 nodes at 5,000 req/s, 40 s of arrivals (~200,000 requests): the per-request cost should be flat
   with fleet size (the least-work router keeps an incremental index instead of scanning every node).

CPU time (``time.process_time`` inside, ``getrusage(RUSAGE_CHILDREN)`` user + sys for the whole process,
interpreter start-up and imports included) is quoted instead of wall time, which a shared machine distorts.

    python benchmarks/engine_speed.py                 # all runs
    python benchmarks/engine_speed.py --quick         # default scenario only
    python benchmarks/engine_speed.py --scan          # least-work router scanning every node (the old way)
    python benchmarks/engine_speed.py --only 16       # runs whose name contains "16"
    python benchmarks/engine_speed.py --pure          # pure Python even if the compiled engine is built

The compiled engine (``make native``, optional) is used when built and up to date; the first line says which ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _one(label: str, overrides: list[str]) -> dict:
    sys.path.insert(0, str(ROOT))
    if os.environ.get("CAPSIM_BENCH_SCAN"):
        import sim.fleet.router

        sim.fleet.router.INDEX_MIN_NODES = 10**9
    from sim import _native
    from sim.core.config import load_scenario
    from sim.metrics.tables import requests_table, summarize, timeseries_tables
    from sim.runner.simulation import simulate

    sc = load_scenario(ROOT / "experiments" / "default.yaml", overrides)
    t0 = time.process_time()
    result = simulate(sc)
    t1 = time.process_time()
    req = requests_table(result)
    fleet_ts, _ = timeseries_tables(result)
    summarize(result, req, fleet_ts)
    t2 = time.process_time()
    n = result.counts()["arrived"]
    return {
        "run": label,
        "requests": n,
        "engine_cpu_s": round(t1 - t0, 3),
        "tables_cpu_s": round(t2 - t1, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "engine_steps": int(sum(result.node_steps)),
        "compiled": _native.compiled(),
    }


RUNS = {
    "default (4 nodes)": [],
    "16 nodes, 200k requests": ["fleet.nodes=16", "traffic.rate_rps=96", "duration_s=2083.4", "warmup_s=0"],
    "1,000 nodes at 5,000 req/s": ["fleet.nodes=1000", "traffic.rate_rps=5000", "duration_s=40", "warmup_s=0"],
}


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the default scenario")
    ap.add_argument("--only", help="only runs whose name contains this")
    ap.add_argument("--scan", action="store_true", help="least-work router scans every node (no index)")
    ap.add_argument("--pure", action="store_true", help="pure Python even if `make native` built the engine")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, RUNS[args.child])))
        return
    names = [n for n in RUNS if (not args.quick or n.startswith("default")) and (not args.only or args.only in n)]
    env = dict(os.environ, **({"CAPSIM_BENCH_SCAN": "1"} if args.scan else {}),
               **({"CAPSIM_PURE_PYTHON": "1"} if args.pure else {}))
    print("simulated requests per CPU-second (user + sys); whole process includes start-up, imports, tables")
    for name in names:
        cpu0 = _children_cpu_s()
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True,
                             env=env)
        whole = _children_cpu_s() - cpu0
        r = json.loads(out.stdout)
        n = r["requests"]
        eng, tab = r["engine_cpu_s"], r["engine_cpu_s"] + r["tables_cpu_s"]
        if name == names[0]:
            print("engine modules:", "compiled (make native)" if r["compiled"] else "pure Python")
            print(f"{'run':<28}{'requests':>10}{'engine':>10}{'+ tables':>10}{'whole process':>15}"
                  f"{'µs/request':>12}{'peak RSS MB':>13}")
        print(f"{r['run']:<28}{n:>10,}{n / eng:>10,.0f}{n / tab:>10,.0f}{n / whole:>15,.0f}{1e6 * eng / n:>12,.1f}"
              f"{r['peak_rss_mb']:>13,.0f}")


if __name__ == "__main__":
    main()
