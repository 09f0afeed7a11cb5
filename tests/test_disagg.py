"""Prefill/decode disaggregation: both engines agree, the link model, and what theory says it should do."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import make_scenario
from test_engine_equivalence import _assert_same, _trace

from sim.core.errors import ConfigError
from sim.fleet.link import Link, exposed_wire_s
from sim.perf.model import attention_pairs
from sim.runner.simulation import build_node_model, simulate

LINKS = {"infinite": {"bandwidth_gb_per_s": 1e12, "latency_s": 0.0},  # 1 ZB/s: an ideal link
         "infiniband": {"kind": "infiniband"}, "ethernet": {"kind": "ethernet"}}


def _pools(prefill: int, decode: int, link: str = "infinite", overlap: bool = True) -> dict:
    """Overrides for a fleet of ``prefill`` prefill nodes and ``decode`` decode nodes (fleet-level GPU and engine)."""
    return {"fleet.nodes": prefill + decode, "fleet.pools": [
        {"name": "prefill", "role": "prefill", "nodes": prefill, "interconnect": {**LINKS[link], "overlap": overlap}},
        {"name": "decode", "role": "decode", "nodes": decode, "interconnect": LINKS[link]}]}


def _fixed(prompt: int, output: int) -> list[dict]:
    return [{"name": "fixed", "share": 1.0, "input_tokens": {"dist": "fixed", "value": prompt},
             "output_tokens": {"dist": "fixed", "value": output}}]


# -- the two engines ---------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefill=st.integers(1, 2),
    decode=st.integers(1, 2),
    rate=st.floats(2.0, 30.0),
    max_seqs=st.integers(2, 48),
    batched_extra=st.integers(0, 3000),
    block_size=st.sampled_from([1, 16]),
    blocks=st.one_of(st.none(), st.integers(600, 3000)),
    chunked=st.booleans(),
    scheduler=st.sampled_from(["preempt", "reserve_kv", "sglang"]),
    link=st.sampled_from(["infinite", "infiniband", "ethernet"]),
    overlap=st.booleans(),
    jitter=st.sampled_from([0.0, 0.3]),
    dynamics=st.sampled_from(["none", "none", "spot", "clients"]),
    seed=st.integers(0, 10_000),
)
def test_disaggregated_fast_equals_reference(prefill, decode, rate, max_seqs, batched_extra, block_size, blocks,
                                             chunked, scheduler, link, overlap, jitter, dynamics, seed):
    pools = _pools(prefill, decode, link, overlap)
    if dynamics == "spot":  # a spot node in each pool, evicted about every 20 s and replaced
        spot = {"nodes": 1, "evictions_per_node_hour": 180, "notice_s": 1, "replace": True}
        pools["fleet.pools"] = [{**p, "spot": spot} for p in pools["fleet.pools"]]
    client = {"timeout_s": 2.0, "stream": True, "retries": 1, "backoff_s": 0.5} if dynamics == "clients" else None
    kw = {
        "duration_s": 20, "seed": seed, "max_drain_s": 600, "traffic.rate_rps": rate, **pools,
        "fleet.engine": {
            "max_num_seqs": max_seqs, "max_num_batched_tokens": max_seqs + batched_extra, "block_size": block_size,
            "chunked_prefill": chunked, "scheduler": scheduler, "step_jitter": {"cv": jitter},
            "num_gpu_blocks_override": None if blocks is None else (max(blocks, 8001) if block_size == 1 else blocks),
        },
        "traffic.classes": [{"name": "chat", "share": 1.0, "prefix_tokens": 200, "prefix_hit_rate": 0.3,
                             "input_tokens": {"dist": "lognormal", "median": 600, "p95": 3000, "max": 4000},
                             "output_tokens": {"dist": "lognormal", "median": 60, "p95": 300, "max": 800},
                             "client": client}],
    }
    fast, a = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    ref, b = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    _assert_same(a, b)
    _assert_same_handoffs(fast, ref)
    assert fast.counts() == ref.counts()
    assert fast.disagg == ref.disagg
    done = [r for r in fast.requests if r.first_token_s >= 0]
    decode_slots = set(fast.layout.pool_slots(1))
    assert all(r.node in decode_slots for r in done)  # every token comes from a decode node
    c = fast.counts()
    assert c["arrived"] == sum(v for k, v in c.items() if k not in ("arrived", "retries"))


def _assert_same_handoffs(fast, ref, tol=1e-6):
    """Both engines hand every request to the same decode node, with the same KV transfer (the table's columns)."""
    assert len(fast.requests) == len(ref.requests)
    for x, y in zip(fast.requests, ref.requests):
        hx, hy = x.handoff, y.handoff
        assert (hx is None) == (hy is None), x.rid
        if hx is None:
            continue
        assert (hx.prefill_node, hx.decode_node, hx.kv_bytes) == (hy.prefill_node, hy.decode_node, hy.kv_bytes), x.rid
        for u, v in zip(hx[2:5], hy[2:5]):
            assert (math.isnan(u) and math.isnan(v)) or abs(u - v) <= tol * max(1.0, abs(v)), (x.rid, hx, hy)


def test_disaggregated_equivalence_under_decode_preemption():
    """A small decode-side cache preempts often (recompute of the generated tokens, prompt KV re-loaded); both
    engines agree, and the prefill node's KV is all returned at the end."""
    kw = {"duration_s": 40, "seed": 3, "traffic.rate_rps": 12.0, **_pools(1, 1, "infiniband"),
          "fleet.engine": {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "num_gpu_blocks_override": 500}}
    fast, a = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    ref, b = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    assert sum(r.preemptions for r in fast.requests) > 10
    _assert_same(a, b)
    _assert_same_handoffs(fast, ref)
    assert fast.series.per_node("kv_used_blocks")[-1, 0] == 0
    c = fast.counts()
    assert c["in_flight"] == 0 and c["completed"] + c["rejected"] == c["arrived"]


# -- the link -------------------------------------------------------------------------------------------------
def test_link_serialises_transfers_and_overlap_hides_wire_time():
    link = Link(1e9, 1e-3)  # 1 GB/s, 1 ms
    assert link.send(0.0, 1e9, 0.0, 32, overlap=False) == pytest.approx(1.001)
    assert link.send(0.5, 1e9, 0.0, 32, overlap=False) == pytest.approx(2.001)  # queued behind the first
    assert link.busy_s == pytest.approx(2.0)
    assert link.send(9.0, 1e9, 0.25, 32, overlap=True) == pytest.approx(9.751)  # streamed since 8.75
    assert link.busy_s == pytest.approx(3.0)  # utilisation counts the overlapped wire time too
    # a saturated link hides nothing: the next overlapped transfer waits for the link
    assert link.send(9.5, 1e9, 0.75, 32, overlap=True) == pytest.approx(10.751)
    assert exposed_wire_s(1.0, 0.25, 32, True) == pytest.approx(0.75)
    assert exposed_wire_s(1.0, 10.0, 32, True) == pytest.approx(1 / 32)  # the last layer is always exposed
    assert Link(math.inf, 0.0).send(3.0, 1e12, 0.0, 32, False) == 3.0


def test_transfer_time_grows_with_prompt_and_slower_links():
    base = {"duration_s": 60, "seed": 1, "traffic.rate_rps": 0.2, "traffic.classes": _fixed(4000, 20)}

    def mean_transfer(link: str) -> float:
        sc = make_scenario(**base, **_pools(1, 1, link, overlap=False))
        stats = simulate(sc).disagg
        assert stats is not None
        return stats["transfer_mean_s"]

    nm = build_node_model(make_scenario(**base))
    expect = 4000 * nm.memory.kv_bytes_per_token / 12.5e9 + 50e-6  # ethernet: 12.5 GB/s, 50 µs
    assert mean_transfer("ethernet") == pytest.approx(expect, rel=0.05)  # light load: little queueing
    assert mean_transfer("infiniband") < mean_transfer("ethernet") / 3


def test_unsupported_disaggregation_is_one_clear_error():
    def run(**kw):
        simulate(make_scenario(**{"duration_s": 5, **kw}))

    pools = _pools(1, 1)["fleet.pools"]
    with pytest.raises(ConfigError, match=r"fleet.pools.0.role: model .* has prefill pools and a mixed pool"):
        run(**{"fleet.nodes": 3, "fleet.pools": [*pools, {"name": "m", "nodes": 1}]})
    with pytest.raises(ConfigError, match="needs a decode pool"):
        make_scenario(**{"fleet.nodes": 1, "fleet.pools": [pools[0]]})
    with pytest.raises(ConfigError, match=r"traffic.classes.0.deferrable: deferrable classes are not supported"):
        run(**_pools(1, 1), **{"traffic.classes": [{**_fixed(100, 10)[0], "deferrable": {"deadline_s": 60}}]})


# -- theory -----------------------------------------------------------------------------------------------------
def test_isolated_request_ttft_is_prefill_plus_one_decode_step_and_tpot_a_pure_decode_step():
    """One request at a time, an infinitely fast link: TTFT = the prompt's prefill steps + one decode step of a
    batch of one; TPOT = the mean of batch-one decode steps; a mixed node's TTFT is the prefill alone."""
    prompt, out = 3000, 40
    kw = {"duration_s": 30, "seed": 2, "traffic.rate_rps": 0.1, "traffic.classes": _fixed(prompt, out),
          "fleet.engine": {"max_num_batched_tokens": 2048, "max_num_seqs": 64}}
    dis = simulate(make_scenario(**kw, **_pools(1, 1)))
    mix = simulate(make_scenario(**kw, **{"fleet.nodes": 1}))
    perf = build_node_model(make_scenario(**kw, **{"fleet.nodes": 1})).perf
    prefill = perf.step_s(2048, attention_pairs(2048, 2048), 2048) + perf.step_s(
        952, attention_pairs(952, 3000), 3000)
    first = perf.step_s(1, attention_pairs(1, prompt), prompt)
    decode = [perf.step_s(1, c, c) for c in range(prompt + 1, prompt + out)]
    reqs = [r for r in dis.requests if r.finish_s >= 0]
    assert len(reqs) >= 2
    # requests do not overlap at 0.1 req/s (checked): each is served alone
    spans = sorted((r.arrival_s, r.finish_s) for r in reqs)
    assert all(b[0] > a[1] for a, b in itertools.pairwise(spans))
    for r in reqs:
        assert r.first_token_s - r.arrival_s == pytest.approx(prefill + first, rel=1e-9)
        assert r.finish_s - r.first_token_s == pytest.approx(sum(decode), rel=1e-9)
    for r in mix.requests:
        assert r.first_token_s - r.arrival_s == pytest.approx(prefill, rel=1e-9)


def _tpots(result) -> np.ndarray:
    return np.array([(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in result.requests
                     if r.finish_s >= 0 and r.output_tokens > 1])


def test_long_prompts_slow_mixed_decode_but_not_disaggregated_decode():
    """Long prompts, equal GPUs (2 mixed nodes vs 1 prefill + 1 decode), an infinitely fast link: a decode-node
    step holds decode tokens only, so every TPOT stays under the step time of a pure-decode batch at the largest
    batch and context seen; mixed nodes put prefill chunks into the decode steps and their TPOT is far worse."""
    prompt, out = 6000, 120
    kw = {"duration_s": 60, "seed": 4, "traffic.rate_rps": 4.5, "traffic.classes": _fixed(prompt, out),
          "fleet.engine": {"max_num_batched_tokens": 2048, "max_num_seqs": 32}}
    dis = simulate(make_scenario(**kw, **_pools(1, 1)))
    mix = simulate(make_scenario(**kw, **{"fleet.nodes": 2}))
    perf = build_node_model(make_scenario(**kw, **{"fleet.nodes": 2})).perf
    max_batch = int(dis.series.per_node("running")[:, 1].max()) + 1
    bound = perf.decode_step_s(max_batch, prompt + out)
    t_dis, t_mix = _tpots(dis), _tpots(mix)
    assert t_dis.max() <= bound
    assert np.percentile(t_mix, 95) > 2 * np.percentile(t_dis, 95)


def test_role_aware_capacity_and_pool_load_factors():
    """A prefill node sustains prompts alone (about its token budget per step), a decode node decodes alone:
    each more requests/s than a mixed node; the pools' load factors follow, and the fleet's is the busier
    stage's (the two pools serve in series)."""
    from sim.metrics.access import metric
    from sim.perf.capacity import node_capacity
    from sim.runner.pipeline import run_scenario

    nm = build_node_model(make_scenario(**{"fleet.nodes": 1}))
    mixed, pre, dec = (node_capacity(nm, 4000, 100, 0, role=r) for r in ("mixed", "prefill", "decode"))
    assert pre.requests_per_s > mixed.requests_per_s and dec.requests_per_s > mixed.requests_per_s
    assert pre.requests_per_s == pytest.approx(1 / nm.perf.prefill_s(4000, nm.engine.max_num_batched_tokens),
                                               rel=0.3)
    sc = make_scenario(**{"duration_s": 60, "traffic.rate_rps": 4.0, "traffic.classes": _fixed(4000, 100),
                          **_pools(1, 1, "infiniband")})
    s = run_scenario(sc).summary
    assert s.pools is not None
    lf = {name: p.utilisation.load_factor for name, p in s.pools.items()}
    assert s.disaggregation is not None and s.disaggregation.transfers > 0  # a typed record, read by attribute
    assert metric(s, "disaggregation.transfers") == s.disaggregation.transfers
    assert lf["prefill"] > 2 * lf["decode"] > 0
    assert s.utilisation.load_factor == pytest.approx(max(lf.values()), rel=0.05)


def test_size_searches_the_prefill_decode_split():
    from sim.sizing.disagg import best_split, format_split, parse_counts, size_split

    assert parse_counts("1-3,6") == [1, 2, 3, 6]
    with pytest.raises(ConfigError, match="--prefill-nodes"):
        parse_counts("0-2")
    with pytest.raises(ConfigError, match="one prefill and one decode pool"):
        size_split(make_scenario(**{"fleet.nodes": 1, "fleet.pools": [{"name": "m", "nodes": 1}]}), [1])
    sc = make_scenario(**{"duration_s": 30, "traffic.rate_rps": 3.0, "traffic.classes": _fixed(4000, 60),
                          "slo": {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}, **_pools(1, 1, "infiniband")})
    rows = size_split(sc, [1, 2], n_seeds=1, max_nodes=4, workers=1)
    assert [r.prefill_nodes for r in rows] == [1, 2]
    best = best_split(rows)
    assert best is not None and best.sizing.min_nodes is not None and best.sizing.min_nodes >= 1
    assert all(r.sizing.min_nodes is None or r.sizing.tried[r.sizing.min_nodes] for r in rows)
    assert f"best       {best.prefill_nodes} prefill" in format_split(rows, 4)


def test_size_split_stops_when_the_prefill_side_cannot_meet_ttft():
    """A prefill pool too small for the TTFT target: one idle-decode check names the constraint, and the decode pool
    is not doubled up to max_nodes (it was, before: 1, 2, 4, … 64 decode nodes simulated for nothing)."""
    from sim.sizing.disagg import format_split, size_split

    # 4,000-token prompts at 6 req/s: one H100 prefills ~4 of them a second, so its queue grows without bound
    sc = make_scenario(**{"duration_s": 30, "traffic.rate_rps": 6.0, "traffic.classes": _fixed(4000, 60),
                          "slo": {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}, **_pools(1, 1, "infiniband")})
    (row,) = size_split(sc, [1], n_seeds=1, max_nodes=64, workers=1)
    assert row.infeasible is not None and "TTFT" in row.infeasible and "1 prefill node(s)" in row.infeasible
    assert row.sizing.min_nodes is None and len(row.sizing.tried) == 1  # the idle-decode check only
    (idle_n,) = row.sizing.tried
    assert idle_n < 64
    text = format_split([row], 64)
    assert "no split meets the SLO" in text and "infeasible 1 prefill: P95 TTFT" in text
    assert row.record()["infeasible"] == row.infeasible


@pytest.mark.parametrize("blocks", [None, 600])
def test_disaggregated_prefix_cache_matches_reference(blocks):
    """A shared prefix cache on the prefill nodes (hash chains, shared units): the prefill node returns its units
    when the KV has left, the decode node admits the prompt KV from the link (not from its own cache); both engines
    agree, the prefill side hits its cache, and every request keeps its prefill node's hit in the table."""
    from test_prefix_cache import _prefix_scenario

    def run(impl: str):
        sc = _prefix_scenario(impl, **{"fleet.engine": {"prefix_caching": True, "prefix_unit_tokens": 64,
                                                        "num_gpu_blocks_override": blocks},
                                       **_pools(1, 1, "infiniband")})
        return _trace(sc)

    fast, a = run("fast")
    _, b = run("reference")
    _assert_same(a, b)
    done = [r for r in fast.requests if r.finish_s >= 0]
    assert sum(r.cached_tokens for r in done) > 0.2 * sum(r.prompt_tokens for r in done)
    assert all(r.prefix is not None for r in done)
    assert fast.series.per_node("kv_used_blocks")[-1, 0] == 0  # the prefill node holds no request's blocks


def test_heterogeneous_prefill_and_decode_gpus_match_reference():
    """Splitwise's split machines: H100 prompt nodes, A100 token nodes (each pool its own node model and KV size)."""
    pools = [{"name": "prompt", "role": "prefill", "nodes": 1, "gpu": "H100-SXM", "interconnect": {"kind": "roce"}},
             {"name": "token", "role": "decode", "nodes": 2, "gpu": "A100-SXM-80GB"}]
    kw = {"duration_s": 30, "seed": 9, "traffic.rate_rps": 6.0, "fleet.nodes": 3, "fleet.pools": pools}
    fast, a = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    _, b = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    _assert_same(a, b)
    assert {r.node for r in fast.requests if r.finish_s >= 0} <= {1, 2}
    assert fast.counts()["completed"] == fast.counts()["arrived"]


def test_decode_ingress_serialises_transfers_from_several_prefill_nodes():
    ingress = Link(1e9, 0.0)
    a, b = Link(1e9, 0.0), Link(1e9, 0.0)
    assert a.send(0.0, 1e9, 0.0, 32, False, ingress) == pytest.approx(1.0)
    assert b.send(0.0, 1e9, 0.0, 32, False, ingress) == pytest.approx(2.0)  # its own egress idle, the ingress not
    assert Link(4e9, 0.0).send(5.0, 1e9, 0.0, 32, False, Link(1e9, 1e-3)) == pytest.approx(6.001)  # slower end
    assert ingress.busy_s == pytest.approx(2.0) and ingress.transfers == 2


def test_request_table_has_the_hand_off_columns():
    """A disaggregated run's table names each request's prefill and decode node and pool and its KV transfer; the
    transfer columns agree with the link model and the ``disaggregation`` section; other runs' tables are unchanged."""
    from sim.metrics.tables import requests_table

    sc = make_scenario(**{"duration_s": 30, "seed": 4, "traffic.rate_rps": 6.0, **_pools(1, 2, "ethernet", False)})
    result = simulate(sc)
    df = requests_table(result)
    cols = ["prefill_node", "prefill_pool", "decode_node", "decode_pool"]
    assert list(df.columns[5:9]) == cols
    assert {"kv_start_s", "kv_end_s", "kv_transfer_s", "kv_bytes"} <= set(df.columns)
    done = df[df["status"] == "completed"]
    assert len(done) > 50
    assert (done["prefill_node"] == 0).all() and set(done["prefill_pool"].astype(str)) == {"prefill"}
    assert (done["decode_node"] == done["node"]).all() and set(done["decode_node"]) == {1, 2}
    assert set(done["decode_pool"].astype(str)) == {"decode"}
    kv_per_token = build_node_model(sc).memory.kv_bytes_per_token
    np.testing.assert_allclose(done["kv_bytes"], done["input_tokens"] * kv_per_token)
    wire = done["kv_bytes"].to_numpy() / 12.5e9  # ethernet, no overlap: the wire time after the prefill ends
    np.testing.assert_allclose(done["kv_end_s"] - done["kv_start_s"], wire + 50e-6, rtol=1e-9)
    assert (done["kv_transfer_s"] >= wire + 50e-6 - 1e-9).all()
    first_token = done["arrival_s"] + done["ttft_s"]
    assert (first_token > done["kv_end_s"]).all()  # the first token comes after the KV arrived
    assert done["kv_transfer_s"].mean() == pytest.approx(result.disagg["transfer_mean_s"], rel=0.05)
    assert "prefill_node" not in requests_table(simulate(make_scenario(duration_s=5))).columns



# -- nodes that come and go, the hosted API, clients that give up ---------------------------------------------
SPOT = {"nodes": 1, "evictions_per_node_hour": 60, "notice_s": 2, "replace": True}


def _both(**kw):
    """Both engines on the scenario: the same requests, hand-offs and counts; the fast engine's result."""
    fast, a = _trace(make_scenario(**kw, **{"fleet.engine_impl": "fast"}))
    ref, b = _trace(make_scenario(**kw, **{"fleet.engine_impl": "reference"}))
    _assert_same(a, b)
    _assert_same_handoffs(fast, ref)
    assert fast.counts() == ref.counts()
    return fast


def _conserved(result):
    c = result.counts()
    assert c["arrived"] == sum(v for k, v in c.items() if k not in ("arrived", "retries"))
    return c


@pytest.mark.parametrize("on_eviction", ["requeue", "spill"])
def test_spot_prefill_and_decode_nodes_are_evicted_and_their_requests_requeued(on_eviction):
    """Spot nodes in both pools, evicted every minute or so and replaced: requests on an evicted decode node (holding
    the transferred KV) are prefilled again (or sent to the API); both engines agree, nothing is lost, and every
    prefill node's KV is back at the end."""
    pools = _pools(1, 1, "infiniband")["fleet.pools"]
    spot = {**SPOT, "on_eviction": on_eviction}
    api = {"api": {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.6}} if on_eviction == "spill" else {}
    fast = _both(**{"duration_s": 120, "seed": 5, "traffic.rate_rps": 6.0, "max_drain_s": 600, "fleet.nodes": 2,
                    "fleet.pools": [{**pools[0], "spot": spot}, {**pools[1], "spot": spot}], **api})
    evicted = [e for e in fast.fleet_events if e[3].startswith("evicted")]
    assert evicted and any(e[1] == 3 and not e[3].startswith("evicted (0") for e in evicted)  # a decode node's
    c = _conserved(fast)
    assert c["in_flight"] == 0 and c["completed"] > 600
    if on_eviction == "spill":
        assert c["spilled"] > 0
    else:
        assert any(r.preemptions and r.handoff.decode_node == 2 for r in fast.requests)  # re-prefilled, decoded
    assert (fast.series.per_node("kv_used_blocks")[-1] == 0).all()


def test_autoscaled_decode_pool_scales_out_and_in():
    """A decode pool with on-demand nodes and a queue autoscaler under a load one decode node cannot carry: it starts
    nodes, hands prompts to them, and drains them when the load is gone; both engines agree."""
    pools = _pools(2, 1, "infiniband")["fleet.pools"]
    decode = {**pools[1], "on_demand": {"max_nodes": 2, "provision_s": 5, "model_load_s": 5},
              "autoscaler": {"policy": "queue", "interval_s": 5, "scale_up_queue": 2, "scale_down_queue": 0.5,
                             "scale_down_cooldown_s": 10}}
    fast = _both(**{"duration_s": 90, "seed": 2, "traffic.rate_rps": 8.0, "max_drain_s": 900, "fleet.nodes": 3,
                    "fleet.pools": [pools[0], decode], "fleet.engine": {"max_num_seqs": 8},
                    "traffic.classes": _fixed(800, 600)})  # outputs long enough that the tail outlasts the cooldown
    started = {e[1] for e in fast.fleet_events if e[3] == "up" and e[2] == "on_demand"}
    assert started and started <= {3, 4}
    assert {r.handoff.decode_node for r in fast.requests if r.finish_s >= 0} & started
    assert any(e[3] == "terminated" and e[1] in started for e in fast.fleet_events)
    assert _conserved(fast)["in_flight"] == 0


def test_spill_policy_decides_before_the_prefill_pool():
    """A queue-length spill policy judges the prefill node a request would go to: spilled requests never reach a
    node (no decode node, no transfer), the rest are served disaggregated; counts add up."""
    from sim.metrics.tables import requests_table

    fast = _both(**{"duration_s": 60, "seed": 2, "traffic.rate_rps": 20.0, **_pools(1, 1, "infiniband"),
                    "api": {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.6},
                    "spill": {"policy": "queue_length", "max_waiting": 2}})
    c = _conserved(fast)
    assert c["spilled"] > 10 and c["completed"] > 500
    df = requests_table(fast)
    api = df[df["served_by"] == "api"]
    assert (api["decode_node"] == -1).all() and api["kv_bytes"].eq(0).all() and api["pool"].isna().all()
    assert fast.disagg["transfers"] == int((df["served_by"] == "fleet").sum())


def test_decode_side_kv_rejection_is_counted():
    """A decode pool whose cache cannot hold a long prompt rejects it after its prefill: counted as rejected (an SLO
    miss), with its decode node in the table; the prefill node's KV is returned."""
    pools = _pools(1, 1, "infiniband")["fleet.pools"]
    decode = {**pools[1], "engine": {"num_gpu_blocks_override": 200}}  # 3,200 tokens
    classes = [{**_fixed(500, 20)[0], "name": "short", "share": 0.8}, {**_fixed(5000, 20)[0], "name": "long",
                                                                         "share": 0.2}]
    fast = _both(**{"duration_s": 30, "seed": 1, "traffic.rate_rps": 4.0, "fleet.nodes": 2,
                    "fleet.pools": [pools[0], decode], "traffic.classes": classes})
    c = _conserved(fast)
    long = [r for r in fast.requests if r.prompt_tokens == 5000]
    assert long and c["rejected"] == len(long) and all(r.status.name == "REJECTED" for r in long)
    assert all(r.node == 1 and r.handoff.decode_node == 1 for r in long)  # rejected by the decode node
    assert fast.series.per_node("kv_used_blocks")[-1, 0] == 0


def test_client_timeouts_across_the_hand_off():
    """Streaming clients give up after 1 s; KV moves at 0.5 GB/s (seconds per prompt), so many give up while their
    KV is on the link: the transfer is not delivered, the prefill node frees the KV, the retry starts afresh (its
    own prefix-cache view); both engines agree and every request ends."""
    pools = [{"name": "prefill", "role": "prefill", "nodes": 1,
              "interconnect": {"bandwidth_gb_per_s": 0.5, "latency_s": 0.0, "overlap": False}},
             {"name": "decode", "role": "decode", "nodes": 1}]
    classes = [{**_fixed(3000, 30)[0], "client": {"timeout_s": 1.0, "stream": True, "retries": 1, "backoff_s": 0.5}}]
    fast = _both(**{"duration_s": 40, "seed": 3, "traffic.rate_rps": 0.8, "max_drain_s": 600, "fleet.nodes": 2,
                    "fleet.pools": pools, "traffic.classes": classes})
    c = _conserved(fast)
    assert c["in_flight"] == 0 and c["timed_out"] > 0 and c["retries"] > 0 and c["completed"] > 0
    assert fast.disagg["transfers"] > c["completed"]  # transfers of attempts given up on in transit
    assert all(r.cached_tokens == 0 for r in fast.requests)  # no attempt kept its decode node's view


def test_a_pools_cost_per_mtok_is_its_part_of_the_serving_cost(capsys, tmp_path):
    """A decode pool's own cost ÷ every output token reads like the serving cost: the console and report give each
    pool's part of its model's $/M output tokens instead (the parts add up to it) and call the fleet's the serving
    cost."""
    from sim.cli.run import _print_summary
    from sim.metrics.headline import pool_usd_per_mtok_share
    from sim.report.run_report import _pools_html, _summary_html
    from sim.runner.pipeline import run_scenario

    s = run_scenario(make_scenario(duration_s=20, **{"traffic.rate_rps": 4.0}, **_pools(1, 1))).summary
    model = next(iter(s.models.values()))
    parts = {n: pool_usd_per_mtok_share(s, n) for n in s.pools}
    assert sum(parts.values()) == pytest.approx(model.usd_per_mtok_output)
    _print_summary(s, None)
    out = capsys.readouterr().out
    decode = next(ln for ln in out.splitlines() if ln.strip().startswith("pool") and "(decode)" in ln)
    assert f"(${parts['decode']:.2f} of the model's ${model.usd_per_mtok_output:.2f} per M output tokens)" in decode
    assert f"${s.pools['decode'].cost.usd_per_mtok_output:.2f}/M output tokens" not in decode
    assert "per M output tokens (serving cost: all pools)" in out
    pools = _pools_html(s)
    assert "its part of the model's" in pools and "it completed" in pools and "<th>paid</th>" in pools
    assert "(serving cost: all pools + API)" in _summary_html(s)
