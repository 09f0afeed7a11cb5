"""Speculative decoding and MoE layouts: capsim's step model against published speed-ups (docs/speculative.md).

Prints a Markdown table: for each published measurement, the acceptance the source reports (or the published
acceptance length τ turned into the equivalent i.i.d. rate), capsim's predicted decode speed-up at that acceptance,
and the acceptance length capsim would need to match the measured speed-up exactly.

    .venv/bin/python benchmarks/spec_decoding_validation.py
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.core.config import Speculative
from sim.perf.catalog import get_gpu, get_model
from sim.perf.model import StepTimeModel
from sim.perf.speculative import expected_tokens_per_step


@dataclass(frozen=True)
class Point:
    label: str
    source: str
    gpu: str
    gpus: int
    model: str
    weights: str
    stack: str
    method: str
    k: int
    batch: int
    context: int
    measured_speedup: float
    acceptance: float  # per-token rate used for the prediction
    verify: int | None = None  # tokens verified per sequence (draft tree size)


POINTS = [
    Point("Llama-3.1-8B, EAGLE-2, SGLang, batch 1, MT-bench", "SGLang docs / EAGLE-3 paper (158.34 → 244.10 tok/s)",
          "H100-SXM", 1, "llama-3.1-8b", "bf16", "nvidia-sglang", "eagle", 5, 1, 700, 244.10 / 158.34, 0.75, 8),
    Point("Llama-3.1-8B, EAGLE-3, SGLang, batch 1, MT-bench", "SGLang docs / EAGLE-3 paper (158.34 → 373.25 tok/s)",
          "H100-SXM", 1, "llama-3.1-8b", "bf16", "nvidia-sglang", "eagle", 5, 1, 700, 373.25 / 158.34, 0.85, 8),
    Point("Llama-3.1-8B, EAGLE-3, SGLang, batch 64, MT-bench", "EAGLE-3 paper abstract (1.38x throughput)",
          "H100-SXM", 1, "llama-3.1-8b", "bf16", "nvidia-sglang", "eagle", 5, 64, 700, 1.38, 0.85, 8),
    Point("DeepSeek-V3, MTP (1 token), acceptance 85 %", "DeepSeek-V3 report §5.4.3 (1.8x TPS)",
          "H200-SXM", 8, "deepseek-v3", "fp8", "nvidia-sglang", "mtp", 1, 128, 2000, 1.8, 0.85),
    Point("DeepSeek-V3, MTP (1 token), acceptance 90 %", "DeepSeek-V3 report §5.4.3 (1.8x TPS)",
          "H200-SXM", 8, "deepseek-v3", "fp8", "nvidia-sglang", "mtp", 1, 128, 2000, 1.8, 0.90),
]


def speedup(p: Point, acceptance: float) -> float:
    gpu, model = get_gpu(p.gpu), get_model(p.model)
    base = StepTimeModel.build(gpu, model, p.gpus, p.weights, "bf16", stack=p.stack)
    spec = StepTimeModel.build(gpu, model, p.gpus, p.weights, "bf16", stack=p.stack,
                               speculative=Speculative(method=p.method, num_tokens=p.k, acceptance_rate=acceptance,
                                                       verify_tokens=p.verify))
    return base.decode_step_s(p.batch, p.context) / spec.decode_step_s(p.batch, p.context)


def implied_tau(p: Point) -> float | None:
    """Acceptance length (tokens per step) at which the predicted speed-up equals the measured one (bisection)."""
    lo, hi = 0.0, 1.0
    if speedup(p, hi) < p.measured_speedup:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        if speedup(p, mid) < p.measured_speedup:
            lo = mid
        else:
            hi = mid
    return expected_tokens_per_step(hi, p.k)


def main() -> None:
    print("| measurement | source | k / verified | acceptance a (τ) | measured | capsim | τ capsim needs |")
    print("|---|---|---|---|---|---|---|")
    for p in POINTS:
        tau = expected_tokens_per_step(p.acceptance, p.k)
        need = implied_tau(p)
        need_s = f"{need:.2f}" if need is not None else f"> {p.k + 1}"
        print(f"| {p.label} ({p.gpus}× {p.gpu}) | {p.source} | {p.k} / {p.verify or p.k + 1} | "
              f"{p.acceptance:.2f} ({tau:.2f}) | "
              f"{p.measured_speedup:.2f}x | {speedup(p, p.acceptance):.2f}x | {need_s} |")


if __name__ == "__main__":
    main()
