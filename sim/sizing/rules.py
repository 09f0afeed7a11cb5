"""The guide's sizing rules (size to a percentile of the offered rate plus headroom) and the offered-rate
statistics they read: mean, P50/P90/P95/P99 and peak rate over 10-minute windows of a scenario's traffic."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sim.core.config import Scenario
from sim.core.errors import ConfigError

#: windows over which the traffic P-rates are taken (the guide's and ``capsim traffic``'s 10 minutes)
RATE_WINDOW_S = 600.0
RATE_KEYS = ("mean_rps", "p50_rps", "p90_rps", "p95_rps", "p99_rps", "peak_rps")


@dataclass(frozen=True)
class SizingRule:
    """A rule of the guide's capacity table: size to ``stat`` × (1 + ``headroom``) (and the peak if
    ``spike_reserve``)."""

    workload: str
    label: str
    stat: str
    headroom: float
    spike_reserve: bool = False

    def rate_rps(self, stats: dict[str, float]) -> float:
        """The rate (requests/s) this rule sizes the fleet for, given the traffic's P-rates."""
        rate = stats[self.stat] * (1.0 + self.headroom)
        if self.spike_reserve:
            rate = max(rate, stats["peak_rps"])
        return rate


RULES: tuple[SizingRule, ...] = (
    SizingRule("steady_b2b", "P95+20%", "p95_rps", 0.20),
    SizingRule("consumer_chat", "P95+30%", "p95_rps", 0.30),
    SizingRule("consumer_chat", "P95+30% + spike reserve", "p95_rps", 0.30, spike_reserve=True),
    SizingRule("voice_agents", "P99+50%", "p99_rps", 0.50),
    SizingRule("internal_batch", "P50", "p50_rps", 0.0),
    SizingRule("healthcare_financial", "P99+100%", "p99_rps", 1.00),
    SizingRule("free_tier", "P90+0%", "p90_rps", 0.0),
)


WORKLOADS: tuple[str, ...] = tuple(dict.fromkeys(r.workload for r in RULES))


def select_rules(workloads: Iterable[str] | None, source: str = "--rule") -> tuple[SizingRule, ...]:
    """The rules of the named workloads (all rules when none are named)."""
    names = list(workloads or [])
    for n in names:
        if n not in WORKLOADS:
            raise ConfigError(source, n, f"unknown workload rule (known: {', '.join(WORKLOADS)})")
    return tuple(r for r in RULES if not names or r.workload in names)


def nodes_for_rate(rate_rps: float, goodput_rps: float) -> int:
    """⌈rate ÷ goodput⌉, at least 1 (a relative 1e-9 slack keeps exact multiples from rounding up)."""
    return max(1, math.ceil(rate_rps / goodput_rps * (1.0 - 1e-9)))


def is_constant_rate(scenario: Scenario) -> bool:
    """Constant-rate traffic: neither a rate shape nor a replayed trace."""
    t = scenario.traffic
    return getattr(t, "shape", None) is None and getattr(t, "trace", None) is None


def rate_basis(scenario: Scenario) -> str:
    """What the P-rates of :func:`traffic_rate_stats` were taken over, in words: ``constant rate over the 120-s
    run`` or ``4 complete 10-min windows of the 2,400-s run``."""
    if is_constant_rate(scenario) and scenario.traffic.rate_rps is not None:
        return f"constant rate over the {scenario.duration_s:,.0f}-s run"
    n = int(scenario.duration_s // RATE_WINDOW_S)
    windows = f"{n} complete {RATE_WINDOW_S / 60:g}-min window" + ("s" if n != 1 else "")
    return f"{windows} of the {scenario.duration_s:,.0f}-s run"


def traffic_rate_stats(scenario: Scenario) -> dict[str, float]:
    """Mean, P50/P90/P95/P99 and peak offered rate (requests/s) over 10-minute windows of the scenario.

    A constant-rate scenario has every P-rate equal to ``rate_rps``. Shaped or replayed traffic uses the
    traffic module's statistics (those ``capsim traffic SCENARIO --json`` prints): the scenario's own
    arrivals (its seed) over its duration, counted in 10-minute windows."""
    if is_constant_rate(scenario) and scenario.traffic.rate_rps is not None:
        rate = float(scenario.traffic.rate_rps)
        return dict.fromkeys(RATE_KEYS, rate)
    from sim.traffic.arrivals import rate_curve, traffic_chunks
    from sim.traffic.shapes import clock0_hours
    from sim.traffic.stats import traffic_stats

    tr = scenario.traffic
    curve = rate_curve(tr, scenario.base_dir, scenario.source) if tr.trace is None else None
    chunks = traffic_chunks(tr, scenario.base_dir, scenario.duration_s, scenario.seed,
                            scenario.fleet.engine.block_size, scenario.source)
    stats, _ = traffic_stats(chunks, scenario.duration_s, clock0_hours(tr.start_weekday, tr.start_hour), curve,
                             tokens=False)
    if stats.get("p95_rps") is None:
        raise ConfigError(scenario.source, "duration_s", f"needs at least one complete {RATE_WINDOW_S:.0f}-s "
                          "window for the rate percentiles")
    return {k: float(stats[k]) for k in RATE_KEYS}
