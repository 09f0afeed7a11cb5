"""`capsim run` end to end: files, JSON, overrides, determinism, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "experiments" / "default.yaml"


def capsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=cwd)


def _small(tmp_path: Path, **edits) -> Path:
    raw = yaml.safe_load(DEFAULT.read_text())
    raw["duration_s"] = 60
    raw["warmup_s"] = 0
    for k, v in edits.items():
        node = raw
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_report_and_is_byte_identical(tmp_path):
    scen = _small(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    r1 = capsim("run", str(scen), "--out", str(a))
    assert r1.returncode == 0, r1.stderr
    assert "TTFT" in r1.stdout and "per M output tokens" in r1.stdout
    for name in ("requests.parquet", "timeseries.parquet", "timeseries_nodes.parquet", "summary.json",
                 "report.html", "latency_cdf.png", "load_over_time.png", "node_utilisation.png"):
        assert (a / name).stat().st_size > 0, name
    r2 = capsim("run", str(scen), "--out", str(b))
    assert r2.returncode == 0
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    html = (a / "report.html").read_text()
    assert "data:image/png;base64" in html
    assert not list(a.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_json_and_overrides(tmp_path):
    scen = _small(tmp_path)
    r = capsim("run", str(scen), "--no-report", "--json", "--set", "fleet.nodes=2", "--set", "traffic.rate_rps=5",
               "--seed", "9")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["fleet"]["nodes"] == 2 and s["seed"] == 9
    for key in ("arrived", "completed", "spilled", "rejected", "in_flight"):
        assert key in s["requests"]
    for m in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(s["latency"][m]) >= {"mean", "p50", "p90", "p95", "p99"}
    assert set(s["throughput"]) >= {"requests_per_s", "input_tokens_per_s", "output_tokens_per_s"}
    assert set(s["utilisation"]) >= {"busy_fraction", "kv_fraction_mean", "kv_fraction_p95"}
    assert "attainment" in s["slo"]
    assert set(s["cost"]) >= {"total_usd", "self_host_usd", "api_usd", "usd_per_mtok_output", "usd_per_mtok_total"}
    assert abs(s["throughput"]["requests_per_s"] - 5) < 1.0


@pytest.mark.parametrize(
    "edits, sets, expect",
    [
        ({"fleet.colour": "blue"}, [], "fleet.colour: unknown key"),
        ({"traffic.rate_rps": -3}, [], "traffic.rate_rps"),
        ({"fleet.nodes": "four"}, [], "fleet.nodes"),
        ({}, ["fleet.model=Llama-3.1-70B"], "GB missing"),
        ({}, ["fleet.gpu=TPU-v9"], "unknown GPU"),
        ({}, ["traffic.classes.0.input_tokens.p95=10"], "traffic.classes.0.input_tokens"),
        ({}, ["nonsense"], "--set"),
        ({}, ["traffic.classes.0.model=Mixtral-8x7B"], "traffic.classes.0.model: no pool serves model"),
        ({"fleet.nodes": None}, ["fleet.pools=[{name: a, nodes: 1, gpu: TPU-v9}]"], "fleet.pools.0.gpu: unknown GPU"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, edits, sets, expect):
    scen = _small(tmp_path, **edits)
    args = ["run", str(scen), "--no-report"]
    for s in sets:
        args += ["--set", s]
    r = capsim(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert expect in lines[0]
    if not sets or not sets[0].startswith("nonsense"):
        assert str(scen) in lines[0] or "--set" in lines[0]


def test_missing_file_and_bad_yaml(tmp_path):
    r = capsim("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "file not found" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration_s: [1, 2\n")
    r = capsim("run", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_failed_run_does_not_corrupt_previous_results(tmp_path):
    scen = _small(tmp_path)
    out = tmp_path / "out"
    assert capsim("run", str(scen), "--out", str(out)).returncode == 0
    before = (out / "summary.json").read_bytes()
    assert capsim("run", str(scen), "--out", str(out), "--set", "fleet.nodes=0").returncode == 2
    assert (out / "summary.json").read_bytes() == before


def test_stream_mode_matches_exact_summary(tmp_path):
    scen = _small(tmp_path)
    exact, streamed = tmp_path / "exact", tmp_path / "streamed"
    assert capsim("run", str(scen), "--out", str(exact)).returncode == 0
    r = capsim("run", str(scen), "--out", str(streamed), "--stream")
    assert r.returncode == 0, r.stderr
    a = json.loads((exact / "summary.json").read_text())
    b = json.loads((streamed / "summary.json").read_text())
    assert a["requests"] == b["requests"]
    assert a["cost"] == b["cost"]
    for m in ("ttft_s", "tpot_s", "e2e_s"):
        assert b["latency"][m]["p95"] == pytest.approx(a["latency"][m]["p95"], rel=2e-3)
    import pandas as pd
    assert len(pd.read_parquet(streamed / "requests.parquet")) == a["requests"]["completed"]
    assert (streamed / "latency_cdf.png").stat().st_size > 0


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_scenario_given_to_an_experiment_command_is_named(command):
    r = capsim(command, str(DEFAULT))
    assert r.returncode == 2
    assert "this is a scenario" in r.stderr and "Traceback" not in r.stderr
