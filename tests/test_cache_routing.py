"""Cache-aware routers (prefix-aware, session affinity) and the staleness knob of every router."""

from __future__ import annotations

import pytest
from scenarios import make_scenario
from test_prefix_cache import _hit_ratio, _prefix_scenario

from sim.runner.simulation import simulate


def _nodes(result) -> dict[int, int]:
    return {r.rid: r.node for r in result.requests}


@pytest.mark.parametrize("policy", ["least_work", "power_of_two", "round_robin"])
def test_staleness_zero_is_todays_routing(policy: str) -> None:
    base = {"fleet.nodes": 3, "traffic.rate_rps": 20.0, "duration_s": 40}
    today = simulate(make_scenario(**base, router={"policy": policy}))
    zero = simulate(make_scenario(**base, router={"policy": policy, "staleness_s": 0.0, "count_own": False}))
    assert _nodes(today) == _nodes(zero)


def test_stale_load_without_own_counts_herds_onto_one_node() -> None:
    """Sampled once a minute and blind to its own dispatches, least work sends a whole interval's arrivals to the
    node that looked idlest; counting its own dispatches spreads them again."""
    base = {"fleet.nodes": 3, "traffic.rate_rps": 20.0, "duration_s": 30}
    blind = simulate(make_scenario(**base, router={"policy": "least_work", "staleness_s": 60.0, "count_own": False}))
    own = simulate(make_scenario(**base, router={"policy": "least_work", "staleness_s": 60.0}))
    assert set(_nodes(blind).values()) == {0}
    counts = [list(_nodes(own).values()).count(i) for i in range(3)]
    assert min(counts) > 0.2 * sum(counts)


def test_prefix_aware_routing_raises_the_hit_ratio() -> None:
    kw = {"fleet.nodes": 4, "traffic.rate_rps": 16.0,
          "prefix": {"system_prompt": {"count": 8, "tokens": {"dist": "fixed", "value": 1500}},
                     "conversation": {"turns_mean": 5, "think_time_s": 5}}}
    lw = simulate(_prefix_scenario(**kw, router={"policy": "least_work"}))
    pa = simulate(_prefix_scenario(**kw, router={"policy": "prefix_aware"}))
    sa = simulate(_prefix_scenario(**kw, router={"policy": "session_affinity"}))
    assert _hit_ratio(pa) > _hit_ratio(lw) + 0.1
    assert _hit_ratio(sa) > _hit_ratio(lw)


def test_session_affinity_keeps_a_conversation_on_one_node() -> None:
    res = simulate(_prefix_scenario(**{"fleet.nodes": 3}, router={"policy": "session_affinity"}))
    homes: dict[int, set[int]] = {}
    for r in res.requests:
        if r.session >= 0:
            homes.setdefault(r.session, set()).add(r.node)
    assert len(homes) > 10 and all(len(v) == 1 for v in homes.values())
    assert sum(1 for r in res.requests if r.session >= 0) > 2 * len(homes) * 0.5  # multi-turn indeed


def test_prefix_weight_zero_is_least_work() -> None:
    kw = {"fleet.nodes": 3}
    lw = simulate(_prefix_scenario(**kw, router={"policy": "least_work"}))
    pa0 = simulate(_prefix_scenario(**kw, router={"policy": "prefix_aware", "prefix_weight": 0.0}))
    assert _nodes(lw) == _nodes(pa0)


def test_router_and_prefix_settings_are_sweep_axes() -> None:
    from pathlib import Path

    from sim.sweep.experiment import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "prefix_routing_sweep.yaml")
    seen = {(p.scenario.fleet.engine.prefix_caching, p.scenario.router.policy, p.scenario.router.staleness_s)
            for p in exp.points}
    assert len(seen) == len(exp.points) == 16
    assert (True, "prefix_aware", 10.0) in seen
    assert len({p.key for p in exp.points}) == 16  # each point is its own cached result


def test_prefix_cache_settings_are_fleet_wide() -> None:
    from sim.core.errors import ConfigError

    with pytest.raises(ConfigError, match="prefix_caching and prefix_unit_tokens are set for the whole fleet"):
        make_scenario(**{"fleet.pools": [{"name": "a", "nodes": 1},
                                         {"name": "b", "nodes": 1, "engine": {"prefix_caching": True}}]})
    ok = make_scenario(**{"fleet.engine": {"prefix_caching": True},
                          "fleet.pools": [{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1}]})
    assert all(p.engine.prefix_caching for p in ok.fleet.pools or [])
