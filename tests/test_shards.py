"""``capsim run --shards``: cells take an exact thinned share of the arrivals, and the merged run is the cells'."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scenarios import make_scenario

from sim.cli import main
from sim.metrics.streaming import StreamingCollector
from sim.runner.executor import ExecutorSpec
from sim.runner.pipeline import run_scenario
from sim.runner.shards import cells, run_sharded, run_sharded_streaming, split_nodes
from sim.runner.simulation import simulate
from sim.traffic.arrivals import arrival_chunks

IN_PROCESS = ExecutorSpec(workers=1)


def _scenario(**kw):
    return make_scenario(**{"fleet.nodes": 5, "traffic.rate_rps": 20.0, "duration_s": 40, "warmup_s": 0, **kw})


def test_split_nodes_is_even_and_complete():
    assert split_nodes(10, 4) == [3, 3, 2, 2]
    assert split_nodes(64, 4) == [16] * 4


def test_cells_partition_the_arrival_stream_in_proportion_to_their_nodes():
    sc = make_scenario(**{"fleet.nodes": 5, "traffic.rate_rps": 200.0, "duration_s": 60})
    full = np.concatenate([c.time_s for c in arrival_chunks(sc)])
    parts = [np.concatenate([c.time_s for c in cell.thin(arrival_chunks(cs))]) for cs, cell in cells(sc, 3)]
    assert np.array_equal(np.sort(np.concatenate(parts)), full)  # every arrival in exactly one cell
    assert [cs.fleet.nodes for cs, _ in cells(sc, 3)] == [2, 2, 1]
    shares = np.array([len(p) for p in parts]) / len(full)
    assert np.allclose(shares, [0.4, 0.4, 0.2], atol=0.02)  # 12,000 arrivals: ±2 % is > 5 sigma


def test_one_shard_is_the_unsharded_run():
    sc = _scenario()
    a = run_scenario(sc).summary
    b = run_sharded(sc, 1, IN_PROCESS).summary
    assert json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


def test_sharded_summary_is_the_merged_cells():
    sc = _scenario()
    runs = [simulate(cs, arrivals=cell.thin) for cs, cell in cells(sc, 2)]
    out = run_sharded(sc, 2, IN_PROCESS)
    s = out.summary
    assert s.requests.arrived == sum(r.counts()["arrived"] for r in runs)
    assert s.requests.completed == sum(r.counts()["completed"] for r in runs)
    ttft = np.concatenate([[q.first_token_s - q.arrival_s for q in r.requests] for r in runs])
    assert s.latency.ttft_s.p95 == pytest.approx(float(np.percentile(ttft, 95)), rel=1e-12)
    assert s.fleet.nodes == 5 and out.timeseries_nodes["node"].nunique() == 5
    # node numbers: cell 1's node k is fleet node 3 + k
    assert set(out.requests["node"]) == set(range(5))
    assert list(out.requests["request_id"]) == list(range(len(out.requests)))
    assert out.requests["arrival_s"].is_monotonic_increasing
    assert sum(out.result.node_steps) == sum(sum(r.node_steps) for r in runs)


def test_streamed_shards_merge_histograms():
    sc = _scenario()
    exact = run_sharded(sc, 2, IN_PROCESS).summary
    streamed = run_sharded_streaming(sc, 2, IN_PROCESS).summary
    assert streamed.requests == exact.requests
    for key in ("ttft_s", "tpot_s"):
        assert streamed.latency.value_of(key).p95 == pytest.approx(exact.latency.value_of(key).p95, rel=2e-3)
    assert streamed.slo.attainment == pytest.approx(exact.slo.attainment, abs=1e-12)


def test_collector_merge_equals_one_collector():
    sc = _scenario()
    reqs = simulate(sc).requests
    whole, a, b = StreamingCollector(sc), StreamingCollector(sc), StreamingCollector(sc)
    for i, r in enumerate(reqs):
        whole(r)
        (a if i % 2 else b)(r)
    for c in (whole, a, b):
        c.flush()
    a.merge(b)
    assert a.n == whole.n
    assert all(np.array_equal(a.hist[k].counts, whole.hist[k].counts) for k in whole.hist)
    assert a.window_rows() == whole.window_rows()


@pytest.mark.parametrize("args, expect", [
    (["--shards", "9"], "at most one shard per node"),
    (["--shards", "2", "--set", "fleet.autoscaler.policy=queue", "--set", "fleet.on_demand.max_nodes=2"],
     "does not support autoscaling"),
    (["--workers", "2"], "apply to --shards runs"),
    (["--shards", "2", "--stream", "--out", "never-written"], "add --no-requests"),
])
def test_bad_shard_options_are_one_line_exit_2(args, expect):
    no_report = [] if "--out" in args else ["--no-report"]
    res = CliRunner().invoke(main, ["run", *no_report, "--set", "duration_s=60", *args])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], res.output


def test_cli_shards_on_a_process_pool_match_in_process(tmp_path):
    """The cells give the same merged summary on a pool of 2 workers as one after the other in this process."""
    from sim.core.config import load_scenario
    from sim.core.paths import scenario_path

    sets = ["duration_s=60", "warmup_s=0", "fleet.nodes=4", "traffic.rate_rps=24"]
    args = [x for s in sets for x in ("--set", s)]
    res = CliRunner().invoke(main, ["run", "--no-report", "--json", "--shards", "2", "--workers", "2", *args])
    assert res.exit_code == 0, res.output
    pooled = json.loads(res.output[res.output.index("{"):])
    local = run_sharded(load_scenario(scenario_path(None), sets), 2, IN_PROCESS).summary
    assert json.dumps(pooled, sort_keys=True) == json.dumps(local.to_json(), sort_keys=True, default=str)


def test_a_conversation_stays_in_one_cell():
    """Multi-turn traffic: every turn of a session lands in the cell its session drew (the prefix cache and
    session affinity keep working within cells), and the cells still partition the arrivals."""
    from test_prefix_cache import _prefix_scenario

    sc = _prefix_scenario(**{"fleet.nodes": 4}, router={"policy": "session_affinity"})
    runs = [simulate(cs, arrivals=cell.thin) for cs, cell in cells(sc, 2)]
    sessions = [{r.session for r in run.requests if r.session >= 0} for run in runs]
    assert sessions[0] and sessions[1] and not sessions[0] & sessions[1]
    assert sum(r.counts()["arrived"] for r in runs) == simulate(sc).counts()["arrived"]
