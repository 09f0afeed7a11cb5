"""fleet.pools (docs/pools.md): the schema, its defaults and errors; routing, spill and cost across pools."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from scenarios import BASE

from sim.core.config import validate_scenario
from sim.core.errors import ConfigError


def pooled(pools: list[dict[str, Any]], **fleet: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["fleet"] = {**fleet, "pools": pools}
    return raw


def test_single_fleet_is_one_mixed_pool() -> None:
    sc = validate_scenario(copy.deepcopy(BASE), "t")
    (pool,) = sc.fleet.pool_list()
    assert (pool.role, pool.nodes, pool.gpu, pool.model) == ("mixed", 2, "H100-SXM", "Llama-3.1-8B")
    assert not sc.fleet.pooled


def test_pools_inherit_fleet_fields_and_total_nodes() -> None:
    sc = validate_scenario(pooled([{"name": "a", "nodes": 2}, {"name": "b", "gpu": "A100-SXM-80GB", "nodes": 3,
                                                                "engine": {"block_size": 32}}],
                                  model="Llama-3.1-8B", engine={"max_num_seqs": 64}), "t")
    a, b = sc.fleet.pool_list()
    assert sc.fleet.nodes == 5 and sc.fleet.max_nodes == 5 and sc.fleet.pooled
    assert (b.gpu, b.model, b.engine.max_num_seqs, b.engine.block_size) == ("A100-SXM-80GB", "Llama-3.1-8B", 64, 32)
    assert a.engine.block_size == 16 and a.engine.max_num_seqs == 64
    # a dump validates again to the same scenario (plan / sweep write scenarios back out)
    again = validate_scenario(sc.model_dump(), "t")
    assert again == sc


@pytest.mark.parametrize(("fleet", "pools", "field", "problem"), [
    ({"nodes": 3}, [{"name": "a", "nodes": 2}], "fleet", "must equal their sum (2)"),
    ({"spot": {"nodes": 1}}, [{"name": "a", "nodes": 2}], "fleet", "give spot per pool"),
    ({}, [{"name": "a", "nodes": 1}, {"name": "a", "nodes": 1}], "fleet", "pool names must be unique"),
    ({}, [{"name": "a", "nodes": 1, "role": "prefill"}], "fleet", "needs a decode pool"),
    ({}, [{"name": "a", "nodes": 1, "role": "both"}], "fleet.pools.0.role", "Input should be"),
    ({}, [{"name": "a", "nodes": 1, "interconnect": {"kind": "carrier-pigeon"}}], "fleet.pools.0.interconnect.kind",
     "Input should be"),
    ({}, [{"name": "a", "nodes": 1, "interconnect": {"bandwidth_gb_per_s": 0}}],
     "fleet.pools.0.interconnect.bandwidth_gb_per_s", "greater than 0"),
])
def test_bad_pools_are_one_line_errors(fleet: dict[str, Any], pools: list[dict[str, Any]], field: str,
                                       problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_scenario(pooled(pools, **fleet), "s.yaml")
    assert err.value.field == field and problem in err.value.problem, str(err.value)


def test_class_with_unknown_model_is_a_load_error() -> None:
    raw = pooled([{"name": "a", "nodes": 1}])
    raw["traffic"]["classes"][0]["model"] = "Llama-3.1-70B"
    with pytest.raises(ConfigError) as err:
        validate_scenario(raw, "s.yaml")
    assert err.value.field == "traffic.classes.0.model" and "no pool serves model 'Llama-3.1-70B'" in str(err.value)
    raw = copy.deepcopy(BASE)  # without pools: the fleet's one model
    raw["traffic"]["classes"][0]["model"] = "Llama-3.1-70B"
    with pytest.raises(ConfigError, match="no pool serves"):
        validate_scenario(raw, "s.yaml")


def test_several_models_need_each_class_to_name_one() -> None:
    raw = pooled([{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1, "model": "Llama-3.1-70B", "gpus_per_node": 4}])
    with pytest.raises(ConfigError) as err:
        validate_scenario(raw, "s.yaml")
    assert err.value.field == "traffic.classes.0.model" and "names no model" in err.value.problem
    raw["traffic"]["classes"][0]["model"] = "llama_3.1_70b"  # spelled as the catalogue matches names
    assert validate_scenario(raw, "s.yaml").traffic.classes[0].model == "llama_3.1_70b"


def test_interconnect_defaults_by_kind() -> None:
    sc = validate_scenario(pooled([{"name": "p", "nodes": 1, "role": "prefill", "interconnect": {"kind": "nvlink"}},
                                   {"name": "d", "nodes": 1, "role": "decode",
                                    "interconnect": {"kind": "ethernet", "bandwidth_gb_per_s": 25}}]), "t")
    p, d = sc.fleet.pool_list()
    assert p.interconnect is not None and p.interconnect.bandwidth_bytes_per_s == 450e9
    assert d.interconnect is not None and d.interconnect.bandwidth_bytes_per_s == 25e9
    assert d.interconnect.one_way_latency_s == 50e-6


# --- simulated --------------------------------------------------------------------------------------------
FIXED = {"name": "chat", "share": 1.0, "input_tokens": {"dist": "fixed", "value": 600},
         "output_tokens": {"dist": "fixed", "value": 150}}


def two_gpu_pools(rate_rps: float, policy: str, duration_s: float = 60, **router: Any) -> dict[str, Any]:
    raw = pooled([{"name": "h100", "gpu": "H100-SXM", "nodes": 1},
                  {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 1}], model="Llama-3.1-8B")
    raw["traffic"] = {"rate_rps": rate_rps, "classes": [FIXED]}
    raw["duration_s"] = duration_s
    raw["router"] = {"policy": policy, **router}
    return raw


def test_one_explicit_pool_equals_the_single_fleet() -> None:
    from sim.runner.pipeline import run_scenario

    plain = copy.deepcopy(BASE)
    plain["fleet"] = {"nodes": 2, "gpu": "A100-SXM-80GB", "spot": {"nodes": 1, "evictions_per_node_hour": 20}}
    one = pooled([{"name": "only", "nodes": 2, "gpu": "A100-SXM-80GB", "spot": {"nodes": 1,
                                                                             "evictions_per_node_hour": 20}}])
    a = run_scenario(validate_scenario(plain, "t")).summary
    b = run_scenario(validate_scenario(one, "t")).summary
    for key in ("requests", "latency", "throughput", "slo", "overload"):
        assert a.value_of(key) == b.value_of(key), key
    assert b.cost.total_usd == pytest.approx(a.cost.total_usd, rel=1e-12)
    assert b.energy == a.energy
    assert b.utilisation.load_factor == pytest.approx(a.utilisation.load_factor, rel=1e-12)
    assert b.pools["only"].requests.completed == a.requests.completed
    assert a.pools is None and a.models is None and "pools" not in a.to_json()


def _pool_shares(raw: dict[str, Any]) -> tuple[float, float]:
    """(share of requests the H100 pool got, H100 speed ÷ (H100 + A100 speed))."""
    from sim.fleet.pools import pool_layout
    from sim.runner.simulation import build_pool_models, pool_speeds, simulate

    sc = validate_scenario(raw, "t")
    result = simulate(sc)
    nodes = [r.node for r in result.requests]
    speeds = pool_speeds(sc, pool_layout(sc), build_pool_models(sc))
    return nodes.count(0) / len(nodes), speeds[0] / sum(speeds)


def test_weighted_round_robin_shares_follow_node_speed() -> None:
    got, want = _pool_shares(two_gpu_pools(8.0, "weighted_round_robin"))
    assert 0.55 < want < 0.9  # the H100 is faster, not overwhelmingly
    assert got == pytest.approx(want, abs=0.01)


def test_weighted_least_work_sends_more_to_the_faster_pool_in_proportion() -> None:
    # loaded (about 0.7 of what the two nodes sustain): work-weighted balancing follows speed within 10 points,
    # where the speed-blind least-work router splits the arrivals more evenly
    got, want = _pool_shares(two_gpu_pools(30.0, "weighted_least_work", 120))
    blind, _ = _pool_shares(two_gpu_pools(30.0, "least_work", 120))
    assert got == pytest.approx(want, abs=0.1)
    assert got > blind


def test_pool_overflow_fills_the_first_pool_first() -> None:
    from sim.runner.pipeline import run_scenario

    light = run_scenario(validate_scenario(two_gpu_pools(2.0, "least_work", pool_mode="overflow"), "t")).summary
    assert light.pools["a100"].requests.sent == 0  # the first pool is never full at 2 req/s
    spread = run_scenario(validate_scenario(two_gpu_pools(2.0, "least_work"), "t")).summary
    assert spread.pools["a100"].requests.sent > 0
    heavy = run_scenario(validate_scenario(two_gpu_pools(40.0, "least_work", pool_mode="overflow",
                                                         overflow_max_waiting=2), "t")).summary
    assert heavy.pools["a100"].requests.sent > 0  # full: overflow to the next pool
    assert heavy.pools["h100"].requests.sent > heavy.pools["a100"].requests.sent


def test_pool_costs_sum_to_the_fleet_cost_from_gpu_hours_and_prices() -> None:
    """The fleet's self-hosted cost, recomputed here from the fleet log (billed from each node's request, or t = 0,
    to its termination) × each pool's GPUs × its price, equals the summary's, and the pools' costs add up to it."""
    from sim.metrics.pools import pool_sections
    from sim.metrics.tables import requests_table, summarize
    from sim.perf.catalog import get_gpu
    from sim.runner.simulation import simulate

    raw = pooled([
        {"name": "h100", "gpu": "H100-SXM", "nodes": 1,
         "on_demand": {"max_nodes": 2, "provision_s": 5, "model_load_s": 5, "price_multiplier": 1.5},
         "autoscaler": {"policy": "queue", "interval_s": 5, "scale_up_queue": 1, "scale_down_cooldown_s": 10}},
        {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 1, "pricing": {"usd_per_gpu_hour": 1.0},
         "spot": {"nodes": 1, "discount": 0.5, "evictions_per_node_hour": 60, "notice_s": 5}},
    ], model="Llama-3.1-8B")
    raw["traffic"] = {"rate_rps": 25.0, "classes": [FIXED], "shape": {"components": [
        {"type": "piecewise", "points": [[0, 0.3], [0.01, 2.0], [0.02, 0.2]]}]}}
    raw["duration_s"] = 120
    sc = validate_scenario(raw, "t")
    result = simulate(sc)
    summary = summarize(result)
    duration = sc.duration_s
    h100 = get_gpu("H100-SXM").usd_per_gpu_hour
    price = {("h100", "reserved"): h100, ("h100", "on_demand"): 1.5 * h100,
             ("a100", "reserved"): 1.0, ("a100", "spot"): 0.5}
    assert result.layout is not None
    usd = 0.0
    open_at: dict[int, float] = {}
    kinds = set()
    for t, slot, kind, what in result.fleet_events:
        pool = result.layout.pools[result.layout.slot_pool[slot]].name
        kinds.add((pool, kind, what.split(" ")[0]))
        if what == "requested" or (what == "up" and slot not in open_at):
            open_at.setdefault(slot, t)
        elif what == "terminated":
            usd += (min(t, duration) - open_at.pop(slot)) / 3600 * price[(pool, kind)]
    for slot, t in open_at.items():
        pool = result.layout.pools[result.layout.slot_pool[slot]].name
        usd += (duration - t) / 3600 * price[(pool, result.layout.slot_kind[slot])]
    assert ("h100", "on_demand", "requested") in kinds and ("a100", "spot", "evicted") in kinds  # both exercised
    assert summary.cost.self_host_usd == pytest.approx(usd, rel=1e-9)
    pools = pool_sections(result, requests_table(result))
    assert sum(p["cost"]["self_host_usd"] for p in pools.values()) == pytest.approx(usd, rel=1e-9)
    assert summary.cost.total_usd == pytest.approx(usd, rel=1e-9)


