"""Time-sliced runs (``capsim run --slices K``): accuracy against the unsliced run.

A day of ``consumer_chat`` (weekday, its peak at 20:00) at the per-node load of the issue's week (49.6 req/s mean on
10 H100 nodes: ~5 req/s per node, ~10.7 at the peak) on a few nodes, streamed, run unsliced and as K slices (in this
process, one after the other). Two placements: ``inside`` (the day starts at 00:00) and ``boundary`` (it starts at
02:00). With ``--equal-time-bounds`` (K = 4: bounds at 6, 12 and 18 h) the peak sits inside the last slice for
``inside`` and on the 18-h bound for ``boundary``; with the default bounds at equal expected arrivals it is the other
way round (``inside``: a bound at 20.2 h, in the evening peak's backlog; ``boundary``: none there). Prints P95 TTFT /
TPOT / E2E and SLO attainment of both, their difference, the warm-ups chosen and the CPU seconds of both runs.

    .venv/bin/python benchmarks/slice_accuracy.py [--nodes 2] [--seeds 1,2,3] [--slices 4] [--warmups auto,0]

``--warmups``: ``auto`` is the warm-up :func:`sim.runner.slices.plan_slices` chooses from the workload; a number
forces every slice's warm-up (0: each slice starts empty at its bound, to see what the warm-up buys).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.core.config import load_scenario  # noqa: E402
from sim.metrics.streaming import run_streaming  # noqa: E402
from sim.metrics.summary import Summary  # noqa: E402
from sim.runner.executor import ExecutorSpec  # noqa: E402
from sim.runner.slices import plan_slices, run_slices, streamed_fold  # noqa: E402

RATE_PER_NODE = 4.96  # the week's 49.6 req/s mean on 10 nodes
PLACEMENTS = {"inside": 0, "boundary": 2}  # traffic.start_hour: peak at 20 h or at 18 h into the day


def figures(s: Summary) -> dict[str, float]:
    lat = s.latency
    out = {}
    for name, st in (("TTFT", lat.ttft_s), ("TPOT", lat.tpot_s), ("E2E", lat.e2e_s)):
        assert st.p95 is not None
        out[f"P95 {name}"] = st.p95
    out["attainment"] = s.slo.attainment or 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--placements", default="inside,boundary")
    ap.add_argument("--warmups", default="auto", help="comma-separated: auto and/or seconds")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--equal-time-bounds", action="store_true", help="bounds at equal times (default: arrivals)")
    args = ap.parse_args()
    rows = []
    for place in args.placements.split(","):
        for seed in map(int, args.seeds.split(",")):
            sc = load_scenario(ROOT / "experiments" / "default.yaml", [
                f"duration_s={args.days * 86400}", "warmup_s=0", f"traffic.rate_rps={RATE_PER_NODE * args.nodes}",
                "traffic.shape=consumer_chat", f"traffic.start_hour={PLACEMENTS[place]}",
                f"fleet.nodes={args.nodes}", "output.sample_interval_s=10", f"seed={seed}", "name=slice-accuracy"])
            c0 = time.process_time()
            whole = run_streaming(sc)
            cpu_whole = time.process_time() - c0
            f0 = figures(whole.summary)
            print(f"{place:8s} seed {seed}: unsliced {whole.summary.requests.arrived:,} requests, "
                  f"{cpu_whole:.1f} CPU-s; "
                  + ", ".join(f"{k} {v * 1000:.2f} ms" if k != "attainment" else f"{k} {v:.4f}"
                              for k, v in f0.items()), flush=True)
            for wu in args.warmups.split(","):
                plan = plan_slices(sc, args.slices, None if wu == "auto" else float(wu),
                                   balance=not args.equal_time_bounds)
                c0 = time.process_time()
                out = streamed_fold(run_slices(sc, plan, ExecutorSpec(workers=1), streamed=True))
                cpu = time.process_time() - c0
                f1 = figures(out.summary)
                assert out.summary.requests.arrived == whole.summary.requests.arrived
                diff = {k: (f1[k] / f0[k] - 1) * 100 for k in f0 if k != "attainment"}
                print(f"    {args.slices} slices, warm-up {wu:>4s} ({min(plan.warmups_s[1:]):.0f}–"
                      f"{max(plan.warmups_s[1:]):.0f} s): {cpu:.1f} CPU-s; "
                      + ", ".join(f"{k} {f1[k] * 1000:.2f} ms ({diff[k]:+.2f} %)" for k in diff)
                      + f", attainment {f1['attainment']:.4f}", flush=True)
                rows.append((place, seed, wu, diff))
    print("\nlargest |difference| over seeds, by placement and warm-up:")
    for place in args.placements.split(","):
        for wu in args.warmups.split(","):
            sel = [d for p, _, w, d in rows if p == place and w == wu]
            worst = {k: max(abs(d[k]) for d in sel) for k in sel[0]}
            print(f"  {place:8s} warm-up {wu:>4s}: " + ", ".join(f"{k} {v:.2f} %" for k, v in worst.items()))


if __name__ == "__main__":
    main()
