"""capsim plan's spot shares: spot variants of each minimum fleet (tiny space, 90-second runs)."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner
from scenarios import BASE, rerun_plan_winner

from sim.cli import main
from sim.core.config import validate_scenario
from sim.core.errors import ConfigError
from sim.plan import plan
from sim.plan.report import why_not
from sim.plan.search import candidate_space

SPACE = {"gpus": ["H100-SXM"], "gpus_per_node": [1], "precisions": ["fp8"], "seeds": 1, "explore": 1,
         "pricing": ["on_demand", "reserved_1y"], "spot_shares": [0.5]}


def _scenario(**plan_spec):
    raw = copy.deepcopy(BASE)
    raw.update({"duration_s": 90, "warmup_s": 10, "plan": {**SPACE, **plan_spec}})
    raw["traffic"]["rate_rps"] = 80.0  # two H100 nodes at minimum
    raw["slo"] = {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}
    return validate_scenario(raw, "test")


@pytest.fixture(scope="module")
def result():
    return plan(_scenario(), workers=1)


def test_a_spot_variant_is_cheaper_than_the_same_fleet_without_spot(result):
    rows = {(r["pricing"], r["spot_nodes"]): r for r in result.rows}
    base, spot = rows[("on_demand", 0)], rows[("on_demand", 1)]
    assert base["nodes"] == spot["nodes"] == 2 and spot["meets_slo"]
    assert spot["usd_per_month"] < base["usd_per_month"]
    assert spot["pricing_label"] == "rented on-demand + 50 % spot"
    # one of two on-demand nodes at 70 % off: 1 − 0.7 / 2 of the price
    assert spot["usd_per_month"] == pytest.approx(base["usd_per_month"] * (1 - 0.7 / 2))
    var = result.evaluated_for(spot)
    assert var.scenario.fleet.nodes == 1 and var.scenario.fleet.spot.nodes == 1


def test_a_spot_winner_reproduces_with_capsim_run(result, tmp_path):
    win = result.winner
    assert win["spot_nodes"] == 1 and win["pricing"] == "reserved_1y"  # 1-year reserved + 50 % spot is cheapest
    sc, summary, per_month = rerun_plan_winner(result, tmp_path)
    assert sc.fleet.nodes == 1 and sc.fleet.spot.nodes == 1
    planned = result.evaluated_for(win).sizing.points[2].summaries[0]
    assert summary.latency == planned.latency
    assert per_month == pytest.approx(win["usd_per_month"], rel=1e-9)


def test_a_variant_that_misses_the_slo_is_dropped():
    # an eviction every few seconds and no replacement: the spot node is gone and one node cannot carry the load
    raw = _scenario(spot_evictions_per_node_hour=3600.0).model_dump(mode="json")
    raw["fleet"]["spot"] = {"replace": False, "notice_s": 0}
    res = plan(validate_scenario(raw, "test"), workers=1)
    assert res.spot_variants and res.spot_variants[0].min_nodes is None
    assert all(r["spot_nodes"] == 0 for r in res.rows) and res.winner["spot_nodes"] == 0
    assert any(w["stage"] == "spot variant" for w in why_not(res))


def test_spot_share_flag_narrows_the_space(tmp_path):
    sc = _scenario(spot_shares=[0.5, 1.0])
    assert candidate_space(sc).spec.spot_shares == [0.0, 0.5, 1.0]
    assert candidate_space(sc, spot_shares=[1.0]).spec.spot_shares == [0.0, 1.0]  # no spot is always ranked
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude_none=True)))
    out = CliRunner().invoke(main, ["plan", str(path), "--spot-share", "1", "--no-report", "--json", "-q",
                                    "--workers", "1"])
    assert out.exit_code == 0, out.output
    assert {r["spot_nodes"] for r in yaml.safe_load(out.output)["rows"]} == {0, 2}
    bad = CliRunner().invoke(main, ["plan", str(path), "--spot-share", "1.5", "--dry-run"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_own_spot_nodes_and_spot_shares_conflict():
    raw = _scenario().model_dump(mode="json")
    raw["fleet"]["spot"] = {"nodes": 1}
    with pytest.raises(ConfigError, match="spot_shares"):
        candidate_space(validate_scenario(raw, "test"))
