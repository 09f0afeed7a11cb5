"""What one node can sustain for a traffic mix, the fleet's load factor and its bottleneck.

Steady-state model of one continuously batching node (the engine's own step-time roofline, :mod:`sim.perf.model`).
For a mix with mean prompt ``I`` tokens (``I_new`` of them not served from the prefix cache) and mean output
``O`` tokens, a node running ``B`` sequences emits ``B`` output tokens per step and, to keep ``B`` sequences
running, admits ``B / O`` new requests per step, i.e. ``B·I_new/O`` prefill tokens per step. One step then
computes ``T = B·(1 + I_new/O)`` tokens over ``C = B·H`` context tokens, ``H = Σ O·(I + O/2) / Σ O`` over the
mix (a sequence holds its prompt and on average half its output; long outputs stay longer in the batch),
and takes ``t = step_s(T, A, C)`` with ``A = C + (B/O)·pairs(I_new)`` attention
pairs (a step with prefill work: CUDA-graph padding only where the stack pads mixed steps, as in the engines).
The node sustains ``X(B) = (B/O) / t(B)`` requests/s, which grows with ``B`` (weights are read once per
step), so the sustainable rate is ``X`` at the largest ``B`` the engine allows — the *binding concurrency
limit*, the smallest of

* ``max_num_seqs``                                   → ``batch_limit``
* ``max_num_batched_tokens / (1 + I_new/O)``         → ``batch_limit`` (token budget per step)
* ``kv_capacity_tokens / H``                         → ``kv_cache``

``load_factor`` = offered requests/s ÷ (mean nodes up × ``X``): about 1 at saturation, above 1 overloaded.
At the binding limit the step is compute-bound (→ ``compute``), or memory-bound with the KV reads costing
more than the weight reads (→ ``memory_bandwidth``: a bigger batch would not help), or memory-bound by the
weights (→ the concurrency limit itself: ``kv_cache`` or ``batch_limit``). ``bottleneck`` reports that
resource once the fleet runs at ≥ :data:`BOTTLENECK_LOAD` of what it sustains (or its KV cache or batch
slots were observed full), and ``none`` below.

It is an upper bound of the kind a benchmark reaches (full batches, no queueing jitter): a fleet usually
misses a latency SLO before ``load_factor`` reaches 1 (``capsim size`` finds the rate that meets it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.perf.model import attention_pairs

#: from this load factor on, the limiting resource is reported as the bottleneck (below: ``none``)
BOTTLENECK_LOAD = 0.8
#: observed KV-cache or batch-slot fill (P95 over samples) that also counts as "this resource binds"
SATURATED_FILL = 0.95


@dataclass(frozen=True)
class NodeCapacity:
    """Sustainable throughput of one node for a mix (see the module docstring)."""

    requests_per_s: float
    output_tokens_per_s: float
    batch: float  # sequences running at the binding limit
    limit: str  # which concurrency limit binds: "kv_cache" or "batch_limit"
    resource: str  # what limits throughput at that batch: compute | memory_bandwidth | kv_cache | batch_limit


def node_capacity(node_model: Any, mean_input: float, mean_output: float, mean_cached: float,
                  held_per_seq: float | None = None, role: str = "mixed") -> NodeCapacity:
    """:class:`NodeCapacity` of one node of ``node_model`` (:class:`sim.runner.simulation.NodeModel`) for a mix with
    these mean token counts per request; ``held_per_seq``: mean context a running sequence holds (default
    ``I + O/2``; a mix passes the output-weighted mean ``Σ O·(I + O/2) / Σ O``, since long outputs stay longer
    in the batch). ``role`` of a disaggregated pool (docs/disaggregation.md): a ``decode`` node receives each
    prompt's KV (one new token per admission); a ``prefill`` node only computes prompts (:func:`prefill_capacity`)."""
    if role == "prefill":
        return prefill_capacity(node_model, mean_input, mean_output, mean_cached)
    perf, eng = node_model.perf, node_model.engine
    i = max(float(mean_input), 1.0)
    o = max(float(mean_output), 1.0)
    i_new = 1.0 if role == "decode" else max(i - float(mean_cached), 1.0)
    held = float(held_per_seq) if held_per_seq else i + o / 2.0
    limits = {
        "batch_limit": float(eng.max_num_seqs),
        "batch_tokens": eng.max_num_batched_tokens / (1.0 + i_new / o),
        "kv_cache": node_model.memory.kv_capacity_tokens / held,
    }
    which = min(limits, key=limits.__getitem__)
    b = max(limits[which], 1.0)
    limit = "kv_cache" if which == "kv_cache" else "batch_limit"
    admits = b / o  # requests admitted (and finished) per step
    tokens = b + admits * i_new
    ctx = b * held
    pairs = ctx + admits * attention_pairs(round(i_new), round(i))
    # the mean step carries prefill work: it is padded only where the stack graphs mixed steps too (vLLM v1, up
    # to its largest capture size), the same rule the engines apply to every step with a prefill chunk
    dt = perf.step_s(tokens, pairs, ctx, decode_only=False)
    if perf.spec is not None:
        # speculative decoding: the decode part of the mean step runs at the verification rate (B tokens in
        # t_verify/τ), the prefill tokens add their marginal cost on top
        dt = perf.step_s(round(b), ctx, ctx, decode_only=True) + max(dt - perf.step_s(round(b), ctx, ctx), 0.0)
    compute = perf.compute_s_per_token * tokens + perf.compute_s_per_attn_pair * pairs
    kv_read = perf.memory_s_per_ctx_token * ctx
    weights = perf.weights_s(round(tokens))
    memory = weights + kv_read
    if compute >= memory:
        resource = "compute"
    elif kv_read >= weights:
        resource = "memory_bandwidth"
    else:
        resource = limit
    rps = admits / dt
    return NodeCapacity(rps, rps * o, b, limit, resource)


