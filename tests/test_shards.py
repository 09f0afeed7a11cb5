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
    (["--workers", "2"], "apply to --shards and --slices runs"),
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


def _pooled(**kw):
    """Two 8B pools of different GPUs and a Qwen3-30B-A3B pool, 2 nodes each (the ``one`` class asks for the MoE)."""
    pools = [{"name": "h100", "nodes": 2}, {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 3},
             {"name": "moe", "model": "Qwen3-30B-A3B", "nodes": 2}]
    classes = [{"name": "chat", "share": 0.8, "input_tokens": {"dist": "fixed", "value": 500},
                "output_tokens": {"dist": "fixed", "value": 80}},
               {"name": "one", "share": 0.2, "model": "Qwen3-30B-A3B", "input_tokens": {"dist": "fixed", "value": 300},
                "output_tokens": {"dist": "fixed", "value": 40}}]
    return make_scenario(**{"fleet.nodes": 7, "fleet.pools": pools, "traffic.classes": classes,
                            "traffic.rate_rps": 30.0, "duration_s": 40, "warmup_s": 0,
                            "router": {"policy": "weighted_least_work"}, **kw})


def test_pooled_cells_take_a_share_of_every_pool_and_of_each_models_arrivals():
    sc = _pooled(**{"traffic.rate_rps": 300.0})
    parts = cells(sc, 2)
    assert [[p.nodes for p in cs.fleet.pools] for cs, _ in parts] == [[1, 2, 1], [1, 1, 1]]
    assert [cs.fleet.nodes for cs, _ in parts] == [4, 3]
    chunks = [list(cell.thin(arrival_chunks(cs))) for cs, cell in parts]
    full = list(arrival_chunks(sc))
    times = np.concatenate([c.time_s for ch in chunks for c in ch])
    assert np.array_equal(np.sort(times), np.concatenate([c.time_s for c in full]))  # an exact partition
    moe = [sum(int((c.class_idx == 1).sum()) for c in ch) for ch in chunks]
    assert moe[0] / sum(moe) == pytest.approx(0.5, abs=0.03)  # the MoE pool splits 1 + 1: half its traffic each
    chat = [sum(int((c.class_idx == 0).sum()) for c in ch) for ch in chunks]
    assert chat[0] / sum(chat) > 0.55  # 1 H100 + 2 A100 against 1 + 1: more of the 8B traffic


def test_pooled_sharded_run_merges_pools_at_the_fleets_node_numbers():
    sc = _pooled()
    assert json.dumps(run_sharded(sc, 1, IN_PROCESS).summary.to_json(), sort_keys=True) == json.dumps(
        run_scenario(sc).summary.to_json(), sort_keys=True)
    runs = [simulate(cs, arrivals=cell.thin) for cs, cell in cells(sc, 2)]
    out = run_sharded(sc, 2, IN_PROCESS)
    s, req = out.summary, out.requests
    assert s.requests.arrived == sum(r.counts()["arrived"] for r in runs) and s.requests.in_flight == 0
    done = req[req["status"] == "completed"]
    slots = {"h100": {0, 1}, "a100": {2, 3, 4}, "moe": {5, 6}}  # the unsharded fleet's numbering
    for name, nodes in slots.items():
        assert set(done.loc[done["pool"] == name, "node"]) == nodes, name
        assert s.pools[name].requests.completed == int((done["pool"] == name).sum())
    assert sum(p.requests.completed for p in s.pools.values()) == s.requests.completed
    assert s.models["Qwen3-30B-A3B"].served == int((done["class"] == "one").sum())
    nts = out.timeseries_nodes
    assert nts["node"].nunique() == 7 and set(nts.loc[nts["pool"] == "a100", "node"]) == {2, 3, 4}
    assert s.cost.self_host_usd == pytest.approx(sum(p.cost.self_host_usd for p in s.pools.values()))
    streamed = run_sharded_streaming(sc, 2, IN_PROCESS).summary
    assert streamed.requests == s.requests
    for name in slots:
        assert streamed.pools[name].requests == s.pools[name].requests
    assert streamed.routing.node_work_cv == pytest.approx(s.routing.node_work_cv, rel=1e-9)  # every cell's nodes


def test_sharded_disaggregated_run_maps_prefill_and_decode_nodes():
    pools = [{"name": "p", "role": "prefill", "nodes": 2, "interconnect": {"kind": "infiniband"}},
             {"name": "d", "role": "decode", "nodes": 2}]
    sc = _scenario(**{"fleet.nodes": 4, "fleet.pools": pools, "traffic.rate_rps": 8.0})
    runs = [simulate(cs, arrivals=cell.thin) for cs, cell in cells(sc, 2)]
    out = run_sharded(sc, 2, IN_PROCESS)
    done = out.requests[out.requests["status"] == "completed"]
    assert set(done["prefill_node"]) == {0, 1} and set(done["decode_node"]) == {2, 3}
    assert (done["node"] == done["decode_node"]).all()
    d = out.summary.disaggregation
    assert d is not None and d.transfers == sum(r.disagg["transfers"] for r in runs) == len(done)
    assert d.transfer_p95_s == pytest.approx(float(np.percentile(done["kv_transfer_s"], 95)))
    assert d.kv_gb_sent == pytest.approx(done["kv_bytes"].sum() / 1e9)


def test_a_pool_smaller_than_the_cells_is_one_line_exit_2():
    from sim.core.errors import ConfigError
    from sim.runner.shards import check_shardable

    with pytest.raises(ConfigError, match=r"fleet.pools.0.nodes: pool 'h100' has 2 reserved node\(s\), fewer than "
                                          r"the 3 cells"):
        check_shardable(_pooled(), 3)
