"""Mixture-of-experts serving: which experts a step reads, tensor vs expert parallelism, all-to-all traffic.

A node of ``G`` GPUs serves an MoE model (:class:`~sim.perf.catalog.MoeSpec`: ``E`` routed experts per MoE layer,
top-``k`` routing, ``L_moe`` MoE layers, expert FFN width ``I_e``) with a layout (:class:`sim.core.config.Parallelism`):

* ``tensor = t``: attention and dense layers are tensor-parallel over ``t`` GPUs; ``G / t`` such replicas run
  side by side (attention data parallelism), each caching the KV of its own sequences.
* ``expert = e``: the routed experts are split over ``e`` groups of ``G / e`` GPUs; each group holds ``E / e``
  whole experts, tensor-split inside the group. ``e = 1`` is plain tensor parallelism (every GPU holds a slice of
  every expert).

Parameters: one routed expert of one layer has ``3·H·I_e`` weights (gate, up, down); routed parameters are
``P_r = L_moe·E·3·H·I_e`` and everything else (attention, shared experts, dense FFN layers, embeddings) is
``P_d = params_total − P_r``.

Weights read per step of ``T`` tokens (the step model's memory roof of the GEMMs)::

    hit(T)    = E·(1 − (1 − k/E)^T)                 expected distinct experts a layer's T tokens route to
                                                    (each token picks k of E uniformly, independently)
    per GPU   = P_d·b / t   +   min(E/e, u·hit(T)/e) · L_moe·3·H·I_e·b / (G/e)

with ``u`` the expert-imbalance factor (the busiest expert-parallel rank gets ``u``× the mean share of tokens and of
distinct experts; ``u = 1`` when ``e = 1``: a tensor-split expert spreads its work evenly). FLOPs stay
``2·params_active`` per token, the routed part scaled by ``u`` (the step waits for the busiest rank).

Communication per step::

    all-reduce (t > 1)   per attention layer, per dense-FFN layer and (e = 1) per MoE layer:
                         latency + 2(t−1)/t · (T·t/G)·H·2 B / link       (T·t/G tokens per replica)
    all-to-all (e > 1)   per MoE layer, dispatch and combine:
                         latency + T·H·k·b_a·(e−1)/e / G / link           (bytes = tokens × hidden × top-k × dtype,
                                                                           the (e−1)/e that leaves a GPU, spread
                                                                           over G senders)

``link`` is the GPU's NVLink bandwidth (``interconnect_gb_s``) while the expert group fits its NVLink domain
(``max_gpus_per_node``), else its scale-out bandwidth (``scale_out_gb_s``, InfiniBand/RoCE per GPU), times the
stack's ``allreduce_efficiency``.

Memory: dense weights are held once per attention replica, experts once: ``P_d·b·G/t + P_r·b``. KV bytes per token
count the replication inside one tensor-parallel group of ``t`` (MLA's latent on every rank: ``×t``; GQA:
``×max(1, t/kv_heads)``), so attention data parallelism (``t < G``) stops MLA's ``G``-fold KV replication — the reason
SGLang and vLLM serve DeepSeek-V3 with DP attention + EP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.core.errors import ConfigError
from sim.perf.catalog import BYTES_PER_ELEMENT, Calibration, GpuSpec, ModelSpec

GB = 1e9


def expected_distinct_experts(experts: int, top_k: int, tokens: float) -> float:
    """Expected number of distinct experts ``E·(1 − (1 − k/E)^T)`` that ``T`` tokens, each routed to ``k`` of ``E``
    experts uniformly at random, hit in one layer (each expert is missed by one token with probability ``1 − k/E``)."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def all_to_all_bytes(tokens: float, hidden: int, top_k: int, bytes_per_element: float) -> float:
    """Bytes one all-to-all (dispatch, or combine) moves for ``tokens`` tokens: ``tokens × hidden × top-k × dtype``."""
    return tokens * hidden * top_k * bytes_per_element


def routed_params(model: ModelSpec) -> float:
    """Parameters of the routed experts, ``L_moe·E·3·H·I_e`` (0 for a dense model)."""
    moe = model.moe
    if moe is None:
        return 0.0
    layers = moe.moe_layers or model.layers
    return float(layers * moe.experts * 3 * model.hidden_size * moe.expert_intermediate_size)


