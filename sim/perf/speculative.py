"""Speculative decoding in the step model: expected tokens per step, verification and drafting cost, memory.

Per decode step each running sequence gets ``k`` drafted tokens (``num_tokens``); the target model verifies the
``k + 1`` positions in one pass and keeps the accepted prefix plus one token of its own. With a per-token acceptance
probability ``a``, *assumed independent across positions* (the i.i.d. model of Leviathan et al. 2023), the number of
tokens a step emits per sequence is ``1 + Σ_{i=1..k} a^i``::

    τ = E[tokens per step] = (1 − a^(k+1)) / (1 − a)        (a < 1;  k + 1 at a = 1;  1 at a = 0)

Cost of one verification step of ``B`` sequences holding ``C`` context tokens (the step model's terms, see
:mod:`sim.perf.model`)::

    t_verify = gemm(B·v tokens) + max(v·cpa, mpc)·C + overhead + comm(B·v) + t_draft(B, C)

with ``v = k + 1`` verified positions per sequence (``verify_tokens``: more when a draft tree is verified)
    t_draft  = passes · (max(2·P_d·B / F, P_d·b / BW) + draft_overhead_s) + passes · kv_d·C / BW

``passes`` = ``k`` sequential draft passes (draft model, EAGLE head, MTP module; chain drafting, no trees) and 0 for
n-gram lookup (prompt-lookup runs on the host). ``P_d``: drafter parameters (:func:`draft_params`); ``kv_d``: the
drafter's KV bytes per token (:func:`draft_kv_bytes_per_token`).

How the engines use it (both alike, so they stay equal): a *decode-only* step advances every sequence by one token
and takes ``t_verify / τ`` — an engine step is ``1/τ`` of a verification pass. Context, KV blocks and token counts
stay exact integers; TPOT and decode throughput equal their expectation (``τ`` tokens per ``t_verify``); and the
decode-run closed form still holds (``t_verify`` is linear in the context). Steps that carry prefill chunks run their
decoders without speculation (one token each, as SGLang schedules prefill and speculative decode batches apart).
What this leaves out: the per-request spread of accepted lengths (every sequence progresses at the mean rate) and
the shape of a draft tree (EAGLE-2/3 verify a token tree: set ``verify_tokens`` to its size and enter its measured
acceptance length as the equivalent ``a``).

Memory: the drafter's weights are resident (:func:`draft_weight_bytes`), its KV grows with every sequence's context
(``kv_d`` per token), and each running sequence holds ``k`` lookahead slots for the drafted tokens' KV
(``max_num_seqs·k`` tokens reserved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.perf.catalog import BYTES_PER_ELEMENT, Calibration, GpuSpec, ModelSpec, get_model

GB = 1e9
EAGLE_HEAD_VOCAB = 32_000  # EAGLE-3 drafts over a reduced vocabulary (32k tokens for Llama-3)


def expected_tokens_per_step(acceptance_rate: float, num_tokens: int) -> float:
    """``(1 − a^(k+1)) / (1 − a)``: expected tokens a verification step emits per sequence (i.i.d. acceptance)."""
    a, k = acceptance_rate, num_tokens
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def _layer_params(model: ModelSpec) -> float:
    """Parameters of one decoder layer (embeddings and LM head taken out), active ones for an MoE model."""
    embed = 2.0 * (model.vocab_size or 0) * model.hidden_size
    return max(model.params_active - embed, 0.0) / model.layers


def draft_params(spec: Any, model: ModelSpec) -> float:
    """Drafter parameters read and multiplied per draft pass (``spec.draft_params`` when given)."""
    if spec.draft_params is not None:
        return float(spec.draft_params)
    vocab = model.vocab_size or 0
    if spec.method == "eagle":
        return _layer_params(model) + model.hidden_size * min(vocab, EAGLE_HEAD_VOCAB)
    if spec.method == "mtp":
        return _layer_params(model) + model.hidden_size * vocab
    if spec.method == "draft":
        return float(get_model(spec.draft_model, field="fleet.speculative.draft_model").params_active)
    return 0.0


def draft_weight_bytes(spec: Any, model: ModelSpec, weights: str) -> float:
    """Resident drafter weights: the draft model's total; an MTP module is one whole target layer (every expert of
    an MoE layer; DeepSeek-V3's shares the embedding and LM head with the model); an EAGLE head its per-pass size."""
    b = BYTES_PER_ELEMENT[weights]
    if spec.draft_params is not None:
        return spec.draft_params * b
    if spec.method == "draft" and spec.draft_model is not None:
        return get_model(spec.draft_model, field="fleet.speculative.draft_model").params_total * b
    if spec.method == "mtp":
        embed = 2.0 * (model.vocab_size or 0) * model.hidden_size
        return max(model.params_total - embed, 0.0) / model.layers * b
    return draft_params(spec, model) * b


