"""Predictions for the guide's per-platform claims (design.md §8): Llama-3.3-70B FP8 (FP8 KV), 1500 in / 300 out,
one 8-GPU node (1 GPU for GH200), vLLM-class stack. Prints a markdown table for docs/performance-model.md.

    .venv/bin/python benchmarks/platform_predictions.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.core.config import Engine
from sim.perf.benchmark import NodeSetup, run_closed_loop, run_offline

CLAIMS = {"H100-SXM": 3000, "H200-SXM": 4500, "B200": 9000, "MI300X": 2800, "L40S": 600, "GH200-96GB": 800,
          "GH200-144GB": None, "A100-SXM-80GB": None, "MI325X": None, "H100-PCIe": None, "H100-NVL": None,
          "GB200": None}


def main() -> None:
    print("| platform | stack | KV capacity (tokens) | conc. 50: out tok/s | TTFT p50 | TPOT p50 | "
          "offline max out tok/s "
          "| 60 % of max | guide claim |")
    print("|---|---|---|---|---|---|---|---|---|")
    for gpu, claim in CLAIMS.items():
        n = 1 if gpu.startswith("GH200") else 8
        try:
            s = NodeSetup.build(gpu, "llama-3.3-70b", n, "fp8", "fp8", Engine(max_num_seqs=256))
        except Exception as exc:  # noqa: BLE001 - a model that does not fit is a row, not a crash
            print(f"| {n}x {gpu} | – | does not fit: {exc} |")
            continue
        c = run_closed_loop(s, 50, [1500] * 400, [300] * 400)
        o = run_offline(s, [1500] * 2000, [300] * 2000)
        stack = s.gpu.default_stack
        print(f"| {n}x {gpu} | {stack} | {s.memory.kv_capacity_tokens:,} | {c.output_tokens_per_s:,.0f} | "
              f"{c.ttft_s['p50'] * 1e3:,.0f} ms | {c.tpot_s['p50'] * 1e3:,.1f} ms | {o.output_tokens_per_s:,.0f} | "
              f"{0.6 * o.output_tokens_per_s:,.0f} | {claim if claim else '–'} |")
    print()
    print("Optimisation ladder on 8x H100-SXM, Llama-3.3-70B (guide: ~400 → ~1200 → ~2000 → ~2800 out tok/s):")
    for label, w, kv, conc in (("FP16, batch 1", "bf16", "bf16", 1),
                               ("FP16, continuous batching, 32", "bf16", "bf16", 32),
                               ("FP8 weights, 32", "fp8", "bf16", 32), ("FP8 weights + FP8 KV, 64", "fp8", "fp8", 64)):
        s = NodeSetup.build("H100-SXM", "llama-3.3-70b", 8, w, kv, Engine(max_num_seqs=256))
        r = run_closed_loop(s, conc, [1500] * max(200, 5 * conc), [300] * max(200, 5 * conc))
        print(f"- {label}: {r.output_tokens_per_s:,.0f} out tok/s")


if __name__ == "__main__":
    main()
