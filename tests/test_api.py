"""Hosted-API model: exact billing, rate limits → 429s → retries → failures, outages, timeouts, catalogue."""

from __future__ import annotations

import math

import pytest
from scenarios import make_scenario

from sim.core.config import Api
from sim.core.errors import ConfigError
from sim.runner.pipeline import run_scenario
from sim.spill.api import TokenBucket, find_api_model, resolve_api

API = {"input_usd_per_mtok": 0.6, "output_usd_per_mtok": 2.4, "cached_input_usd_per_mtok": 0.15}


def _all_api(**over):
    kw = {"fleet.nodes": 0, "spill": {"policy": "all_api"}, "api": dict(API), "duration_s": 30,
          "traffic.rate_rps": 4.0}
    kw.update(over)
    return make_scenario(**kw)


def _conserved(out) -> None:
    r = out.summary.requests
    assert r.arrived == len(out.requests) > 0
    assert r.completed + r.spilled + r.rejected + r.failed + r.in_flight == r.arrived
    assert (out.requests["status"] == "spilled").sum() == r.spilled
    assert (out.requests["status"] == "failed").sum() == r.failed


def test_all_api_cost_is_tokens_times_price_exactly():
    chat = {"name": "chat", "share": 1.0, "prefix_tokens": 200, "prefix_hit_rate": 0.7,
            "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 8000},
            "output_tokens": {"dist": "lognormal", "median": 100, "p95": 400, "max": 2000}}
    sc = _all_api(**{"traffic.classes": [chat]})
    out = run_scenario(sc)
    df, s = out.requests, out.summary
    _conserved(out)
    assert s.requests.spilled == s.requests.arrived and s.requests.in_flight == 0
    assert (df["served_by"] == "api").all() and (df["api_attempts"] == 1).all()
    assert df["cached_tokens"].sum() > 0  # the cached price is exercised
    expected = ((df["input_tokens"] - df["cached_tokens"]).sum() * 0.6 + df["cached_tokens"].sum() * 0.15
                + df["output_tokens"].sum() * 2.4) / 1e6
    assert s.cost.api_usd == pytest.approx(expected, rel=1e-12)
    assert df["api_cost_usd"].sum() == pytest.approx(expected, rel=1e-12)
    assert s.cost.self_host_usd == 0 and s.cost.total_usd == pytest.approx(expected, rel=1e-12)
    tokens = df["input_tokens"].sum() + df["output_tokens"].sum()
    assert s.cost.usd_per_mtok_total == pytest.approx(expected / tokens * 1e6, rel=1e-9)
    # latency of API-served requests lands in the per-request table and the summary
    assert df["ttft_s"].notna().all() and (df["e2e_s"] >= df["ttft_s"]).all()
    assert s.latency.ttft_s.p50 > 0.05 and s.spill.request_share == 1.0
    assert s.spill.token_share == 1.0


def test_batch_tier_discount_and_latency():
    sc = _all_api(spill={"policy": "class_based", "batch_classes": ["chat"]},
                  **{"fleet.nodes": 1, "api.batch_discount": 0.5,
                  "api.latency": {"batch_median_s": 100, "batch_p95_s": 200}, "max_drain_s": 5000})
    out = run_scenario(sc)
    df = out.requests
    _conserved(out)
    full = ((df["input_tokens"] - df["cached_tokens"]).sum() * 0.6 + df["output_tokens"].sum() * 2.4) / 1e6
    assert out.summary.cost.api_usd == pytest.approx(0.5 * full, rel=1e-12)
    assert df["e2e_s"].median() > 50  # hours in reality; 100 s median here


def test_rate_limit_below_spill_rate_gives_429s_retries_and_counted_failures():
    sc = _all_api(**{"api.limits": {"rpm": 60, "bucket_s": 5},
                     "api.retry": {"max_retries": 2, "backoff_base_s": 0.2, "backoff_max_s": 1}})
    out = run_scenario(sc)
    s, df = out.summary, out.requests
    _conserved(out)
    api = s.api
    assert api.rate_limited > 0 and api.retries > 0 and api.failed > 0
    assert s.requests.failed == api.failed == (df["status"] == "failed").sum()
    assert api.served + api.failed == s.requests.arrived  # nothing lost
    assert api.calls == df["api_attempts"].sum() == api.requests + api.retries
    assert api.rate_limited == df["api_429s"].sum()
    failed = df[df["status"] == "failed"]
    assert (failed["api_attempts"] == 3).all() and (failed["api_cost_usd"] == 0).all()  # 429s are not billed
    # admitted ≤ bucket capacity + refill over the run (1 req/s, 5 s of burst)
    assert api.served <= 5 + 1 * (s.simulated_end_s) + 1
    # failed requests miss the SLO
    assert s.slo.attainment < 1.0


