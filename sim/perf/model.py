"""Performance model of one serving node: memory plan, KV sizing and the roofline step time.

A node is ``G`` GPUs of one type running one model with tensor parallelism ``G``. Factors ``mfu``, ``mbu``,
``overhead``, ``allreduce_*`` come from :func:`sim.perf.catalog.resolve_calibration` (software stack or the GPU's own
calibration block).

Memory (design §3)::

    weight_bytes        = params_total × bytes(weights)            (MoE: all experts are resident)
    kv_bytes_per_token  = kv_elements_per_token × bytes(kv)          (GQA: 2·L·kv_heads·head_dim; MLA: L·(rank+rope))
                          × replication (GQA with G > kv_heads replicates heads; MLA's latent is held by every rank)
    kv_capacity_tokens  = (G·mem·gpu_memory_utilization − weight_bytes − G·activation_reserve) / kv_bytes_per_token

Step time of one engine iteration that computes ``T`` new tokens whose attention covers ``A`` (query, key)
pairs and whose sequences hold ``C`` context tokens in total after the step. GEMMs (weights) and attention (KV)
are separate kernels that run one after the other, each under its own roofline::

    F_w       = G · peak(weights precision) · ceiling · mfu          achievable matmul FLOP/s (FP8 weights → FP8 GEMMs,
                                                                      FP4 on a GPU without FP4 → FP8, …)
    F_a       = G · peak(bf16) · attention_ceiling · mfu             attention runs in BF16
    T_g       = T rounded up to the stack's next CUDA-graph size      (padding, only in steps that replay a graph:
                                                                      decode-only steps, or every step up to the
                                                                      largest size where the stack says ``all``;
                                                                      T itself otherwise)
    B         = hbm_bw · hbm_read_ceiling                              measured sustained bandwidth per GPU
                                                                      (BabelStream; the datasheet where unmeasured)
    t_gemm    = (t_c^p + t_m^p)^(1/p):  t_c = 2·active_params·T_g / F_w,  t_m = weight_bytes / (G · B · mbu),
                p = GEMM_ROOF_P (1.8, fitted to kernel times by calibration/gemm_roof.py; p → ∞ is max(t_c, t_m))
    t_attn    = max(attn_flops_per_pair·A / F_a,  kv_bytes_per_token·C / (G · B · mbu))
                (MoE: active = shared + top-k experts;
                 attention per pair 4·L·heads·head_dim, MLA 2·L·heads·(2·rank+rope))
    t_comm    = 2·L · (allreduce_latency + 2(G−1)/G · T·hidden·2 B / (interconnect_bw · eff))     (0 when G = 1;
                the stack's one-shot small-message all-reduce instead where it is faster: same form with
                allreduce_small_latency / allreduce_small_efficiency, on a GPU fabric ≥ 100 GB/s only)
    t_kernels = L · kernels_per_layer · kernel_launch_s                 (kernel boundaries: ~1.3 µs each on H100
                                                                      even under CUDA graphs, ~6 kernels a layer)
    t         = t_gemm + t_attn + t_kernels + overhead + overhead_per_token·T + t_comm

Weights are read once per step whatever the batch: the GEMMs are bandwidth-bound at small batch and become
compute-bound only at large batch, while decode attention stays bandwidth-bound (it reads every sequence's KV).
Summing the two kernels' roofs (rather than one max over all FLOPs and bytes) is what keeps a large decode batch
from hiding its KV reads under GEMM compute — the error that grew with FP4's doubled GEMM rate. The GEMM roof is
smooth: near the ridge a real kernel reaches neither its peak rate nor its peak bandwidth (DeepGEMM's FP8 kernels
take ~1.5× the hard roofline's time at the ridge), so the step time rises with ``T`` before the ridge instead of
staying flat until it. Attention keeps the hard max (no kernel measurement says otherwise).

During a run of decode-only steps with a fixed batch of ``B`` sequences, ``T = B`` and ``A = C = C0 + B·j`` at step
``j``: ``t_gemm`` (smooth or not) is constant and ``t_attn`` is linear in ``j``, so the time of ``n`` such steps has
a closed form (:meth:`StepTimeModel.decode_run_s`), which is what lets the fast engine jump over them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from sim.core.errors import ConfigError
from sim.perf.catalog import BYTES_PER_ELEMENT, Calibration, GpuSpec, ModelSpec, resolve_calibration, resolve_stack
from sim.perf.moe import ExpertReads, Layout, layout_kv_bytes_per_token, layout_weight_bytes, moe_terms
from sim.perf.speculative import (
    SpecCost,
    draft_kv_bytes_per_token,
    draft_weight_bytes,
    lookahead_tokens,
    spec_cost,
)

GB = 1e9
#: per-direction GPU-to-GPU bandwidth from which a node counts as one GPU fabric (NVLink, Infinity Fabric): the stacks'
#: one-shot all-reduce kernels need peer-to-peer access between every pair of GPUs (vLLM disables its custom
#: all-reduce on more than two PCIe-only GPUs)
FABRIC_GB_S = 100.0
#: kernels of one transformer layer's forward pass in vLLM/SGLang (RMS norm, QKV GEMM, rotary, attention, O GEMM,
#: fused norm, gate-up GEMM + activation, down GEMM): "around a hundred separate kernels" for Llama-3.2-1B's 16
#: layers (Hazy Research, "Look Ma, No Bubbles!", 2025-05-27), i.e. ~6 per layer; all-reduces are counted apart
KERNELS_PER_LAYER = 6
#: shape of the GEMM roof near the ridge: ``t = (t_c^p + t_m^p)^(1/p)`` of the compute and weight-read times, fitted
#: (p = 1.79, rounded) by ``calibration/gemm_roof.py`` to DeepGEMM's FP8 kernel times at M = 64 … 8,192 on H800
#: (L2 flushed; ``calibration/data/gemm_m_sweep_deepgemm_h800.csv``): at the ridge a GEMM takes 2^(1/p) ≈ 1.47×
#: the hard roofline's time, at half or twice the ridge ~1.12×, at a tenth or ten times ≤ 1.3 % more
GEMM_ROOF_P = 1.8


def attention_pairs(new_tokens: int, context_end: int) -> int:
    """(query, key) pairs for ``new_tokens`` causal queries ending at position ``context_end``."""
    return new_tokens * context_end - new_tokens * (new_tokens - 1) // 2


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """Memory plan of one node, in bytes and tokens."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its fields, rebuilt by the constructor (a frozen record compiled by ``make native`` cannot be
        restored attribute by attribute; a sharded run's cells return it from worker processes)."""
        return type(self), tuple(getattr(self, f.name) for f in fields(self))


    weight_bytes: float
    kv_bytes_per_token: float
    usable_bytes: float
    kv_capacity_tokens: int
    kv_capacity_blocks: int
    block_size: int


