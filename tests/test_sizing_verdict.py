"""`capsim size` judges with the run's verdict (issue 10): attainment counts rejections, infeasible setups fail
in one quick check instead of a long bisection, one worker pool serves every step, $/M output tokens shown."""

from __future__ import annotations

import pytest
from scenarios import make_scenario

from sim.sizing import search as sizing
from sim.sizing.report import format_report
from sim.sizing.search import Infeasible, size_across_gpus, size_fleet


def _small(**overrides):
    base = {"duration_s": 60, "warmup_s": 5, "traffic.rate_rps": 6.0, "fleet.nodes": 1}
    return make_scenario(**{**base, **overrides})


class _NoPool:
    """Stands in for the worker pool: any batch of runs is a failure of the test (the check must be enough)."""

    def __init__(self, workers=None, scheduler=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def map(self, scenarios):  # pragma: no cover - reached only when the quick check is missing
        raise AssertionError("bisection started on an infeasible setup")


def test_rejections_make_sizing_infeasible_at_once(monkeypatch):
    """A quarter of the prompts never fit a node: before, `size` found a "minimum fleet" that passed with
    those requests rejected; now the lone-request check says so without a single bisection step."""
    monkeypatch.setattr(sizing, "SummaryPool", _NoPool)
    sc = _small(**{"fleet.engine": {"max_model_len": 4096}, "traffic.classes": [
        {"name": "chat", "share": 0.75, "input_tokens": {"dist": "fixed", "value": 500},
         "output_tokens": {"dist": "fixed", "value": 100}},
        {"name": "long", "share": 0.25, "input_tokens": {"dist": "fixed", "value": 8000},
         "output_tokens": {"dist": "fixed", "value": 100}}]})
    with pytest.raises(Infeasible, match=r"% of requests can never fit one node"):
        size_fleet(sc, n_seeds=2, workers=1)


def test_targets_below_unloaded_latency_fail_at_once(monkeypatch):
    monkeypatch.setattr(sizing, "SummaryPool", _NoPool)
    with pytest.raises(Infeasible, match="even serving one request at a time"):
        size_fleet(_small(**{"slo.ttft_p95_s": 0.001}), n_seeds=2, workers=1)


def test_demand_far_above_capacity_fails_at_once(monkeypatch):
    monkeypatch.setattr(sizing, "SummaryPool", _NoPool)
    with pytest.raises(Infeasible, match="more than --max-nodes 8"):
        size_fleet(_small(**{"traffic.rate_rps": 2000.0}), n_seeds=1, workers=1, max_nodes=8)


def test_infeasible_gpu_type_is_reported_beside_the_others(monkeypatch):
    sc = _small(**{"slo.ttft_p95_s": 0.1, "traffic.rate_rps": 3.0})
    multi = size_across_gpus(sc, ["L40S", "H100-SXM"], n_seeds=1, rel_tol=0.2, workers=1)
    by = {e.gpu: e for e in multi.entries}
    assert by["L40S"].result is None and "one request at a time" in by["L40S"].error
    assert by["H100-SXM"].result is not None


def test_one_pool_for_every_step_and_cost_per_output_token():
    opened: list[object] = []
    real = sizing.SummaryPool

    class CountingPool(real):
        def __enter__(self):
            opened.append(self)
            return super().__enter__()

    sizing.SummaryPool, saved = CountingPool, sizing.SummaryPool
    try:
        res = size_fleet(_small(), n_seeds=1, rel_tol=0.1, workers=1)
    finally:
        sizing.SummaryPool = saved
    assert len(opened) == 1 and opened[0].batches > 3  # goodput bisection and fleet steps share it
    rep = res.points[res.min_nodes]
    assert rep.all_met and rep.mean("slo.attainment") >= 0.95
    text = format_report(res)
    assert "$/M out tok" in text and "per M output tokens" in text
    assert res.rules_table()["usd_per_mtok_output"].notna().all()