def test_each_pool_counts_its_own_model_bytes_and_flops() -> None:
    """Per-node HBM bytes use the node's own pool's weights (a 70B node reads ~9x the bytes of an 8B node per step)."""
    from sim.runner.simulation import simulate

    raw = pooled([{"name": "small", "nodes": 1}, {"name": "big", "nodes": 1, "model": "Llama-3.1-70B",
                                                  "gpus_per_node": 4}])
    raw["traffic"]["classes"] = [{**FIXED, "share": 0.5, "name": "a", "model": "Llama-3.1-8B"},
                                 {**FIXED, "share": 0.5, "name": "b", "model": "Llama-3.1-70B"}]
    result = simulate(validate_scenario(raw, "t"))
    hbm = result.series.per_node("hbm_bytes")[-1]
    for slot, model in enumerate(result.pool_models):
        assert hbm[slot] >= result.node_steps[slot] * model.memory.weight_bytes
        assert hbm[slot] < result.node_steps[slot] * model.memory.weight_bytes * 1.5


def test_compare_sets_pools_per_strategy(tmp_path: Any) -> None:
    import yaml

    from sim.compare.experiment import load_experiment
    from sim.compare.results import comparison_table
    from sim.compare.runner import run_experiment

    base = {**copy.deepcopy(BASE), "duration_s": 20}
    exp = {"name": "p", "base": base, "strategies": [
        {"name": "h100-only", "pools": [{"name": "h100", "nodes": 2}]},
        {"name": "mixed", "pools": [{"name": "h100", "nodes": 1}, {"name": "a100", "gpu": "A100-SXM-80GB",
                                                                    "nodes": 2}]},
        {"name": "plain", "fleet_nodes": 1},
    ]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    _, runs = load_experiment(path)
    assert [r.fleet_nodes for r in runs] == [2, 3, 1]
    assert [len(r.scenario.fleet.pool_list()) for r in runs] == [1, 2, 1]
    results = run_experiment(runs, workers=1)
    table = comparison_table(runs, results)
    assert list(table["strategy"]) == ["h100-only", "mixed", "plain"]
    mixed = results[1].summaries[0]
    assert set(mixed.pools) == {"h100", "a100"} and mixed.cost.total_usd > 0
    exp["strategies"][0]["fleet_nodes"] = 3  # pools give their own node counts
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match="fleet_nodes or pools"):
        load_experiment(path)


