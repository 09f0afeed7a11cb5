"""The shared prefix cache in the KV ledger: invariants, hits, LRU eviction, hash chains, and both engines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import make_scenario

from sim.core.config import Engine
from sim.engine.admission import Limits, admit_with
from sim.engine.kv import BlockLedger, cdiv
from sim.runner.simulation import simulate
from sim.traffic.prefixes import regroup_chain, unit_chain
from sim.traffic.request import Request

UNIT = 4  # blocks per unit
BS = 16


def _req(rid: int, chain: tuple[int, ...], prompt: int, output: int = 8) -> Request:
    r = Request(rid, 0.0, 0, prompt, output)
    r.prefix = chain
    return r


def _chain(path: tuple[int, ...]) -> tuple[int, ...]:
    """Chained hashes of a path in a small prefix tree (equal leading labels = equal prefixes)."""
    return unit_chain([(label, UNIT * BS) for label in path], UNIT * BS)


class Model:
    """What the test tracks: each running request's private blocks."""

    def __init__(self, kv: BlockLedger) -> None:
        self.kv = kv
        self.private: dict[int, int] = {}
        self.reqs: dict[int, Request] = {}

    def check(self) -> None:
        kv = self.kv
        kv.check()
        in_use = sum(1 for r in kv._ref.values() if r > 0)
        assert kv.held == sum(self.private.values()) + in_use * kv.unit_blocks  # shared blocks counted once
        assert kv.held + kv.cached_free + kv.unused_blocks == kv.capacity
        assert min(kv._ref.values(), default=0) >= 0
        refs: dict[int, int] = {}
        for r in self.reqs.values():
            for h in r.prefix[: r.shared_units]:  # type: ignore[index]
                refs[h] = refs.get(h, 0) + 1
        assert all(kv._ref.get(h) == n for h, n in refs.items())
        assert all(n == refs.get(h, 0) for h, n in kv._ref.items())


paths = st.lists(st.integers(0, 2), min_size=1, max_size=5).map(tuple)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(8, 80),
       ops=st.lists(st.tuples(st.sampled_from(["admit", "promote", "release"]), paths, st.integers(0, 40)),
                    max_size=60))
def test_ledger_invariants_under_random_admissions(capacity: int, ops: list) -> None:
    """Reference counts ≥ 0, used + cached free + unused = total, shared blocks counted once, whatever the order."""
    kv = BlockLedger(capacity, UNIT, BS)
    m = Model(kv)
    rid = 0
    for op, path, x in ops:
        if op == "admit":
            req = _req(rid, _chain(path), len(path) * UNIT * BS + 1 + x)
            rid += 1
            hit = kv.lookup(req)
            cached, shared, revive = hit
            assert cached % (UNIT * BS) == 0 and cached <= req.prompt_tokens - 1
            need = cdiv(req.prompt_tokens, BS) - shared + revive  # whole prompt in one chunk
            if need > kv.free_blocks:
                continue
            kv.admit(req, need, hit)
            req.num_computed = req.prompt_tokens
            m.reqs[req.rid] = req
            m.private[req.rid] = need - revive
        elif m.reqs:
            req = list(m.reqs.values())[x % len(m.reqs)]
            if op == "promote":
                before = req.shared_units
                held = kv.held
                kv.promote(req, req.num_computed)
                m.private[req.rid] = cdiv(req.num_computed, BS) - req.shared_units * UNIT
                assert kv.held <= held and req.shared_units >= before
            else:
                kv.release(req, cdiv(req.num_computed, BS), x)
                del m.reqs[req.rid], m.private[req.rid]
        m.check()
    for req in list(m.reqs.values()):
        kv.release(req, cdiv(req.num_computed, BS), 99)
        del m.reqs[req.rid], m.private[req.rid]
        m.check()
    assert kv.held == 0 and kv.cached_free == kv.cached_units * UNIT


