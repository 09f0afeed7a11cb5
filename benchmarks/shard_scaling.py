"""Sharded runs (``capsim run --shards``): accuracy against the unsharded fleet, and speed-up with workers.

A 64-node fleet of the default scenario at the same per-node load as the 16-node engine benchmark (6 req/s per
node), run unsharded and as 4 cells of 16 nodes: P95 TTFT and TPOT of both (the approximation: no routing across
cells), then the 4 cells on 1 and 2 local workers (wall and CPU time), and the per-cell figures (requests, CPU
seconds, peak RSS of the worker) that size a cluster run (docs/scaling.md).

    .venv/bin/python benchmarks/shard_scaling.py [--nodes 64] [--shards 4] [--duration-s 600] [--workers 1,2]

``--pools-scale K`` runs ``experiments/mixed_pools.yaml`` instead, every pool's nodes and the rate × K (a fleet
with pools: each cell takes a share of every pool), and prints each model's figures too.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.core.config import load_scenario  # noqa: E402
from sim.metrics.summary import Summary  # noqa: E402
from sim.metrics.tables import requests_table, summarize, timeseries_tables  # noqa: E402
from sim.runner.executor import ExecutorSpec  # noqa: E402
from sim.runner.shards import merge_results, merge_tables, node_maps, run_cells  # noqa: E402
from sim.runner.simulation import simulate  # noqa: E402


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _p95(summary: Summary) -> tuple[float, float]:
    lat = summary.latency
    assert lat.ttft_s.p95 is not None and lat.tpot_s.p95 is not None
    return lat.ttft_s.p95, lat.tpot_s.p95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rate-per-node", type=float, default=6.0, help="req/s per node (default: 6)")
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--seeds", default="1", help="comma-separated seeds (accuracy over several)")
    ap.add_argument("--workers", default="1,2", help="comma-separated local worker counts for the sharded run")
    ap.add_argument("--pools-scale", type=int, default=0,
                    help="run experiments/mixed_pools.yaml with every pool's nodes and the rate × this instead")
    args = ap.parse_args()
    for seed in map(int, args.seeds.split(",")):
        if args.pools_scale:
            k = args.pools_scale
            base = load_scenario(ROOT / "experiments" / "mixed_pools.yaml")
            assert base.fleet.pools is not None and base.traffic.rate_rps is not None
            sets = [f"fleet.pools.{i}.nodes={p.nodes * k}" for i, p in enumerate(base.fleet.pools)]
            sc = load_scenario(ROOT / "experiments" / "mixed_pools.yaml", [
                *sets, f"fleet.nodes={base.fleet.nodes * k}", f"traffic.rate_rps={base.traffic.rate_rps * k}",
                f"duration_s={args.duration_s}", f"seed={seed}"])
            print(f"mixed_pools × {k}: pools {[p.nodes for p in sc.fleet.pool_list()]} nodes, "
                  f"{sc.traffic.rate_rps:g} req/s, {args.duration_s:g} s, seed {seed}; {args.shards} cells", flush=True)
        else:
            sc = load_scenario(ROOT / "experiments" / "default.yaml", [
                f"fleet.nodes={args.nodes}", f"traffic.rate_rps={args.nodes * args.rate_per_node}",
                f"duration_s={args.duration_s}", "warmup_s=60", f"seed={seed}"])
            print(f"{args.nodes} nodes at {args.rate_per_node:g} req/s per node, {args.duration_s:g} s, seed {seed}; "
                  f"{args.shards} cells of ~{args.nodes // args.shards} nodes", flush=True)
        c0, t0 = _cpu_s(), time.perf_counter()
        whole = simulate(sc)
        s_whole = summarize(whole, requests_table(whole), timeseries_tables(whole)[0]).to_json()
        print(f"  unsharded            {time.perf_counter() - t0:7.1f} s wall {_cpu_s() - c0:7.1f} CPU-s   "
              f"{whole.counts()['arrived']:,} requests", flush=True)
        rows = []
        for w in map(int, args.workers.split(",")):
            c0, t0 = _cpu_s(), time.perf_counter()
            parts = run_cells(sc, args.shards, ExecutorSpec(workers=w))
            results = [p.result for p in parts]
            merged = merge_results(sc, results)
            table = merge_tables([p.requests for p in parts], node_maps(sc, results))
            s_sh = summarize(merged, table, timeseries_tables(merged)[0]).to_json()
            wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
            rows.append((w, wall))
            print(f"  {args.shards} shards, {w} worker(s) {wall:7.1f} s wall {cpu:7.1f} CPU-s   "
                  f"×{rows[0][1] / wall:.2f} vs 1 worker", flush=True)
        for i, p in enumerate(parts):
            n = p.result.counts()["arrived"]
            print(f"    cell {i}: {len(p.result.node_busy_s)} nodes, {n:,} requests, {p.cpu_s:.1f} CPU-s "
                  f"({1e6 * p.cpu_s / max(n, 1):.0f} µs/request), worker peak RSS {p.peak_rss_mb:.0f} MB")
        (t1, p1), (t4, p4) = _p95(s_whole), _p95(s_sh)
        print(f"  P95 TTFT  unsharded {1000 * t1:8.1f} ms   sharded {1000 * t4:8.1f} ms   {100 * (t4 / t1 - 1):+.2f} %")
        print(f"  P95 TPOT  unsharded {1000 * p1:8.2f} ms   sharded {1000 * p4:8.2f} ms   {100 * (p4 / p1 - 1):+.2f} %")
        att = (s_whole.slo.attainment or 0.0, s_sh.slo.attainment or 0.0)
        print(f"  SLO attainment unsharded {att[0]:.4f}   sharded {att[1]:.4f}",
              flush=True)
        for model, m in (s_whole.get("models") or {}).items():
            sm = s_sh["models"][model]
            print(f"  {model}: P95 TTFT {1000 * m['ttft_s']['p95']:.1f} → {1000 * sm['ttft_s']['p95']:.1f} ms, "
                  f"P95 TPOT {1000 * m['tpot_s']['p95']:.2f} → {1000 * sm['tpot_s']['p95']:.2f} ms, "
                  f"attainment {m['attainment']:.4f} → {sm['attainment']:.4f}", flush=True)


if __name__ == "__main__":
    main()
