"""Speculative decoding: expected tokens per step, the verification cost, memory, and both engines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import make_scenario
from test_engine_equivalence import _assert_same, _trace

from sim.core.config import Speculative
from sim.core.errors import ConfigError
from sim.perf.catalog import get_gpu, get_model
from sim.perf.model import StepTimeModel, plan_memory
from sim.perf.speculative import expected_tokens_per_step
from sim.runner.simulation import build_node_model, simulate

H100, LLAMA8 = get_gpu("H100-SXM"), get_model("llama-3.1-8b")


def _perf(spec: Speculative | None) -> StepTimeModel:
    return StepTimeModel.build(H100, LLAMA8, 1, "bf16", "bf16", speculative=spec)


@given(a=st.floats(0.0, 1.0), k=st.integers(1, 8))
def test_expected_tokens_is_the_geometric_sum(a, k):
    tau = expected_tokens_per_step(a, k)
    assert tau == pytest.approx(sum(a ** i for i in range(k + 1)), rel=1e-9)
    assert 1.0 <= tau <= k + 1


def test_acceptance_zero_is_pure_overhead_and_one_gives_k_plus_one_tokens():
    base = _perf(None)
    for method in ("eagle", "draft", "ngram"):
        extra = {"draft_model": "llama-3.1-8b"} if method == "draft" else {}
        none = _perf(Speculative(method=method, num_tokens=4, acceptance_rate=0.0, **extra))
        for batch in (1, 16, 128):
            assert none.decode_step_s(batch, 1000) > base.decode_step_s(batch, 1000), (method, batch)
    full = _perf(Speculative(method="ngram", num_tokens=4, acceptance_rate=1.0))
    assert full.spec is not None and full.spec.tokens_per_step == 5.0
    # one verification step of 5 tokens per sequence emits 5 tokens: at batch 1 (weight-bound) nearly 5x faster
    speedup = base.decode_step_s(1, 1000) / full.decode_step_s(1, 1000)
    assert 4.0 < speedup <= 5.0


def test_speedup_shrinks_with_batch_as_verification_becomes_compute_bound():
    base = _perf(None)
    spec = _perf(Speculative(method="eagle", num_tokens=4, acceptance_rate=0.7))
    ratios = [base.decode_step_s(b, 1000) / spec.decode_step_s(b, 1000) for b in (1, 64, 256)]
    assert ratios[0] > ratios[1] > ratios[2]


def test_prefill_steps_are_not_speculative():
    base, spec = _perf(None), _perf(Speculative(method="eagle", num_tokens=3, acceptance_rate=0.8))
    assert spec.step_s(500, 500 * 250, 500) == base.step_s(500, 500 * 250, 500)
    assert spec.step_s(8, 8000, 8000, decode_only=True) != base.step_s(8, 8000, 8000, decode_only=True)


def test_decode_run_closed_form_matches_step_sum():
    spec = _perf(Speculative(method="draft", draft_model="llama-3.1-8b", num_tokens=3, acceptance_rate=0.6))
    b, c0, n = 12, 5000, 40
    steps = sum(spec.step_s(b, c0 + b * j, c0 + b * j, decode_only=True) for j in range(1, n + 1))
    assert spec.decode_run_s(b, c0, n) == pytest.approx(steps, rel=1e-12)
    assert spec.decode_steps_within(b, c0, spec.decode_run_s(b, c0, 17) + 1e-9, n) == 17


def test_drafter_weights_kv_and_lookahead_come_off_the_cache():
    args = (H100, LLAMA8, 1, "bf16", "bf16", 0.9, 16)
    base = plan_memory(*args)
    eagle = plan_memory(*args, speculative=Speculative(method="eagle", num_tokens=4, acceptance_rate=0.7),
                        max_num_seqs=256)
    assert eagle.weight_bytes > base.weight_bytes
    assert eagle.kv_bytes_per_token == pytest.approx(base.kv_bytes_per_token * (1 + 1 / LLAMA8.layers))
    assert eagle.kv_capacity_tokens < base.kv_capacity_tokens
    ngram = plan_memory(*args, speculative=Speculative(method="ngram", num_tokens=4, acceptance_rate=0.7),
                        max_num_seqs=256)
    assert base.kv_capacity_tokens - ngram.kv_capacity_tokens == pytest.approx(4 * 256, abs=1)


def test_config_checks_the_drafter():
    with pytest.raises(ValueError, match="draft_model"):
        Speculative(method="draft", num_tokens=3, acceptance_rate=0.5)
    with pytest.raises(ValueError, match="only for method 'draft'"):
        Speculative(method="eagle", num_tokens=3, acceptance_rate=0.5, draft_model="llama-3.1-8b")
    sc = make_scenario(**{"fleet.speculative": {"method": "draft", "draft_model": "llama-9t", "num_tokens": 3,
                                                "acceptance_rate": 0.5}})
    with pytest.raises(ConfigError, match="llama-9t"):
        build_node_model(sc)


def _spec_kw(a: float, **extra):
    return {"duration_s": 30, "seed": 3, "traffic.rate_rps": 6.0, "fleet.nodes": 1,
            "fleet.speculative": {"method": "eagle", "num_tokens": 4, "acceptance_rate": a},
            "fleet.engine": {"max_num_seqs": 32, "max_num_batched_tokens": 2048, **extra}}


@pytest.mark.parametrize("extra", [{}, {"num_gpu_blocks_override": 600}, {"scheduler": "sglang"}])
def test_engines_agree_with_speculative_decoding(extra):
    fast, a = _trace(make_scenario(**_spec_kw(0.7, **extra), **{"fleet.engine_impl": "fast"}))
    ref, b = _trace(make_scenario(**_spec_kw(0.7, **extra), **{"fleet.engine_impl": "reference"}))
    _assert_same(a, b)
    assert fast.counts() == ref.counts()


@settings(max_examples=6, deadline=None)
@given(a=st.floats(0.0, 1.0), k=st.integers(1, 6), seed=st.integers(0, 1000), rate=st.floats(2.0, 20.0))
def test_engines_agree_for_any_acceptance(a, k, seed, rate):
    kw = _spec_kw(a)
    kw.update({"seed": seed, "traffic.rate_rps": rate, "duration_s": 15})
    kw["fleet.speculative"] = {"method": "ngram", "num_tokens": k, "acceptance_rate": a}
    _, x = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    _, y = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    _assert_same(x, y)


def test_tpot_falls_with_acceptance():
    def tpot(a: float | None) -> float:
        kw = _spec_kw(a if a is not None else 0.0)
        if a is None:
            del kw["fleet.speculative"]
        res = simulate(make_scenario(**kw))
        done = [r for r in res.requests if r.output_tokens > 20 and r.finish_s > 0]
        return sum((r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in done) / len(done)

    base, low, high = tpot(None), tpot(0.0), tpot(0.8)
    assert low > base > high
    assert base / high > 1.8


def test_per_class_acceptance_sets_the_batch_mean():
    perf = _perf(Speculative(method="ngram", num_tokens=3, acceptance_rate=0.5))
    from dataclasses import replace
    two = replace(perf, class_tokens_per_step=(expected_tokens_per_step(0.5, 3), expected_tokens_per_step(0.9, 3)))
    assert two.for_decoders([0, 0]) is two
    assert two.for_decoders([4, 0]).spec.tokens_per_step == pytest.approx(expected_tokens_per_step(0.5, 3))
    mixed = two.for_decoders([1, 3]).spec.tokens_per_step
    assert mixed == pytest.approx((expected_tokens_per_step(0.5, 3) + 3 * expected_tokens_per_step(0.9, 3)) / 4)


def _two_class_kw(seed: int) -> dict:
    kw = _spec_kw(0.3)
    kw.update({"seed": seed, "traffic.rate_rps": 10.0, "duration_s": 20})
    kw["traffic.classes"] = [
        {"name": "code", "share": 0.5, "spec_acceptance_rate": 0.9,
         "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1200},
         "output_tokens": {"dist": "lognormal", "median": 120, "p95": 400}},
        {"name": "chat", "share": 0.5,
         "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1200},
         "output_tokens": {"dist": "lognormal", "median": 120, "p95": 400}},
    ]
    return kw


@pytest.mark.parametrize("seed", [1, 2])
def test_engines_agree_with_per_class_acceptance(seed):
    kw = _two_class_kw(seed)
    fast, a = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    _, b = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    _assert_same(a, b)
    # a class with higher acceptance speeds the batch up against the fleet-wide rate alone
    kw_same = _two_class_kw(seed)
    kw_same["traffic.classes"][0]["spec_acceptance_rate"] = None
    same = simulate(make_scenario(**kw_same))
    assert sum(r.finish_s for r in fast.requests) < sum(r.finish_s for r in same.requests)
