"""Closed-form bounds from the performance model, used to prune candidates before simulating them.

The request mix is represented by a fixed sample of :data:`MIX_SAMPLE` requests (prompt, output and cached-prefix
tokens) drawn with a fixed seed from the scenario's classes, the same sample for every candidate.

**Lone-request latency** (a request alone on an idle node): TTFT = prefill of its uncached prompt in chunks of
``max_num_batched_tokens``; TPOT = one decode step of batch 1 at its mean context (prompt + output / 2); E2E =
TTFT + (output − 1) × TPOT. Queueing and batching only add to these, so when the sample's P95 lone latency
already exceeds a P95 target, no fleet of that candidate meets the SLO.

**Capacity per node** (an upper bound, in requests/s). Every engine step costs ``max(compute, memory) +
overhead``, and the sum of maxima is at least the maximum of the sums, so the node time one request needs is at
least ``max(C, M) + K`` on average, with (mean over the sample)

* ``C`` = compute of all its tokens: ``c_tok · (uncached prompt + output) + c_attn · attention pairs``;
* ``M`` = memory reads of its decode steps: ``output · (m_const / B + m_ctx · (prompt + output / 2))`` — the
  weights are read once per step and shared by at most ``B`` sequences, where ``B = min(max_num_seqs, KV
  capacity ÷ mean context)`` is the largest batch the KV cache holds, further limited (when there is a TPOT
  target) to the largest batch whose decode step at the mean context is within the target — a node that
  typically ran larger batches would miss the TPOT target for most requests;
* ``K`` = per-step and per-token costs outside the roofline: ``output / B · (overhead + all-reduce latency) +
  per-token costs · (uncached prompt + output)``.

``capacity_rps = 1 / (max(C, M) + K)``; a fleet of fewer than ``⌈mean rate ÷ capacity⌉`` nodes cannot keep up
with the mean arrival rate, so that is a lower bound on the simulated minimum (``min_nodes_lower``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.core.config import Scenario
from sim.perf.model import NodeMemory, StepTimeModel, attention_pairs

#: requests in the mix sample, and its seed (fixed: the same sample for every candidate and every run)
MIX_SAMPLE = 4000
MIX_SEED = 20_240_601


@dataclass(frozen=True)
class MixSample:
    """A fixed sample of the scenario's request mix (token counts per request)."""

    prompt: np.ndarray
    output: np.ndarray
    cached: np.ndarray

    @property
    def mean_prompt(self) -> float:
        return float(self.prompt.mean())

    @property
    def mean_output(self) -> float:
        return float(self.output.mean())

    @property
    def mean_context(self) -> float:
        """Time-averaged KV context of a request while it decodes: prompt + output / 2."""
        return float((self.prompt + self.output / 2.0).mean())


def sample_mix(scenario: Scenario, n: int = MIX_SAMPLE) -> MixSample:
    """The scenario's class mix, ``n`` requests (static shares)."""
    from sim.traffic.classes import ClassMix

    mix = ClassMix(scenario.traffic.classes, scenario.base_dir, scenario.fleet.engine.block_size)
    _, prompt, output, cached = mix.draw(np.random.default_rng(MIX_SEED), n)
    return MixSample(prompt.astype(np.int64), output.astype(np.int64), cached.astype(np.int64))


@dataclass(frozen=True)
class Bounds:
    """What the closed-form model says about one candidate node."""

    ttft_lone_p95_s: float
    tpot_lone_p95_s: float
    e2e_lone_p95_s: float
    max_batch: int
    capacity_rps: float
    node_s_per_request: float

    def min_nodes_lower(self, mean_rps: float) -> int:
        """Fewest nodes that keep up with the mean rate (at least 1)."""
        return max(1, math.ceil(mean_rps / self.capacity_rps * (1.0 - 1e-9)))


