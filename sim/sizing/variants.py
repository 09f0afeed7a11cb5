"""The scenarios a sizing simulates, derived from the user's: one node at a constant rate (goodput), the
whole scenario at n nodes, the lone-request feasibility check, and the seed set (common random numbers: the
same seeds at every rate and node count)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim.core.config import Scenario, set_dotted, validate_scenario
from sim.core.errors import ConfigError
from sim.metrics.stats import replication_seeds
from sim.sizing.rules import is_constant_rate

#: goodput runs of shaped or replayed scenarios are at most this long (constant-rate runs use duration_s)
GOODPUT_HORIZON_CAP_S = 1800.0
SLO_KEYS = ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")


def derive(scenario: Scenario, changes: dict[str, Any]) -> Scenario:
    """A validated copy of ``scenario`` with dotted-path ``changes`` (``{"fleet.nodes": 3}``) applied; keeps
    its source and base folder (relative data paths still resolve)."""
    raw = scenario.model_dump()
    for key, value in changes.items():
        set_dotted(raw, key, value, scenario.source)
    return validate_scenario(raw, scenario.source, scenario._base_dir)


def with_slo(scenario: Scenario, targets: dict[str, float | None], source: str = "--slo") -> Scenario:
    """``scenario`` with the given SLO targets (seconds; None switches one off)."""
    for k in targets:
        if k not in SLO_KEYS:
            raise ConfigError(source, k, f"unknown SLO (known: {', '.join(SLO_KEYS)})")
    if not targets:
        return scenario
    try:
        return derive(scenario, {f"slo.{k}": v for k, v in targets.items()})
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None


def seed_list(scenario: Scenario, n_seeds: int) -> list[int]:
    """Independent replications: the scenario's seed and the next ``n_seeds − 1`` integers."""
    return replication_seeds(scenario.seed, n_seeds)


def goodput_scenario(scenario: Scenario, rate_rps: float, horizon_s: float | None = None) -> Scenario:
    """One node at a constant ``rate_rps`` of the scenario's request mix (shape and trace timing removed)."""
    horizon = horizon_s if horizon_s is not None else goodput_horizon_s(scenario)
    warmup = scenario.warmup_s if scenario.warmup_s < 0.5 * horizon else 0.05 * horizon
    changes: dict[str, Any] = {"fleet.nodes": 1, "traffic.rate_rps": float(rate_rps), "duration_s": horizon,
                               "warmup_s": warmup}
    if getattr(scenario.traffic, "shape", None) is not None:
        changes["traffic.shape"] = None
    if getattr(scenario.traffic, "trace", None) is not None:
        changes["traffic.trace.rate_scale"] = 1.0
        changes["traffic.trace.loop"] = True
    return derive(scenario, changes)


def goodput_horizon_s(scenario: Scenario) -> float:
    """Simulated seconds of each goodput run: the scenario's duration, capped for shaped traffic."""
    if is_constant_rate(scenario):
        return float(scenario.duration_s)
    return float(min(scenario.duration_s, GOODPUT_HORIZON_CAP_S))


#: the lone-request check: this many requests, one node, spaced LONE_GAP_S apart (each is served alone)
LONE_REQUESTS = 60
LONE_GAP_S = 200.0


def lone_scenario(scenario: Scenario) -> Scenario:
    """One node serving the scenario's mix one request at a time (:data:`LONE_REQUESTS` requests,
    :data:`LONE_GAP_S` apart on average): the best latency any fleet of this node type can give."""
    horizon = LONE_REQUESTS * LONE_GAP_S
    sc = goodput_scenario(scenario, 1.0 / LONE_GAP_S, horizon)
    return derive(sc, {"warmup_s": 0.0, "output.sample_interval_s": 10.0, "slo.require_worst_window": False})


def fleet_scenarios(scenario: Scenario, nodes: int, seeds: Sequence[int]) -> list[Scenario]:
    """The scenario at ``nodes`` nodes, once per seed."""
    return [derive(scenario, {"fleet.nodes": int(nodes), "seed": int(s)}) for s in seeds]
