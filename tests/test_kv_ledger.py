"""The KV block ledger (never negative, never above capacity; allocate/free round trip) and the admission rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.core.config import Engine
from sim.engine.admission import Limits, SglangRatio, admit_with
from sim.engine.kv import BlockLedger, cdiv
from sim.traffic.request import Request


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


def test_admit_head_rule() -> None:
    """The one admission rule both engines apply: seats, token budget (whole prompts without chunked prefill,
    an oversized one alone in an untouched budget), free blocks, reserved blocks."""
    req = Request(0, 0.0, 0, 100, 50)  # 100 prompt tokens: 7 blocks of 16
    chunked = Engine(max_num_seqs=2, max_num_batched_tokens=64)
    assert admit_with(req, Limits(chunked), 0, 64, 4, None, 0, 0) == (64, 4)  # a 64-token chunk, 4 blocks
    assert admit_with(req, Limits(chunked), 0, 64, 3, None, 0, 0) is None  # blocks short
    assert admit_with(req, Limits(chunked), 2, 64, 100, None, 0, 0) is None  # no seat
    assert admit_with(req, Limits(chunked), 0, 0, 100, None, 0, 0) is None  # no budget
    whole = Engine(max_num_seqs=2, max_num_batched_tokens=64, chunked_prefill=False)
    assert admit_with(req, Limits(whole), 0, 64, 100, None, 0, 0) == (100, 7)  # oversized: alone in a full budget
    assert admit_with(req, Limits(whole), 1, 63, 100, None, 0, 0) is None
    reserve = Engine(scheduler="reserve_kv", reserve_kv=True)
    assert admit_with(req, Limits(reserve), 0, 8192, 100, None, 0, 0) == (100, 10)  # 149 tokens of final context


def test_sglang_admission_reserves_new_requests_in_full() -> None:
    """SGLang's PrefillAdder: running requests' future decode tokens count × new_token_ratio (0.7 at step 0); the
    candidate's own, and those of requests admitted earlier in the same step, count in full."""
    eng = Engine(scheduler="sglang")
    adm = SglangRatio(eng, eng.block_size)
    req = Request(0, 0.0, 0, 16, 100)  # one prompt block, 100 decode tokens to come
    # 7 free blocks, 6 (96 tokens) left after its prompt: 0.7 × 100 would fit, 100 does not
    assert admit_with(req, Limits(eng), 1, 8192, 7, adm, 0, 0) is None
    assert admit_with(req, Limits(eng), 1, 8192, 8, adm, 0, 0) == (16, 1)  # 112 tokens left: fits
    # 11 blocks (176 tokens) left: 100 running decode tokens cost 70, its own 100; 10 admitted this step tip it over
    assert admit_with(req, Limits(eng), 1, 8192, 12, adm, 0, 100) == (16, 1)  # 176 ≥ 70 + 100
    assert admit_with(req, Limits(eng), 1, 8192, 12, adm, 0, 100, admitted_decode_tokens=10) is None  # 176 < 180