def routed_active_params(model: ModelSpec) -> float:
    """Routed-expert parameters one token multiplies: ``L_moe·k·3·H·I_e``."""
    moe = model.moe
    if moe is None:
        return 0.0
    return routed_params(model) * moe.experts_per_token / moe.experts


@dataclass(frozen=True, slots=True)
class Layout:
    """A resolved parallel layout of ``gpus`` GPUs (see the module docstring)."""

    gpus: int
    tensor: int
    expert: int
    imbalance: float = 1.0
    a2a_latency_s: float = 25e-6
    a2a_bytes_per_element: float = 2.0

    @property
    def replicas(self) -> int:
        """Attention data-parallel replicas, ``G / t``."""
        return self.gpus // self.tensor

    @property
    def name(self) -> str:
        if self.expert == 1 and self.tensor == self.gpus:
            return f"TP{self.gpus}"
        dp = f"DP{self.replicas}×" if self.replicas > 1 else ""
        return f"{dp}TP{self.tensor} attention, EP{self.expert} experts"


def resolve_layout(parallelism: Any, model: ModelSpec, gpu: GpuSpec, gpus: int, source: str = "scenario",
                   field: str = "fleet.parallelism") -> Layout:
    """The layout a ``fleet.parallelism`` block (or None: tensor parallelism over all GPUs) asks for, checked:
    ``tensor`` and ``expert`` divide ``gpus``; ``expert > 1`` needs an MoE model whose expert count it divides;
    ``tensor`` fits the GPU's NVLink domain; a node beyond that domain needs expert parallelism across it."""
    if parallelism is None:
        return Layout(gpus, gpus, 1)
    t = parallelism.tensor or gpus
    e = parallelism.expert
    if gpus % t:
        raise ConfigError(source, f"{field}.tensor", f"{t} must divide the node's {gpus} GPUs")
    if gpus % e:
        raise ConfigError(source, f"{field}.expert", f"{e} must divide the node's {gpus} GPUs")
    if e > 1:
        if model.moe is None:
            raise ConfigError(source, f"{field}.expert", f"{model.name} has no experts (expert parallelism needs an "
                              "MoE model with a moe block)")
        if model.moe.experts % e:
            raise ConfigError(source, f"{field}.expert", f"{e} must divide {model.name}'s {model.moe.experts} experts")
    elif t < gpus:
        raise ConfigError(source, f"{field}.tensor", f"attention data parallelism (tensor {t} < {gpus} GPUs) needs "
                          "expert parallelism (expert > 1) for the MoE layers")
    if t > gpu.max_gpus_per_node:
        raise ConfigError(source, f"{field}.tensor", f"{t} exceeds {gpu.name}'s NVLink domain of "
                          f"{gpu.max_gpus_per_node} GPUs")
    if gpus > gpu.max_gpus_per_node and e != gpus:
        raise ConfigError(source, f"{field}.expert", f"a {gpus}-GPU node spans several {gpu.max_gpus_per_node}-GPU "
                          f"NVLink domains: only expert parallelism over all of them (expert: {gpus}) crosses them")
    if model.attention_heads % t:
        raise ConfigError(source, f"{field}.tensor", f"{t} must divide {model.name}'s {model.attention_heads} "
                          "attention heads")
    return Layout(gpus, t, e, parallelism.expert_imbalance if e > 1 else 1.0, parallelism.all_to_all_latency_s,
                  parallelism.all_to_all_bytes_per_element)


def layout_weight_bytes(model: ModelSpec, weights: str, layout: Layout) -> float:
    """Resident weight bytes of the node: dense weights once per attention replica, routed experts once."""
    b = BYTES_PER_ELEMENT[weights]
    routed = routed_params(model)
    return ((model.params_total - routed) * layout.replicas + routed) * b


