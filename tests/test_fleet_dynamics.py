"""Reserved / on-demand / spot nodes, autoscaling and billing."""

from __future__ import annotations

import pytest
from scenarios import make_scenario

from sim.runner.pipeline import run_scenario

SCALER = {
    "nodes": 1,
    "on_demand": {"max_nodes": 3, "provision_s": 40.0, "model_load_s": 20.0},
    "autoscaler": {"policy": "queue", "interval_s": 5.0, "scale_up_queue": 1.0, "scale_down_queue": 0.1,
                   "scale_down_cooldown_s": 30.0},
}


def _fleet(**extra):
    base = {"gpu": "H100-SXM", "model": "Llama-3.1-8B",
            "engine": {"max_num_seqs": 8, "max_num_batched_tokens": 2048}}
    base.update(SCALER)
    base.update(extra)
    return base


def _events(out, what):
    return [e for e in out.result.fleet_events if e[3].startswith(what)]


OVERLOADED = {"duration_s": 400, "traffic.rate_rps": 6.0, "fleet": _fleet()}  # one node, scaling up to 4


def test_scale_up_lag_equals_startup_delay_and_overload_triggers_scaling(run_once):
    out = run_once(**OVERLOADED)
    requested = [(e[1], e[0]) for e in _events(out, "requested")]
    ups = [e for e in _events(out, "up") if e[2] == "on_demand"]
    assert requested and ups, "an overloaded single node must trigger a scale-up"
    for t_up, slot, _, _ in ups:
        # each on-demand node serves exactly provision_s + model_load_s after it was requested
        asked = max(t for s, t in requested if s == slot and t <= t_up)
        assert t_up - asked == pytest.approx(60.0)
    c = out.summary.requests
    assert c.arrived == c.completed + c.rejected + c.in_flight + c.spilled + c.failed


def test_nodes_are_billed_only_while_they_exist(run_once):
    out = run_once(**OVERLOADED)
    hours = out.summary.cost.gpu_hours_by_kind
    # on-demand billing = Σ over nodes of (terminated or end of period − requested), from the fleet log
    billed_s = 0.0
    open_since: dict[int, float] = {}
    for t, slot, kind, what in out.result.fleet_events:
        if kind != "on_demand":
            continue
        if what == "requested":
            open_since[slot] = t
        elif what == "terminated" and slot in open_since:
            billed_s += min(t, 400.0) - min(open_since.pop(slot), 400.0)
    billed_s += sum(400.0 - min(t, 400.0) for t in open_since.values())
    assert hours["on_demand"] == pytest.approx(billed_s / 3600.0)
    assert 0 < hours["on_demand"] < 3 * 400 / 3600.0
    assert hours["reserved"] == pytest.approx(400 / 3600.0)


def test_idle_autoscaler_bills_nothing_extra():
    out = run_scenario(make_scenario(**{"duration_s": 200, "traffic.rate_rps": 0.2, "fleet": _fleet()}))
    assert out.summary.cost.gpu_hours_by_kind["on_demand"] == 0.0
    assert not _events(out, "requested")


def test_spot_evictions_never_lose_a_request():
    fleet = {"nodes": 0, "gpu": "H100-SXM", "model": "Llama-3.1-8B",
             "spot": {"nodes": 3, "evictions_per_node_hour": 60.0, "notice_s": 0.0, "replace": True},
             "on_demand": {"max_nodes": 0, "provision_s": 10.0, "model_load_s": 5.0}}
    out = run_scenario(make_scenario(**{"duration_s": 300, "traffic.rate_rps": 8.0, "fleet": fleet, "seed": 4}))
    evictions = _events(out, "evicted")
    assert len(evictions) >= 5
    redispatched = sum(int(e[3].split("(")[1].split()[0]) for e in evictions)
    assert redispatched > 0, "with no notice, evictions must orphan running requests"
    c = out.summary.requests
    assert c.completed == c.arrived  # all re-dispatched and finished
    # an eviction re-dispatches running requests (each counted as a preemption) and queued ones (not counted):
    # most orphans were running
    assert (out.requests["preemptions"] > 0).sum() >= 0.5 * redispatched
    # a replacement is billed from its request, so the slots are paid without a gap
    assert out.summary.cost.gpu_hours_by_kind["spot"] == pytest.approx(3 * 300 / 3600.0)


