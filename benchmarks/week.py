"""The issue's long-run benchmark in one command: a week of ``consumer_chat`` through ``capsim run --stream``.

Runs ``capsim run … --stream --no-report --slices K --workers W --json`` (summary only, the path for sweeps of long
runs) as a child process and prints its wall time, its CPU time (the command and its pool workers, from the
kernel's accounting of reaped children) and the peak memory of the whole process tree (the command and its
workers), sampled from ``/proc`` every ``--sample-s`` seconds (default 0.5; the sampler itself takes ~1–2 % of a core):

* ``tree peak RSS``: the largest sum of the live processes' resident sets seen at one sample (pages a forked
  worker shares with the client are counted in both, so this overstates physical memory);
* ``tree peak PSS``: the same with proportional set sizes (shared pages split between the processes sharing
  them: the physical memory the tree held);
* ``sum of peaks``: each process's own peak RSS (``VmHWM``, exact) added up, as if they had all peaked at once
  (an upper bound).

The default scenario is the README's week (``experiments/default.yaml`` with ``consumer_chat`` at 49.6 req/s mean,
29,995,681 requests, on 10 H100 nodes, 10-s samples; the figures of ``benchmarks/long_run.py``); ``--scenario``
runs a file as it is (e.g. ``experiments/consumer_chat_week.yaml``). Linux only (``/proc``).

    .venv/bin/python benchmarks/week.py                          # the week, --slices 2 on 2 workers
    .venv/bin/python benchmarks/week.py --days 1                 # its first day (~5.1 M requests)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE_RPS = 30_000_000 / (7 * 86400.0)  # the README's week: 30 M requests on the weekly mean
TARGET_WALL_S, TARGET_MB = 300.0, 500.0


def week_args(days: float, nodes: int, rate_rps: float) -> list[str]:
    """``capsim run`` arguments of the README's week (``benchmarks/long_run.py``'s scenario), ``days`` long."""
    sets = [f"duration_s={days * 86400.0:g}", "warmup_s=0", f"traffic.rate_rps={rate_rps}",
            "traffic.shape=consumer_chat", f"fleet.nodes={nodes}", "output.sample_interval_s=10", "name=long-run"]
    return [str(ROOT / "experiments" / "default.yaml"), *[a for s in sets for a in ("--set", s)]]


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


@dataclass
class TreeMemory:
    """Memory of a process tree, sampled (see the module docstring)."""

    peak_rss_kb: int = 0
    peak_pss_kb: int = 0
    peak_processes: int = 0
    hwm_kb: dict[int, int] = field(default_factory=dict)  # each process's VmHWM, last seen

    def sample(self, root: int) -> None:
        rss = pss = n = 0
        for pid in tree(root):
            try:
                rss += _status_kb(pid, "VmRSS:")
                pss += _pss_kb(pid)
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), _status_kb(pid, "VmHWM:"))
                n += 1
            except (OSError, ValueError):  # it exited between the listing and the read
                continue
        if rss > self.peak_rss_kb:
            self.peak_rss_kb, self.peak_processes = rss, n
        self.peak_pss_kb = max(self.peak_pss_kb, pss)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7.0, help="simulated days (default 7: the issue's week)")
    ap.add_argument("--slices", type=int, default=None, help="time slices (default: --workers)")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    ap.add_argument("--nodes", type=int, default=10, help="1-GPU H100 nodes serving Llama-3.1-8B (default 10)")
    ap.add_argument("--rate-rps", type=float, default=RATE_RPS, help="mean arrival rate (default: 30 M per week)")
    ap.add_argument("--scenario", type=Path, default=None, help="run this scenario file as it is instead")
    ap.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval (default 0.5 s)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    slices = args.slices or args.workers
    scenario = [str(args.scenario)] if args.scenario else week_args(args.days, args.nodes, args.rate_rps)
    cmd = [sys.executable, "-m", "sim", "run", *scenario, "--stream", "--no-report", "--slices", str(slices),
           "--workers", str(args.workers), "--json"]
    from sim import _native

    native = _native.fresh_build() is not None and not os.environ.get("CAPSIM_PURE_PYTHON")
    print("engine modules:", "compiled (make native)" if native else "pure Python", flush=True)
    print("command:", " ".join(["capsim", *cmd[3:]]), flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    mem = TreeMemory()
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            mem.sample(proc.pid)
            done.wait(args.sample_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    cpu = children_cpu_s() - cpu0
    load = os.getloadavg()[0]
    if proc.returncode != 0:
        sys.exit(f"capsim run failed (exit {proc.returncode})")
    summary = json.loads(stdout)
    req, lat = summary["requests"], summary["latency"]
    client_kb = mem.hwm_kb.get(proc.pid, 0)
    workers_kb = sorted((kb for pid, kb in mem.hwm_kb.items() if pid != proc.pid), reverse=True)
    figures = {
        "requests": req["arrived"], "completed": req["completed"], "slices": slices, "workers": args.workers,
        "wall_s": wall, "cpu_s": cpu, "tree_peak_rss_mb": mem.peak_rss_kb / 1024,
        "tree_peak_pss_mb": mem.peak_pss_kb / 1024, "sum_of_peaks_mb": (client_kb + sum(workers_kb)) / 1024,
        "client_peak_rss_mb": client_kb / 1024, "worker_peak_rss_mb": [kb / 1024 for kb in workers_kb],
        "ttft_p95_s": lat["ttft_s"]["p95"], "tpot_p95_s": lat["tpot_s"]["p95"], "load_average_end": load,
    }
    print(f"requests        {req['arrived']:,} arrived, {req['completed']:,} completed")
    print(f"wall time       {wall:,.1f} s   (target < {TARGET_WALL_S:.0f} s; load average {load:.1f} at the end "
          f"on {os.cpu_count()} cores: wall is a speed figure only on free cores)")
    print(f"CPU time        {cpu:,.1f} s   ({req['arrived'] / max(cpu, 1e-9):,.0f} requests per CPU-second; "
          f"the command and its workers)")
    print(f"memory (tree)   peak RSS {figures['tree_peak_rss_mb']:,.0f} MB ({mem.peak_processes} processes at that "
          f"sample), peak PSS {figures['tree_peak_pss_mb']:,.0f} MB, sum of each process's peak "
          f"{figures['sum_of_peaks_mb']:,.0f} MB (target < {TARGET_MB:.0f} MB)")
    print(f"                client {client_kb / 1024:,.0f} MB; workers "
          + ", ".join(f"{kb / 1024:,.0f}" for kb in workers_kb) + " MB (each one's peak RSS)")
    print(f"P95 TTFT / TPOT {1000 * lat['ttft_s']['p95']:,.1f} / {1000 * lat['tpot_s']['p95']:,.2f} ms (histograms)")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
