"""Spill policies and the dispatcher: never = default path, conservation, determinism, late spill, withdraw."""

from __future__ import annotations

import pandas as pd
import pytest
from scenarios import make_scenario

from sim.runner.pipeline import run_scenario

API = {"input_usd_per_mtok": 0.88, "output_usd_per_mtok": 0.88}
HOT = {"traffic.rate_rps": 40.0, "fleet.nodes": 1, "duration_s": 40}  # ~2x one 8B node's capacity


def _conserved(out) -> None:
    r = out.summary.requests
    assert r.arrived == len(out.requests) > 0
    assert r.completed + r.spilled + r.rejected + r.failed + r.in_flight == r.arrived


def test_never_matches_the_default_path_and_costs_nothing_extra(run_once):
    plain = run_once(**HOT)
    never = run_scenario(make_scenario(**HOT, spill={"policy": "never"}, api=API))
    cols = ["request_id", "node", "status", "ttft_s", "e2e_s", "queue_wait_s"]
    pd.testing.assert_frame_equal(plain.requests[cols], never.requests[cols])
    s = never.summary
    assert s.cost.api_usd == 0 and s.api.calls == 0 and s.requests.spilled == 0
    assert s.spill.request_share == 0 and s.spill.token_share == 0
    assert (never.requests["served_by"] == "fleet").all()
    assert s.cost.total_usd == plain.summary.cost.total_usd


@pytest.mark.parametrize("spill", [
    {"policy": "queue_length", "max_waiting": 4},
    {"policy": "queue_wait", "max_wait_s": 0.5},
    {"policy": "predicted_ttft", "ttft_s": 1.0},
    {"policy": "kv_pressure", "max_kv_fraction": 0.3},
    {"policy": "rate_budget", "fleet_rps": 10, "burst_s": 2},
    {"policy": "never", "late": {"after_s": 1.0, "check_every_s": 0.25}},
])
def test_policies_spill_under_overload_and_conserve_requests(spill, run_once):
    base = run_once(**HOT)
    out = run_scenario(make_scenario(**HOT, spill=spill, api=API))
    _conserved(out)
    s, df = out.summary, out.requests
    assert 0 < s.spill.requests < s.requests.arrived
    assert s.requests.spilled + s.requests.failed == s.spill.requests
    assert (df.loc[df["served_by"] == "api", "node"] == -1).all()
    assert s.cost.api_usd > 0
    # spilling relieves the queue: P95 TTFT beats never-spill on the same arrivals
    assert s.latency.ttft_s.p95 < base.summary.latency.ttft_s.p95
    if spill.get("late"):
        assert s.spill.late == s.spill.requests and s.spill.at_arrival == 0
        late = df[df["served_by"] == "api"]
        assert (late["spilled_at_s"] - late["arrival_s"] >= 1.0 - 1e-9).all()
        assert late["queue_wait_s"].isna().all()  # never scheduled on the fleet


def test_rate_budget_owns_at_most_its_rate():
    out = run_scenario(make_scenario(**HOT, spill={"policy": "rate_budget", "fleet_rps": 10, "burst_s": 2},
                                     api=API))
    fleet = (out.requests["served_by"] == "fleet").sum()
    assert fleet <= 10 * 40 + 20 + 1


def test_class_based_and_long_context():
    classes = [
        {"name": "chat", "share": 0.7, "input_tokens": {"dist": "fixed", "value": 300},
         "output_tokens": {"dist": "fixed", "value": 50}},
        {"name": "reasoning", "share": 0.3, "input_tokens": {"dist": "fixed", "value": 500},
         "output_tokens": {"dist": "fixed", "value": 400}},
    ]
    out = run_scenario(make_scenario(**{"traffic.classes": classes}, spill={"policy": "class_based",
                                     "classes": ["reasoning"]}, api=API, duration_s=20))
    df = out.requests
    assert (df.loc[df["class"] == "reasoning", "served_by"] == "api").all()
    assert (df.loc[df["class"] == "chat", "served_by"] == "fleet").all()
    out2 = run_scenario(make_scenario(spill={"policy": "class_based", "min_input_tokens": 1000}, api=API,
                                      duration_s=20))
    d2 = out2.requests
    assert ((d2["served_by"] == "api") == (d2["input_tokens"] >= 1000)).all()


def test_same_seed_gives_identical_tables_and_api_draws_follow_the_request():
    kw = dict(**HOT, spill={"policy": "predicted_ttft", "ttft_s": 1.0, "late": {"after_s": 2}},
              api={**API, "failure_rate": 0.05, "limits": {"rpm": 600}})
    a, b = run_scenario(make_scenario(**kw)), run_scenario(make_scenario(**kw))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary == b.summary
    # common random numbers: arrivals are identical across strategies
    c = run_scenario(make_scenario(**HOT, spill={"policy": "all_api"}, api=API))
    pd.testing.assert_series_equal(a.requests["arrival_s"], c.requests["arrival_s"])
    pd.testing.assert_series_equal(a.requests["input_tokens"], c.requests["input_tokens"])


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_withdraw_keeps_engine_accounting(impl):
    out = run_scenario(make_scenario(**{**HOT, "fleet.engine_impl": impl, "duration_s": 15},
                                     spill={"policy": "never", "late": {"after_s": 0.5, "check_every_s": 0.1}},
                                     api=API))
    _conserved(out)
    r = out.summary.requests
    assert r.in_flight == 0 and out.summary.spill.late > 0
    assert r.completed + r.spilled == r.arrived
    late = out.requests[out.requests["served_by"] == "api"]
    assert late["queue_wait_s"].isna().all()  # late spill never takes a request the fleet had scheduled


def test_withdraw_takes_queued_requests_off_and_cancels_running_ones():
    """Late spill only withdraws never-scheduled requests (it filters them); ``withdraw`` itself also cancels a
    running request (a client that gave up: sim.traffic.clients), which then no longer counts as in flight."""
    import simpy

    from sim.engine import Node
    from sim.runner.simulation import build_node_model
    from sim.traffic.request import Request

    sc = make_scenario()
    nm = build_node_model(sc)
    env = simpy.Environment()
    node = Node(env, 0, nm.perf, sc.fleet.engine, nm.memory.kv_capacity_blocks, nm.max_model_len, lambda r: None)
    a, b = Request(0, 0.0, 0, 500, 20), Request(1, 0.0, 0, 500, 20)
    node.submit(a)
    node.submit(b)
    env.run(until=1e-4)  # the first step has started: both admitted
    assert node.withdraw(a) and a.cancelled and node.in_flight() == [b]
    assert not node.withdraw(a)  # already withdrawn
    c = Request(2, 0.0, 0, 500, 20)
    node.waiting.append(c)
    node.work += 520
    w0 = node.outstanding_tokens()
    assert node.withdraw(c) and c not in node.waiting
    assert node.outstanding_tokens() == w0 - 520
    assert not node.withdraw(c)
