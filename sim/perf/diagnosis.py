"""Which step-time term a published point's prediction depends on: elasticities per term.

The step model (:mod:`sim.perf.model`) sums five kinds of time per step: GEMM compute (``compute_s_per_token``),
the weight read (``memory_s_const`` and, for MoE, the routed experts read), attention compute
(``compute_s_per_attn_pair``), the KV read (``memory_s_per_ctx_token``) and fixed costs (per-step overhead, kernel
boundaries, all-reduces). For one point, the **elasticity** of a term is ``d ln(time metric) / d ln(term)``,
estimated by re-running the point with that term alone scaled by ``1 + step`` (``time metric``: the point's
latency, or ``1 / throughput``). In a single step the elasticities of the terms that bind sum to 1 (the share of
the step each holds); a benchmark run also moves its batch and its queue, so under load they can sum to more than
1 (queueing amplifies a slower step) or go negative. The diagnosis of docs/validation.md ("Why the held-out points
miss") is made of these numbers (``benchmarks/held_out_terms.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

from sim.perf.calibration import CalPoint, Predictor
from sim.perf.catalog import Calibration
from sim.perf.model import StepTimeModel

TERMS: dict[str, tuple[str, ...]] = {
    "gemm": ("compute_s_per_token",),
    "weights": ("memory_s_const",),
    "attention": ("compute_s_per_attn_pair",),
    "kv": ("memory_s_per_ctx_token",),
    "fixed": ("overhead_s", "comm_s_const", "comm_s_per_token", "ar_fast_s_const", "ar_fast_s_per_token",
              "ar_ring_s_per_token"),
}
"""Step-model fields that make up each term (see the module docstring)."""


def scale_term(perf: StepTimeModel, term: str, factor: float) -> StepTimeModel:
    """``perf`` with every field of ``term`` (a key of :data:`TERMS`) multiplied by ``factor``; the weight term
    also scales an MoE model's routed-expert reads."""
    out = replace(perf, **{f: getattr(perf, f) * factor for f in TERMS[term]})
    if term == "weights" and perf.expert_reads is not None:
        out = replace(out, expert_reads=replace(perf.expert_reads,
                                                s_per_expert=perf.expert_reads.s_per_expert * factor))
    return out


def elasticities(
    points: Sequence[CalPoint], cal: dict[str, Calibration], step: float = 0.1,
) -> list[dict]:
    """For each point: its prediction under ``cal`` (one calibration per stack name) and each term's elasticity
    (module docstring). Rows: ``id``, ``predicted``, ``error_pct``, and one ``e_<term>`` per term."""
    base = Predictor(points)
    rows = []
    for p in points:
        c = cal[p.stack or ""]
        v0 = base.predict(p, c)
        row: dict = {"id": p.id, "gpu": p.gpu, "metric": p.metric, "measured": p.measured, "predicted": v0,
                     "error_pct": (v0 - p.measured) / p.measured * 100.0}
        sign = -1.0 if p.metric == "throughput" else 1.0  # elasticity of time, not of rate
        for term in TERMS:
            scaled = Predictor([p], adjust=partial(scale_term, term=term, factor=1.0 + step))
            scaled._lengths = base._lengths  # the same drawn lengths (seeded by the id; saves drawing them again)
            v = scaled.predict(p, c)
            ok = v0 > 0 and v > 0 and math.isfinite(v0) and math.isfinite(v)
            row[f"e_{term}"] = sign * math.log(v / v0) / math.log(1.0 + step) if ok else float("nan")
        rows.append(row)
    return rows


def regime(row: dict) -> str:
    """A short name for what binds a point: the term with the largest elasticity, and the second when it holds at
    least half as much (e.g. ``gemm+kv``: decode batches computing GEMMs and reading the KV cache)."""
    es = sorted(((row[f"e_{t}"], t) for t in TERMS if math.isfinite(row[f"e_{t}"])), reverse=True)
    if not es:
        return "?"
    (e1, t1), rest = es[0], es[1:]
    if rest and rest[0][0] >= 0.5 * e1 > 0:
        return f"{t1}+{rest[0][1]}"
    return t1