def test_lru_evicts_the_oldest_release_first_and_deepest_unit_first() -> None:
    kv = BlockLedger(6 * UNIT, UNIT, BS)
    a, b = _req(0, _chain((1, 2, 3)), 3 * UNIT * BS), _req(1, _chain((5, 6)), 2 * UNIT * BS)
    for r, step in ((a, 1), (b, 2)):
        kv.admit(r, cdiv(r.prompt_tokens, BS), kv.lookup(r))
        kv.promote(r, r.prompt_tokens)
        kv.release(r, cdiv(r.prompt_tokens, BS), step)
    assert kv.cached_free == 5 * UNIT and kv.held == 0
    order = [kv._by_key[k] for k in kv._lru]
    assert order == [a.prefix[2], a.prefix[1], a.prefix[0], b.prefix[1], b.prefix[0]]  # type: ignore[index]
    kv.allocate(2 * UNIT)  # 1 unit unused: one eviction, a's deepest unit
    assert kv.evicted_units == 1 and a.prefix[2] not in kv._ref and a.prefix[1] in kv._ref  # type: ignore[index]
    # a hit takes its units back out of the LRU: b's are evicted before a's remaining ones
    a2 = _req(2, a.prefix, 3 * UNIT * BS)  # type: ignore[arg-type]
    hit = kv.lookup(a2)
    assert hit == (2 * UNIT * BS, 2 * UNIT, 2 * UNIT)
    kv.admit(a2, cdiv(a2.prompt_tokens, BS) - 2 * UNIT + 2 * UNIT, hit)
    # its 1 new private unit's worth of blocks evicts b's deepest unit (the oldest left in the LRU)
    assert kv.evicted_units == 2 and b.prefix[1] not in kv._ref and b.prefix[0] in kv._ref  # type: ignore[index]
    assert kv.held == 5 * UNIT and kv.cached_free == UNIT


def test_duplicate_units_are_shared_at_promotion() -> None:
    """Two requests that computed the same prefix concurrently end up sharing one copy."""
    kv = BlockLedger(40, UNIT, BS)
    chain = _chain((1, 2))
    r1, r2 = _req(0, chain, 2 * UNIT * BS + 5), _req(1, chain, 2 * UNIT * BS + 5)
    for r in (r1, r2):
        hit = kv.lookup(r)
        assert hit == (0, 0, 0)
        kv.admit(r, cdiv(r.prompt_tokens, BS), hit)
        r.num_computed = r.prompt_tokens
    assert kv.held == 2 * (2 * UNIT + 1)
    kv.promote(r1, r1.num_computed)
    kv.promote(r2, r2.num_computed)
    assert kv.held == 2 * UNIT + 2 and kv._ref[chain[0]] == 2


def test_admission_needs_only_the_uncached_blocks() -> None:
    eng = Engine(block_size=BS, max_num_batched_tokens=8192)
    kv = BlockLedger(100, UNIT, BS)
    chain = _chain((1, 2, 3))
    first = _req(0, chain, 3 * UNIT * BS + 10)
    kv.admit(first, cdiv(first.prompt_tokens, BS), kv.lookup(first))
    kv.promote(first, first.prompt_tokens)
    second = _req(1, chain, 3 * UNIT * BS + 10)
    hit = kv.lookup(second)
    assert hit == (3 * UNIT * BS, 3 * UNIT, 0)  # units in use by the first: nothing to take back
    assert admit_with(second, Limits(eng), 1, 8192, kv.free_blocks, None, 0, 0, hit) == (10, 1)
    # the last prompt token is always computed: a prompt of exactly 3 units hits 2
    exact = _req(2, chain, 3 * UNIT * BS)
    assert kv.lookup(exact)[0] == 2 * UNIT * BS


def test_regroup_chain_keeps_prefix_equality() -> None:
    a, b = [7, 8, 9, 10], [7, 8, 9, 11]
    for unit in (256, 512, 1024):
        ca, cb = regroup_chain(a, 512, unit), regroup_chain(b, 512, unit)
        assert len(ca) == 4 * 512 // unit
        same = sum(1 for x, y in zip(ca, cb) if x == y)
        assert same == 3 * 512 // unit
    # chained: an equal block after a different one is a different unit
    assert regroup_chain([1, 5], 512, 512)[1] != regroup_chain([2, 5], 512, 512)[1]


