"""capsim compare: experiment loading, same seed across strategies, table, Pareto front, JSON, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scenarios import BASE

from sim.compare.experiment import load_experiment
from sim.compare.results import comparison_table, pareto_mask
from sim.compare.runner import run_experiment
from sim.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _experiment(tmp_path: Path) -> Path:
    base = {**BASE, "duration_s": 30, "api": {"provider": "together", "model": "llama-3.1-8b",
                                             "limits": {"rpm": 120, "bucket_s": 5},
                                             "retry": {"max_retries": 1, "backoff_base_s": 0.2}}}
    base["traffic"] = {**BASE["traffic"], "rate_rps": 30.0}
    exp = {
        "name": "t",
        "base": base,
        "strategies": [
            {"name": "all_api", "fleet_nodes": 0, "spill": {"policy": "all_api"}},
            {"name": "never", "spill": {"policy": "never"}},
            {"name": "queue", "fleet_nodes": [1, 2], "spill": {"policy": "queue_length", "max_waiting": 2}},
        ],
        "fleet_sizes": [1],
    }
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(exp))
    return p


def test_compare_runs_every_strategy_on_the_same_arrivals(tmp_path):
    _exp, runs = load_experiment(_experiment(tmp_path))
    assert [r.label for r in runs] == ["all_api", "never", "queue@1", "queue@2"]
    assert {r.scenario.seed for r in runs} == {1}
    res = run_experiment(runs, workers=1)
    df = comparison_table(runs, res)
    arrived = df["arrived"].tolist()
    assert len(set(arrived)) == 1  # common random numbers
    never = df.set_index("strategy").loc["never"]
    assert never["api_usd"] == 0 and never["spill_request_share"] == 0
    allapi = df.set_index("strategy").loc["all_api"]
    assert allapi["self_host_usd"] == 0 and allapi["spill_request_share"] == 1.0
    assert allapi["api_rate_limited"] > 0 and allapi["api_retries"] > 0 and allapi["api_failed"] > 0
    for _, r in df.iterrows():  # conservation in every run
        assert r["arrived"] >= r["spilled"] + r["failed"] + r["in_flight"]
    for s in res:
        q = s.runs[0].summary.requests
        assert q.completed + q.spilled + q.rejected + q.failed + q.in_flight == q.arrived
        tl = s.timeline
        assert sum(tl["arrival_rps"]) > 0 and len(tl["time_s"]) == len(tl["spill_rps"])
    assert df["pareto_e2e"].any()
    # same seed → identical table
    df2 = comparison_table(runs, run_experiment(runs, workers=1))
    assert df.equals(df2)


def test_pareto_mask():
    lat = np.array([1.0, 2.0, 3.0, 2.5, np.nan])
    cost = np.array([10.0, 5.0, 1.0, 6.0, 0.0])
    assert pareto_mask(lat, cost).tolist() == [True, True, True, False, False]


def test_bad_experiment_files(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "base": dict(BASE), "strategies": [{"name": "a", "bogus": 1}]}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment(p)
    p.write_text(yaml.safe_dump({"name": "x", "base": dict(BASE),
                                 "strategies": [{"name": "a", "spill": {"policy": "all_api"}}]}))
    with pytest.raises(ConfigError, match="api section"):
        load_experiment(p)
    p.write_text(yaml.safe_dump({"name": "x", "base": {**BASE, "api": {"provider": "nobody"}},
                                 "strategies": [{"name": "a", "spill": {"policy": "all_api"}}]}))
    with pytest.raises(ConfigError, match="unknown provider"):
        load_experiment(p)


def test_cli_compare_json_and_files(tmp_path):
    exp = _experiment(tmp_path)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sim", "compare", str(exp), "--out", str(out), "--json",
                        "--workers", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["strategy"] for d in data] == ["all_api", "never", "queue@1", "queue@2"]
    for d in data:
        for key in ("requests", "latency", "cost", "slo", "api", "spill"):
            assert key in d
        assert {"spilled"} <= d["requests"].keys()
        assert {"rate_limited", "retries", "failed", "calls", "usd"} <= d["api"].keys()
    for f in ("compare.csv", "compare.json", "timelines.csv", "cost_vs_p95_latency.png", "spill_over_time.png",
              "cost_breakdown.png"):
        assert (out / f).stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "sim", "compare", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_shipped_experiment_loads():
    _exp, runs = load_experiment(ROOT / "experiments" / "hybrid_spill.yaml")
    labels = [r.label for r in runs]
    assert "all_api" in labels and "peak_fleet" in labels and any(lab.startswith("hybrid") for lab in labels)
    assert len({r.scenario.seed for r in runs}) == 1
    assert all(r.scenario.api is not None for r in runs)