def lone_latencies(perf: StepTimeModel, mix: MixSample, chunk_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sampled request: lone TTFT (s) and lone TPOT (s)."""
    todo = np.maximum(mix.prompt - mix.cached, 1)
    ttft = np.empty(len(todo))
    cache: dict[tuple[int, int], float] = {}
    for i, (n, start) in enumerate(zip(todo.tolist(), mix.cached.tolist())):
        key = (n, start)
        if key not in cache:  # chunks of the uncached part, attending to the cached prefix
            total, done = 0.0, 0
            while done < n:
                k = min(chunk_tokens, n - done)
                end = start + done + k
                total += perf.step_s(k, attention_pairs(k, end), end)
                done += k
            cache[key] = total
        ttft[i] = cache[key]
    ctx = mix.prompt + mix.output / 2.0
    tpot = perf.memory_s_const + perf.memory_s_per_ctx_token * ctx
    tpot = np.maximum(tpot, perf.compute_s_per_token + perf.compute_s_per_attn_pair * ctx)
    tpot = tpot + perf.fixed_s(1)
    if perf.spec is not None:  # speculative decoding: a lone decode step emits τ tokens (sim.perf.speculative)
        tpot = np.array([perf.step_s(1, c + 1, c + 1, decode_only=True) for c in np.asarray(ctx, dtype=float)])
    return ttft, tpot


def _fixed_steps(perf: StepTimeModel, tokens: np.ndarray) -> np.ndarray:
    """:meth:`StepTimeModel.fixed_s` over an array of step token counts."""
    k = perf.overhead_s + perf.comm_s_const + perf.comm_s_per_token * tokens
    if perf.ar_fast_s_const > 0.0:
        saving = (perf.comm_s_const + perf.ar_ring_s_per_token * tokens) - (
            perf.ar_fast_s_const + perf.ar_fast_s_per_token * tokens)
        k = k - np.maximum(saving, 0.0)
    return k


def tpot_batch_limit(perf: StepTimeModel, mean_context: float, max_batch: int, tpot_s: float | None) -> int:
    """Largest batch (≤ ``max_batch``, ≥ 1) whose decode step at the mean context takes at most ``tpot_s``."""
    if tpot_s is None:
        return max_batch
    b = np.arange(1, max_batch + 1, dtype=float)
    ctx = b * mean_context
    step = np.maximum(perf.compute_s_per_token * b + perf.compute_s_per_attn_pair * ctx,
                      perf.memory_s_const + perf.memory_s_per_ctx_token * ctx) + _fixed_steps(perf, b)
    if perf.spec is not None:
        step = np.array([perf.step_s(int(k), c, c, decode_only=True) for k, c in zip(b, ctx)])
    ok = np.flatnonzero(step <= tpot_s)
    return int(ok[-1] + 1) if len(ok) else 1


def node_bounds(perf: StepTimeModel, memory: NodeMemory, mix: MixSample, max_num_seqs: int,
                chunk_tokens: int, tpot_target_s: float | None = None) -> Bounds:
    """Lone-request P95 latencies and the per-node capacity upper bound (module docstring)."""
    ttft, tpot = lone_latencies(perf, mix, chunk_tokens)
    e2e = ttft + np.maximum(mix.output - 1, 0) * tpot
    batch = int(max(1, min(max_num_seqs, memory.kv_capacity_tokens // max(1.0, mix.mean_context))))
    batch = tpot_batch_limit(perf, mix.mean_context, batch, tpot_target_s)
    uncached = np.maximum(mix.prompt - mix.cached, 1).astype(float)
    out = mix.output.astype(float)
    # attention pairs: prefill of the uncached part against the full prefix, then one pair-row per decode token
    pairs = uncached * (mix.cached + (uncached + 1) / 2.0) + out * (mix.prompt + out / 2.0)
    compute = perf.compute_s_per_token * (uncached + out) + perf.compute_s_per_attn_pair * pairs
    tau = perf.spec.tokens_per_step if perf.spec is not None else 1.0  # decode reads amortised over τ tokens
    memory_s = out * (perf.memory_s_const / batch + perf.memory_s_per_ctx_token * (mix.prompt + out / 2.0)) / tau
    # all-reduces: the faster of ring and small-message kernel is at least min(latencies) + min(per-token costs)
    comm_const, comm_tok = perf.comm_s_const, perf.comm_s_per_token
    if perf.ar_fast_s_const > 0.0:
        comm_const = min(comm_const, perf.ar_fast_s_const)
        comm_tok = comm_tok - perf.ar_ring_s_per_token + min(perf.ar_ring_s_per_token, perf.ar_fast_s_per_token)
    fixed = out / batch * (perf.overhead_s + comm_const) / tau + comm_tok * (uncached + out)
    per_req = max(float(compute.mean()), float(memory_s.mean())) + float(fixed.mean())
    return Bounds(
        ttft_lone_p95_s=float(np.percentile(ttft, 95)),
        tpot_lone_p95_s=float(np.percentile(tpot, 95)),
        e2e_lone_p95_s=float(np.percentile(e2e, 95)),
        max_batch=batch,
        capacity_rps=1.0 / per_req,
        node_s_per_request=per_req,
    )
