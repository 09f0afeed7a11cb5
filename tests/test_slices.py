"""``capsim run --slices``: the slices partition the arrivals exactly, a slice whose warm-up and tail cover the whole
horizon reproduces the unsliced run, the merge adds what it must, and what slicing cannot do is refused."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import BASE, make_scenario

from sim.cli import main
from sim.core.errors import ConfigError
from sim.metrics.streaming import run_streaming
from sim.runner.executor import ExecutorSpec
from sim.runner.pipeline import run_scenario
from sim.runner.simulation import SimWindow
from sim.runner.slices import check_sliceable, plan_slices, run_sliced, run_sliced_streaming, slice_bounds
from sim.traffic.arrivals import ArrivalChunk

IN_PROCESS = ExecutorSpec(workers=1)


def _scenario(**kw):
    """Two nodes at ~60 % of what they sustain, 120 s (3 slices of 40 s)."""
    return make_scenario(**{"traffic.rate_rps": 30.0, "duration_s": 120, "warmup_s": 0,
                            "output.sample_interval_s": 1.0, **kw})


def _same_json(a, b) -> bool:
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


def test_slice_bounds_cover_the_horizon_on_the_sampler_grid():
    sc = _scenario(**{"duration_s": 1000, "output.sample_interval_s": 10.0})
    plan = plan_slices(sc, 3)
    ws = plan.windows
    assert [w.keep_from_s for w in ws] == [0.0, 340.0, 660.0] and ws[-1].keep_to_s == 1000.0
    assert all(a.keep_to_s == b.keep_from_s for a, b in itertools.pairwise(ws))
    assert [w.last for w in ws] == [False, False, True]
    assert all(w.start_s % 10 == 0 and 0 <= w.start_s <= w.keep_from_s for w in ws)
    assert all(w.stop_arrivals_s >= w.keep_to_s for w in ws) and ws[-1].stop_arrivals_s == 1000.0
    assert min(plan.warmups_s[1:]) >= 60.0  # at least a minute, from the requests' lifetimes


def test_one_slice_is_the_unsliced_run():
    sc = _scenario()
    assert _same_json(run_scenario(sc).summary, run_sliced(sc, plan_slices(sc, 1), IN_PROCESS).summary)


def test_slices_reaching_back_to_zero_reproduce_the_unsliced_run_exactly():
    """With warm-ups and tails covering the horizon every slice simulates the unsliced run; the merge of its own
    requests, time series, busy seconds and steps must then be the unsliced run's, value for value."""
    sc = _scenario(**{"router": {"policy": "power_of_two"}, "fleet.nodes": 3, "traffic.rate_rps": 45.0})
    whole = run_scenario(sc)
    plan = plan_slices(sc, 3, warmup_s=1e9, tail_s=1e9)
    assert all(w.start_s == 0.0 for w in plan.windows)
    sliced = run_sliced(sc, plan, IN_PROCESS)
    assert sliced.requests.equals(whole.requests)
    assert sliced.timeseries.equals(whole.timeseries)
    assert sliced.timeseries_nodes.equals(whole.timeseries_nodes)
    assert sliced.result.node_steps == whole.result.node_steps
    assert np.allclose(sliced.result.node_busy_s, whole.result.node_busy_s, rtol=1e-12)
    a, b = whole.summary.to_json(), sliced.summary.to_json()
    assert a["requests"] == b["requests"] and a["latency"] == b["latency"] and a["slo"] == b["slo"]
    assert b["utilisation"]["busy_fraction"] == pytest.approx(a["utilisation"]["busy_fraction"], rel=1e-12)


def test_streamed_slices_reaching_back_to_zero_merge_to_the_streamed_run():
    sc = _scenario()
    a = run_streaming(sc).summary.to_json()
    b = run_sliced_streaming(sc, plan_slices(sc, 3, warmup_s=1e9, tail_s=1e9), IN_PROCESS).summary.to_json()
    for key in ("requests", "latency", "slo", "routing", "throughput", "utilisation", "cost"):
        assert _close(a[key], b[key]), key  # means summed in another order: equal to the last bits


def test_summary_only_slices_skip_the_node_table_and_fold_in_any_order():
    """A summary-only run (``--stream --no-report``) does not build the per-node table, and the summary is the same
    byte for byte; slices folded in the order they finish give the run folded in slice order."""
    from sim.runner.slices import SliceFold, run_slice, streamed_fold

    sc = _scenario()
    plan = plan_slices(sc, 3)
    full = run_sliced_streaming(sc, plan, IN_PROCESS)
    lean = run_sliced_streaming(sc, plan, IN_PROCESS, node_table=False)
    assert lean.timeseries_nodes.empty and not full.timeseries_nodes.empty
    assert json.dumps(lean.summary.to_json()) == json.dumps(full.summary.to_json())
    fold = SliceFold(sc, plan.windows, release=True)
    for k in (2, 0, 1):
        fold.add(k, run_slice((sc, plan.windows[k], True, None)))
    assert json.dumps(streamed_fold(fold).summary.to_json()) == json.dumps(full.summary.to_json())
    assert fold.figures[0] is not None and fold.figures[0].own > 0


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-15)
    return a == b


