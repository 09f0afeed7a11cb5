"""The fleet: node slots of three kinds, their life cycle and billing, and routing to the nodes that accept.

Slots are numbered reserved first, then spot, then on-demand (``fleet.max_nodes`` in all); a request's
``node`` is its slot. A slot is ``down``, ``starting`` (requested, billed, not serving yet), ``up``
(serving and routed to), ``draining`` (serving its requests, no new ones; terminated when empty) or
``evicting`` (spot notice: no new requests; killed at the end of the notice).

Billing: every slot is billed per second from the moment its node is requested until it is terminated;
reserved and initial spot nodes from t = 0. ``billed_gpu_hours`` clips to the period [0, duration_s].

If no node accepts requests (every node evicted or draining), arrivals wait in a fleet-level queue and are
dispatched the moment a node comes up, so no request is ever dropped.

With ``fleet.pools`` (:mod:`sim.fleet.pools`) the slots are numbered pool by pool; each pool has its own node
kind (GPU, model, engine), spot and on-demand settings and start-up delay, and the autoscaler scales each pool on
its own. A request is routed among the accepting nodes of the pools serving its class's model: all of them
together (``router.pool_mode: spread``), or pool after pool (``overflow``: the next pool when the node picked in
one already has ``router.overflow_max_waiting`` requests waiting). A request whose model has no accepting node
waits in the fleet-level queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum

import numpy as np
import simpy

from sim.core.config import Router as RouterSpec
from sim.core.config import Scenario
from sim.engine.protocol import NodeEngine, NodeFactory
from sim.fleet.pools import ON_DEMAND, RESERVED, SPOT, PoolLayout, pool_layout
from sim.fleet.router import Router, make_router
from sim.traffic.request import Request

__all__ = ["ON_DEMAND", "RESERVED", "SPOT", "FleetManager", "Slot", "SlotState"]

SpeedFn = Callable[[NodeEngine], float]
RouterFactory = Callable[[str, Sequence[NodeEngine], np.random.Generator, RouterSpec | None, simpy.Environment | None,
                          SpeedFn | None], Router]


class SlotState(StrEnum):
    """Life-cycle state of a slot (module docstring). A ``StrEnum``: equal to its name as a string."""

    UP = "up"
    STARTING = "starting"
    DRAINING = "draining"
    EVICTING = "evicting"
    DOWN = "down"


class Slot:
    """One place in the fleet where a node can run."""

    __slots__ = ("index", "kind", "pool", "node", "state", "intervals", "busy_prev_s", "steps_prev", "generation",
                 "work_prev")

    def __init__(self, index: int, kind: str, pool: int = 0) -> None:
        self.index = index
        self.kind = kind
        self.pool = pool  # index into the fleet's pools
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


class _Group:
    """The accepting nodes of the pools serving one model and the router(s) over them."""

    def __init__(self, pools: list[int], nodes: list[NodeEngine], overflow: int | None,
                 make: Callable[[list[NodeEngine]], Router]) -> None:
        self.pools = pools
        self.nodes = nodes  # every accepting node of these pools, in slot order
        self.overflow = overflow  # max waiting before moving on to the next pool (None: spread over all pools)
        if overflow is None:
            self.routers: list[tuple[list[NodeEngine], Router]] = [(nodes, make(nodes))]
        else:
            self.routers = []
            for _ in pools:
                own: list[NodeEngine] = []
                self.routers.append((own, make(own)))

    def add(self, node: NodeEngine, pool_pos: int) -> None:
        lists = [self.nodes] if self.overflow is None else [self.nodes, self.routers[pool_pos][0]]
        for lst in lists:  # the single fleet's list is the manager's ``active``, already holding the node
            if node not in lst:
                lst.append(node)
                lst.sort(key=lambda n: n.node_id)
        for _, r in self.routers:
            r.nodes_changed()

    def remove(self, node: NodeEngine) -> None:
        for lst in [self.nodes] + [own for own, _ in self.routers]:
            if node in lst:
                lst.remove(node)
        for _, r in self.routers:
            r.nodes_changed()

    def pick(self, req: Request) -> NodeEngine | None:
        if self.overflow is None:
            nodes, router = self.routers[0]
            return nodes[router.pick(req)] if nodes else None
        last = None
        for nodes, router in self.routers:
            if nodes:
                last = nodes[router.pick(req)]
                if len(last.waiting) < self.overflow:
                    return last
        return last


class FleetManager:
    """Owns the node slots, the routers over accepting nodes, scaling actions and spot evictions."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        make_node: NodeFactory,
        on_done: Callable[[Request], None],
        rng_router: np.random.Generator,
        rng_spot: np.random.Generator,
        layout: PoolLayout | None = None,
        speed: SpeedFn | None = None,
        router_factory: RouterFactory = make_router,
    ) -> None:
        """``speed(node)``: the node's speed for the weighted routers (tokens/s of its pool for the traffic mix);
        ``router_factory``: builds each router (:func:`sim.fleet.router.make_router`'s signature; tests pass their
        own, since the compiled module calls ``make_router`` directly)."""
        self.env = env
        self.sc = scenario
        self.make_node = make_node
        self.on_done = on_done
        self.rng_spot = rng_spot
        self.layout = layout if layout is not None else pool_layout(scenario)
        self.pools = self.layout.pools
        self.slots = [Slot(i, k, p) for i, (k, p) in enumerate(zip(self.layout.slot_kind, self.layout.slot_pool))]
        self.active: list[NodeEngine] = []  # accepting nodes, in slot order
        policy = scenario.router.policy

        def make(nodes: list[NodeEngine]) -> Router:
            return router_factory(policy, nodes, rng_router, scenario.router, env, speed)

        overflow = scenario.router.overflow_max_waiting if scenario.router.pool_mode == "overflow" else None
        n_groups = len(self.layout.group_models)
        # one group per model (layout.class_group / pool_group index it); a single routing set over every accepting
        # node (the manager's ``active`` list itself) when there is one model and no overflow chain
        if n_groups == 1 and (overflow is None or len(self.pools) == 1):
            self.groups = [_Group(list(range(len(self.pools))), self.active, None, make)]
        else:
            self.groups = [_Group(self.layout.group_pools(g), [], overflow, make) for g in range(n_groups)]
        self.router = self.groups[0].routers[0][1]  # the single fleet's router (index into ``active``)
        self.submitted = [0] * len(self.pools)  # requests sent to each pool's nodes (retries and re-dispatch too)
        self.pending: deque[Request] = deque()
        self.startup_s = self.startup_of(0)
        self.last_scale_s = [-float("inf")] * len(self.pools)
        self.events: list[tuple[float, int, str, str]] = []  # (time_s, slot, kind, what)
        self.evicted_sink: Callable[[Request], None] = self.dispatch
        # where held requests go when a node comes up (disaggregated serving routes its models' requests itself)
        self.redispatch: Callable[[Request], None] = self.dispatch
        self.node_hooks: list[Callable[[str, NodeEngine], None]] = []  # ("up" | "killed", node): sim.fleet.disagg
        for slot in self.slots:
            if slot.kind in (RESERVED, SPOT):
                self._bring_up(slot, billed_from=0.0)

    def startup_of(self, pool: int) -> float:
        """Start-up delay of an on-demand (or replacement spot) node of ``pool``."""
        od = self.pools[pool].on_demand
        return od.provision_s + od.model_load_s

    # -- routing ----------------------------------------------------------------------------------------
    def pick(self, req: Request) -> NodeEngine | None:
        """The accepting node the router picks for ``req`` among its model's pools (None: none accepts)."""
        return self.groups[self.layout.class_group[req.class_idx]].pick(req)

    def next_pools(self, req: Request, node: NodeEngine) -> Iterator[NodeEngine]:
        """``pool_mode: overflow``: the router's pick in each pool after ``node``'s, in order (picked lazily);
        nothing in ``spread`` mode. The spill dispatcher tries them before the hosted API."""
        group = self.groups[self.layout.class_group[req.class_idx]]
        if group.overflow is None:
            return
        pos = group.pools.index(self.layout.slot_pool[node.node_id])
        for nodes, router in group.routers[pos + 1:]:
            if nodes:
                yield nodes[router.pick(req)]

    def accepting(self, req: Request) -> bool:
        """Whether a node of ``req``'s model accepts requests now."""
        return bool(self.groups[self.layout.class_group[req.class_idx]].nodes)

    def submit(self, node: NodeEngine, req: Request) -> None:
        """Send ``req`` to ``node`` (counted for the node's pool)."""
        self.submitted[self.layout.slot_pool[node.node_id]] += 1
        node.submit(req)

    def dispatch(self, req: Request) -> None:
        """Send a request to the node the router picks among accepting nodes (or hold it if there is none)."""
        node = self.pick(req)
        if node is not None:
            self.submit(node, req)
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
        group = self.groups[self.layout.pool_group[slot.pool]]
        group.add(slot.node, group.pools.index(slot.pool))
        self._log(slot, "up")
        spot = self.pools[slot.pool].spot
        if slot.kind == SPOT and spot.evictions_per_node_hour > 0:
            rate = spot.evictions_per_node_hour / 3600.0
            delay = float(self.rng_spot.exponential(1.0 / rate))
            gen = slot.generation
            self._after(delay, self._eviction_notice, slot, gen)
        for hook in self.node_hooks:
            hook("up", slot.node)
        if self.pending:  # held requests go out now, in arrival order (those whose model has no node yet stay)
            held = list(self.pending)
            self.pending.clear()
            for req in held:
                self.redispatch(req)

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
        self._after(self.startup_of(slot.pool), self._ready, slot, gen)

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
            self.groups[self.layout.pool_group[slot.pool]].remove(slot.node)

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
        self._after(self.pools[slot.pool].spot.notice_s, self._evict, slot, generation)

    def _evict(self, slot: Slot, generation: int) -> None:
        if slot.generation != generation or slot.state != SlotState.EVICTING:
            return
        assert slot.node is not None  # an evicting slot runs a node
        node = slot.node
        orphans = node.kill()
        for hook in self.node_hooks:
            hook("killed", node)
        self._terminate(slot)
        self._log(slot, f"evicted ({len(orphans)} requests re-dispatched)")
        if self.pools[slot.pool].spot.replace:
            self.start(slot)
        for req in orphans:
            self.evicted_sink(req)

    # -- scaling ----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {str(state): 0 for state in SlotState}
        for s in self.slots:
            c[s.state] += 1
        return c

    def scale_to(self, desired_total: int, pool: int = 0) -> None:
        """Start or drain ``pool``'s on-demand nodes so that its up + starting nodes approach ``desired_total``.

        Scale-down waits ``scale_down_cooldown_s`` after the pool's last scaling action; it cancels starting nodes
        first, then drains the most recently added up nodes."""
        now = self.env.now
        mine = [s for s in self.slots if s.pool == pool]
        serving = [s for s in mine if s.state in (SlotState.UP, SlotState.STARTING)]
        current = len(serving)
        od = [s for s in mine if s.kind == ON_DEMAND]
        cooldown = self.pools[pool].autoscaler.scale_down_cooldown_s
        if desired_total > current:
            for slot in [s for s in od if s.state == SlotState.DOWN][: desired_total - current]:
                self.start(slot)
                self.last_scale_s[pool] = now
        elif desired_total < current and now - self.last_scale_s[pool] >= cooldown:
            n = current - desired_total
            victims = [s for s in reversed(od) if s.state == SlotState.STARTING]
            victims += [s for s in reversed(od) if s.state == SlotState.UP]
            for slot in victims[:n]:
                self.drain(slot)
                self.last_scale_s[pool] = now

    # -- accounting -------------------------------------------------------------------------------------
    def billed_gpu_hours(self, until_s: float, pool: int | None = None) -> dict[str, float]:
        """GPU-hours billed per node kind over [0, until_s]: of ``pool``, or of the whole fleet (None)."""
        if pool is None and len(self.pools) > 1:
            out = {RESERVED: 0.0, SPOT: 0.0, ON_DEMAND: 0.0}
            for p in range(len(self.pools)):
                for k, h in self.billed_gpu_hours(until_s, p).items():
                    out[k] += h
            return out
        p = pool or 0
        gpus = self.pools[p].gpus_per_node
        out = {RESERVED: 0.0, SPOT: 0.0, ON_DEMAND: 0.0}
        for s in self.slots:
            if s.pool != p:
                continue
            for start, end in s.intervals:
                stop = until_s if end < 0 else min(end, until_s)
                if stop > start:
                    out[s.kind] += (stop - start) * gpus / 3600.0
        if self.pools[p].nodes:  # reserved capacity is paid for the whole period, up or not
            out[RESERVED] = self.pools[p].nodes * gpus * until_s / 3600.0
        return out
