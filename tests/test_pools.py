"""fleet.pools (docs/pools.md): the schema, its defaults and errors; routing, spill and cost across pools."""

from __future__ import annotations

import copy
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