def test_every_arrival_is_one_slices_own_request_even_from_an_empty_fleet():
    """Warm-up 0: each slice starts empty at its bound (an approximation), yet the arrivals, their counts and
    the per-interval arrivals series are exactly the unsliced run's."""
    sc = _scenario()
    whole = run_scenario(sc)
    sliced = run_sliced(sc, plan_slices(sc, 4, warmup_s=0.0, tail_s=0.0), IN_PROCESS)
    cols = ["arrival_s", "class", "input_tokens", "output_tokens", "cached_tokens", "request_id"]
    assert sliced.requests[cols].equals(whole.requests[cols])
    r = sliced.summary.requests
    assert r.arrived == whole.summary.requests.arrived == len(sliced.requests)
    assert r.completed + r.rejected + r.failed + r.in_flight == r.arrived
    a, b = whole.result.series, sliced.result.series
    n = int(sc.duration_s)  # 1-s samples up to the end of arrivals (the drain after it may end sooner or later)
    assert np.array_equal(a.fleet("time_s")[:n], b.fleet("time_s")[:n])
    assert np.array_equal(a.fleet("arrivals")[:n], b.fleet("arrivals")[:n]) and b.fleet("arrivals")[n:].sum() == 0
    assert sliced.result.node_steps != whole.result.node_steps  # the state at the bounds did change
    assert sliced.summary.cost.total_usd == whole.summary.cost.total_usd  # reserved nodes: billed all along
    busy = b.per_node("busy_s")
    assert (np.diff(busy, axis=0) >= -1e-9).all()  # cumulative busy time continues across the bounds
    assert busy[-1] == pytest.approx(sliced.result.node_busy_s, rel=1e-9)
    assert busy[-1] == pytest.approx(a.per_node("busy_s")[-1], rel=0.02)


def test_a_backlog_at_a_bound_reaches_the_warm_up_back_to_where_it_began():
    """Two nodes sustain ~65 req/s of this mix; 20 req/s with a ×4 spike from 1,000 to 1,600 s builds a backlog
    that drains by ~1,800 s. The slice starting at 1,200 s (inside the backlog) warms up from before the spike;
    the one starting at 2,400 s keeps the lifetime warm-up (a plan only: nothing is simulated)."""
    spike = {"type": "launch", "start_h": 1000 / 3600, "multiplier": 4.0, "duration_h": 600 / 3600,
             "ramp_h": 1e-6}
    quiet = plan_slices(_scenario(**{"duration_s": 3600, "traffic.rate_rps": 20.0}), 3)
    plan = plan_slices(_scenario(**{"duration_s": 3600, "traffic.rate_rps": 20.0,
                                    "traffic.shape": {"components": [spike]}}), 3, balance=False)
    assert [w.keep_from_s for w in plan.windows] == [0.0, 1200.0, 2400.0]
    base = quiet.warmups_s[1]
    assert quiet.warmups_s[2] == base and plan.warmups_s[2] == base
    assert plan.windows[1].start_s <= 1000.0 + 60.0 - base  # from where the backlog began (60-s fluid grid)


def test_bounds_fall_at_equal_expected_arrivals_on_the_step_grid():
    """The same spike: 108,000 expected arrivals, a third reached at 1,200 s and two thirds at 1,800 s (20 req/s,
    ×4 from 1,000 to 1,600 s), not at 1,200 and 2,400 s (equal times carry 36,000, 60,000 and 12,000)."""
    spike = {"type": "launch", "start_h": 1000 / 3600, "multiplier": 4.0, "duration_h": 600 / 3600,
             "ramp_h": 1e-6}
    sc = _scenario(**{"duration_s": 3600, "traffic.rate_rps": 20.0, "traffic.shape": {"components": [spike]}})
    assert [w.keep_from_s for w in plan_slices(sc, 3).windows] == [0.0, 1200.0, 1800.0]
    assert slice_bounds(sc, 3, balance=False) == [0.0, 1200.0, 2400.0, 3600.0]
    assert slice_bounds(sc, 60) == sorted(set(slice_bounds(sc, 60)))  # strictly increasing, even at one step each


