"""Shared helpers for the tests: small scenarios built in code."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sim.core.config import Scenario, validate_scenario

BASE: dict[str, Any] = {
    "name": "test",
    "duration_s": 60,
    "seed": 1,
    "traffic": {
        "rate_rps": 5.0,
        "classes": [
            {
                "name": "chat",
                "share": 1.0,
                "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 8000},
                "output_tokens": {"dist": "lognormal", "median": 100, "p95": 400, "max": 2000},
            }
        ],
    },
    "fleet": {"nodes": 2, "gpu": "H100-SXM", "model": "Llama-3.1-8B"},
}


def make_scenario(**overrides: Any) -> Scenario:
    """BASE with dotted-key overrides, e.g. make_scenario(**{"fleet.nodes": 3})."""
    raw = copy.deepcopy(BASE)
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return validate_scenario(raw, "test")




def rerun_plan_winner(result: Any, tmp_path: Path) -> tuple[Scenario, dict[str, Any], float]:
    """Write ``result``'s winner as a scenario file, load it back and run it: (scenario, summary, $/month)."""
    from sim.core.config import load_scenario
    from sim.plan.report import winner_yaml
    from sim.runner.pipeline import run_scenario

    path = tmp_path / "winner.yaml"
    path.write_text(winner_yaml(result))
    sc = load_scenario(path)
    summary = run_scenario(sc).summary
    return sc, summary, summary.cost.total_usd / (sc.duration_s / 3600.0) * 730
