"""`capsim traffic`: JSON statistics, plots, fitting, errors; shaped traffic through the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"mean_rps", "p50_rps", "p90_rps", "p95_rps", "p99_rps", "peak_rps", "peak_to_trough", "weekday_to_weekend",
        "requests_per_day"}


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["traffic", *args])
    return r.exit_code, r.stdout  # progress lines (long runs) go to stderr


def test_consumer_chat_json_shape_statistics(tmp_path: Path) -> None:
    png = tmp_path / "cc.png"
    code, out = run("consumer_chat", "--days", "7", "--rate-rps", "5", "--json", "--plot", str(png))
    assert code == 0, out
    d = json.loads(out)
    assert d.keys() >= KEYS
    assert d["peak_to_trough"] == pytest.approx(4.0, rel=0.05)
    assert d["weekday_to_weekend"] == pytest.approx(2.5, rel=0.04)
    assert d["mean_rps"] == pytest.approx(5.0, rel=0.01)
    assert d["requests_per_day"] == pytest.approx(5 * 86400, rel=0.01)
    assert d["p50_rps"] < d["p90_rps"] < d["p95_rps"] < d["p99_rps"] <= d["peak_rps"]
    assert d["rps_1min"]["peak_rps"] >= d["peak_rps"]
    assert [x["weekday"] for x in d["per_day"]] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_b2b_and_viral_shapes() -> None:
    code, out = run("b2b_office_hours", "--days", "7", "--rate-rps", "2", "--json")
    d = json.loads(out)
    assert code == 0 and d["weekday_to_weekend"] == pytest.approx(5.0, rel=0.08) and d["peak_to_trough"] > 6
    code, out = run("viral_incident", "--days", "4", "--rate-rps", "0.5", "--json")
    d = json.loads(out)
    assert code == 0 and d["peak_rps"] > 40 * 0.5 * 2  # ≈ 60× at an above-average hour


def test_trace_json_and_classes(tmp_path: Path) -> None:
    code, out = run(str(ROOT / "data/traces/azure2023_conv.csv"), "--json")
    d = json.loads(out)
    assert code == 0 and d["kind"] == "trace" and d["requests"] == 19366
    assert d["trace"]["rows"] == 19366 and round(d["trace"]["mean_rate_rps"], 3) == 5.530
    assert round(d["mean_input_tokens"], 1) == 1154.7 and d["trace"]["start"].startswith("2023-11-16 18:15")
    code, out = run(str(ROOT / "data/traces/mooncake_conversation.jsonl"), "--days", "0.5", "--loop", "--json")
    d = json.loads(out)
    assert code == 0 and d["requests"] > 12031 * 12 * 0.98 and d["trace"]["cached_token_fraction"] > 0.3
    code, out = run("consumer_chat", "--days", "1", "--classes", str(ROOT / "experiments/classes/azure_conv.yaml"),
                    "--json")
    d = json.loads(out)
    assert code == 0 and d["mean_input_tokens"] == pytest.approx(1155, rel=0.05)


def test_fit_shape_from_servegen_series(tmp_path: Path) -> None:
    out_yaml = tmp_path / "fitted.yaml"
    series = str(ROOT / "data/traces/servegen/rate_language_m-large_600s.csv")
    code, out = run(series, "--json")  # 237 M expected arrivals: per-minute counts
    d = json.loads(out)
    assert code == 0 and d["kind"] == "rate_series" and d["mean_rps"] == pytest.approx(195.84, rel=1e-3)
    assert d["sampling"].startswith("per-minute") and d["p95_rps"] == pytest.approx(341.8, rel=0.01)
    code, out = run(series, "--rate-rps", "2", "--fit-shape", str(out_yaml), "--json")
    d = json.loads(out)
    assert code == 0 and d["fit"]["rate_rps"] == pytest.approx(195.8, rel=0.01) and d["sampling"] == "every arrival"
    code, out = run(str(out_yaml), "--rate-rps", "2", "--days", "14", "--json")
    d2 = json.loads(out)
    assert code == 0 and d2["mean_rps"] == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("args,msg", [
    (["no_such_shape"], "no such shape"),
    (["consumer_chat", "--days", "-1"], "--days"),
    (["data/traces/azure2023_conv.csv", "--fit-shape", "x.yaml"], "needs at least 24 h"),
])
def test_errors_are_one_line_exit_2(args: list[str], msg: str) -> None:
    args = [str(ROOT / a) if a.startswith("data/") else a for a in args]
    r = CliRunner().invoke(main, ["traffic", *args])
    assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_shaped_scenario_runs_through_simulation() -> None:
    from sim.core.config import validate_scenario
    from sim.runner.simulation import simulate

    raw = {"duration_s": 120, "seed": 3, "fleet": {"nodes": 1},
           "traffic": {"rate_rps": 2.0, "shape": "viral_incident", "start_hour": 16,
                       "classes": [{"name": "chat", "share": 1, "input_tokens": {"dist": "fixed", "value": 200},
                                    "output_tokens": {"dist": "fixed", "value": 20}}]}}
    res = simulate(validate_scenario(raw))
    assert 100 < len(res.requests) < 400


def test_text_report_names_the_span_and_its_ten_minute_windows() -> None:
    """A 600-s scenario reads '600 s (1 complete 10-min window)', not '0.00694 days'."""
    code, out = run(str(ROOT / "experiments/default.yaml"))
    assert code == 0, out
    head = out.splitlines()[0]
    assert "600 s (1 complete 10-min window)" in head and "days" not in head
    code, out = run("consumer_chat", "--days", "2", "--rate-rps", "1")
    assert code == 0 and "2 days (288 complete 10-min windows)" in out.splitlines()[0]
