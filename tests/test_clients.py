"""Client timeouts and retries (traffic.classes[].client): withdrawal from queue and batch, KV freed, retry
attempts as extra load, one row per logical request, determinism, and no effect when unset."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from scenarios import make_scenario

from sim.core.config import validate_scenario
from sim.core.errors import ConfigError
from sim.engine import Node, ReferenceNode
from sim.runner.pipeline import run_scenario
from sim.runner.simulation import build_node_model, simulate
from sim.traffic.request import Request, Status

CHAT = {"input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 3000},
        "output_tokens": {"dist": "lognormal", "median": 100, "p95": 400, "max": 1200}}


def overloaded(client: dict | None, **extra):
    """One node, 30 req/s (about twice what it serves): queues grow without clients giving up."""
    cls = {"name": "chat", "share": 1.0, **CHAT}
    if client is not None:
        cls["client"] = client
    kw = {"duration_s": 60, "seed": 5, "traffic.rate_rps": 30.0, "fleet.nodes": 1, "traffic.classes": [cls],
          "fleet.engine": {"max_num_seqs": 32, "max_num_batched_tokens": 2048}}
    kw.update(extra)
    return make_scenario(**kw)


def test_queued_request_past_its_timeout_is_removed_and_counted():
    res = simulate(overloaded({"timeout_s": 4.0}))
    c = res.counts()
    timed = [r for r in res.requests if r.status == Status.TIMED_OUT]
    assert c["timed_out"] == len(timed) > 100 and c["retries"] == 0
    queued = [r for r in timed if r.first_scheduled_s < 0]
    assert queued, "some requests should time out before ever being scheduled"
    # each gave up exactly timeout_s after it was sent, and never got a token
    assert all(r.finish_s == pytest.approx(r.attempt_s + 4.0) and r.first_token_s < 0 for r in timed)
    # every streaming request that completed had its first token within the timeout
    done = [r for r in res.requests if r.status == Status.COMPLETED]
    assert max(r.first_token_s - r.arrival_s for r in done) <= 4.0 + 1e-9
    # nothing left behind: conservation over logical requests
    assert c["arrived"] == c["completed"] + c["timed_out"] + c["rejected"] + c["in_flight"] == len(res.requests)
    assert c["in_flight"] == 0


@pytest.mark.parametrize("cls", [Node, ReferenceNode])
def test_running_request_cancelled_mid_decode_frees_its_kv(cls):
    sc = make_scenario()
    nm = build_node_model(sc)
    env = simpy.Environment()
    done: list[Request] = []
    node = cls(env, 0, nm.perf, nm.engine, 2000, nm.max_model_len, done.append)
    a, b = Request(0, 0.0, 0, 1600, 400), Request(1, 0.0, 0, 1600, 400)
    node.submit(a)
    node.submit(b)
    env.run(until=2.0)  # both prefilled and decoding (the fast engine is inside a decode run)
    assert a.status == b.status == Status.RUNNING and a.first_token_s > 0
    held = node.snapshot().kv_used_blocks
    assert held >= 2 * 100  # two 1600-token prompts in 16-token blocks
    assert node.withdraw(a)
    assert node.in_flight_count() == 1 and node.in_flight() == [b]
    env.run(until=2.2)  # past the end of the step in progress
    after = node.snapshot().kv_used_blocks
    assert after <= held - 100 + 2  # a's blocks are back in the pool (b grew by at most a block or two)
    assert not node.withdraw(a)  # already gone
    env.run()
    assert done == [b] and b.status == Status.COMPLETED
    assert node.snapshot().kv_used_blocks == 0 and node.in_flight_count() == 0
    assert a.num_generated < a.output_tokens  # a never finished


@pytest.mark.parametrize("cls", [Node, ReferenceNode])
def test_withdrawn_queued_request_leaves_the_queue(cls):
    sc = make_scenario(**{"fleet.engine": {"max_num_seqs": 1}})
    nm = build_node_model(sc)
    env = simpy.Environment()
    done: list[Request] = []
    node = cls(env, 0, nm.perf, nm.engine, 5000, nm.max_model_len, done.append)
    a, b, c = (Request(i, 0.0, 0, 500, 300) for i in range(3))
    for r in (a, b, c):
        node.submit(r)
    env.run(until=1.0)
    assert b.status == Status.WAITING and node.snapshot().waiting == 2
    assert node.withdraw(b)
    assert node.snapshot().waiting == 1
    env.run()
    assert done == [a, c] and b.first_scheduled_s < 0


def test_retries_add_load_and_count():
    client = {"timeout_s": 4.0, "retries": 2, "backoff_s": 1.0, "jitter": 0.5}
    no_retry = simulate(overloaded({"timeout_s": 4.0})).counts()
    storm = simulate(overloaded(client))
    c = storm.counts()
    assert no_retry["retries"] == 0 and c["retries"] > 100
    assert c["arrived"] == no_retry["arrived"]  # the same logical requests ...
    assert c["arrived"] + c["retries"] > no_retry["arrived"] + no_retry["retries"]  # ... offered more attempts
    assert storm.clients["gave_up"] == c["retries"] + c["timed_out"]
    rows = {r.rid: r for r in storm.requests}
    assert len(rows) == len(storm.requests) == c["arrived"]  # one row per logical request
    assert sum(r.retries for r in storm.requests) == c["retries"]
    assert max(r.retries for r in storm.requests) == 2
    assert all(r.retries == 2 for r in storm.requests if r.status == Status.TIMED_OUT)
    # a retry is sent after the backoff: between 0.5 s and 1 s after giving up on the first attempt
    first = [r for r in storm.requests if r.retries == 1]
    assert first and all(r.attempt_s - r.arrival_s >= 4.0 + 0.5 - 1e-9 for r in first)
    assert all(r.attempt_s - r.arrival_s <= 4.0 + 1.0 + 1e-9 for r in first)


def test_non_streaming_clients_cancel_running_requests():
    res = simulate(overloaded({"timeout_s": 4.0, "stream": False}))
    assert res.clients["cancelled_running"] > 50  # running when their client gave up: work thrown away
    timed = [r for r in res.requests if r.status == Status.TIMED_OUT]
    assert any(r.first_token_s >= 0 for r in timed)  # had tokens, but not the whole answer in time


def test_request_table_and_summary():
    out = run_scenario(overloaded({"timeout_s": 4.0, "retries": 1, "backoff_s": 0.5}))
    df, s = out.requests, out.summary
    r = s.requests
    assert r.arrived == r.completed + r.spilled + r.rejected + r.failed + r.timed_out \
        + r.in_flight == len(df)
    assert df["request_id"].is_unique
    assert (df["status"] == "timed_out").sum() == r.timed_out > 0
    assert df["retries"].sum() == r.retries > 0
    assert np.isnan(df.loc[df["status"] == "timed_out", "e2e_s"]).all()
    # a retried request that completed is timed from its first attempt: TTFT > the timeout it ran into
    retried = df[(df["status"] == "completed") & (df["retries"] > 0)]
    assert len(retried) and (retried["ttft_s"] > 4.0).all()
    assert s.slo.attainment < 1.0  # timed-out requests are misses


def test_same_seed_same_outcome():
    client = {"timeout_s": 4.0, "retries": 2, "backoff_s": 1.0, "jitter": 0.5}
    a = run_scenario(overloaded(client)).summary
    b = run_scenario(overloaded(client)).summary
    c = run_scenario(overloaded(client, seed=6)).summary
    assert a == b and a.requests != c.requests


def test_generous_timeout_changes_nothing():
    """A client that would give up after 600 s never does on a healthy fleet: the summary is the default's."""
    base = make_scenario()
    raw = base.model_dump()
    raw["traffic"]["classes"][0]["client"] = {"timeout_s": 600, "retries": 2}
    patient = validate_scenario(raw, "test")
    assert run_scenario(patient).summary == run_scenario(base).summary


