"""The KV block ledger: never negative, never above capacity; allocate/free round trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.engine.kv import BlockLedger, cdiv


@given(st.integers(0, 500), st.lists(st.tuples(st.booleans(), st.integers(0, 100)), max_size=60))
def test_ledger_stays_within_bounds(capacity: int, ops: list[tuple[bool, int]]) -> None:
    kv = BlockLedger(capacity)
    taken: list[int] = []
    for alloc, n in ops:
        if alloc:
            if kv.can_allocate(n):
                kv.allocate(n)
                taken.append(n)
            else:
                with pytest.raises(RuntimeError):
                    kv.allocate(n)
        elif taken:
            kv.free(taken.pop())
        assert 0 <= kv.held <= kv.capacity
        assert kv.held + kv.free_blocks == capacity
        assert kv.held == sum(taken)
    for n in reversed(taken):
        kv.free(n)
    assert kv.held == 0 and kv.free_blocks == capacity


def test_overfree_is_an_error() -> None:
    kv = BlockLedger(4)
    kv.allocate(3)
    with pytest.raises(RuntimeError):
        kv.free(4)
    assert kv.held == 3


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_cdiv_is_ceiling(tokens: int, block_size: int) -> None:
    blocks = cdiv(tokens, block_size)
    assert blocks * block_size >= tokens > (blocks - 1) * block_size or (tokens == 0 and blocks == 0)
