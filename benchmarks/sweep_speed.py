"""Sweep benchmark: points per minute with 1 and 2 local workers (and optionally a Dask cluster).

Runs the same experiment (default: ``experiments/sweep_example.yaml`` shortened to 120 simulated seconds per
point, 36 points) from scratch into a temporary folder for each executor, and prints points/minute and the
speed-up over one worker. The tables of all runs must be identical (checked).

    .venv/bin/python benchmarks/sweep_speed.py [--workers 1,2] [--set duration_s=60] [--dask]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.runner.executor import ExecutorSpec  # noqa: E402
from sim.sweep import load_experiment, run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "sweep_example.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                    help="base-scenario override (default: duration_s=120)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (1 = in-process)")
    ap.add_argument("--dask", action="store_true", help="also time a 2-worker Dask LocalCluster")
    args = ap.parse_args()
    overrides = args.overrides if args.overrides is not None else ["duration_s=120"]
    exp = load_experiment(args.experiment, overrides)
    n = len(exp.points)
    print(f"sweep benchmark: {args.experiment.name} ({', '.join(overrides)}): {n} points, "
          f"{os.cpu_count()} CPU(s)", flush=True)
    specs = [(f"{w} worker{'s' if w > 1 else ''}", ExecutorSpec(workers=w)) for w in map(int, args.workers.split(","))]
    cluster = None
    if args.dask:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, protocol="tcp")
        specs.append(("Dask LocalCluster (2 workers)", ExecutorSpec(scheduler=cluster.scheduler_address)))
    base_rate = None
    tables = []
    try:
        for label, spec in specs:
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                rep = run_sweep(exp, Path(out), spec)
                wall = time.perf_counter() - t0
            assert not rep.failed, rep.failed
            tables.append(rep.table.drop(columns=["wall_s"]))
            rate = n / wall * 60
            base_rate = base_rate or rate
            print(f"  {label:<30} {wall:7.1f} s  {rate:7.1f} points/min  ×{rate / base_rate:.2f}", flush=True)
    finally:
        if cluster is not None:
            cluster.close()
    same = all(t.equals(tables[0]) for t in tables[1:])
    print(f"  identical tables across executors: {same}")


if __name__ == "__main__":
    main()
