"""Pieces shared by the fast and the reference node engines."""

from __future__ import annotations

from typing import NamedTuple

from ..config import Engine
from ..request import Request


class NodeSnapshot(NamedTuple):
    """State of one node at the current simulated time."""

    waiting: int
    running: int
    kv_used_blocks: int
    busy_s: float


def admission_problem(req: Request, engine: Engine, capacity_blocks: int, max_model_len: int) -> str | None:
    """Why ``req`` can never be served on this node (it is then rejected at once), or None.

    A request is impossible when its full context exceeds ``max_model_len``, when its final KV footprint
    (prompt + output − 1 tokens) exceeds the node's whole cache, or, without chunked prefill, when its prompt
    exceeds ``max_num_batched_tokens``.
    """
    total = req.prompt_tokens + req.output_tokens
    if total > max_model_len:
        return f"context {total} > max_model_len {max_model_len}"
    bs = engine.block_size
    if -(-(total - 1) // bs) > capacity_blocks:
        return f"needs {total - 1} KV tokens, cache holds {capacity_blocks * bs}"
    if not engine.chunked_prefill and req.prompt_tokens - req.cached_tokens > engine.max_num_batched_tokens:
        return f"prompt {req.prompt_tokens} > max_num_batched_tokens without chunked prefill"
    return None
