"""Demand stated as tokens per day (sim/traffic/demand.py, traffic.output_tokens_per_day / tokens_per_day)."""

from __future__ import annotations

import pytest
from scenarios import BASE

from sim.core.config import apply_overrides, validate_scenario
from sim.core.errors import ConfigError

FIXED = {"name": "c", "share": 0.25, "input_tokens": {"dist": "fixed", "value": 900},
         "output_tokens": {"dist": "fixed", "value": 100}}


def _raw(**traffic):
    raw = {**BASE, "traffic": {"classes": [FIXED, {**FIXED, "name": "d", "share": 0.75,
                                                    "output_tokens": {"dist": "fixed", "value": 300}}], **traffic}}
    return raw


def test_output_tokens_per_day_becomes_the_mean_rate():
    sc = validate_scenario(_raw(output_tokens_per_day=86_400 * 250.0), "t")
    # mean output per request = 0.25 × 100 + 0.75 × 300 = 250 → 1 request/s
    assert sc.traffic.rate_rps == pytest.approx(1.0)
    assert sc.demand["output_tokens_per_day"] == 86_400 * 250.0
    both = validate_scenario(_raw(tokens_per_day=86_400 * 1150.0), "t")  # 900 + 250 tokens per request
    assert both.traffic.rate_rps == pytest.approx(1.0)


@pytest.mark.parametrize("traffic", [{"rate_rps": 1.0, "output_tokens_per_day": 1e6}, {}])
def test_exactly_one_demand(traffic):
    with pytest.raises(ConfigError) as exc:
        validate_scenario(_raw(**traffic), "t")
    assert "rate_rps" in str(exc.value)


def test_set_override_replaces_the_other_demand_key():
    raw = apply_overrides(_raw(rate_rps=3.0), ["traffic.output_tokens_per_day=21600000"])
    assert validate_scenario(raw, "t").traffic.rate_rps == pytest.approx(1.0)


def test_a_sweep_axis_over_tokens_per_day(tmp_path):
    import yaml

    from sim.sweep.experiment import load_experiment

    base = {**BASE, "traffic": _raw(rate_rps=2.0)["traffic"]}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({
        "name": "d", "base": "base.yaml", "axes": {"traffic.output_tokens_per_day": [86_400 * 250.0, 86_400 * 500.0]},
        "seeds": [1]}))
    exp = load_experiment(tmp_path / "exp.yaml")
    assert [p.scenario.traffic.rate_rps for p in exp.points] == pytest.approx([1.0, 2.0])