def draft_kv_bytes_per_token(spec: Any, model: ModelSpec, kv_precision: str) -> float:
    """KV bytes per context token the drafter caches: one target layer's (EAGLE, MTP), the draft model's own, none
    for n-gram lookup."""
    if spec.method in ("eagle", "mtp"):
        return model.kv_elements_per_token() / model.full_attention_layers * BYTES_PER_ELEMENT[kv_precision]
    if spec.method == "draft" and spec.draft_model is not None:
        draft = get_model(spec.draft_model, field="fleet.speculative.draft_model")
        return draft.kv_elements_per_token() * BYTES_PER_ELEMENT[kv_precision]
    return 0.0


@dataclass(frozen=True, slots=True)
class SpecCost:
    """Speculative-decoding terms of the step model (module docstring); times in seconds for the whole node."""

    num_tokens: int  # k drafted per sequence and step
    tokens_per_step: float  # τ, expected tokens emitted per sequence and verification step
    passes: int  # sequential draft passes per step
    draft_s_per_token: float  # drafter GEMM FLOPs, per sequence and pass
    draft_read_s: float  # drafter weight read, per pass
    draft_overhead_s: float  # fixed, per pass
    draft_s_per_ctx_token: float  # drafter KV read, per context token and step (all passes)
    verify_tokens: int  # positions the target verifies per sequence and step (k + 1 for a chain; more for a tree)

    def draft_s(self, batch: float) -> float:
        """Context-independent drafting time of one step of ``batch`` sequences."""
        if self.passes == 0:
            return 0.0
        return self.passes * (max(self.draft_s_per_token * batch, self.draft_read_s) + self.draft_overhead_s)


def spec_cost(spec: Any, gpu: GpuSpec, model: ModelSpec, gpus: int, weights: str, kv_cache: str,
              cal: Calibration) -> SpecCost:
    """:class:`SpecCost` of a ``fleet.speculative`` block on ``gpus``× ``gpu`` (the drafter shares its GPUs)."""
    flops = gpus * gpu.achievable_flops(weights) * cal.mfu
    bw = gpus * gpu.read_bw_bytes_s() * cal.mbu
    params = draft_params(spec, model)
    passes = 0 if spec.method == "ngram" else spec.num_tokens
    return SpecCost(
        num_tokens=spec.num_tokens,
        tokens_per_step=expected_tokens_per_step(spec.acceptance_rate, spec.num_tokens),
        passes=passes,
        draft_s_per_token=2.0 * params / flops,
        draft_read_s=params * BYTES_PER_ELEMENT[weights] / bw,
        draft_overhead_s=spec.draft_overhead_s if passes else 0.0,
        draft_s_per_ctx_token=passes * draft_kv_bytes_per_token(spec, model, kv_cache) / bw,
        verify_tokens=spec.verify_tokens or spec.num_tokens + 1,
    )


def lookahead_tokens(spec: Any, max_num_seqs: int) -> int:
    """KV slots held for drafted tokens: ``k`` per running sequence, at most ``max_num_seqs`` sequences."""
    return spec.num_tokens * max_num_seqs