def prefill_capacity(node_model: Any, mean_input: float, mean_output: float, mean_cached: float) -> NodeCapacity:
    """A prefill-role node's :class:`NodeCapacity`: full steps of ``max_num_batched_tokens`` prompt tokens, i.e.
    ``T / I_new`` prompts per step over ``(T / I_new)·I`` context tokens and ``(T / I_new)·pairs(I_new)`` attention
    pairs (its KV limit is not binding: a prompt's blocks are held only while it computes and transfers)."""
    perf, eng = node_model.perf, node_model.engine
    i = max(float(mean_input), 1.0)
    i_new = max(i - float(mean_cached), 1.0)
    tokens = float(eng.max_num_batched_tokens)
    admits = tokens / i_new
    ctx = admits * i
    pairs = admits * attention_pairs(round(i_new), round(i))
    dt = perf.step_s(tokens, pairs, ctx, decode_only=False)  # padded only where the stack graphs mixed steps
    compute = perf.compute_s_per_token * tokens + perf.compute_s_per_attn_pair * pairs
    resource = "compute" if compute >= perf.memory_s_const + perf.memory_s_per_ctx_token * ctx else "memory_bandwidth"
    rps = admits / dt
    return NodeCapacity(rps, rps * max(float(mean_output), 1.0), admits, "batch_limit", resource)


def load_section(node_model: Any, offered_rps: float, nodes_up_mean: float, mean_input: float,
                 mean_output: float, mean_cached: float, held_per_seq: float | None, kv_fill_p95: float | None,
                 batch_fill_p95: float | None, role: str = "mixed") -> dict[str, Any]:
    """``utilisation.load_factor``, ``bottleneck`` and the capacity they come from (summary keys); ``role``: see
    :func:`node_capacity`."""
    if offered_rps <= 0 or nodes_up_mean <= 0:
        return {"load_factor": None, "bottleneck": "none", "limit_at_saturation": None,
                "capacity_requests_per_s": None, "capacity_per_node_requests_per_s": None,
                "capacity_output_tokens_per_s": None, "saturation_batch_per_node": None}
    cap = node_capacity(node_model, mean_input, mean_output, mean_cached, held_per_seq, role)
    fleet_rps = cap.requests_per_s * nodes_up_mean
    load = offered_rps / fleet_rps
    bottleneck = "none"
    if (kv_fill_p95 or 0.0) >= SATURATED_FILL:
        bottleneck = "kv_cache"
    elif (batch_fill_p95 or 0.0) >= SATURATED_FILL:
        bottleneck = "batch_limit"
    elif load >= BOTTLENECK_LOAD:
        bottleneck = cap.resource
    return {
        "load_factor": load,
        "bottleneck": bottleneck,
        "limit_at_saturation": cap.resource,
        "capacity_requests_per_s": fleet_rps,
        "capacity_per_node_requests_per_s": cap.requests_per_s,
        "capacity_output_tokens_per_s": cap.output_tokens_per_s * nodes_up_mean,
        "saturation_batch_per_node": cap.batch,
    }
