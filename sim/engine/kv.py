"""The paged KV cache's block ledger, shared by both node engines (vLLM's ``KVCacheManager`` in counts only).

Model: a node's cache holds ``capacity`` blocks of ``block_size`` tokens; a request holds ``cdiv(tokens,
block_size)`` blocks for the tokens it has computed (or for its final context, prompt + output − 1, when KV is
reserved up front). The ledger keeps only the count of blocks held: which request holds which block does not
change step times or admissions. Prefix-cache hits are not modelled as shared blocks.
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative ``a`` and positive ``b`` (vLLM's ``cdiv``): blocks for ``a`` tokens."""
    return -(-a // b)


class BlockLedger:
    """Count of KV blocks held on one node, never negative and never above ``capacity``."""

    __slots__ = ("capacity", "held")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"KV capacity must be >= 0 blocks, got {capacity}")
        self.capacity = capacity
        self.held = 0

    @property
    def free_blocks(self) -> int:
        """Blocks not held by any request."""
        return self.capacity - self.held

    def can_allocate(self, n: int) -> bool:
        """Whether ``n`` more blocks fit."""
        return n <= self.capacity - self.held

    def allocate(self, n: int) -> None:
        """Take ``n`` blocks; the caller checked :meth:`can_allocate` (an overdraft is an engine bug)."""
        if n < 0 or n > self.capacity - self.held:
            raise RuntimeError(f"KV ledger: cannot allocate {n} blocks, {self.capacity - self.held} free")
        self.held += n

    def free(self, n: int) -> None:
        """Return ``n`` blocks."""
        if n < 0 or n > self.held:
            raise RuntimeError(f"KV ledger: cannot free {n} blocks, {self.held} held")
        self.held -= n

    def clear(self) -> None:
        """Every block returned at once (the node died)."""
        self.held = 0