def test_size_pools_finds_the_smallest_growth_pool() -> None:
    from sim.sizing.pools import size_pools

    raw = pooled([{"name": "old", "gpu": "A100-SXM-80GB", "nodes": 1}, {"name": "new", "nodes": 1}],
                 model="Llama-3.1-8B")
    raw["traffic"] = {"rate_rps": 24.0, "classes": [FIXED]}
    raw["duration_s"] = 40
    sc = validate_scenario(raw, "t")
    (row,) = size_pools(sc, n_seeds=1, max_nodes=8, workers=1)
    assert (row.pool, row.fixed_nodes) == ("new", {"old": 1})
    assert row.min_nodes is not None and row.tried[row.min_nodes]
    assert row.min_nodes == 0 or row.tried.get(row.min_nodes - 1) is False  # one fewer misses
    assert row.usd_per_hour is not None and row.usd_per_hour > 0


def test_every_field_of_a_pooled_summary_is_a_metric_name() -> None:
    from sim.metrics.access import METRIC_NAMES, PER_NAME_SECTIONS, metric
    from sim.runner.pipeline import run_scenario

    raw = pooled([{"name": "a", "nodes": 1}, {"name": "b", "gpu": "A100-SXM-80GB", "nodes": 1}])
    raw["duration_s"] = 10
    summary = run_scenario(validate_scenario(raw, "t")).summary

    def leaves(d: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
        return out

    fixed = [n for n in leaves(summary.to_json()) if not n.startswith(PER_NAME_SECTIONS) and n != "slo.windows"]
    assert [n for n in fixed if n not in METRIC_NAMES] == []
    assert metric(summary, "pools.b.cost.self_host_usd") == summary.pools["b"].cost.self_host_usd
    assert metric(summary, 'models["Llama-3.1-8B"].attainment') == summary.models["Llama-3.1-8B"].attainment
    assert summary.models is not None and summary.models["Llama-3.1-8B"].pools == ["a", "b"]
    # typed sections: records, and an exact round trip through summary.json (cached sweep and plan points)
    from sim.metrics.summary import ModelSummary, PoolSummary, Summary

    assert isinstance(summary.pools["a"], PoolSummary) and isinstance(summary.models["Llama-3.1-8B"], ModelSummary)
    data = json.loads(json.dumps(summary.to_json()))
    assert Summary.from_json(data) == summary and json.dumps(Summary.from_json(data).to_json()) == json.dumps(data)


def test_cli_size_and_plan_on_pools(tmp_path: Any) -> None:
    import yaml
    from click.testing import CliRunner

    from sim.cli import main

    raw = pooled([{"name": "old", "gpu": "A100-SXM-80GB", "nodes": 1}, {"name": "new", "nodes": 1}])
    raw["duration_s"] = 20
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    r = runner.invoke(main, ["size", str(path), "--seeds", "1", "--max-nodes", "4", "--workers", "1", "--json", "-q",
                             "--out", str(tmp_path / "size"), "--pool", "old"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)["pools"]
    assert row["pool"] == "old" and row["other_pools"] == {"new": 1} and row["min_nodes"] is not None
    assert (tmp_path / "size" / "pools.csv").exists()
    r = runner.invoke(main, ["size", str(path), "--pool", "nosuch", "--no-report"])
    assert r.exit_code == 2 and "--pool: nosuch: no such pool" in r.output
    r = runner.invoke(main, ["plan", str(path), "--gpu", "H100-SXM", "--gpu", "A100-SXM-80GB", "--pricing", "on_demand",
                             "--pricing", "reserved_3y", "--seeds", "1", "--max-nodes", "4", "--workers", "1",
                             "--json", "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads(r.output)["rows"] if x["kind"] == "grow"]
    assert {(x["pools"][1]["gpu"], x["pricing_label"]) for x in rows} == {
        (g, p) for g in ("H100-SXM", "A100-SXM-80GB") for p in ("rented on-demand", "rented, 3-year reserved")}
    # the growth pool "new" at the 3-year price, plus the kept A100 pool at its rented price (1 GPU each)
    h100 = next(x for x in rows if x["pools"][1]["gpu"] == "H100-SXM" and x["pricing"] == "reserved_3y")
    assert h100["pools"][0] == {"pool": "old", "role": "mixed", "gpu": "A100-SXM-80GB", "gpus_per_node": 1,
                                "weights": "bf16", "kv_cache": "bf16", "nodes": 1, "sized": False}
    assert h100["usd_per_month"] == pytest.approx((h100["pools"][1]["nodes"] * 2.5 * 0.5 + 1.2) * 730)
    r = runner.invoke(main, ["plan", str(path), "--spot-share", "0.5"])
    assert r.exit_code == 2 and "single-fleet options" in r.output


def test_pools_overflow_before_the_api() -> None:
    """A spill policy stricter than the pool threshold still fills the next pool first: a request goes to the
    API only when the policy would spill it from every pool of its model."""
    from sim.runner.pipeline import run_scenario

    raw = two_gpu_pools(20.0, "least_work", pool_mode="overflow")
    raw["api"] = {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.6}
    raw["spill"] = {"policy": "queue_length", "max_waiting": 1}  # spills at 1 waiting; pools overflow at 4
    s = run_scenario(validate_scenario(raw, "t")).summary
    assert s.pools is not None
    a100, spilled = s.pools["a100"].requests.sent, s.requests.spilled
    assert a100 > 100 and spilled < a100 / 3


def test_forecast_autoscaler_of_a_pool_follows_its_models_share() -> None:
    from sim.runner.simulation import simulate

    raw = pooled([{"name": "a", "nodes": 1},
                  {"name": "b", "model": "Mixtral-8x7B", "gpus_per_node": 2, "nodes": 0,
                   "on_demand": {"max_nodes": 10, "provision_s": 1, "model_load_s": 1},
                   "autoscaler": {"policy": "schedule", "rps_per_node": 1.0, "interval_s": 5}}],
                 model="Llama-3.1-8B")
    raw["traffic"] = {"rate_rps": 10.0, "classes": [{**FIXED, "share": 0.8},
                                                     {**FIXED, "name": "b", "share": 0.2, "model": "Mixtral-8x7B"}]}
    raw["duration_s"] = 20
    result = simulate(validate_scenario(raw, "t"))
    assert result.layout is not None
    started = {slot for _, slot, _, what in result.fleet_events
               if what == "requested" and result.layout.slot_pool[slot] == 1}
    assert len(started) == 2  # ⌈10 req/s × 0.2 / 1⌉, not ⌈10 / 1⌉


def test_electricity_of_rented_and_owned_pools_is_paid_in_both() -> None:
    """A rented pool's electricity is inside its rental price, an owned pool's inside its TCO: a fleet of both does
    not say 'inside the rental price' alone."""
    from sim.metrics.pools import combine_energy

    def pool(paid_in: str) -> dict[str, Any]:
        e = {"kwh": 1.0, "avg_power_kw": 1.0, "co2_kg": 0.5, "usd": 0.1, "usd_per_kwh": 0.1, "pue": 1.4,
             "gpu_idle_w": 100.0, "gpu_tdp_w": 700.0, "paid_in": paid_in}
        return {"energy": e, "cost": {"gpu_hours": 1.0}}

    mixed = combine_energy({"a": pool("rental price"), "b": pool("owned TCO")})
    assert "rental price" in mixed["paid_in"] and "owned TCO" in mixed["paid_in"]
    assert combine_energy({"a": pool("owned TCO"), "b": pool("owned TCO")})["paid_in"] == "owned TCO"