def test_spilled_requests_are_not_timed_out_and_counts_hold():
    sc = overloaded({"timeout_s": 1.5, "retries": 1, "backoff_s": 0.5},
                    api={"provider": "together", "model": "llama-3.1-8b"},
                    spill={"policy": "queue_length", "max_waiting": 30, "late": {"after_s": 3.0}})
    out = run_scenario(sc)
    r, df = out.summary.requests, out.requests
    assert r.spilled > 0 and r.timed_out + r.retries > 0
    assert r.arrived == r.completed + r.spilled + r.rejected + r.failed + r.timed_out \
        + r.in_flight == len(df)
    assert not ((df["served_by"] == "api") & (df["status"] == "timed_out")).any()


@pytest.mark.parametrize("client, problem", [
    ({"retries": 2}, "retries need a timeout_s"),
    ({"timeout_s": 0}, "greater than 0"),
    ({"timeout_s": 10, "jitter": 1.5}, "less than or equal to 1"),
    ({"timeout_s": 10, "retry": 2}, "retry"),
])
def test_bad_client_settings_fail_with_a_clear_line(client, problem):
    raw = make_scenario().model_dump()
    raw["traffic"]["classes"][0]["client"] = client
    with pytest.raises(ConfigError) as exc:
        validate_scenario(raw, "scenario.yaml")
    msg = str(exc.value)
    assert "traffic.classes.0.client" in msg and problem in msg and "\n" not in msg


def test_client_timeout_on_deferrable_class_is_refused():
    raw = make_scenario().model_dump()
    raw["traffic"]["classes"][0]["deferrable"] = {"deadline_s": 3600}
    raw["traffic"]["classes"][0]["client"] = {"timeout_s": 30}
    with pytest.raises(ConfigError, match="deferrable"):
        validate_scenario(raw, "scenario.yaml")


def test_draining_node_whose_last_requests_give_up_is_terminated():
    """A draining on-demand node is released when its last request leaves — also when that request's client
    gave up (no completion would ever tell the fleet)."""
    fleet = {"gpu": "H100-SXM", "model": "Llama-3.1-8B", "nodes": 1,
             "engine": {"max_num_seqs": 8, "max_num_batched_tokens": 2048},
             "on_demand": {"max_nodes": 2, "provision_s": 0.0, "model_load_s": 0.0},
             "autoscaler": {"policy": "schedule", "interval_s": 10.0, "schedule": [[0, 2], [0.01, 1]],
                            "scale_down_cooldown_s": 0.0}}
    sc = overloaded({"timeout_s": 2.0, "stream": False}, fleet=fleet, duration_s=120, max_drain_s=60,
                    **{"traffic.rate_rps": 12.0})
    res = simulate(sc)
    drained = [e for e in res.fleet_events if e[3] == "draining"]
    assert drained, "the schedule drains the on-demand node after 36 s"
    for t, slot, _, _ in drained:
        assert any(e[1] == slot and e[3] == "terminated" and e[0] >= t for e in res.fleet_events)
    assert res.clients["cancelled_running"] > 0