def test_evicted_spot_nodes_stop_being_billed():
    fleet = {"nodes": 1, "gpu": "H100-SXM", "model": "Llama-3.1-8B",
             "spot": {"nodes": 2, "evictions_per_node_hour": 30.0, "notice_s": 10.0, "replace": False}}
    out = run_scenario(make_scenario(**{"duration_s": 600, "traffic.rate_rps": 4.0, "fleet": fleet, "seed": 2}))
    gone = {e[1]: e[0] for e in _events(out, "terminated") if e[2] == "spot"}
    expected_h = sum(min(gone.get(slot, 600.0), 600.0) for slot in (1, 2)) / 3600.0
    assert gone, "this seed evicts at least one spot node"
    assert out.summary.cost.gpu_hours_by_kind["spot"] == pytest.approx(expected_h)
    assert out.summary.requests.completed == out.summary.requests.arrived


def test_schedule_policy_follows_the_table():
    fleet = _fleet(autoscaler={"policy": "schedule", "interval_s": 60.0, "schedule": [[0, 1], [0.05, 3]],
                               "scale_down_cooldown_s": 0.0})
    out = run_scenario(make_scenario(**{"duration_s": 600, "traffic.rate_rps": 1.0, "fleet": fleet}))
    req = _events(out, "requested")
    assert len(req) == 2 and all(e[0] == pytest.approx(180.0) for e in req)  # 0.05 h = 180 s
    assert out.timeseries["nodes_up"].max() == 3


def test_fleet_needs_a_node():
    from sim.core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one node"):
        make_scenario(**{"fleet.nodes": 0})


def test_deferrable_batch_waits_for_spare_capacity_and_meets_its_deadline():
    classes = [
        {"name": "chat", "share": 0.7,
         "input_tokens": {"dist": "lognormal", "median": 400, "p95": 1500},
         "output_tokens": {"dist": "lognormal", "median": 120, "p95": 400}},
        {"name": "batch", "share": 0.3,
         "input_tokens": {"dist": "fixed", "value": 2000}, "output_tokens": {"dist": "fixed", "value": 300},
         "deferrable": {"deadline_s": 900, "release_below_kv": 0.3, "check_interval_s": 5, "slack_s": 300,
                        "release_per_node": 4}},
    ]
    sc = make_scenario(**{"duration_s": 600, "traffic.rate_rps": 6.0, "traffic.classes": classes,
                          "fleet.nodes": 1, "output.sample_interval_s": 1.0})
    out = run_scenario(sc)
    b = out.summary.batch
    assert b.arrived > 100 and b.completed == b.arrived
    assert b.deadline_attainment >= 0.95
    assert b.queue_wait_s.mean > out.summary.latency.queue_wait_s.mean  # batch waits, chat doesn't
    # conservation with a fleet-level batch queue: at every sample, arrived so far − finished so far = the
    # requests held (deferred batch work + queued + running), and the batch queue really held some
    ts = out.timeseries
    assert ts["deferred"].max() > 0
    dt = sc.output.sample_interval_s
    held = (ts["arrival_rate_rps"] * dt).round().cumsum() - (ts["completion_rate_rps"] * dt).round().cumsum()
    assert (held.to_numpy() == ts["in_system"].to_numpy()).all()
    assert (ts["in_system"] >= ts["deferred"]).all()
    assert set(out.requests[out.requests["class"] == "chat"]["status"]) == {"completed"}


def test_spot_evictions_can_spill_to_the_api():
    fleet = {"nodes": 1, "gpu": "H100-SXM", "model": "Llama-3.1-8B",
             "spot": {"nodes": 2, "evictions_per_node_hour": 60.0, "notice_s": 0.0, "on_eviction": "spill"}}
    api = {"provider": "together", "model": "llama-3.1-8b"}
    sc = make_scenario(**{"duration_s": 300, "traffic.rate_rps": 8.0, "fleet": fleet, "seed": 4, "api": api})
    out = run_scenario(sc)
    c = out.summary.requests
    assert c.spilled > 0 and c.failed == 0
    assert c.arrived == c.completed + c.spilled
    assert out.summary.cost.api_usd > 0
