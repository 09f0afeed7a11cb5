"""`capsim size` across GPU types: per-type goodput, minimum fleet and cost, the cheapest type, a type the model
does not fit on, the single-type JSON kept, and --scheduler passed through to the runner (short runs)."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from scenarios import make_scenario

import sim.sizing.search as sizing
from sim.cli.size import size as size_cmd
from sim.core.errors import ConfigError
from sim.sizing.report import format_gpu_report
from sim.sizing.rules import select_rules
from sim.sizing.search import size_across_gpus

#: the keys `capsim size --json` had before GPU types were added (they must all stay)
OLD_KEYS = {"scenario", "source", "duration_s", "seeds", "slo", "traffic", "node_goodput_rps", "goodput",
            "peak_nodes", "min_nodes", "max_nodes", "min_nodes_confidence", "min_nodes_summary", "rules", "points",
            "elapsed_s"}
PRICE = {"H100-SXM": 2.50, "H200-SXM": 3.75, "L40S": 0.75}  # the profiles' $/GPU-hour


def _mixtral(**overrides):
    """Mixtral-8x7B in FP8 (47 GB): fits one H100 or H200, not one L40S (48 GB)."""
    base = {"duration_s": 60, "warmup_s": 5, "traffic.rate_rps": 6.0, "fleet.nodes": 1,
            "fleet.model": "Mixtral-8x7B", "fleet.weights": "fp8", "fleet.kv_cache": "fp8"}
    return make_scenario(**{**base, **overrides})


@pytest.fixture(scope="module")
def multi():
    return size_across_gpus(_mixtral(), ["H100-SXM", "H200-SXM", "L40S"], n_seeds=1,
                            rules=select_rules(["consumer_chat"]), rel_tol=0.1, workers=2)


def test_each_gpu_type_is_sized_and_the_cheapest_named(multi):
    assert [e.gpu for e in multi.entries] == ["H100-SXM", "H200-SXM", "L40S"]
    h100, h200, l40s = multi.entries
    assert l40s.result is None and "does not fit" in (l40s.error or "")
    for e in (h100, h200):
        r = e.result
        assert r is not None and r.scenario.fleet.gpu == e.gpu and r.min_nodes is not None
        assert r.points[r.min_nodes].all_met
        if r.min_nodes > 1:
            assert not r.points[r.min_nodes - 1].all_met
        # every simulated fleet of this type ran on this type, billed at its profile's price
        summ = r.points[r.min_nodes].summaries[0]
        assert summ.fleet.gpu == e.gpu and e.usd_per_gpu_hour == PRICE[e.gpu]
        assert e.min_fleet_usd == pytest.approx(r.min_nodes * PRICE[e.gpu] * 60 / 3600)
    # more memory (KV cache) and bandwidth: one H200 sustains more than one H100
    assert h200.result.goodput.rate_rps > h100.result.goodput.rate_rps
    best = min((h100, h200), key=lambda e: e.min_fleet_usd)
    assert multi.cheapest is best
    rows = {r["gpu"]: r for r in multi.gpu_rows()}
    assert rows[best.gpu]["cheapest"] and sum(r["cheapest"] for r in rows.values()) == 1
    assert rows["L40S"]["min_nodes"] is None and not rows["L40S"]["meets_slo"]
    out = multi.to_json()
    assert out.keys() >= OLD_KEYS and out["cheapest_gpu"] == best.gpu == out["gpu"]
    assert out["min_nodes"] == best.result.min_nodes  # the top level describes the cheapest type
    assert [b["gpu"] for b in out["by_gpu"]] == ["H100-SXM", "H200-SXM", "L40S"]
    assert {b["gpu"]: b["node_goodput_rps"] for b in out["by_gpu"]}["H100-SXM"] == h100.result.goodput.rate_rps
    text = format_gpu_report(multi)
    assert f"cheapest meeting the SLO: {best.gpu}" in text and "L40S" in text and "does not fit" in text


def test_bad_gpu_lists_are_errors():
    with pytest.raises(ConfigError, match="--gpu: unknown GPU 'H900'"):
        size_across_gpus(_mixtral(), ["H100-SXM", "H900"])
    with pytest.raises(ConfigError, match="does not fit"):  # the only type asked cannot run the model
        size_across_gpus(_mixtral(), ["L40S"])


def test_cli_single_gpu_json_keeps_its_keys_and_scheduler_reaches_the_runner(tmp_path, monkeypatch):
    seen: list[str | None] = []
    real = sizing.map_summaries

    class RecordingPool:  # one pool for the whole sizing (issue 10): it gets the address
        def __init__(self, workers=None, scheduler=None):
            seen.append(scheduler)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def map(self, scenarios):
            return real(list(scenarios), 1)  # run here; the address is only recorded

    monkeypatch.setattr(sizing, "SummaryPool", RecordingPool)
    raw = make_scenario(**{"duration_s": 40, "warmup_s": 5, "traffic.rate_rps": 12.0}).model_dump(mode="json")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(size_cmd, [str(path), "--seeds", "1", "--tol", "0.2", "--rule", "consumer_chat",
                                      "--gpu", "H200-SXM", "--scheduler", "tcp://cluster:8786", "--json", "-q",
                                      "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report.keys() >= OLD_KEYS and {"gpu", "cheapest_gpu", "by_gpu"} <= report.keys()
    assert report["min_nodes_summary"]["fleet"]["gpu"] == "H200-SXM" == report["cheapest_gpu"]
    assert len(report["by_gpu"]) == 1 and report["by_gpu"][0]["min_nodes"] == report["min_nodes"]
    assert seen and set(seen) == {"tcp://cluster:8786"}
    assert not (tmp_path / "out" / "sizing_gpus.csv").exists()  # one type: the files of before
