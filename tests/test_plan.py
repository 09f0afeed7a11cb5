"""capsim plan: candidate space, bounds, ranking, the winner YAML and the command (tiny spaces, short runs)."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner
from scenarios import BASE

from sim.cli import main
from sim.core.config import load_scenario, validate_scenario
from sim.core.errors import ConfigError
from sim.plan import plan
from sim.plan.bounds import sample_mix
from sim.plan.candidates import enumerate_candidates, spill_options, tp_divides
from sim.plan.report import winner_yaml, write_outputs
from sim.plan.search import resolve_spec
from sim.runner.pipeline import run_scenario

SPACE = {"gpus": ["H100-SXM", "L40S"], "gpus_per_node": [1], "precisions": ["bf16", "fp8"], "seeds": 1,
         "explore": 4}


def _scenario(**plan_spec):
    raw = copy.deepcopy(BASE)
    raw.update({"duration_s": 90, "warmup_s": 10, "plan": {**SPACE, **plan_spec}})
    raw["traffic"]["rate_rps"] = 8.0
    raw["slo"] = {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}
    return validate_scenario(raw, "test")


@pytest.fixture(scope="module")
def result():
    return plan(_scenario(), workers=1)


def test_tp_rule():
    assert tp_divides(64, 8, 8) and tp_divides(32, 8, 4) and tp_divides(64, 8, 16)
    assert not tp_divides(28, 4, 8)  # 28 heads do not split over 8 GPUs
    assert not tp_divides(24, 6, 4)  # 6 KV heads and 4 do not divide one another


def test_candidates_that_cannot_run_are_excluded():
    sc = _scenario()
    raw = sc.model_dump(mode="json")
    raw["fleet"]["model"] = "Llama-3.1-70B"
    sc70 = validate_scenario(raw, "test")
    spec = resolve_spec(sc70, {"gpus": ["L40S", "A100-SXM-80GB", "H100-SXM"], "gpus_per_node": [1, 4]})
    cands = {c.label: c for c in enumerate_candidates(sc70, spec, sample_mix(sc70))}
    assert "does not fit" in cands["L40S ×1 bf16 seqs 256"].excluded
    assert "no fp8" in cands["A100-SXM-80GB ×4 fp8 seqs 256"].excluded
    assert cands["H100-SXM ×4 fp8 seqs 256"].excluded is None
    assert cands["H100-SXM ×4 fp8 seqs 256"].bounds.capacity_rps > 0


def test_lone_latency_excludes_a_candidate_that_cannot_meet_a_tight_slo():
    raw = _scenario().model_dump(mode="json")
    raw["slo"] = {"ttft_p95_s": 0.01, "tpot_p95_s": 0.05}
    sc = validate_scenario(raw, "test")
    cands = enumerate_candidates(sc, resolve_spec(sc, {}), sample_mix(sc))
    assert all(c.excluded and "lone-request P95 TTFT" in c.excluded for c in cands)


def test_bound_is_never_above_the_simulated_minimum(result):
    sized = [e for e in result.evaluated if e.min_nodes is not None]
    assert sized
    for e in sized:
        assert e.candidate.bounds.min_nodes_lower(result.rate_stats["mean_rps"]) <= e.min_nodes
        assert e.min_nodes == 1 or not e.sizing.points[e.min_nodes - 1].all_met  # one fewer was tried and failed


def test_ranked_by_cost_among_slo_meeting_rows(result):
    rows = result.ranked()
    meeting = [r for r in rows if r["meets_slo"]]
    assert meeting and rows[: len(meeting)] == meeting
    costs = [r["usd_per_month"] for r in meeting]
    assert costs == sorted(costs)
    assert result.winner == meeting[0]
    # pricing variants share one simulated fleet: same nodes and latency, different price
    same = [r for r in meeting if r["candidate"] == meeting[0]["candidate"]]
    assert len({r["pricing"] for r in same}) == len(same) > 1
    assert len({(r["nodes"], r["ttft_p95_s"]) for r in same}) == 1


def test_winner_yaml_reproduces_with_run(result, tmp_path):
    text = winner_yaml(result)
    path = tmp_path / "winner.yaml"
    path.write_text(text)
    sc = load_scenario(path)
    win = result.winner
    assert sc.fleet.nodes == win["nodes"] and sc.fleet.gpu == win["gpu"]
    summary = run_scenario(sc).summary
    ev = result.evaluated_by_label()[win["candidate"]]
    planned = ev.sizing.points[win["nodes"]].summaries[0]
    assert summary.latency == planned.latency and summary.requests == planned.requests
    if win["pricing"] != "owned":
        hours = sc.duration_s / 3600.0
        assert summary.cost.total_usd / hours * 730 == pytest.approx(win["usd_per_month"])


def test_outputs_and_demand_stated_in_tokens(tmp_path):
    raw = _scenario(gpus=["H100-SXM"], precisions=["fp8"], pricing=["on_demand", "owned"]).model_dump(mode="json")
    del raw["traffic"]["rate_rps"]
    raw["traffic"]["output_tokens_per_day"] = 5e7
    sc = validate_scenario(raw, "test")
    res = plan(sc, workers=1)
    files = write_outputs(res, tmp_path)
    assert {"plan.json", "plan.csv", "winner.yaml", "plan.html", "cost_vs_latency.png"} <= set(files)
    win = yaml.safe_load((tmp_path / "winner.yaml").read_text())
    assert win["traffic"]["output_tokens_per_day"] == 5e7 and "rate_rps" not in win["traffic"]
    html = (tmp_path / "plan.html").read_text()
    assert "data:image/png;base64," in html and "Why the others lost" in html


def test_cli_plan_and_a_bad_plan_field(tmp_path):
    sc = tmp_path / "s.yaml"
    raw = _scenario(gpus=["H100-SXM"], precisions=["fp8"]).model_dump(mode="json", exclude_none=True)
    sc.write_text(yaml.safe_dump(raw))
    out = CliRunner().invoke(main, ["plan", str(sc), "--out", str(tmp_path / "out"), "-q", "--workers", "1"])
    assert out.exit_code == 0, out.output
    assert "buy " in out.output and (tmp_path / "out" / "winner.yaml").exists()
    bad = CliRunner().invoke(main, ["plan", str(sc), "--set", "plan.gpus_per_node=[3]", "--no-report"])
    assert bad.exit_code == 2 and "plan.gpus_per_node" in bad.output and "Traceback" not in bad.output


def test_spill_variants_when_the_scenario_has_an_api():
    raw = _scenario(gpus=["L40S"], precisions=["bf16"], pricing=["on_demand"]).model_dump(mode="json")
    raw["api"] = {"provider": "groq", "model": "llama-3.1-8b"}
    sc = validate_scenario(raw, "test")
    res = plan(sc, workers=1)
    spills = {r["spill"] for r in res.rows}
    assert spills == {"none", "predicted_ttft"}
    spilled = next(e for e in res.evaluated if e.candidate.spill == "predicted_ttft")
    assert spilled.scenario.spill is not None and spilled.scenario.spill.policy == "predicted_ttft"
    plain = next(e for e in res.evaluated if e.candidate.spill == "none")
    assert plain.scenario.spill is None
    raw.pop("api")
    no_api = validate_scenario(raw, "test")
    assert spill_options(no_api, resolve_spec(no_api, {})) == ["none"]
    with pytest.raises(ConfigError, match="api"):
        spill_options(no_api, resolve_spec(no_api, {"spill": ["predicted_ttft"]}))


def test_text_table_names_spare_capacity_at_the_mean_not_headroom(result):
    """The ranked table's 1 − mean ÷ capacity is spare capacity at the mean load, not the run's headroom (×, at the
    peak): the column says so and a line under the table defines it."""
    from sim.plan.report import format_text

    text = format_text(result)
    assert "headroom" not in text.split("buy")[0]
    assert "spare@mean" in text and "spare@mean: 1 − mean rate ÷ the fleet's capacity bound" in text
