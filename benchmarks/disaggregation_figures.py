"""Figures and table of docs/disaggregation.md: goodput per GPU of mixed and disaggregated serving.

Reproduces the qualitative results of Splitwise (Patel et al., ISCA 2024) and DistServe (Zhong et al., OSDI 2024)
with capsim's engines: goodput (the highest arrival rate at which ≥ 90 % of requests meet both the TTFT and the
TPOT target, divided by the GPUs) against prompt length and TPOT target, against the KV link, and the
prefill:decode ratio. Llama-3.1-70B (FP8 weights and KV) on 2 × H100 nodes (tensor parallel), 4 nodes = 8 GPUs in
all, vLLM defaults.

Run: ``.venv/bin/python benchmarks/disaggregation_figures.py [--quick]`` (a few minutes on 2 cores); writes
``docs/figures/disaggregation/*.png`` and ``goodput.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sim.core.config import validate_scenario
from sim.runner.simulation import build_node_model, simulate

NODES = 4
GPUS_PER_NODE = 2
GPUS = NODES * GPUS_PER_NODE
TARGET = 0.90  # DistServe's goodput: the rate at which 90 % of requests meet the SLO
OUT = Path(__file__).resolve().parent.parent / "docs" / "figures" / "disaggregation"


#: KV links swept in figure 2: name -> (GB/s per node, one-way latency s); the first is the default of figure 1
LINKS: dict[str, tuple[float, float]] = {
    "NVLink 4\n900 GB/s": (900.0, 2e-6),  # 450 GB/s per GPU and direction, 2 GPUs
    "InfiniBand NDR\n100 GB/s": (100.0, 5e-6),  # one 400 Gb/s NIC per GPU, 2 GPUs
    "IB HDR\n50 GB/s": (50.0, 5e-6),  # one 200 Gb/s NIC per GPU
    "100 GbE\n12.5 GB/s": (12.5, 50e-6),  # one NIC per node
    "25 GbE\n3.1 GB/s": (3.125, 50e-6),
    "10 GbE\n1.25 GB/s": (1.25, 50e-6),
}
DEFAULT_LINK = "InfiniBand NDR\n100 GB/s"


def scenario(prompt_median: int, rate_rps: float, prefill_nodes: int | None, link: str = DEFAULT_LINK,
             duration_s: float = 90.0, seed: int = 1, overlap: bool = True) -> Any:
    """4 nodes of 2 H100s, mixed (``prefill_nodes`` None) or a prefill pool of ``prefill_nodes`` and a decode pool
    of the rest, the KV over ``link`` (a key of :data:`LINKS`)."""
    fleet: dict[str, Any] = {"nodes": NODES, "gpu": "H100-SXM", "gpus_per_node": GPUS_PER_NODE,
                             "model": "Llama-3.1-70B", "weights": "fp8", "kv_cache": "fp8"}
    if prefill_nodes is not None:
        bw, lat = LINKS[link]
        fleet["pools"] = [
            {"name": "prefill", "role": "prefill", "nodes": prefill_nodes,
             "interconnect": {"bandwidth_gb_per_s": bw, "latency_s": lat, "overlap": overlap}},
            {"name": "decode", "role": "decode", "nodes": NODES - prefill_nodes,
             "interconnect": {"bandwidth_gb_per_s": bw, "latency_s": lat}}]
    raw = {
        "name": "disagg", "duration_s": duration_s, "seed": seed, "max_drain_s": 60,
        "traffic": {"rate_rps": rate_rps, "classes": [{
            "name": "load", "share": 1.0,
            "input_tokens": {"dist": "lognormal", "median": prompt_median, "p95": 2 * prompt_median,
                             "max": 4 * prompt_median},
            "output_tokens": {"dist": "lognormal", "median": 128, "p95": 400, "max": 1024}}]},
        "fleet": fleet,
    }
    return validate_scenario(raw, "disaggregation_figures")


def attainment(result: Any, ttft_s: float, tpot_s: float) -> float:
    """Share of arrived requests that finished with TTFT ≤ ``ttft_s`` and TPOT ≤ ``tpot_s`` (others miss)."""
    ok = 0
    for r in result.requests:
        if r.finish_s < 0:
            continue
        tpot = (r.finish_s - r.first_token_s) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
        ok += (r.first_token_s - r.arrival_s) <= ttft_s and tpot <= tpot_s
    return ok / max(1, result.counts()["arrived"])


def goodput_rps(prompt: int, prefill_nodes: int | None, ttft_s: float, tpot_s: float, link: str = DEFAULT_LINK,
                duration_s: float = 90.0, iters: int = 9, overlap: bool = True) -> float:
    """Highest rate (req/s, whole fleet) with attainment ≥ TARGET: bisection in log space over [1/16, 128] req/s
    (0 if even 1/16 req/s misses)."""
    def ok(rate: float) -> bool:
        sc = scenario(prompt, rate, prefill_nodes, link, duration_s, overlap=overlap)
        return attainment(simulate(sc), ttft_s, tpot_s) >= TARGET
    lo, hi = 1 / 16, 128.0
    if not ok(lo):
        return 0.0
    for _ in range(iters):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def ttft_target(prompt: int) -> float:
    """TTFT target: 4 × the median prompt's prefill alone, at least 0.5 s (DistServe scales SLOs per task)."""
    perf = build_node_model(scenario(prompt, 1.0, None)).perf
    return max(0.5, 4 * perf.prefill_s(prompt, 2048))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer points")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figures from goodput.csv")
    args = ap.parse_args(argv)
    if args.plot_only:
        replot()
        return 0
    dur = 40.0 if args.quick else 90.0
    it = 6 if args.quick else 9
    OUT.mkdir(parents=True, exist_ok=True)
    prompts = [256, 1024, 4096] if args.quick else [256, 1024, 4096, 8192]
    splits = [1, 2, 3]
    tpots = {"tight": 0.040, "loose": 0.200}
    rows: list[dict[str, Any]] = []

    # 1. goodput per GPU against prompt length, tight and loose TPOT
    for tname, tpot in tpots.items():
        for p in prompts:
            ttft = ttft_target(p)
            mixed = goodput_rps(p, None, ttft, tpot, duration_s=dur, iters=it) / GPUS
            best, best_split = 0.0, 0
            for k in splits:
                g = goodput_rps(p, k, ttft, tpot, duration_s=dur, iters=it) / GPUS
                rows.append({"figure": "prompt", "tpot": tname, "prompt": p, "strategy": f"{k}P{NODES - k}D",
                             "link": DEFAULT_LINK, "goodput_rps_per_gpu": g, "ttft_target_s": ttft,
                             "tpot_target_s": tpot})
                if g > best:
                    best, best_split = g, k
            rows.append({"figure": "prompt", "tpot": tname, "prompt": p, "strategy": "mixed", "link": "-",
                         "goodput_rps_per_gpu": mixed, "ttft_target_s": ttft, "tpot_target_s": tpot})
            print(f"{tname:5s} prompt {p:5d}: mixed {mixed:.3f}  best disagg {best:.3f} ({best_split}P)",
                  file=sys.stderr)

    # 2. links, long prompts, tight TPOT, the best split of figure 1
    p_long = prompts[-1]
    best_k = max((r for r in rows if r["figure"] == "prompt" and r["tpot"] == "tight" and r["prompt"] == p_long
                  and r["strategy"] != "mixed"), key=lambda r: r["goodput_rps_per_gpu"])["strategy"]
    k_long = int(best_k.split("P")[0])
    ttft = ttft_target(p_long)
    for link in LINKS:
        for overlap in (True, False):
            g = goodput_rps(p_long, k_long, ttft, tpots["tight"], link, duration_s=dur, iters=it,
                            overlap=overlap) / GPUS
            rows.append({"figure": "link", "tpot": "tight", "prompt": p_long, "strategy": best_k, "link": link,
                         "overlap": overlap, "goodput_rps_per_gpu": g, "ttft_target_s": ttft,
                         "tpot_target_s": tpots["tight"]})
            print(f"link {link!r} overlap {overlap}: {g:.3f}", file=sys.stderr)

    # 3. prefill:decode ratio at a fixed load: latency percentiles
    rate = 0.8 * max(r["goodput_rps_per_gpu"] for r in rows if r["figure"] == "prompt" and r["tpot"] == "tight"
                     and r["prompt"] == p_long) * GPUS
    ratio_rows = []
    for k in [None, *range(1, NODES)]:
        res = simulate(scenario(p_long, rate, k, DEFAULT_LINK, dur))
        tt = np.array([r.first_token_s - r.arrival_s for r in res.requests if r.finish_s >= 0])
        tp = np.array([(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in res.requests
                       if r.finish_s >= 0 and r.output_tokens > 1])
        ratio_rows.append({"strategy": "mixed" if k is None else f"{k}P{NODES - k}D",
                           "ttft_p95_s": float(np.percentile(tt, 95)), "tpot_p95_s": float(np.percentile(tp, 95)),
                           "attainment": attainment(res, ttft, tpots["tight"])})
    for r in ratio_rows:
        rows.append({"figure": "ratio", "tpot": "tight", "prompt": p_long, "strategy": r["strategy"],
                     "link": DEFAULT_LINK, "goodput_rps_per_gpu": float("nan"), "ttft_target_s": ttft,
                     "tpot_target_s": tpots["tight"], **{k: r[k] for k in ("ttft_p95_s", "tpot_p95_s", "attainment")},
                     "rate_rps": rate})

    with open(OUT / "goodput.csv", "w", newline="") as fh:
        keys = sorted({k for r in rows for k in r})
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot(rows, prompts, splits, tpots, ratio_rows, rate, p_long, best_k)
    return 0


def replot() -> None:
    """Redraw the figures from ``goodput.csv``."""
    with open(OUT / "goodput.csv", newline="") as fh:
        rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    for r in rows:
        r["prompt"] = int(r["prompt"])
        for k in ("goodput_rps_per_gpu", "ttft_target_s", "tpot_target_s", "ttft_p95_s", "tpot_p95_s", "attainment",
                  "rate_rps"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else float("nan")
        r["overlap"] = r.get("overlap") == "True"
    prompts = sorted({r["prompt"] for r in rows if r["figure"] == "prompt"})
    tpots = {t: next(r["tpot_target_s"] for r in rows if r["tpot"] == t) for t in ("tight", "loose")}
    ratio_rows = [r for r in rows if r["figure"] == "ratio"]
    best_k = next(r["strategy"] for r in rows if r["figure"] == "link")
    plot(rows, prompts, [], tpots, ratio_rows, ratio_rows[0]["rate_rps"], prompts[-1], best_k)


def plot(rows: list[dict[str, Any]], prompts: list[int], splits: list[int], tpots: dict[str, float],
         ratio_rows: list[dict[str, Any]], rate: float, p_long: int, best_k: str) -> None:
    # figure 1: goodput per GPU vs prompt length
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, (tname, tpot) in zip(axes, tpots.items()):
        sel = [r for r in rows if r["figure"] == "prompt" and r["tpot"] == tname]
        mixed = [next(r["goodput_rps_per_gpu"] for r in sel if r["prompt"] == p and r["strategy"] == "mixed")
                 for p in prompts]
        best = [max(r["goodput_rps_per_gpu"] for r in sel if r["prompt"] == p and r["strategy"] != "mixed")
                for p in prompts]
        ax.plot(prompts, mixed, "o-", label="mixed (4 nodes, chunked prefill)")
        ax.plot(prompts, best, "s-", label="disaggregated (best P:D split, InfiniBand NDR)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("median prompt length (tokens)")
        ax.set_ylabel("goodput per GPU (req/s at 90 % SLO attainment)")
        ax.set_title(f"TPOT target {tpot * 1000:.0f} ms ({tname})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle("Llama-3.1-70B FP8, 4 nodes × 2 H100: goodput per GPU, mixed vs disaggregated")
    fig.tight_layout()
    fig.savefig(OUT / "goodput_vs_prompt.png", dpi=110)
    plt.close(fig)

    # figure 2: links
    sel = [r for r in rows if r["figure"] == "link"]
    mixed = next(r["goodput_rps_per_gpu"] for r in rows if r["figure"] == "prompt" and r["tpot"] == "tight"
                 and r["prompt"] == p_long and r["strategy"] == "mixed")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    names = list(LINKS)
    x = np.arange(len(names))
    for dx, overlap, color in ((-0.2, True, "tab:orange"), (0.2, False, "tab:red")):
        vals = [next(r["goodput_rps_per_gpu"] for r in sel if r["link"] == n and r["overlap"] == overlap)
                for n in names]
        ax.bar(x + dx, vals, width=0.4, color=color,
               label=f"disaggregated {best_k}, " + ("layer-wise overlap" if overlap else "transfer after prefill"))
    ax.set_xticks(x, names, fontsize=8)
    ax.axhline(mixed, color="tab:blue", linestyle="--", label="mixed (no KV transfer)")
    ax.set_xlabel("KV-transfer link of every node (prefill egress, decode ingress)")
    ax.set_ylabel("goodput per GPU (req/s)")
    ax.set_title(f"Median prompt {p_long} tokens, TPOT target {tpots['tight'] * 1000:.0f} ms: the link matters")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_ylim(0, 1.35 * max(r["goodput_rps_per_gpu"] for r in sel))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "goodput_vs_link.png", dpi=110)
    plt.close(fig)

    # figure 3: ratio sweep
    fig, ax1 = plt.subplots(figsize=(8, 4.6))
    names = [r["strategy"] for r in ratio_rows]
    x = np.arange(len(names))
    ax1.plot(x, [r["ttft_p95_s"] for r in ratio_rows], "o-", color="tab:red", label="P95 TTFT (s)")
    ax1.set_yscale("log")
    ax1.set_ylabel("P95 TTFT (s, log)")
    ax2 = ax1.twinx()
    ax2.plot(x, [r["tpot_p95_s"] * 1000 for r in ratio_rows], "s-", color="tab:green", label="P95 TPOT (ms)")
    ax2.set_ylabel("P95 TPOT (ms)")
    ax1.set_xticks(x, names)
    ax1.set_xlabel("prefill:decode nodes (of 4 nodes × 2 H100)")
    for xi, r in zip(x, ratio_rows):
        ax1.annotate(f"{r['attainment']:.0%}", (xi, r["ttft_p95_s"]), textcoords="offset points", xytext=(0, 7),
                     ha="center", fontsize=7)
    ax1.set_title(f"P:D ratio at {rate:.1f} req/s, median prompt {p_long} (labels: SLO attainment)")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="lower center", ncol=2, fontsize=8)
    ax1.grid(True, alpha=0.3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(OUT / "ratio_sweep.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