def test_a_replayed_traces_bounds_fall_at_equal_actual_arrivals(tmp_path):
    """A trace has no λ(t): its bounds come from its arrivals as the run replays them. 600 requests in the first
    300 s and 200 over the next 900: four slices of exactly 200 own arrivals each (bounds at 100, 200 and 300 s),
    where equal times would give 600, 67, 67 and 66."""
    times = np.concatenate([np.arange(600) * 0.5, 300.0 + np.arange(200) * 4.5])
    trace = tmp_path / "burst.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{t},200,20\n" for t in times))
    sc = make_scenario(**{"duration_s": 1200, "warmup_s": 0, "output.sample_interval_s": 10.0,
                          "traffic": {"trace": {"file": str(trace)}, "classes": [{"name": "chat", "share": 1.0}]}})
    plan = plan_slices(sc, 4)
    assert [w.keep_from_s for w in plan.windows] == [0.0, 100.0, 200.0, 300.0] and plan.bounds == "equal arrivals"
    own = [sum(int(w.keeps(t)) for t in times) for w in plan.windows]
    assert own == [200, 200, 200, 200]
    assert slice_bounds(sc, 4, balance=False) == [0.0, 300.0, 600.0, 900.0, 1200.0]


def _chunks(times: np.ndarray, size: int):
    for i in range(0, len(times), size):
        t = times[i:i + size]
        z = np.zeros(len(t), np.int64)
        yield ArrivalChunk(t, z, z + 1, z + 1, z)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100, exclude_max=True), max_size=200), st.lists(st.floats(1, 99), max_size=5),
       st.floats(0, 50), st.floats(0, 50), st.integers(1, 40))
def test_windows_admit_every_arrival_they_keep_and_keep_each_exactly_once(times, cuts, warm, tail, size):
    t = np.sort(np.asarray(times, dtype=float))
    bounds = [0.0, *sorted(set(cuts)), 100.0]
    seen = np.zeros(len(t), dtype=int)
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        w = SimWindow(max(0.0, a - warm), a, b, min(100.0, b + tail), k == len(bounds) - 2)
        admitted = np.concatenate([c.time_s for c in w.admitted(_chunks(t, size))] or [np.empty(0)])
        assert np.array_equal(admitted, t[(t >= w.start_s) & (t < w.stop_arrivals_s)])
        seen += np.array([w.keeps(x) for x in t], dtype=int)
        assert all(w.keeps(x) for x in t[(t >= a) & (t < b)])
    assert (seen == 1).all()


@pytest.mark.parametrize("overrides, field, problem", [
    ({"fleet.autoscaler": {"policy": "queue"}, "fleet.on_demand": {"max_nodes": 2}}, "fleet.autoscaler",
     "autoscaling"),
    ({"fleet.spot": {"nodes": 1}}, "fleet.spot", "spot nodes"),
    ({"api": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}, "spill": {"policy": "never"}}, "spill",
     "hosted API"),
    ({"traffic.classes.0.deferrable": {"deadline_s": 3600}}, "traffic.classes.0.deferrable", "deferrable"),
    ({"traffic.classes.0.client": {"timeout_s": 5.0}}, "traffic.classes.0.client", "client timeouts"),
    ({"fleet.engine": {"prefix_caching": True}}, "fleet.engine.prefix_caching", "prefix caching"),
    ({"router": {"policy": "session_affinity"}}, "router.policy", "session_affinity"),
    ({"fleet.nodes": 2, "fleet.pools": [{"name": "p", "role": "prefill", "nodes": 1},
                                        {"name": "d", "role": "decode", "nodes": 1}]},
     "fleet.pools.0.role", "prefill / decode"),
])
def test_what_slicing_cannot_carry_is_refused(overrides, field, problem):
    raw = {k: v for k, v in overrides.items() if not k.startswith("traffic.classes.0.")}
    cls = {**BASE["traffic"]["classes"][0], **{k.rsplit(".", 1)[1]: v for k, v in overrides.items()
                                                if k.startswith("traffic.classes.0.")}}
    sc = _scenario(**raw, **{"traffic.classes": [cls]})
    check_sliceable(sc, 1)  # one slice is the unsliced run: anything goes
    with pytest.raises(ConfigError, match=f"{field}: .*{problem}"):
        check_sliceable(sc, 2)


@pytest.mark.parametrize("args, expect", [
    (["--slices", "2", "--set", "fleet.spot.nodes=1"], "does not support spot nodes"),
    (["--slices", "100", "--set", "output.sample_interval_s=1"], "at most --slices 60"),
    (["--slices", "2", "--shards", "2"], "cannot be combined"),
    (["--slice-warmup-s", "60"], "needs --slices"),
    (["--slices", "2", "--stream", "--out", "never-written"], "add --no-requests"),
])
def test_bad_slice_options_are_one_line_exit_2(args, expect):
    no_report = [] if "--out" in args else ["--no-report"]
    res = CliRunner().invoke(main, ["run", *no_report, "--set", "duration_s=60", *args])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], res.output