def layout_kv_bytes_per_token(model: ModelSpec, kv_precision: str, layout: Layout) -> float:
    """KV bytes per cached token, counting replication inside one tensor-parallel group of ``tensor`` GPUs."""
    per_token = model.kv_elements_per_token() * BYTES_PER_ELEMENT[kv_precision]
    if model.mla is not None:
        return per_token * layout.tensor
    return per_token * max(1.0, layout.tensor / model.kv_heads)


@dataclass(frozen=True, slots=True)
class ExpertReads:
    """Seconds the busiest GPU spends reading routed-expert weights in a step of ``T`` tokens (module docstring):
    ``s_per_expert · min(E/e, u·hit(T)/e)``; ``s_per_expert`` reads one expert of every MoE layer from one GPU."""

    experts: int
    top_k: int
    expert_groups: int
    imbalance: float
    s_per_expert: float

    def experts_read(self, tokens: float) -> float:
        """Distinct experts (per layer) the busiest expert-parallel rank reads for ``tokens`` tokens."""
        local = self.experts / self.expert_groups
        return min(local, self.imbalance * expected_distinct_experts(self.experts, self.top_k, tokens)
                   / self.expert_groups)

    def read_s(self, tokens: float) -> float:
        return self.s_per_expert * self.experts_read(tokens)


@dataclass(frozen=True, slots=True)
class MoeTerms:
    """Step-model coefficients of an MoE model under a layout (replacing the dense ones)."""

    compute_s_per_token: float
    dense_read_s: float
    expert_reads: ExpertReads
    comm_s_const: float
    comm_s_per_token: float
    kv_read_s_per_ctx_token: float


def link_bytes_per_s(gpu: GpuSpec, group: int, cal: Calibration) -> float:
    """Per-GPU bandwidth of a collective over ``group`` GPUs: NVLink inside the domain, scale-out beyond it."""
    per_gpu = gpu.interconnect_gb_s if group <= gpu.max_gpus_per_node else gpu.scale_out_gb_s
    return per_gpu * GB * cal.allreduce_efficiency


def moe_terms(gpu: GpuSpec, model: ModelSpec, weights: str, kv_cache: str, cal: Calibration,
              layout: Layout) -> MoeTerms:
    """Coefficients of the step model for ``model`` (with a ``moe`` block) under ``layout`` (module docstring)."""
    moe = model.moe
    assert moe is not None
    g, t, e = layout.gpus, layout.tensor, layout.expert
    b = BYTES_PER_ELEMENT[weights]
    flops_gpu = gpu.achievable_flops(weights) * cal.mfu
    bw_gpu = gpu.read_bw_bytes_s() * cal.mbu
    routed = routed_params(model)
    active_routed = routed_active_params(model)
    dense_active = max(model.params_active - active_routed, 0.0)
    compute = 2.0 * (dense_active + active_routed * layout.imbalance) / (g * flops_gpu)
    dense_read = (model.params_total - routed) * b / (t * bw_gpu)
    moe_layers = moe.moe_layers or model.layers
    per_expert_bytes = moe_layers * 3 * model.hidden_size * moe.expert_intermediate_size * b
    reads = ExpertReads(moe.experts, moe.experts_per_token, e, layout.imbalance,
                        per_expert_bytes / ((g // e) * bw_gpu))
    n_allreduce = model.layers + (model.layers - moe_layers) + (moe_layers if e == 1 else 0)
    comm_const = comm_tok = 0.0
    if t > 1:
        link = link_bytes_per_s(gpu, t, cal)
        comm_const += n_allreduce * cal.allreduce_latency_s
        comm_tok += n_allreduce * 2.0 * (t - 1) / t * (t / g) * model.hidden_size * 2.0 / link
    if e > 1:
        link = link_bytes_per_s(gpu, e, cal)
        per_token = all_to_all_bytes(1.0, model.hidden_size, moe.experts_per_token, layout.a2a_bytes_per_element)
        comm_const += 2 * moe_layers * layout.a2a_latency_s
        comm_tok += 2 * moe_layers * per_token * (e - 1) / e / g / link
    kv_read = layout_kv_bytes_per_token(model, kv_cache, layout) / (g * bw_gpu)
    return MoeTerms(compute, dense_read, reads, comm_const, comm_tok, kv_read)
