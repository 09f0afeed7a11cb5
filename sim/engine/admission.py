"""Admission policies shared by both node engines (one object per node, the same arithmetic in both).

:func:`admit_with` is the one rule both engines apply to the head of the waiting queue. vLLM v1 (``scheduler:
preempt``) and TensorRT-LLM (``reserve_kv``) need no state beyond the KV block count the engines keep. SGLang's
(``scheduler: sglang``) does: :class:`SglangRatio`.
"""

from __future__ import annotations

from sim.core.config import Engine
from sim.engine.kv import cdiv
from sim.traffic.request import Request


class SglangRatio:
    """SGLang's new-token-ratio admission (``PrefillAdder``) and its ratio schedule.

    Model: a waiting request is admitted only if, after allocating its prefill chunk's KV blocks, the free KV
    tokens still hold ``ratio × R + F``: ``R`` is the decode tokens still to come of the requests running before
    this step (output − generated; the engine knows each request's output length, as a benchmark's ``max_tokens``
    tells SGLang), ``F`` the decode tokens still to come, in full, of the requests admitted in this step and of
    the candidate itself (SGLang's ``PrefillAdder``: running requests count ``min(max_new − generated, 4096) ×
    new_token_ratio`` in ``rem_total_token_offset``, a request it admits adds its input and its whole
    ``min(max_new, 4096)``). The ratio is a function of the engine step counter ``S``:
    ``max(min, r0 − (S − S0) · (init − min) / decay_steps)``. When a step has to evict running requests (SGLang's
    retraction; capsim recomputes the newest, as for vLLM), the ratio is reset at that step to
    ``min(1, (decoded + retract_decode_steps · n) / Σ outputs)`` over the requests still running.

    Simplifications (docs/performance-model.md): the ratio decays once per engine step (SGLang: per decode batch);
    SGLang's 4,096-token clip of each request's estimate is not applied; prefill and decode share one token
    budget per step (SGLang runs them as separate batches unless mixed chunking is on).
    """

    def __init__(self, engine: Engine, block_size: int) -> None:
        p = engine.sglang
        self.bs = block_size
        self.init = p.init_new_token_ratio
        self.min = p.min_new_token_ratio
        self.decay = (p.init_new_token_ratio - p.min_new_token_ratio) / p.decay_steps
        self.retract_steps = p.retract_decode_steps
        self.r0 = self.init
        self.s0 = 0
        self.retractions = 0

    def ratio(self, step: int) -> float:
        """The new-token ratio at engine step ``step`` (steps executed so far)."""
        return max(self.min, self.r0 - (step - self.s0) * self.decay)

    def admits(self, step: int, free_blocks_after: int, running_decode_tokens: int,
               admitted_decode_tokens: int) -> bool:
        """Whether ``ratio × running_decode_tokens + admitted_decode_tokens`` fits the free KV left after the
        candidate's prefill blocks. ``running_decode_tokens``: Σ (output − generated) over the requests running
        before this step; ``admitted_decode_tokens``: the same over the requests admitted in this step and the
        candidate (reserved in full)."""
        return self.ratio(step) * running_decode_tokens + admitted_decode_tokens <= free_blocks_after * self.bs

    def on_retract(self, step: int, generated: int, outputs: int, running: int) -> None:
        """Requests were evicted while scheduling step ``step``: raise the ratio to the running requests' decoded
        share plus ``retract_decode_steps`` tokens each (SGLang's ``retract_decode``), at most 1."""
        self.retractions += 1
        estimate = (generated + self.retract_steps * running) / outputs if outputs > 0 else self.init
        self.r0 = min(1.0, estimate)
        self.s0 = step


def make_admission(engine: Engine, block_size: int) -> SglangRatio | None:
    """The stateful admission policy of ``engine.scheduler`` (None for ``preempt`` and ``reserve_kv``)."""
    return SglangRatio(engine, block_size) if engine.scheduler == "sglang" else None


class Limits:
    """The engine limits :func:`admit_with` reads, copied once per node (reading a pydantic model's fields costs
    more than the rest of the rule)."""

    def __init__(self, engine: Engine) -> None:
        self.max_num_seqs = engine.max_num_seqs
        self.max_num_batched_tokens = engine.max_num_batched_tokens
        self.chunked_prefill = engine.chunked_prefill
        self.block_size = engine.block_size
        self.reserve_kv = engine.reserve_kv


def admit_with(
    req: Request,
    engine: Limits,
    running: int,
    budget_tokens: int,
    free_blocks: int,
    admission: SglangRatio | None,
    step: int,
    future_decode_tokens: int,
    hit: tuple[int, int, int] | None = None,
    admitted_decode_tokens: int = 0,
) -> tuple[int, int] | None:
    """Whether the waiting head ``req`` joins this step (vLLM's ``schedule()`` waiting loop): its prefill chunk
    (tokens) and the KV blocks to allocate for it, or None if it does not fit.

    It fits when fewer than ``max_num_seqs`` requests are ``running``, the step's remaining ``budget_tokens`` is
    positive, its chunk fits that budget (without chunked prefill the whole uncached prompt must fit, unless it
    could never fit and the budget is untouched: an oversized recompute then runs alone), its blocks fit
    ``free_blocks`` (with ``reserve_kv``: the blocks of its final context), and, under SGLang's admission with
    requests running, ``ratio × future_decode_tokens + admitted_decode_tokens + its own decode tokens`` fits the
    blocks left after it (``future_decode_tokens``: decode tokens to come of the requests running before this
    step; ``admitted_decode_tokens``: those of the requests admitted earlier in this step, counted in full).
    ``hit``: its prefix-cache hit from :meth:`sim.engine.kv.BlockLedger.lookup` (cached tokens, shared blocks it
    needs not allocate, cached-free blocks it takes back); default: ``req.cached_tokens``, nothing shared.
    Pure: it changes nothing.
    """
    if running >= engine.max_num_seqs or budget_tokens <= 0:
        return None
    cached, shared, revive = (req.cached_tokens, 0, 0) if hit is None else hit
    n_new = req.num_tokens - cached
    if not engine.chunked_prefill:
        if n_new > budget_tokens and budget_tokens < engine.max_num_batched_tokens:
            return None
    else:
        n_new = min(n_new, budget_tokens)
    bs = engine.block_size
    need = cdiv(req.prompt_tokens + req.output_tokens - 1, bs) if engine.reserve_kv else cdiv(cached + n_new, bs)
    need += revive - shared
    if need > free_blocks:
        return None
    if admission is not None and running > 0 and not admission.admits(
            step, free_blocks - need, future_decode_tokens,
            admitted_decode_tokens + req.output_tokens - req.num_generated):
        return None
    return n_new, need