def test_cli_streamed_slices_on_a_process_pool_match_in_process():
    base = ["run", "--no-report", "--json", "--stream", "--set", "duration_s=90", "--set", "traffic.rate_rps=10",
            "--slices", "3"]
    res = [CliRunner().invoke(main, [*base, "--workers", str(w)]) for w in (1, 2)]
    assert all(r.exit_code == 0 for r in res), [r.output for r in res]
    a, b = (json.loads(r.stdout[r.stdout.index("{"):]) for r in res)
    assert a == b and a["requests"]["arrived"] > 0


def test_pooled_slices_reaching_back_to_zero_reproduce_the_pools_sections():
    pools = [{"name": "h100", "nodes": 2}, {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 1}]
    sc = _scenario(**{"fleet.nodes": 3, "fleet.pools": pools, "duration_s": 60,
                      "router": {"policy": "weighted_least_work"}})
    whole = run_scenario(sc)
    sliced = run_sliced(sc, plan_slices(sc, 2, warmup_s=1e9, tail_s=1e9), IN_PROCESS)
    assert sliced.requests.equals(whole.requests)
    a, b = whole.summary.to_json(), sliced.summary.to_json()
    assert _close(a["pools"], b["pools"]) and _close(a["cost"], b["cost"])
    assert np.array_equal(whole.result.series.per_pool("arrivals"), sliced.result.series.per_pool("arrivals"))


@pytest.mark.parametrize("split, parts, unit", [(["--slices", "3"], 3, "slices"), (["--shards", "2"], 2, "cells")])
def test_split_runs_report_progress_as_their_parts_finish(split, parts, unit, monkeypatch):
    """Sliced and sharded runs show progress (the project's rule for commands that can run long): parts done of
    the total as they finish, and for slices the simulated time they cover — in this process, also while a slice
    runs (fractions of a slice), not only at its end."""
    calls = []

    class Recorder:
        def __init__(self, label, unit="", **kw):
            self.unit = unit

        def update(self, done, total=None, note=""):
            calls.append((self.unit, done, total, note))

        def close(self):
            pass

    monkeypatch.setattr("sim.core.progress.Progress", Recorder)
    res = CliRunner().invoke(main, ["run", "--no-report", "--stream", "--set", "duration_s=90", "--set",
                                    "traffic.rate_rps=10", "--set", "fleet.nodes=2", *split, "--workers", "1"])
    assert res.exit_code == 0, res.output
    mine = [c for c in calls if c[0] == unit]
    done = [c[1] for c in mine]
    assert [d for d in done if d == int(d)] == list(range(parts + 1)) and {c[2] for c in mine} == {parts}
    assert done == sorted(done)
    if unit == "slices":
        assert mine[-1][3] == "90 of 90 s simulated"
        assert any(0 < d < 1 for d in done) and any(2 < d < 3 for d in done)  # the first and the last slice move


def test_dry_run_accounts_for_slices_and_cells():
    """--dry-run prints the split run's estimate beside the unsplit one: parts, requests simulated, CPU, wall on
    the workers and memory per worker, from the same per-request model."""
    base = ["run", "--dry-run", "--stream", "--no-report", "--set", "duration_s=3600", "--set", "traffic.rate_rps=20",
            "--set", "fleet.nodes=4"]
    sliced = CliRunner().invoke(main, [*base, "--slices", "4", "--workers", "2"])
    assert sliced.exit_code == 0, sliced.output
    assert "split into 4 slices: ~" in sliced.output and "% warm-up and tail), largest slice" in sliced.output
    assert "wall on process pool (2 workers)" in sliced.output and "memory per worker" in sliced.output
    sharded = CliRunner().invoke(main, [*base, "--shards", "2", "--workers", "1"])
    assert sharded.exit_code == 0, sharded.output
    assert "split into 2 cells: ~72.0k requests simulated, largest cell ~36.0k" in sharded.output
    assert "wall on in-process" in sharded.output


def test_split_estimate_spreads_the_slices_over_the_workers():
    from sim.runner.estimate import makespan_s
    from sim.runner.slices import estimate_slices

    sc = _scenario(**{"duration_s": 86400, "traffic.shape": "consumer_chat", "output.sample_interval_s": 10.0})
    plan = plan_slices(sc, 8)
    one, four = (estimate_slices(sc, plan, True, w, "here") for w in (1, 4))
    assert one.cpu_s == four.cpu_s and one.wall_s == pytest.approx(one.cpu_s)
    assert four.wall_s == makespan_s(list(four.part_cpu_s), 4) < one.wall_s / 3
    own = list(one.part_requests[1:-1])  # equal expected arrivals (+ warm-ups, which differ little here)
    assert max(own) / min(own) < 1.1
    assert makespan_s([4, 3, 3, 2], 2) == 6 and makespan_s([1.0], 3) == 1.0
