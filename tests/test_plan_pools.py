"""``capsim plan`` on ``fleet.pools`` (sim/plan/pools.py): layouts per model (grow / one pool / prefill:decode),
their pricing, the branch and bound, the winner as a scenario and the report."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from scenarios import BASE

from sim.core.config import validate_scenario
from sim.plan.pool_report import format_text, pools_text, why_not, why_won, winner_scenario, write_outputs
from sim.plan.pool_space import enumerate_layouts, model_demands
from sim.plan.pools import layout_pools, plan_pools
from sim.plan.spec import PlanSpec

FIXED = [{"name": "chat", "share": 1.0, "input_tokens": {"dist": "fixed", "value": 600},
          "output_tokens": {"dist": "fixed", "value": 150}}]
LONG = [{"name": "rag", "share": 1.0, "input_tokens": {"dist": "fixed", "value": 4000},
         "output_tokens": {"dist": "fixed", "value": 60}}]


def _scenario(pools: list[dict[str, Any]], classes: list[dict[str, Any]], rate: float, duration_s: float = 30,
              slo: dict[str, float] | None = None, **fleet: Any) -> Any:
    raw = copy.deepcopy(BASE)
    raw["fleet"] = {**fleet, "pools": pools}
    raw["traffic"] = {"rate_rps": rate, "classes": classes}
    raw["duration_s"] = duration_s
    raw["warmup_s"] = 0
    raw["slo"] = slo or {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}
    return validate_scenario(raw, "t")


@pytest.fixture(scope="module")
def mixed_plan() -> Any:
    """Two models: an 8B model on an A100 pool (kept) + an H100 growth pool, a 70B model on its own pool."""
    classes = [FIXED[0] | {"share": 0.8}, FIXED[0] | {"name": "code", "share": 0.2, "model": "Llama-3.1-70B"}]
    sc = _scenario([{"name": "old", "gpu": "A100-SXM-80GB", "nodes": 1}, {"name": "new", "gpu": "H100-SXM", "nodes": 1},
                    {"name": "big", "model": "Llama-3.1-70B", "gpu": "H100-SXM", "gpus_per_node": 4, "nodes": 1}],
                   classes, 10.0, slo={"ttft_p95_s": 2.0, "tpot_p95_s": 0.1}, model="Llama-3.1-8B")
    return plan_pools(sc, gpus=["H100-SXM", "A100-SXM-80GB"], pricing=["on_demand", "reserved_3y"], n_seeds=1,
                      max_nodes=8, workers=1)


def test_every_model_gets_a_winner_priced_from_its_pools(mixed_plan: Any) -> None:
    res = mixed_plan
    wins = res.winners()
    assert set(wins) == {"Llama-3.1-8B", "Llama-3.1-70B"} and all(w is not None for w in wins.values())
    assert res.kinds == {"Llama-3.1-8B": ["grow", "single"], "Llama-3.1-70B": ["single"]}  # one pool: no "grow"
    for model, win in wins.items():
        ok = [r for r in res.ranked(model) if r["meets_slo"]]
        assert win is ok[0] and win["usd_per_month"] == min(r["usd_per_month"] for r in ok)
        assert win["seeds_met"] == win["seeds"] == 1
    # a one-pool row costs its nodes × GPUs × the option's $/GPU-hour (H100 $2.50, 3-year reserved at 50 % off)
    for r in res.rows:
        if r["meets_slo"] and r["kind"] == "single" and r["pools"][0]["gpu"] == "H100-SXM":
            rate = 2.5 * (0.5 if r["pricing"] == "reserved_3y" else 1.0)
            assert r["usd_per_month"] == pytest.approx(r["gpus"] * rate * 730)
    # every miss counted: misses are the arrivals that did not meet the SLO
    for r in res.rows:
        if r["meets_slo"]:
            assert r["slo_misses"] == pytest.approx(r["arrived"] * (1 - r["slo_attainment"]), abs=0.51)


def test_why_the_winner_won_and_the_others_lost(mixed_plan: Any) -> None:
    res = mixed_plan
    text = format_text(res)
    assert "buy        Llama-3.1-8B:" in text and "buy        Llama-3.1-70B:" in text and "fleet      $" in text
    why = why_won(res, "Llama-3.1-8B")
    assert why.startswith("cheapest of") and "runner-up" in why
    lost = why_not(res)
    assert lost and all(x["reason"] for x in lost)
    win_label = res.winners()["Llama-3.1-8B"]["layout"]
    assert all(not (x["model"] == "Llama-3.1-8B" and x["layout"] == win_label) for x in lost)


def test_the_winner_scenario_reproduces_the_winning_pools(mixed_plan: Any, tmp_path: Any) -> None:
    from sim.runner.pipeline import run_scenario

    raw = winner_scenario(mixed_plan)
    assert raw is not None
    sc = validate_scenario(yaml.safe_load(yaml.safe_dump(raw)), "winner")
    s = run_scenario(sc.model_copy(update={"seed": mixed_plan.seeds[0]})).summary
    assert s.models is not None
    # the plan's check of the winners together is this very run (one seed): the same verdict and attainment
    assert set(mixed_plan.combined) == set(s.models)
    for model, m in s.models.items():
        assert mixed_plan.combined[model]["seeds_met"] == int(m.met)
        assert mixed_plan.combined[model]["attainment"] == m.attainment
    assert "check      the winners together" in format_text(mixed_plan)
    for model, win in mixed_plan.winners().items():
        assert [p["pool"] for p in win["pools"]] == s.models[model].pools
        # reserved pools at the winner's way to pay: the run bills what the plan priced
        assert s.models[model].cost_usd / (sc.duration_s / 3600) * 730 == pytest.approx(win["usd_per_month"],
                                                                                         rel=1e-6)
    files = write_outputs(mixed_plan, tmp_path)
    assert {"plan_pools.json", "plan_pools.csv", "winner.yaml", "pool_plan.png", "plan.html"} <= set(files)
    doc = (tmp_path / "plan.html").read_text()
    assert doc.count("Why this layout:") == 2 and "SLO att. (misses)" in doc and "data:image/png;base64," in doc


def test_layout_pools_replace_only_that_model() -> None:
    classes = [FIXED[0] | {"share": 0.8}, FIXED[0] | {"name": "code", "share": 0.2, "model": "Llama-3.1-70B"}]
    sc = _scenario([{"name": "a", "gpu": "A100-SXM-80GB", "nodes": 1}, {"name": "big", "model": "Llama-3.1-70B",
                    "gpus_per_node": 4, "nodes": 1}, {"name": "b", "nodes": 1}], classes, 4.0, model="Llama-3.1-8B")
    d8 = next(d for d in model_demands(sc) if d.model == "Llama-3.1-8B")
    assert (d8.pools, d8.growth, d8.share) == ([0, 2], 2, pytest.approx(0.8))
    spec = PlanSpec(gpus=["H100-SXM"], gpus_per_node=[1], precisions=["bf16"])
    _, layouts, _ = enumerate_layouts(sc, spec, d8, ["grow", "single", "disaggregated"], 4)
    by_kind = {lay.kind: lay for lay in layouts}
    assert set(by_kind) == {"grow", "single", "disaggregated"}
    single = layout_pools(sc, d8, by_kind["single"], [3])
    assert [(p["name"], p["model"], p["nodes"]) for p in single] == [("b", "Llama-3.1-8B", 3),
                                                                    ("big", "Llama-3.1-70B", 1)]
    grow = layout_pools(sc, d8, by_kind["grow"], [2])
    assert [(p["name"], p["gpu"], p["nodes"]) for p in grow] == [("a", "A100-SXM-80GB", 1), ("big", "H100-SXM", 1),
                                                                ("b", "H100-SXM", 2)]
    pd = layout_pools(sc, d8, by_kind["disaggregated"], [2, 1])
    assert [(p["name"], p["role"], p["nodes"]) for p in pd] == [("b-prefill", "prefill", 2), ("b-decode", "decode", 1),
                                                               ("big", "mixed", 1)]
    validate_scenario({**sc.model_dump(mode="json"), "fleet": {**sc.model_dump(mode="json")["fleet"], "nodes": None,
                                                                "pools": pd}}, "t")  # a valid fleet
    assert by_kind["grow"].lower_bound_usd_per_month >= 1.0 * 730 * 2.0 * 0  # kept pool priced in (≥ 0)
    assert by_kind["grow"].fixed_usd_per_hour == pytest.approx(sc.fleet.pool_list()[0].nodes * 1.2)


def test_disaggregated_layouts_search_the_split_and_report_infeasible_counts() -> None:
    """Long prompts, tight TPOT: the prefill:decode ratio is searched (infeasible prefill counts named), an H100
    prefill + A100 decode mix is a layout of its own, and one mixed pool competes."""
    sc = _scenario([{"name": "prefill", "role": "prefill", "nodes": 1}, {"name": "decode", "role": "decode",
                                                                          "nodes": 1}],
                   LONG, 3.0, slo={"ttft_p95_s": 1.0, "tpot_p95_s": 0.03}, gpu="H100-SXM")
    res = plan_pools(sc, gpus=["H100-SXM", "A100-SXM-80GB"], pricing=["reserved_3y"], n_seeds=1, max_nodes=8,
                     workers=1, explore=2)
    assert res.kinds["Llama-3.1-8B"] == ["disaggregated", "single"]
    labels = {lay.label for lay in res.layouts["Llama-3.1-8B"]}
    assert "prefill H100-SXM ×1 bf16 + decode A100-SXM-80GB ×1 bf16" in labels
    win = res.winners()["Llama-3.1-8B"]
    assert win is not None
    if win["kind"] == "disaggregated":
        roles = [p["role"] for p in win["pools"]]
        assert roles == ["prefill", "decode"] and all(p["nodes"] >= 1 for p in win["pools"])
    split = [s for s in res.sized if s.layout.kind == "disaggregated" and s.nodes is not None]
    assert split and all(len(s.nodes or []) == 2 for s in split)
    for s in split:  # the minimum decode pool: one decode node fewer misses (or the floor of 1)
        p, d = s.nodes or [0, 0]
        assert d == 1 or s.tried.get((p, d - 1)) is False
    assert "prefill/decode" in format_text(res) and all(pools_text(r) for r in res.rows if r["meets_slo"])


def test_branch_and_bound_skips_layouts_that_cannot_win(mixed_plan: Any) -> None:
    """explore = 1: once a layout meets the SLO, layouts bounded at or above its cost are not simulated."""
    sc = mixed_plan.scenario
    res = plan_pools(sc, gpus=["H100-SXM", "A100-SXM-80GB", "L40S"], pricing=["reserved_3y"], n_seeds=1,
                     max_nodes=8, workers=1, explore=1)
    assert res.skipped, "nothing skipped by the cost bound"
    for lay, bound, thr in res.skipped:
        assert bound >= thr and lay.excluded is None
        assert not any(s.layout is lay for s in res.sized)
    assert any(x["stage"] == "cost bound" for x in why_not(res))


def test_pool_options_are_refused_without_pools(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from sim.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**copy.deepcopy(BASE), "duration_s": 10}))
    r = CliRunner().invoke(main, ["plan", str(path), "--layout", "single", "--no-report"])
    assert r.exit_code == 2 and "--layout: single: the scenario has no fleet.pools" in r.output