def test_concurrency_cap_and_outage_are_retried_and_failures_billed():
    sc = _all_api(**{"api.limits": {"max_concurrency": 2},
                     "api.outages": [{"start_s": 10, "end_s": 15}],
                     "api.failure_rate": 0.2,
                     "api.retry": {"max_retries": 4, "backoff_base_s": 0.5, "backoff_max_s": 4}})
    out = run_scenario(sc)
    api = out.summary.api
    _conserved(out)
    assert api.peak_concurrency <= 2
    assert api.server_errors > 0 and api.transient_failures > 0 and api.rate_limited > 0
    assert api.wasted_usd > 0  # processed-then-failed work is billed
    assert api.usd == pytest.approx(out.requests["api_cost_usd"].sum(), rel=1e-12)
    assert api.usd > api.wasted_usd


def test_timeout_abandons_and_bills_processed_tokens():
    sc = _all_api(**{"api.latency": {"output_tokens_per_s": 10, "output_rate_cv": 0},
                     "api.retry": {"max_retries": 0, "timeout_s": 5}})
    out = run_scenario(sc)
    df, api = out.requests, out.summary.api
    _conserved(out)
    long = df[df["output_tokens"] > 100]  # ≥ 10 s of streaming: always times out
    assert len(long) and (long["status"] == "failed").all()
    assert api.timeouts >= len(long) and api.wasted_usd > 0


def test_give_up_to_fleet_fallback():
    sc = make_scenario(spill={"policy": "all_api"}, api={**API, "outages": [{"start_s": 0, "end_s": 1e9}],
                       "on_give_up": "fleet", "retry": {"max_retries": 1, "backoff_base_s": 0.1}},
                       duration_s=20)
    out = run_scenario(sc)
    r, df = out.summary.requests, out.requests
    _conserved(out)
    assert r.completed == r.arrived and out.summary.api.returned_to_fleet == r.arrived
    assert (df["served_by"] == "fleet").all() and (df["api_attempts"] == 2).all()
    assert out.summary.cost.api_usd == 0


def test_token_bucket_refill():
    b = TokenBucket(10, 2.0)
    assert b.refill(0.0) == 10
    b.level = 0
    assert b.refill(2.5) == pytest.approx(5.0)
    assert b.refill(100.0) == 10


def test_catalogue_prices_from_the_guide():
    e = find_api_model("Together", "llama-3.1-70b")
    assert (e.input_usd_per_mtok, e.output_usd_per_mtok) == (0.88, 0.88)
    g = find_api_model("groq", "llama-3.3-70b")
    assert (g.input_usd_per_mtok, g.output_usd_per_mtok, g.latency.output_tokens_per_s) == (0.59, 0.79, 280)
    s = resolve_api(Api(provider="anthropic", model="sonnet"))
    assert s.cached_input_usd_per_mtok == 0.30 and s.batch_discount == 0.5 and s.limits.rpm == 50
    # an override of the input price without a cached price: cached input falls back to the new input price
    s2 = resolve_api(Api(provider="together", model="llama-3.3-70b", input_usd_per_mtok=1.0))
    assert s2.cached_input_usd_per_mtok == 1.0 and math.isclose(s2.price_usd(1000, 0, 0), 0.001)
    with pytest.raises(ConfigError, match="unknown provider"):
        find_api_model("nobody", "x")
    with pytest.raises(ConfigError, match=r"api\.model"):
        find_api_model("openai", "gpt-99")


def test_config_errors():
    with pytest.raises(ConfigError, match="needs an api section"):
        make_scenario(spill={"policy": "queue_length", "max_waiting": 3})
    with pytest.raises(ConfigError, match="all_api"):
        make_scenario(**{"fleet.nodes": 0}, spill={"policy": "never"}, api=API)
    with pytest.raises(ConfigError, match="input_usd_per_mtok"):
        make_scenario(spill={"policy": "all_api"}, api={"output_usd_per_mtok": 1})
    with pytest.raises(ConfigError, match="unknown request class"):
        make_scenario(spill={"policy": "class_based", "classes": ["nope"]}, api=API)


def test_a_class_served_by_the_api_is_judged_on_its_api_latencies():
    """Per-class latencies count spilled requests (as the fleet-wide ones do): a class served wholly by the API
    within its targets meets the SLO instead of failing for want of fleet completions (exact and streamed)."""
    sc = _all_api(**{"slo.ttft_p95_s": 30.0, "slo.tpot_p95_s": 1.0})
    out = run_scenario(sc)
    s = out.summary
    assert s.requests.spilled > 0 and s.requests.completed == 0
    for name, row in s.slo.by_class.items():
        assert row.completed == row.arrived > 0, name
        assert row.ttft_s.p95 is not None and row.met, name
    assert s.slo.met
    from sim.metrics.streaming import run_streaming

    streamed = run_streaming(sc).summary
    assert {k: v.completed for k, v in streamed.slo.by_class.items()} == {
        k: v.completed for k, v in s.slo.by_class.items()}
    assert streamed.slo.met
