"""The fleet: node slots of three kinds, their life cycle and billing, and routing to the nodes that accept.

Slots are numbered reserved first, then spot, then on-demand (``fleet.max_nodes`` in all); a request's
``node`` is its slot. A slot is ``down``, ``starting`` (requested, billed, not serving yet), ``up``
(serving and routed to), ``draining`` (serving its requests, no new ones; terminated when empty) or
``evicting`` (spot notice: no new requests; killed at the end of the notice).

Billing: every slot is billed per second from the moment its node is requested until it is terminated;
reserved and initial spot nodes from t = 0. ``billed_gpu_hours`` clips to the period [0, duration_s].

If no node accepts requests (every node evicted or draining), arrivals wait in a fleet-level queue and are
dispatched the moment a node comes up, so no request is ever dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum

import numpy as np
import simpy

from sim.core.config import Scenario
from sim.engine.protocol import NodeEngine, NodeFactory
from sim.fleet.router import make_router
from sim.traffic.request import Request

RESERVED, SPOT, ON_DEMAND = "reserved", "spot", "on_demand"


class SlotState(StrEnum):
    """Life-cycle state of a slot (module docstring). A ``StrEnum``: equal to its name as a string."""

    UP = "up"
    STARTING = "starting"
    DRAINING = "draining"
    EVICTING = "evicting"
    DOWN = "down"


class Slot:
    """One place in the fleet where a node can run."""

    __slots__ = ("index", "kind", "node", "state", "intervals", "busy_prev_s", "steps_prev", "generation",
                 "work_prev")

    def __init__(self, index: int, kind: str) -> None:
        self.index = index
        self.kind = kind
        self.node: NodeEngine | None = None
        self.state = SlotState.DOWN
        self.intervals: list[list[float]] = []  # billed [start, end] (end = -1 while open)
        self.busy_prev_s = 0.0  # busy seconds of earlier nodes in this slot
        self.steps_prev = 0
        self.generation = 0
        # finished-step work of earlier nodes in this slot (tokens, pairs, ctx, steps)
        self.work_prev = (0, 0.0, 0.0, 0)

    def busy_s(self) -> float:
        return self.busy_prev_s + (self.node.snapshot().busy_s if self.node is not None else 0.0)

    def work_totals(self) -> tuple[int, float, float, int]:
        """(Σ tokens, Σ attention pairs, Σ context tokens, steps) of every node this slot has run, as of now."""
        if self.node is None:
            return self.work_prev
        p, w = self.work_prev, self.node.work_totals()
        return p[0] + w[0], p[1] + w[1], p[2] + w[2], p[3] + w[3]


class FleetManager:
    """Owns the node slots, the router over accepting nodes, scaling actions and spot evictions."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        make_node: NodeFactory,
        on_done: Callable[[Request], None],
        rng_router: np.random.Generator,
        rng_spot: np.random.Generator,
    ) -> None:
        self.env = env
        self.sc = scenario
        self.make_node = make_node
        self.on_done = on_done
        self.rng_spot = rng_spot
        fl = scenario.fleet
        kinds = [RESERVED] * fl.nodes + [SPOT] * fl.spot.nodes + [ON_DEMAND] * fl.on_demand.max_nodes
        self.slots = [Slot(i, k) for i, k in enumerate(kinds)]
        self.active: list[NodeEngine] = []  # accepting nodes, in slot order; the router indexes this list
        self.router = make_router(scenario.router.policy, self.active, rng_router)
        self.pending: deque[Request] = deque()
        self.startup_s = fl.on_demand.provision_s + fl.on_demand.model_load_s
        self.last_scale_s = -float("inf")
        self.events: list[tuple[float, int, str, str]] = []  # (time_s, slot, kind, what)
        self.evicted_sink: Callable[[Request], None] = self.dispatch
        for slot in self.slots:
            if slot.kind in (RESERVED, SPOT):
                self._bring_up(slot, billed_from=0.0)

    # -- routing ----------------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> None:
        """Send a request to the node the router picks among accepting nodes (or hold it if there is none)."""
        if self.active:
            self.active[self.router.pick(req)].submit(req)
        else:
            self.pending.append(req)

    # -- life cycle -------------------------------------------------------------------------------------
    def _log(self, slot: Slot, what: str) -> None:
        self.events.append((self.env.now, slot.index, slot.kind, what))

    def _bring_up(self, slot: Slot, billed_from: float | None = None) -> None:
        slot.generation += 1
        slot.node = self.make_node(slot.index, self._done_callback(slot))
        slot.state = SlotState.UP
        if billed_from is not None:
            slot.intervals.append([billed_from, -1.0])
        self.active.append(slot.node)
        self.active.sort(key=lambda n: n.node_id)
        self.router.nodes_changed()
        self._log(slot, "up")
        if slot.kind == SPOT and self.sc.fleet.spot.evictions_per_node_hour > 0:
            rate = self.sc.fleet.spot.evictions_per_node_hour / 3600.0
            delay = float(self.rng_spot.exponential(1.0 / rate))
            gen = slot.generation
            self._after(delay, self._eviction_notice, slot, gen)
        while self.pending and self.active:
            self.dispatch(self.pending.popleft())

    def _done_callback(self, slot: Slot) -> Callable[[Request], None]:
        def done(req: Request) -> None:
            self.on_done(req)
            if slot.state == SlotState.DRAINING and slot.node is not None and slot.node.in_flight_count() == 0:
                self._terminate(slot)

        return done

    def withdrawn(self, slot: Slot) -> None:
        """A request left ``slot``'s node unfinished (its client gave up): a draining node may now be empty."""
        if slot.state == SlotState.DRAINING and slot.node is not None and slot.node.in_flight_count() == 0:
            self._terminate(slot)

    def start(self, slot: Slot) -> None:
        """Request a node in ``slot``: billed from now, serving after the start-up delay."""
        slot.state = SlotState.STARTING
        slot.generation += 1
        slot.intervals.append([self.env.now, -1.0])
        self._log(slot, "requested")
        gen = slot.generation
        self._after(self.startup_s, self._ready, slot, gen)

    def _after(self, delay_s: float, fn: Callable[[Slot, int], None], slot: Slot, generation: int) -> None:
        """Call ``fn(slot, generation)`` ``delay_s`` from now (the generation tells a stale timer from a live one)."""

        def fire(_event: simpy.Event) -> None:
            fn(slot, generation)

        self.env.timeout(delay_s).callbacks.append(fire)

    def _ready(self, slot: Slot, generation: int) -> None:
        if slot.state == SlotState.STARTING and slot.generation == generation:
            self._bring_up(slot)

    def _stop_routing(self, slot: Slot) -> None:
        if slot.node is not None and slot.node in self.active:
            self.active.remove(slot.node)
            self.router.nodes_changed()

    def drain(self, slot: Slot) -> None:
        """Stop routing to ``slot``; terminate it when its last request finishes (now, if it has none)."""
        if slot.state == SlotState.STARTING:
            self._terminate(slot)
            return
        self._stop_routing(slot)
        slot.state = SlotState.DRAINING
        self._log(slot, "draining")
        assert slot.node is not None  # a slot that is up or draining runs a node
        if slot.node.in_flight_count() == 0:
            self._terminate(slot)

    def _terminate(self, slot: Slot) -> None:
        self._stop_routing(slot)
        if slot.node is not None:
            slot.busy_prev_s += slot.node.snapshot().busy_s
            slot.steps_prev += slot.node.steps
            slot.work_prev = slot.work_totals()
        slot.node = None
        slot.state = SlotState.DOWN
        if slot.intervals and slot.intervals[-1][1] < 0:
            slot.intervals[-1][1] = self.env.now
        self._log(slot, "terminated")

    def _eviction_notice(self, slot: Slot, generation: int) -> None:
        if slot.generation != generation or slot.state not in (SlotState.UP, SlotState.DRAINING):
            return
        self._stop_routing(slot)
        slot.state = SlotState.EVICTING
        self._log(slot, "eviction notice")
        self._after(self.sc.fleet.spot.notice_s, self._evict, slot, generation)

    def _evict(self, slot: Slot, generation: int) -> None:
        if slot.generation != generation or slot.state != SlotState.EVICTING:
            return
        assert slot.node is not None  # an evicting slot runs a node
        orphans = slot.node.kill()
        self._terminate(slot)
        self._log(slot, f"evicted ({len(orphans)} requests re-dispatched)")
        if self.sc.fleet.spot.replace:
            self.start(slot)
        for req in orphans:
            self.evicted_sink(req)

    # -- scaling ----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {str(state): 0 for state in SlotState}
        for s in self.slots:
            c[s.state] += 1
        return c

    def scale_to(self, desired_total: int) -> None:
        """Start or drain on-demand nodes so that up + starting nodes approach ``desired_total``.

        Scale-down waits ``scale_down_cooldown_s`` after the last scaling action; it cancels starting nodes
        first, then drains the most recently added up nodes."""
        now = self.env.now
        serving = [s for s in self.slots if s.state in (SlotState.UP, SlotState.STARTING)]
        current = len(serving)
        od = [s for s in self.slots if s.kind == ON_DEMAND]
        if desired_total > current:
            for slot in [s for s in od if s.state == SlotState.DOWN][: desired_total - current]:
                self.start(slot)
                self.last_scale_s = now
        elif desired_total < current and now - self.last_scale_s >= self.sc.fleet.autoscaler.scale_down_cooldown_s:
            n = current - desired_total
            victims = [s for s in reversed(od) if s.state == SlotState.STARTING]
            victims += [s for s in reversed(od) if s.state == SlotState.UP]
            for slot in victims[:n]:
                self.drain(slot)
                self.last_scale_s = now

    # -- accounting -------------------------------------------------------------------------------------
    def billed_gpu_hours(self, until_s: float) -> dict[str, float]:
        """GPU-hours billed per node kind over [0, until_s]."""
        gpus = self.sc.fleet.gpus_per_node
        out = {RESERVED: 0.0, SPOT: 0.0, ON_DEMAND: 0.0}
        for s in self.slots:
            for start, end in s.intervals:
                stop = until_s if end < 0 else min(end, until_s)
                if stop > start:
                    out[s.kind] += (stop - start) * gpus / 3600.0
        if self.sc.fleet.nodes:  # reserved capacity is paid for the whole period, up or not
            out[RESERVED] = self.sc.fleet.nodes * gpus * until_s / 3600.0
        return out