def weight_bytes_total(model: ModelSpec, weights: str) -> float:
    """Resident weight bytes of the whole model: ``params_total × bytes(weights)`` (every MoE expert)."""
    return model.params_total * BYTES_PER_ELEMENT[weights]


def kv_bytes_per_token(model: ModelSpec, kv_precision: str, gpus: int = 1) -> float:
    """KV bytes per token for the whole node, counting replication under tensor parallelism."""
    per_token = model.kv_elements_per_token() * BYTES_PER_ELEMENT[kv_precision]
    if model.mla is not None:
        return per_token * gpus  # every TP rank caches the full latent
    replication = max(1.0, gpus / model.kv_heads)
    return per_token * replication


def plan_memory(
    gpu: GpuSpec,
    model: ModelSpec,
    gpus: int,
    weights: str,
    kv_cache: str,
    gpu_memory_utilization: float,
    block_size: int,
    activation_reserve_gb_per_gpu: float = 1.0,
    source: str = "scenario",
    field: str = "fleet.model",
    layout: Layout | None = None,
    speculative: Any = None,
    max_num_seqs: int = 0,
) -> NodeMemory:
    """KV capacity after weights; raises ConfigError naming the missing bytes if the model does not fit.

    ``layout`` (:mod:`sim.perf.moe`): dense weights per attention replica, KV replicated per tensor group.
    ``speculative`` (:mod:`sim.perf.speculative`): the drafter's weights and KV, and ``max_num_seqs × k`` lookahead
    slots, come off the KV capacity."""
    if layout is not None:
        weight_bytes = layout_weight_bytes(model, weights, layout)
        kv_b = layout_kv_bytes_per_token(model, kv_cache, layout)
    else:
        weight_bytes = weight_bytes_total(model, weights)
        kv_b = kv_bytes_per_token(model, kv_cache, gpus)
    reserved = 0.0
    if speculative is not None:
        weight_bytes += draft_weight_bytes(speculative, model, weights)
        kv_b += draft_kv_bytes_per_token(speculative, model, kv_cache)
        reserved = lookahead_tokens(speculative, max_num_seqs) * kv_b
    usable = gpus * gpu.memory_gb * GB * gpu_memory_utilization - gpus * activation_reserve_gb_per_gpu * GB
    free = usable - weight_bytes - reserved
    if free < kv_b * block_size:
        missing = weight_bytes + reserved + kv_b * block_size - usable
        per_gpu = gpu.memory_gb * GB * gpu_memory_utilization - activation_reserve_gb_per_gpu * GB
        need = math.ceil((weight_bytes + kv_b * block_size) / per_gpu) if per_gpu > 0 else 0
        hint = f"; it needs at least {need} GPUs" if need > gpus else ""
        raise ConfigError(
            source,
            field,
            f"{model.name} ({weights} weights, {weight_bytes / GB:.1f} GB) does not fit on {gpus}x {gpu.name} "
            f"at gpu_memory_utilization={gpu_memory_utilization}: {missing / GB:.1f} GB missing "
            f"({math.ceil(missing):,} bytes){hint}",
        )
    tokens = int(free // kv_b)
    return NodeMemory(
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_b,
        usable_bytes=usable,
        kv_capacity_tokens=tokens,
        kv_capacity_blocks=tokens // block_size,
        block_size=block_size,
    )


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    """Coefficients of the step-time model (see module docstring); times in seconds.

    ``graph_sizes``: CUDA-graph batch sizes the stack pads a step's GEMM tokens up to (empty: no padding).
    ``graph_all_steps``: the stack replays graphs (and pads) in steps with prefill work too (vLLM v1's piecewise
    graphs); False: only decode-only steps are padded (TensorRT-LLM's generation-only graphs, SGLang's decode
    batches). Callers say whether a step is decode-only (``decode_only``).
    ``sequential``: GEMMs and attention are separate kernels, ``t = roof(GEMM) + roof(attention)`` (what
    :meth:`build` makes); False keeps the single roofline ``max(all FLOPs, all bytes)`` (kept for comparisons).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by its fields, rebuilt by the constructor (a frozen record compiled by ``make native`` cannot be
        restored attribute by attribute; a sharded run's cells return it from worker processes)."""
        return type(self), tuple(getattr(self, f.name) for f in fields(self))


    compute_s_per_token: float
    compute_s_per_attn_pair: float
    memory_s_const: float
    memory_s_per_ctx_token: float
    overhead_s: float
    comm_s_const: float
    comm_s_per_token: float
    graph_sizes: tuple[int, ...] = ()
    sequential: bool = False
    expert_reads: ExpertReads | None = None  # MoE: routed-expert weights read per step depend on its tokens
    spec: SpecCost | None = None  # speculative decoding of decode-only steps
    class_tokens_per_step: tuple[float, ...] = ()  # speculative decoding: τ per request class (empty: spec's for all)
    graph_all_steps: bool = False
    ar_fast_s_const: float = 0.0
    ar_fast_s_per_token: float = 0.0
    ar_ring_s_per_token: float = 0.0
    gemm_roof_p: float = math.inf  # GEMM roof (t_c^p + t_m^p)^(1/p); inf: the hard max(t_c, t_m)

    @classmethod
    def build(
        cls,
        gpu: GpuSpec,
        model: ModelSpec,
        gpus: int,
        weights: str,
        kv_cache: str,
        calibration: Calibration | None = None,
        stack: str | None = None,
        layout: Layout | None = None,
        speculative: Any = None,
    ) -> StepTimeModel:
        """Coefficients for ``gpus``× ``gpu`` serving ``model`` (formulas in the module docstring).

        Factors: ``calibration`` if given, else :func:`~sim.perf.catalog.resolve_calibration` (``stack`` or the GPU's);
        CUDA-graph sizes from the stack (``stack`` or the GPU's default). An MoE model (``moe`` block) reads only the
        experts a step's tokens hit, under ``layout`` (default tensor parallelism; :mod:`sim.perf.moe`);
        ``speculative`` (a ``fleet.speculative`` block) adds :mod:`sim.perf.speculative`'s decode-step terms.
        """
        cal = calibration if calibration is not None else resolve_calibration(gpu, stack)
        spec = resolve_stack(gpu, stack)
        flops_w = gpus * gpu.achievable_flops(weights) * cal.mfu
        flops_a = gpus * gpu.attention_flops() * cal.mfu
        bw = gpus * gpu.read_bw_bytes_s() * cal.mbu
        weight_bytes = weight_bytes_total(model, weights)
        fast_const = fast_tok = 0.0
        if gpus > 1:
            n_allreduce = 2 * model.layers
            ring = n_allreduce * 2.0 * (gpus - 1) / gpus * model.hidden_size * 2.0
            comm_const = n_allreduce * cal.allreduce_latency_s
            comm_tok = ring / (gpu.interconnect_gb_s * GB * cal.allreduce_efficiency)
            if cal.allreduce_small_latency_s is not None and gpu.interconnect_gb_s >= FABRIC_GB_S:
                fast_const = n_allreduce * cal.allreduce_small_latency_s
                fast_tok = ring / (gpu.interconnect_gb_s * GB * cal.allreduce_small_efficiency)
        else:
            comm_const = comm_tok = 0.0
        built = cls(
            compute_s_per_token=2.0 * model.params_active / flops_w,
            compute_s_per_attn_pair=model.attention_flops_per_pair() / flops_a,
            memory_s_const=weight_bytes / bw,
            memory_s_per_ctx_token=kv_bytes_per_token(model, kv_cache, gpus) / bw,
            overhead_s=cal.overhead_s + model.layers * KERNELS_PER_LAYER * gpu.kernel_launch_s,
            comm_s_const=comm_const,
            comm_s_per_token=comm_tok + cal.overhead_s_per_token,
            graph_sizes=tuple(sorted(spec.cuda_graph_sizes)) if spec is not None else (),
            sequential=True,
            graph_all_steps=spec is not None and spec.cuda_graph_steps == "all",
            ar_fast_s_const=fast_const,
            ar_fast_s_per_token=fast_tok,
            ar_ring_s_per_token=comm_tok,
            gemm_roof_p=GEMM_ROOF_P,
        )
        if model.moe is not None:
            terms = moe_terms(gpu, model, weights, kv_cache, cal, layout or Layout(gpus, gpus, 1))
            built = replace(built, compute_s_per_token=terms.compute_s_per_token, memory_s_const=terms.dense_read_s,
                            memory_s_per_ctx_token=terms.kv_read_s_per_ctx_token, comm_s_const=terms.comm_s_const,
                            comm_s_per_token=terms.comm_s_per_token + cal.overhead_s_per_token,
                            expert_reads=terms.expert_reads)
        if speculative is not None:
            built = replace(built, spec=spec_cost(speculative, gpu, model, gpus, weights, kv_cache, cal))
        return built

    def for_decoders(self, per_class: list[int]) -> StepTimeModel:
        """This model with speculative decoding's ``τ`` set to the mean over running decoders, ``per_class[c]`` of
        them in class ``c``: ``Σ n_c·τ_c / Σ n_c`` (a verification step emits ``Σ n_c·τ_c`` tokens for ``Σ n_c``
        sequences). Itself without per-class rates or decoders. Both engines call it with the same integer counts,
        so their step times stay equal."""
        taus = self.class_tokens_per_step
        n = sum(per_class)
        if self.spec is None or not taus or n == 0:
            return self
        tau = sum(c * t for c, t in zip(per_class, taus)) / n
        if tau == self.spec.tokens_per_step:
            return self
        return replace(self, spec=replace(self.spec, tokens_per_step=tau))

    def weights_s(self, gemm_tokens: float) -> float:
        """Weight-read time of a step whose GEMMs compute ``gemm_tokens`` tokens (MoE: the experts they hit)."""
        if self.expert_reads is None:
            return self.memory_s_const
        return self.memory_s_const + self.expert_reads.read_s(gemm_tokens)

    def gemm_s(self, gemm_tokens: float) -> float:
        """GEMM time of a step computing ``gemm_tokens`` tokens: the smooth roof ``(t_c^p + t_m^p)^(1/p)`` of the
        compute time and the weight read (:data:`GEMM_ROOF_P`; the hard ``max`` when ``gemm_roof_p`` is inf)."""
        compute = self.compute_s_per_token * gemm_tokens
        weights = self.weights_s(gemm_tokens)
        hi = max(compute, weights)
        p = self.gemm_roof_p
        if p == math.inf or hi <= 0.0:
            return hi
        return hi * (1.0 + (min(compute, weights) / hi) ** p) ** (1.0 / p)

    def fixed_s(self, tokens: float) -> float:
        """Per-step time outside the two rooflines: overheads and all-reduces (each all-reduce by the faster of
        the ring and the stack's small-message kernel, when it has one)."""
        k = self.overhead_s + self.comm_s_const + self.comm_s_per_token * tokens
        if self.ar_fast_s_const > 0.0:
            saving = (self.comm_s_const + self.ar_ring_s_per_token * tokens) - (
                self.ar_fast_s_const + self.ar_fast_s_per_token * tokens)
            if saving > 0.0:
                k -= saving
        return k

    def gemm_tokens(self, tokens: float, decode_only: bool = False) -> float:
        """Tokens the GEMMs compute: ``tokens`` padded up to the next CUDA-graph size when the step replays a
        graph (decode-only, or any step under ``graph_all_steps``); itself above the largest size or eagerly."""
        sizes = self.graph_sizes
        if not sizes or tokens > sizes[-1] or not (decode_only or self.graph_all_steps):
            return tokens
        return sizes[bisect_left(sizes, tokens)]

    # -- derived quantities for reports -----------------------------------------------------------------
    def decode_step_s(self, batch: int, context_tokens: int) -> float:
        """One decode step of ``batch`` sequences each holding ``context_tokens`` tokens before the step (with
        speculative decoding: the time per emitted token, a verification step ÷ τ)."""
        ctx = batch * (context_tokens + 1)
        return self.step_s(batch, ctx, ctx, decode_only=True)

    def prefill_s(self, prompt_tokens: int, chunk_tokens: int | None = None) -> float:
        """Time to prefill one prompt alone, in chunks of ``chunk_tokens`` (one step when None)."""
        chunk = chunk_tokens if chunk_tokens else prompt_tokens
        done, total = 0, 0.0
        while done < prompt_tokens:
            n = min(chunk, prompt_tokens - done)
            end = done + n
            total += self.step_s(n, attention_pairs(n, end), end)
            done = end
        return total

    def bound(self, tokens: int, attn_pairs: float, ctx_tokens: float, decode_only: bool = False) -> str:
        """Which roof limits the step: ``"compute"`` or ``"memory"`` (the one holding the larger share of time)."""
        tg = self.gemm_tokens(tokens, decode_only)
        if self.sequential:
            weights = self.weights_s(tg)
            compute = max(0.0, self.compute_s_per_token * tg - weights) + max(
                0.0, (self.compute_s_per_attn_pair * attn_pairs - self.memory_s_per_ctx_token * ctx_tokens))
            memory = max(0.0, weights - self.compute_s_per_token * tg) + max(
                0.0, self.memory_s_per_ctx_token * ctx_tokens - self.compute_s_per_attn_pair * attn_pairs)
            return "compute" if compute >= memory else "memory"
        compute = self.compute_s_per_token * tg + self.compute_s_per_attn_pair * attn_pairs
        memory = self.weights_s(tg) + self.memory_s_per_ctx_token * ctx_tokens
        return "compute" if compute >= memory else "memory"

    # -- one step ---------------------------------------------------------------------------------------
    def step_s(self, tokens: float, attn_pairs: float, ctx_tokens: float, decode_only: bool = False) -> float:
        """Time of one iteration computing ``tokens`` new tokens (see module docstring). ``decode_only``: every
        token is one running sequence's decode token (no prefill chunk), so a stack that graphs decode batches pads
        it, and with speculative decoding such a step is ``1/τ`` of a verification pass
        (:mod:`sim.perf.speculative`)."""
        if decode_only and self.spec is not None:
            const, slope, fixed = self._verify_terms(tokens)
            return (const + slope * ctx_tokens + fixed) / self.spec.tokens_per_step
        tg = self.gemm_tokens(tokens, decode_only)
        fixed = self.fixed_s(tokens)
        if self.sequential:
            gemm = self.gemm_s(tg)
            attn = max(self.compute_s_per_attn_pair * attn_pairs, self.memory_s_per_ctx_token * ctx_tokens)
            return gemm + attn + fixed
        compute = self.compute_s_per_token * tg + self.compute_s_per_attn_pair * attn_pairs
        memory = self.weights_s(tg) + self.memory_s_per_ctx_token * ctx_tokens
        return max(compute, memory) + fixed

    # -- runs of decode-only steps ---------------------------------------------------------------------
    def _verify_terms(self, batch: float) -> tuple[float, float, float]:
        """Speculative verification step of ``batch`` sequences as ``(const, per context token, fixed)``: the target
        computes ``k+1`` positions per sequence (each attending the sequence's context) and the drafter runs."""
        spec = self.spec
        assert spec is not None
        tv = batch * spec.verify_tokens
        tg = self.gemm_tokens(tv, decode_only=True)  # verification replays the decode graphs
        gemm = self.gemm_s(tg)
        slope = (max(self.compute_s_per_attn_pair * spec.verify_tokens, self.memory_s_per_ctx_token)
                 + spec.draft_s_per_ctx_token)
        fixed = self.fixed_s(tv)
        return gemm + spec.draft_s(batch), slope, fixed

    def _decode_lines(self, batch: int, ctx0: float) -> tuple[float, float, float, float, float]:
        """Step j of a decode run is ``max(a1 + b1·j, a2 + b2·j) + k``; returns (a1, b1, a2, b2, k)."""
        if self.spec is not None:  # one line: the verification step ÷ τ, context C = ctx0 + batch·j
            const, slope, fixed = self._verify_terms(batch)
            tau = self.spec.tokens_per_step
            a, b = (const + slope * ctx0) / tau, slope * batch / tau
            return a, b, a, b, fixed / tau
        tg = self.gemm_tokens(batch, decode_only=True)
        k = self.fixed_s(batch)
        if self.sequential:
            # A = C: the attention roof is max(cpa, mpc)·C, one line; the GEMM roof is a constant
            slope = max(self.compute_s_per_attn_pair, self.memory_s_per_ctx_token)
            gemm = self.gemm_s(tg)
            a, b = gemm + slope * ctx0, slope * batch
            return a, b, a, b, k
        a1 = self.compute_s_per_token * tg + self.compute_s_per_attn_pair * ctx0
        b1 = self.compute_s_per_attn_pair * batch
        a2 = self.weights_s(tg) + self.memory_s_per_ctx_token * ctx0
        b2 = self.memory_s_per_ctx_token * batch
        return a1, b1, a2, b2, k

    def decode_run_s(self, batch: int, ctx0: float, steps: int) -> float:
        """Total time of ``steps`` decode steps of ``batch`` sequences holding ``ctx0`` context tokens at the start.

        Step ``j`` (1-based) has ``T = batch`` and ``A = C = ctx0 + batch·j``. The max of two lines switches
        at most once, so the sum splits into two arithmetic series.
        """
        if steps <= 0:
            return 0.0
        return run_on_lines(self._decode_lines(batch, ctx0), steps)

    def decode_lines(self, batch: int, ctx0: float) -> DecodeLines:
        """The two roof lines of a decode run (:func:`run_on_lines` and :func:`dominant_line` read them): computed
        once per run, so the run's duration, its prefixes and its step count by a given time cost O(1) each."""
        return self._decode_lines(batch, ctx0)

    def decode_step_times(self, batch: int, ctx0: float, steps: int) -> np.ndarray:
        """Times of decode steps ``j = 1 … steps`` of a run (the terms :meth:`decode_run_s` sums), as an array."""
        a1, b1, a2, b2, k = self._decode_lines(batch, ctx0)
        j = np.arange(1, steps + 1, dtype=float)
        return np.maximum(a1 + b1 * j, a2 + b2 * j) + k

    def decode_dominant_line(self, batch: int, ctx0: float, max_steps: int) -> tuple[float, float] | None:
        """``(a, b)`` such that decode step ``j`` takes exactly ``a + b·j`` for every ``j`` in 1..max_steps, when
        one roof (compute or memory) dominates the whole run; None when the roofs cross inside it."""
        return dominant_line(self._decode_lines(batch, ctx0), max_steps)

    def decode_steps_within(self, batch: int, ctx0: float, budget_s: float, max_steps: int) -> int:
        """Largest ``n ≤ max_steps`` with ``decode_run_s(batch, ctx0, n) ≤ budget_s``.

        Each line's own sum is a lower bound of the run time, so solving its quadratic gives an upper bound
        on ``n``; the smaller bound is exact while one line dominates and a few steps off near the crossing,
        which a check (and, rarely, a bisection) settles. O(1) in the usual case.
        """
        if budget_s <= 0 or max_steps <= 0:
            return 0
        line = self.decode_dominant_line(batch, ctx0, max_steps)
        if line is not None:
            n = steps_on_line(line[0], line[1], budget_s, max_steps)
            if n is not None:
                return n
        a1, b1, a2, b2, k = self._decode_lines(batch, ctx0)
        hi = max_steps
        for a, b in ((a1 + k, b1), (a2 + k, b2)):
            # Σ_{j=1..n} (a + b·j) = a·n + b·n(n+1)/2 ≤ budget
            if b > 0:
                half = a + b / 2.0
                n_f = (-half + math.sqrt(half * half + 2.0 * b * budget_s)) / b
            else:
                n_f = budget_s / a if a > 0 else float(max_steps)
            hi = min(hi, int(n_f) + 1)
        hi = max(hi, 0)
        run = self.decode_run_s
        for n in (hi, hi - 1, hi - 2):
            if n <= 0:
                return 0
            if run(batch, ctx0, n) <= budget_s:
                return n  # n + 1 failed (or n is the upper bound), so n is the largest
        lo, hi = 0, hi - 2  # run(hi) > budget
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(batch, ctx0, mid) <= budget_s:
                lo = mid
            else:
                hi = mid
        return lo


# (a1, b1, a2, b2, k): decode step j of a run takes max(a1 + b1·j, a2 + b2·j) + k
DecodeLines = tuple[float, float, float, float, float]


def run_on_lines(lines: DecodeLines, steps: int) -> float:
    """:meth:`StepTimeModel.decode_run_s` from the run's lines (the same floats)."""
    if steps <= 0:
        return 0.0
    a1, b1, a2, b2, k = lines
    return _sum_max_lines(a1, b1, a2, b2, 1, steps) + k * steps


def dominant_line(lines: DecodeLines, max_steps: int) -> tuple[float, float] | None:
    """:meth:`StepTimeModel.decode_dominant_line` from the run's lines."""
    a1, b1, a2, b2, k = lines
    if a1 + b1 >= a2 + b2 and a1 + b1 * max_steps >= a2 + b2 * max_steps:
        return a1 + k, b1
    if a2 + b2 >= a1 + b1 and a2 + b2 * max_steps >= a1 + b1 * max_steps:
        return a2 + k, b2
    return None


def steps_on_line(a: float, b: float, budget_s: float, max_steps: int) -> int | None:
    """Largest ``n ≤ max_steps`` with ``Σ_{j=1..n} (a + b·j) ≤ budget_s`` (solving the quadratic), or None when
    the root lies within 1e-7 of an integer, where rounding could tip it (the caller then checks exactly)."""
    if b > 0:
        half = a + b / 2.0
        root = (-half + math.sqrt(half * half + 2.0 * b * budget_s)) / b
    else:
        root = budget_s / a if a > 0 else float(max_steps)
    if root >= max_steps:
        return max_steps
    frac = root - math.floor(root)
    if 1e-7 < frac < 1 - 1e-7:
        return int(root)
    return None


def _sum_line(a: float, b: float, j0: int, j1: int) -> float:
    """Σ_{j=j0..j1} (a + b·j)."""
    if j1 < j0:
        return 0.0
    n = j1 - j0 + 1
    return a * n + b * (j0 + j1) * n / 2.0


def _sum_max_lines(a1: float, b1: float, a2: float, b2: float, j0: int, j1: int) -> float:
    """Σ_{j=j0..j1} max(a1 + b1·j, a2 + b2·j) in O(1)."""
    first1, first2 = a1 + b1 * j0, a2 + b2 * j0
    last1, last2 = a1 + b1 * j1, a2 + b2 * j1
    if first1 >= first2 and last1 >= last2:
        return _sum_line(a1, b1, j0, j1)
    if first2 >= first1 and last2 >= last1:
        return _sum_line(a2, b2, j0, j1)
    # exactly one crossing inside (j0, j1): line that leads at j0 dominates up to floor(crossing)
    cross = (a2 - a1) / (b1 - b2)
    jc = min(max(math.floor(cross), j0), j1)
    if first1 >= first2:
        return _sum_line(a1, b1, j0, jc) + _sum_line(a2, b2, jc + 1, j1)
    return _sum_line(a2, b2, j0, jc) + _sum_line(a1, b1, jc + 1, j1)
