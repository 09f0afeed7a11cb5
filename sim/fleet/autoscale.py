"""Autoscaling policies: every ``interval_s`` decide how many nodes the fleet should have (rules in
:class:`sim.core.config.Autoscaler`) and let the :class:`~sim.fleet.fleet.FleetManager` start or drain on-demand nodes.

Signals are read from the nodes at the decision instant (no smoothing): KV-cache use or running sequences
for ``target_utilisation``, waiting requests (plus the fleet-level queue) for ``queue``, and the hour of day
or the traffic forecast for ``schedule``. With ``fleet.pools`` each pool's autoscaler reads and scales that pool
alone (its nodes; the fleet-level queue is counted by every pool; a forecast is the whole traffic's rate).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Generator

import simpy

from sim.core.config import Autoscaler
from sim.fleet.fleet import FleetManager, SlotState

RateFn = Callable[[float], float]


def desired_nodes(cfg: Autoscaler, fleet: FleetManager, now_s: float, rate_at: RateFn | None,
                  clock0_h: float = 0.0, pool: int = 0) -> int | None:
    """The node count the policy asks for ``pool`` now (None: no opinion)."""
    slots = [s for s in fleet.slots if s.pool == pool]
    up = [s.node for s in slots if s.state == SlotState.UP and s.node is not None]
    serving = sum(1 for s in slots if s.state in (SlotState.UP, SlotState.STARTING))
    if cfg.policy == "target_utilisation":
        if not up:
            return serving + 1 if fleet.pending else serving
        if cfg.metric == "kv":
            signal = sum(n.snapshot().kv_used_blocks / n.capacity_blocks for n in up) / len(up)
        else:
            signal = sum(n.snapshot().running / n.engine.max_num_seqs for n in up) / len(up)
        return max(1, math.ceil(len(up) * signal / cfg.target_utilisation - 1e-9))
    if cfg.policy == "queue":
        waiting = sum(n.snapshot().waiting for n in up) + len(fleet.pending)
        per_node = waiting / max(1, len(up))
        if per_node > cfg.scale_up_queue:
            return serving + 1
        if per_node < cfg.scale_down_queue:
            return serving - 1
        return serving
    if cfg.policy == "schedule":
        if cfg.rps_per_node is not None and rate_at is not None:
            lead = cfg.lead_s if cfg.lead_s is not None else fleet.startup_of(pool)
            return max(1, math.ceil(rate_at(now_s + lead) / cfg.rps_per_node))
        hours = [h for h, _ in cfg.schedule]
        i = bisect.bisect_right(hours, (clock0_h + now_s / 3600.0) % 24.0) - 1
        return cfg.schedule[i][1] if i >= 0 else cfg.schedule[-1][1]
    return None


def autoscaler_process(env: simpy.Environment, cfg: Autoscaler, fleet: FleetManager, rate_at: RateFn | None,
                       clock0_h: float = 0.0, pool: int = 0) -> Generator[simpy.Event, None, None]:
    """SimPy process: decide every ``interval_s`` (first decision at t = 0) for ``pool``. ``clock0_h``: the
    traffic clock's hour (of the week) at t = 0, so schedules follow local time."""
    while True:
        want = desired_nodes(cfg, fleet, env.now, rate_at, clock0_h, pool)
        if want is not None:
            fleet.scale_to(want, pool)
        yield env.timeout(cfg.interval_s)
