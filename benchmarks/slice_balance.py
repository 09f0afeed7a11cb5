"""Slice bounds at equal times vs equal expected arrivals (``capsim run --slices``): the 7-day example's estimated
wall time on N free cores.

For both bound rules (:func:`sim.runner.slices.slice_bounds`), prints each slice's expected own and simulated
requests (warm-up included) and its CPU seconds from a linear cost model fitted to the 14 slices of the measured
week (``benchmarks/long_run.py --days 7 --slices 14``, equal-time bounds, compiled engine: CPU-s = 19.04 µs per
simulated request + 0.239 µs per arrival regenerated up to the slice's end + 5.8 s; largest residual 4.9 s, see
docs/scaling.md), then the makespan on N cores (longest first, +1 s start-up per slice, + the 4.4-s merge).

    .venv/bin/python benchmarks/slice_balance.py [--slices 14] [--cores 1,2,4,7,8,14,16] [--k-equals-cores]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.core.config import load_scenario  # noqa: E402
from sim.runner.estimate import makespan_s  # noqa: E402
from sim.runner.slices import _rate_curve, plan_slices  # noqa: E402

US_PER_SIMULATED, US_PER_REGENERATED, S_PER_SLICE = 19.04, 0.239, 5.8  # fitted to the measured week
SIMULATED_OVER_EXPECTED = 1.001  # measured simulated requests / expected arrivals in [warm-up start, slice end)
START_S, MERGE_S = 1.0, 4.4


def slice_cpu_s(sc: object, slices: int, balance: bool) -> tuple[list[float], list[float], list[float]]:
    """(bounds in hours, simulated requests, modelled CPU-s) per slice."""
    plan = plan_slices(sc, slices, balance=balance)  # type: ignore[arg-type]
    curve = _rate_curve(sc)  # type: ignore[arg-type]
    sim = [SIMULATED_OVER_EXPECTED * curve.integral(w.start_s, w.keep_to_s, 60.0) for w in plan.windows]
    regen = [curve.integral(0.0, w.keep_to_s, 60.0) for w in plan.windows]
    cpu = [1e-6 * (US_PER_SIMULATED * s + US_PER_REGENERATED * r) + S_PER_SLICE for s, r in zip(sim, regen)]
    return [w.keep_from_s / 3600 for w in plan.windows], sim, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=14)
    ap.add_argument("--cores", default="1,2,4,7,8,14,16")
    ap.add_argument("--k-equals-cores", action="store_true", help="also: as many slices as cores")
    args = ap.parse_args()
    sc = load_scenario(ROOT / "experiments" / "default.yaml", [
        "duration_s=604800", "warmup_s=0", "traffic.rate_rps=49.6", "traffic.shape=consumer_chat", "fleet.nodes=10",
        "output.sample_interval_s=10", "name=long-run"])
    rows = {}
    for name, balance in (("equal times", False), ("equal arrivals", True)):
        starts, sim, cpu = slice_cpu_s(sc, args.slices, balance)
        rows[name] = cpu
        print(f"{name}: {args.slices} slices, {sum(sim) / 1e6:.2f} M simulated, {sum(cpu):.0f} CPU-s")
        for k, (h, s, c) in enumerate(zip(starts, sim, cpu)):
            print(f"  slice {k:2d} from {h:6.2f} h: {s / 1e6:5.2f} M simulated, {c:5.1f} CPU-s")
    print(f"\nwall on N free cores, {args.slices} slices (estimated):")
    for n in map(int, args.cores.split(",")):
        a, b = (makespan_s([c + START_S for c in rows[k]], n) + MERGE_S for k in rows)
        print(f"  {n:2d} core(s): equal times {a:5.0f} s, equal arrivals {b:5.0f} s ({100 * (b / a - 1):+.0f} %)")
    if args.k_equals_cores:
        print("\nas many slices as cores:")
        for n in map(int, args.cores.split(",")):
            if n < 2:
                continue
            a, b = (makespan_s([c + START_S for c in slice_cpu_s(sc, n, bal)[2]], n) + MERGE_S for bal in (False, True))
            print(f"  {n:2d} slices on {n:2d} cores: equal times {a:5.0f} s, equal arrivals {b:5.0f} s "
                  f"({100 * (b / a - 1):+.0f} %)")


if __name__ == "__main__":
    main()
