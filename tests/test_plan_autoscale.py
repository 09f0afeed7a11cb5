"""capsim plan's autoscale dimension: forecast variants of each minimum fleet (tiny space, a 40-minute launch)."""

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
from sim.plan.report import format_text, why_not
from sim.plan.search import candidate_space

SPACE = {"gpus": ["H100-SXM"], "gpus_per_node": [1], "precisions": ["fp8"], "max_num_seqs": [3], "seeds": 1,
         "explore": 1, "pricing": ["on_demand", "reserved_3y"], "autoscale": ["fixed", "forecast"]}
#: 3.4 req/s, then 4× for a quarter hour (6-minute ramps): four nodes for the peak, three for the mean (3 sequences
#: a node: the sizes depend on the shipped step times; 3.0 req/s before the smooth GEMM roof's refit)
LAUNCH = {"components": [{"type": "launch", "start_h": 0.25, "multiplier": 4.0, "duration_h": 0.25, "ramp_h": 0.1}]}


def _raw(**plan_spec):
    raw = copy.deepcopy(BASE)
    raw.update({"duration_s": 2400, "warmup_s": 60, "plan": {**SPACE, **plan_spec}})
    raw["traffic"].update({"rate_rps": 3.4, "shape": LAUNCH})
    raw["slo"] = {"ttft_p95_s": 2.0, "tpot_p95_s": 0.05}
    return raw


@pytest.fixture(scope="module")
def result():
    return plan(validate_scenario(_raw(), "test"), workers=1)


def test_a_forecast_variant_bills_fewer_gpu_hours_than_the_fixed_fleet(result):
    rows = {(r["pricing"], r["autoscale"]): r for r in result.rows}
    fixed, fc = rows[("on_demand", "fixed")], rows[("on_demand", "forecast")]
    assert fixed["nodes"] == fc["nodes"] == 4 and fc["reserved_nodes"] == 3 and fc["meets_slo"]
    assert fc["gpu_hours"] < fixed["gpu_hours"] and fc["usd_per_month"] < fixed["usd_per_month"]
    assert rows[("reserved_3y", "forecast")]["pricing_label"] == "rented, 3-year reserved base + forecast on-demand"
    var = result.evaluated_for(fc)
    fl = var.scenario.fleet
    assert (fl.nodes, fl.on_demand.max_nodes, fl.autoscaler.policy) == (3, 1, "schedule")
    assert fl.autoscaler.rps_per_node == pytest.approx(result.rate_stats["peak_rps"] / 4)


def test_a_forecast_winner_reproduces_with_capsim_run(result, tmp_path):
    win = result.winner
    assert win["autoscale"] == "forecast" and win["pricing"] == "reserved_3y"
    assert "buy        3 + up to 1 node(s) × 1× H100-SXM" in format_text(result)
    sc, summary, per_month = rerun_plan_winner(result, tmp_path)
    assert sc.fleet.nodes == 3 and sc.fleet.on_demand.max_nodes == 1
    planned = result.evaluated_for(win).sizing.points[4].summaries[0]
    assert summary.latency == planned.latency
    assert per_month == pytest.approx(win["usd_per_month"], rel=1e-9)


def test_a_forecast_variant_that_misses_the_slo_is_dropped():
    # on-demand nodes that take longer than the run to start: the base alone meets the peak and misses
    raw = _raw()
    raw["fleet"]["on_demand"] = {"max_nodes": 0, "provision_s": 3000.0}
    res = plan(validate_scenario(raw, "test"), workers=1)
    assert res.forecast_variants and res.forecast_variants[0].min_nodes is None
    assert all(r["autoscale"] == "fixed" for r in res.rows) and res.winner["autoscale"] == "fixed"
    assert any(w["stage"] == "forecast variant" for w in why_not(res))


def test_constant_rate_traffic_skips_forecast_with_a_note():
    raw = _raw()
    raw["traffic"].pop("shape")
    raw["duration_s"] = 90
    raw["warmup_s"] = 10
    res = plan(validate_scenario(raw, "test"), workers=1)
    assert not res.forecast_variants and "constant" in (res.autoscale_note or "")
    assert "autoscale  forecast autoscaling skipped" in format_text(res)
    assert all(r["autoscale"] == "fixed" for r in res.rows)


def test_autoscale_flag_narrows_the_space(tmp_path):
    sc = validate_scenario(_raw(), "test")
    assert candidate_space(sc).spec.autoscale == ["fixed", "forecast"]
    assert candidate_space(sc, autoscale=["fixed"]).spec.autoscale == ["fixed"]
    assert candidate_space(sc, autoscale=["forecast"]).spec.autoscale == ["fixed", "forecast"]  # fixed always
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude_none=True)))
    out = CliRunner().invoke(main, ["plan", str(path), "--autoscale", "fixed", "--no-report", "--json", "-q",
                                    "--workers", "1"])
    assert out.exit_code == 0, out.output
    assert {r["autoscale"] for r in yaml.safe_load(out.output)["rows"]} == {"fixed"}
    bad = CliRunner().invoke(main, ["plan", str(path), "--autoscale", "reactive", "--dry-run"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_own_autoscaler_and_forecast_conflict():
    raw = _raw()
    raw["fleet"]["on_demand"] = {"max_nodes": 2}
    raw["fleet"]["autoscaler"] = {"policy": "queue"}
    with pytest.raises(ConfigError, match=r"plan\.autoscale"):
        candidate_space(validate_scenario(raw, "test"))