def _prefix_scenario(impl: str = "fast", **kw):
    engine = {"prefix_caching": True, "prefix_unit_tokens": 64, **kw.pop("engine", {})}
    prefix = kw.pop("prefix", {"system_prompt": {"count": 3, "tokens": {"dist": "fixed", "value": 700}},
                                "documents": {"count": 50, "tokens": {"dist": "fixed", "value": 900}, "zipf_s": 1.0},
                                "conversation": {"turns_mean": 4, "think_time_s": 5}})
    cls = {"name": "chat", "share": 1.0,
           "input_tokens": {"dist": "lognormal", "median": 200, "p95": 800, "max": 4000},
           "output_tokens": {"dist": "lognormal", "median": 60, "p95": 300, "max": 1000},
           "prefix": prefix, **kw.pop("cls", {})}
    return make_scenario(**{
        "duration_s": 60, "traffic.rate_rps": 10, "fleet.nodes": 2, "max_drain_s": 600, "traffic.classes": [cls],
        "fleet.engine": engine, "fleet.engine_impl": impl, **kw})


def _hit_ratio(result) -> float:
    reqs = result.requests
    return sum(r.cached_tokens for r in reqs) / sum(r.prompt_tokens for r in reqs)


def test_identical_prompts_hit_all_but_the_last_unit_after_the_first() -> None:
    s = _prefix_scenario(**{"traffic.rate_rps": 2, "fleet.nodes": 1},
                         cls={"input_tokens": {"dist": "fixed", "value": 1},
                              "output_tokens": {"dist": "fixed", "value": 20}},
                         prefix={"system_prompt": {"count": 1, "tokens": {"dist": "fixed", "value": 2047}}})
    reqs = sorted(simulate(s).requests, key=lambda r: r.rid)
    assert reqs[0].prompt_tokens == 2048 and reqs[0].cached_tokens == 0
    later = [r.cached_tokens for r in reqs[1:]]
    assert len(later) > 50 and set(later) == {1984}  # 31 of 32 units: the last prompt token is always computed


def test_prefix_caching_off_means_no_hits_and_same_prompts() -> None:
    on, off = simulate(_prefix_scenario()), simulate(_prefix_scenario(engine={"prefix_caching": False}))
    assert _hit_ratio(off) == 0.0 and _hit_ratio(on) > 0.5
    assert [r.prompt_tokens for r in on.requests] == [r.prompt_tokens for r in off.requests]
    assert np.median([r.first_token_s - r.arrival_s for r in on.requests]) < np.median(
        [r.first_token_s - r.arrival_s for r in off.requests])


