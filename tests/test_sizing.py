"""Sizing: per-node goodput by bisection, the simulated minimum fleet against ⌈rate ÷ goodput⌉, the guide's
rules, and `capsim size` end to end (small, short scenarios so the whole file runs in seconds)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scenarios import make_scenario

from sim.core.errors import ConfigError
from sim.sizing.rules import RULES, SizingRule, nodes_for_rate, rate_basis, select_rules, traffic_rate_stats
from sim.sizing.search import node_goodput, size_fleet
from sim.sizing.variants import with_slo

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [1, 2]


def _small(**overrides):
    base = {"duration_s": 90, "warmup_s": 10, "traffic.rate_rps": 5.0, "fleet.nodes": 1}
    return make_scenario(**{**base, **overrides})


@pytest.fixture(scope="module")
def goodput():
    """Goodput of one node on the small scenario (2 seeds, 3 % tolerance), computed once for the module."""
    return node_goodput(_small(), SEEDS, rel_tol=0.03, workers=1)


def test_goodput_bracket_is_tight_and_consistent(goodput):
    g = goodput
    assert g.rate_rps < g.upper_rps <= g.rate_rps * 1.03 + 1e-9
    assert g.evaluations[g.rate_rps].all_met  # the reported goodput passed in every seed
    assert not g.evaluations[g.upper_rps].all_met  # the bound above it failed in some seed
    # passing is monotone in the rate over everything simulated (common random numbers)
    table = g.table().sort_values("rate_rps")
    met = (table["seeds_met"] == table["seeds"]).tolist()
    assert met == sorted(met, reverse=True)


@pytest.mark.parametrize("multiple", [1.5, 2.5])
def test_constant_rate_min_nodes_agrees_with_direct_calculation(goodput, multiple):
    """At a constant rate of (k + ½) × goodput the simulated minimum is ⌈rate ÷ goodput⌉ = k + 1."""
    rate = multiple * goodput.rate_rps
    sc = _small(**{"traffic.rate_rps": rate, "seed": SEEDS[0]})
    res = size_fleet(sc, n_seeds=len(SEEDS), rules=select_rules(["consumer_chat"]), workers=2, goodput=goodput)
    direct = math.ceil(rate / goodput.rate_rps)
    assert res.peak_nodes == direct
    assert res.min_nodes == direct
    assert res.points[direct].all_met and not res.points[direct - 1].all_met
    # P-rates of a constant-rate scenario are its rate; the rule's count is ⌈rule rate ÷ goodput⌉
    assert res.rate_stats["p95_rps"] == pytest.approx(rate)
    row = res.rules_table().iloc[0]
    assert row["nodes"] == nodes_for_rate(1.3 * rate, goodput.rate_rps)
    assert row["nodes_vs_min"] == row["nodes"] - direct
    out = res.to_json()
    for key in ("node_goodput_rps", "min_nodes", "min_nodes_summary", "rules"):
        assert key in out
    assert out["min_nodes_summary"]["fleet"]["nodes"] == direct
    assert set(out["rules"][0]) >= {"rule", "rate_rps", "nodes", "slo_attainment", "total_usd"}
    assert f"{len(SEEDS)}/{len(SEEDS)} seeds" in out["min_nodes_confidence"]["statement"]


def test_rule_arithmetic():
    assert nodes_for_rate(24.0, 12.0) == 2  # exact multiple does not round up
    assert nodes_for_rate(24.1, 12.0) == 3
    assert nodes_for_rate(0.01, 12.0) == 1
    stats = {"mean_rps": 10, "p50_rps": 9, "p90_rps": 14, "p95_rps": 16, "p99_rps": 20, "peak_rps": 40}
    by_label = {r.label: r.rate_rps(stats) for r in RULES}
    assert by_label["P95+20%"] == pytest.approx(19.2)
    assert by_label["P95+30%"] == pytest.approx(20.8)
    assert by_label["P95+30% + spike reserve"] == pytest.approx(40.0)  # the peak wins
    assert by_label["P99+50%"] == pytest.approx(30.0)
    assert by_label["P50"] == pytest.approx(9.0)
    assert by_label["P99+100%"] == pytest.approx(40.0)
    assert by_label["P90+0%"] == pytest.approx(14.0)
    assert SizingRule("x", "x", "p95_rps", 0.3, True).rate_rps({**stats, "peak_rps": 1.0}) == pytest.approx(20.8)
    assert len(select_rules(None)) == len(RULES)
    assert {r.label for r in select_rules(["consumer_chat"])} == {"P95+30%", "P95+30% + spike reserve"}
    with pytest.raises(ConfigError):
        select_rules(["nope"])


def test_slo_overrides_and_shaped_rate_stats():
    sc = with_slo(_small(), {"ttft_p95_s": 1.5, "tpot_p95_s": None})
    assert sc.slo.ttft_p95_s == 1.5 and sc.slo.tpot_p95_s is None
    with pytest.raises(ConfigError):
        with_slo(_small(), {"ttft_p99_s": 1.0})
    with pytest.raises(ConfigError):
        with_slo(_small(), {"ttft_p95_s": -1.0})
    # a step shape: 4 windows at 1×, 2 at 3× (mean rate 5 req/s)
    shaped = _small(**{"duration_s": 3600, "traffic.rate_rps": 5.0, "traffic.shape": {"components": [
        {"type": "piecewise", "points": [[0, 1.0], [4 / 6, 3.0]], "interp": "step"}]}})
    st = traffic_rate_stats(shaped)
    assert st["p50_rps"] < 7 < st["p95_rps"] <= st["peak_rps"]
    assert st["peak_rps"] == pytest.approx(15.0, rel=0.1)
    assert rate_basis(shaped) == "6 complete 10-min windows of the 3,600-s run"


def _write(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "experiments" / "default.yaml").read_text())
    raw.update({"duration_s": 60, "warmup_s": 5})
    raw["traffic"]["rate_rps"] = 15.0
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _capsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True)


def test_cli_size_json_and_files(tmp_path):
    out = tmp_path / "out"
    p = _capsim("size", str(_write(tmp_path)), "--seeds", "1", "--tol", "0.1", "--rule", "consumer_chat",
                "--slo", "ttft_p95_s=2", "--out", str(out), "--json", "-q")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["node_goodput_rps"] > 0
    assert report["min_nodes"] == report["min_nodes_summary"]["fleet"]["nodes"]
    assert [r["rule"] for r in report["rules"]] == ["P95+30%", "P95+30% + spike reserve"]
    for name in ("sizing.json", "sizing.png", "sizing.txt", "min_nodes_summary.json", "sizing_rules.csv"):
        assert (out / name).stat().st_size > 0
    text = (out / "sizing.txt").read_text()
    assert "simulated" in text
    assert "(constant rate over the 60-s run)" in text and "10-min windows" not in text  # no window was used
    assert "% of arrivals after warm-up (target" in text  # what the attainment counts
    assert report["traffic"]["basis"] == "constant rate over the 60-s run" and report["traffic"]["window_s"] is None
    assert "(constant rate over the 60-s run)" in (out / "sizing.html").read_text()
    assert "load_factor" in (out / "sizing_points.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("args, needle", [
    (["--slo", "ttft_p99_s=2"], "--slo: ttft_p99_s: unknown SLO"),
    (["--slo", "ttft_p95_s=fast"], "--slo: ttft_p95_s: expected seconds"),
    (["--rule", "crypto"], "--rule: crypto: unknown workload rule"),
    (["--seeds", "0"], "--seeds"),
])
def test_cli_size_bad_input_is_one_line(tmp_path, args, needle):
    p = _capsim("size", str(_write(tmp_path)), "--no-report", *args)
    assert p.returncode == 2
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