def _same(a, b) -> None:
    ka = {r.rid: r for r in a.requests}
    kb = {r.rid: r for r in b.requests}
    assert ka.keys() == kb.keys()
    for rid, x in ka.items():
        y = kb[rid]
        assert (x.node, x.status, x.preemptions, x.cached_tokens) == (
            y.node, y.status, y.preemptions, y.cached_tokens), rid
        for u, v in ((x.first_scheduled_s, y.first_scheduled_s), (x.first_token_s, y.first_token_s),
                     (x.finish_s, y.finish_s)):
            assert abs(u - v) <= 1e-6 * max(1.0, abs(v)), rid


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.integers(1, 3),
    rate=st.floats(2.0, 25.0),
    max_seqs=st.integers(2, 64),
    blocks=st.one_of(st.none(), st.integers(600, 3000)),
    block_size=st.sampled_from([4, 16, 32]),
    chunked=st.booleans(),
    scheduler=st.sampled_from(["preempt", "reserve_kv", "sglang"]),
    router=st.sampled_from(["least_work", "power_of_two", "prefix_aware", "session_affinity"]),
    staleness=st.sampled_from([0.0, 0.0, 0.5]),
    systems=st.integers(1, 4),
    turns=st.floats(1.0, 6.0),
    seed=st.integers(0, 10_000),
)
def test_fast_equals_reference_with_shared_prefixes(nodes, rate, max_seqs, blocks, block_size, chunked, scheduler,
                                                    router, staleness, systems, turns, seed):
    kw = {
        "seed": seed, "duration_s": 30, "traffic.rate_rps": rate, "fleet.nodes": nodes,
        "router": {"policy": router, "staleness_s": staleness},
        "engine": {"max_num_seqs": max_seqs, "max_num_batched_tokens": max_seqs + 2048, "block_size": block_size,
                   "chunked_prefill": chunked, "scheduler": scheduler,
                   "num_gpu_blocks_override": None if blocks is None else max(blocks, 6000 // block_size + 1)},
        "prefix": {"system_prompt": {"count": systems, "tokens": {"dist": "fixed", "value": 500}},
                   "documents": {"count": 20, "tokens": {"dist": "fixed", "value": 700}, "zipf_s": 1.2},
                   "conversation": {"turns_mean": turns, "think_time_s": 3}},
    }
    fast = simulate(_prefix_scenario("fast", **dict(kw, engine=dict(kw["engine"]))))
    ref = simulate(_prefix_scenario("reference", **dict(kw, engine=dict(kw["engine"]))))
    _same(fast, ref)


@pytest.mark.parametrize("scheduler", ["preempt", "sglang"])
def test_equivalence_with_prefixes_under_kv_pressure(scheduler: str) -> None:
    kw = {"engine": {"num_gpu_blocks_override": 1200, "scheduler": scheduler}, "traffic.rate_rps": 20}
    fast = simulate(_prefix_scenario("fast", **dict(kw, engine=dict(kw["engine"]))))
    ref = simulate(_prefix_scenario("reference", **dict(kw, engine=dict(kw["engine"]))))
    assert sum(r.preemptions for r in fast.requests) > 0
    _same(fast, ref)


def _mooncake(caching: bool, prefix_hits: str = "infinite_cache", **engine):
    return make_scenario(**{
        "duration_s": 3000, "max_drain_s": 600, "fleet.nodes": 1,
        "traffic.rate_rps": None,
        "traffic.trace": {"file": "data/traces/mooncake_conversation.jsonl", "window_s": [0, 300],
                          "time_scale": 10.0, "prefix_hits": prefix_hits},
        "traffic.classes": [{"name": "all", "share": 1.0}],
        "fleet.engine": {"prefix_caching": caching, **engine}})


def test_mooncake_hits_come_from_the_cache_and_stay_under_the_infinite_cache_bound() -> None:
    infinite = simulate(_mooncake(False))
    big = simulate(_mooncake(True, num_gpu_blocks_override=400_000))
    hbm = simulate(_mooncake(True))
    none = simulate(_mooncake(False, "none"))
    assert _hit_ratio(none) == 0.0
    bound = _hit_ratio(infinite)
    assert 0.2 < bound < 0.5
    # a cache as large as the trace's working set on one node: only requests overlapping their prefix's first
    # computation miss (and 256-token units round down at most one unit of the 512-token blocks' hits)
    assert 0.8 * bound < _hit_ratio(big) <= bound + 1e-9
    assert _hit_ratio(hbm) < _hit_ratio(big)


def test_disaggregated_prefill_pool_caches_prefixes_and_engines_agree() -> None:
    """Prefill nodes keep shared units cached after the KV leaves; decode nodes take the transferred KV."""
    pools = {"fleet.nodes": 3, "fleet.pools": [
        {"name": "prefill", "role": "prefill", "nodes": 1, "interconnect": {"kind": "infiniband"}},
        {"name": "decode", "role": "decode", "nodes": 2}]}
    runs = [simulate(_prefix_scenario(impl, **pools, engine={"num_gpu_blocks_override": 3000}))
            for impl in ("fast", "reference")]
    _same(*runs)
    fast = runs[0]
    assert _hit_ratio(fast) > 0.3
    assert all(r.node >= 1 for r in fast.requests if r.first_token_s >= 0)
