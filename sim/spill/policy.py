"""Spill policies: for each arriving request, serve it on the fleet or send it to the hosted API.

Each policy is a small class with one method, ``decide(req, view) -> Route``. ``view`` (:class:`FleetView`)
shows the node the router would pick and lazily computes what a policy may look at:

* ``waiting`` / ``running`` / KV blocks of that node (its snapshot);
* ``expected_wait_s``: time until the request would first be scheduled. Requests that find a free seat
  (``max_num_seqs`` not reached, KV blocks free) wait only for the prefill of the prompts queued ahead, at
  the node's full-budget prefill rate; requests beyond the free seats also wait for departures, one per
  queued request, at the node's recent departure rate (completions per second, exponentially weighted over
  ``DEPARTURE_TAU_S``, bias-corrected while the window fills; before ``MIN_DEPARTURES`` completions a prior of
  ``running / (PRIOR_OUTPUT_TOKENS × decode step time)``);
* ``predicted_ttft_s``: the expected wait plus the request's own prefill.

The :class:`SpillDispatcher` asks the policy at arrival. With ``late`` set it also re-decides for queued
requests: every ``check_every_s`` it takes requests that have waited ``after_s`` on a node and were never
scheduled off the queue (``node.withdraw``) and sends them to the API. A spilled request keeps its arrival
time, so its TTFT and E2E include the time it queued on the fleet and the API's retries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import simpy

from sim.core.config import (
    AllApi,
    ClassBasedSpill,
    Engine,
    KvPressureSpill,
    NeverSpill,
    PredictedTtftSpill,
    QueueLengthSpill,
    QueueWaitSpill,
    RateBudgetSpill,
    Scenario,
)
from sim.core.errors import ConfigError
from sim.engine.common import NodeSnapshot
from sim.engine.kv import cdiv
from sim.engine.protocol import NodeEngine
from sim.perf.model import StepTimeModel, attention_pairs
from sim.spill.api import ApiStats, HostedApi, resolve_api
from sim.traffic.request import Request

DEPARTURE_TAU_S = 30.0
MIN_DEPARTURES = 5
PRIOR_OUTPUT_TOKENS = 256


class Route(IntEnum):
    FLEET = 0
    API = 1
    API_BATCH = 2


class DepartureRate:
    """Exponentially weighted rate of events (per second) with time constant ``tau_s``."""

    __slots__ = ("tau_s", "t0", "t", "level", "n")

    def __init__(self, tau_s: float, t0: float) -> None:
        self.tau_s = tau_s
        self.t0 = t0
        self.t = t0
        self.level = 0.0
        self.n = 0

    def add(self, now: float) -> None:
        self.level = self.level * math.exp(-(now - self.t) / self.tau_s) + 1.0
        self.t = now
        self.n += 1

    def rate(self, now: float) -> float:
        decayed = self.level * math.exp(-(now - self.t) / self.tau_s)
        filled = 1.0 - math.exp(-max(now - self.t0, 1e-9) / self.tau_s)
        return decayed / (self.tau_s * filled)


class FleetView:
    """What a policy sees of the fleet when deciding for one request (values computed on first use)."""

    def __init__(self, dispatcher: SpillDispatcher, req: Request, node: NodeEngine | None = None) -> None:
        self._d = dispatcher
        self._req = req
        self._node: NodeEngine | None = node  # given: the view of that node (a later pool of an overflow chain)
        self._snap: NodeSnapshot | None = None
        self.now = dispatcher.env.now

    @property
    def available(self) -> bool:
        """Whether any node of the request's model accepts requests now (all may be evicted or draining)."""
        return self._d.fleet.accepting(self._req)

    @property
    def picked(self) -> bool:
        """Whether the router has picked the node already (a policy looked at it)."""
        return self._node is not None

    @property
    def node(self) -> NodeEngine:
        """The node the router picks among the accepting nodes of the request's model; picked once, on first
        use (only when ``available``)."""
        if self._node is None:
            node = self._d.fleet.pick(self._req)
            if node is None:
                raise RuntimeError("a spill policy looked at a node while none accepts requests")
            self._node = node
        return self._node

    @property
    def snapshot(self) -> NodeSnapshot:
        if self._snap is None:
            self._snap = self.node.snapshot()
        return self._snap

    @property
    def waiting(self) -> int:
        return len(self.node.waiting)

    def queued_prompt_tokens(self) -> int:
        """Uncached prompt tokens of the requests waiting on the node (preempted ones: all their tokens)."""
        return sum(r.prompt_tokens + r.num_generated - (r.cached_tokens if r.first_scheduled_s < 0 else 0)
                   for r in self.node.waiting)

    def kv_fraction_with_queue(self) -> float:
        """(KV blocks in use + blocks of the queued prompts and this one) / capacity."""
        node = self.node
        bs = self._d.params(node).block_size
        queued = sum(cdiv(r.prompt_tokens + r.num_generated, bs) for r in node.waiting)
        mine = cdiv(self._req.prompt_tokens, bs)
        return (self.snapshot.kv_used_blocks + queued + mine) / node.capacity_blocks

    def expected_wait_s(self) -> float:
        """Expected time until the request is first scheduled on the node (model in the module docstring)."""
        d, node, snap = self._d, self.node, self.snapshot
        pp = d.params(node)
        ahead = len(node.waiting)
        free_seats = pp.max_seqs - snap.running
        blocked = ahead + 1 - max(free_seats, 0)
        queued_tokens = self.queued_prompt_tokens() if ahead else 0
        if blocked <= 0:
            bs = pp.block_size
            need = cdiv(queued_tokens + self._req.prompt_tokens, bs)
            if need > node.capacity_blocks - snap.kv_used_blocks:
                blocked = ahead + 1  # KV-bound: everyone ahead waits for departures
        wait = queued_tokens / pp.prefill_tokens_per_s
        if blocked > 0:
            wait += blocked / d.departure_rate(node.node_id, snap, self.now)
        return wait

    def predicted_ttft_s(self) -> float:
        req = self._req
        pp = self._d.params(self.node)
        return self.expected_wait_s() + (req.prompt_tokens - req.cached_tokens) / pp.prefill_tokens_per_s \
            + pp.step_floor_s


# --- policies --------------------------------------------------------------------------------------------
class SpillPolicy(Protocol):
    name: str

    def decide(self, req: Request, view: FleetView) -> Route: ...


class Never:
    name = "never"

    def decide(self, req: Request, view: FleetView) -> Route:
        return Route.FLEET


class AllToApi:
    name = "all_api"

    def decide(self, req: Request, view: FleetView) -> Route:
        return Route.API


class QueueLength:
    name = "queue_length"

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting

    def decide(self, req: Request, view: FleetView) -> Route:
        if not view.available:
            return Route.API
        return Route.API if view.waiting >= self.max_waiting else Route.FLEET


class QueueWait:
    name = "queue_wait"

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def decide(self, req: Request, view: FleetView) -> Route:
        if not view.available:
            return Route.API
        return Route.API if view.expected_wait_s() > self.max_wait_s else Route.FLEET


class PredictedTtft:
    name = "predicted_ttft"

    def __init__(self, ttft_s_by_class: Sequence[float], margin: float) -> None:
        self.limit_s = [t * margin for t in ttft_s_by_class]

    def decide(self, req: Request, view: FleetView) -> Route:
        if not view.available:
            return Route.API
        return Route.API if view.predicted_ttft_s() > self.limit_s[req.class_idx] else Route.FLEET


class KvPressure:
    name = "kv_pressure"

    def __init__(self, max_kv_fraction: float) -> None:
        self.max_kv_fraction = max_kv_fraction

    def decide(self, req: Request, view: FleetView) -> Route:
        if not view.available:
            return Route.API
        return Route.API if view.kv_fraction_with_queue() > self.max_kv_fraction else Route.FLEET


class ClassBased:
    name = "class_based"

    def __init__(self, api_classes: set[int], batch_classes: set[int], min_input_tokens: int | None) -> None:
        self.api_classes = api_classes
        self.batch_classes = batch_classes
        self.min_input_tokens = min_input_tokens

    def decide(self, req: Request, view: FleetView) -> Route:
        if req.class_idx in self.batch_classes:
            return Route.API_BATCH
        if req.class_idx in self.api_classes:
            return Route.API
        if self.min_input_tokens is not None and req.prompt_tokens >= self.min_input_tokens:
            return Route.API
        return Route.FLEET


class RateBudget:
    """A token bucket of ``fleet_rps`` holding ``burst_s`` seconds; a request that finds a token stays."""

    name = "rate_budget"

    def __init__(self, fleet_rps: float, burst_s: float) -> None:
        self.rate = fleet_rps
        self.capacity = fleet_rps * burst_s
        self.level = self.capacity
        self.t = 0.0

    def decide(self, req: Request, view: FleetView) -> Route:
        now = view.now
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        if self.level >= 1.0:
            self.level -= 1.0
            return Route.FLEET
        return Route.API


def make_policy(scenario: Scenario) -> SpillPolicy:
    """The policy object for ``scenario.spill`` (``never`` when absent)."""
    spec = scenario.spill
    if spec is None or isinstance(spec, NeverSpill):
        return Never()
    if isinstance(spec, AllApi):
        return AllToApi()
    if isinstance(spec, QueueLengthSpill):
        return QueueLength(spec.max_waiting)
    if isinstance(spec, QueueWaitSpill):
        return QueueWait(spec.max_wait_s)
    if isinstance(spec, PredictedTtftSpill):
        targets = []
        for c in scenario.traffic.classes:
            t = spec.ttft_s
            if t is None and c.slo is not None:
                t = c.slo.ttft_p95_s
            if t is None:
                t = scenario.slo.ttft_p95_s
            if t is None:
                raise ConfigError(scenario.source, "spill.ttft_s",
                                  f"no TTFT target for class '{c.name}': set spill.ttft_s or slo.ttft_p95_s")
            targets.append(t)
        return PredictedTtft(targets, spec.margin)
    if isinstance(spec, KvPressureSpill):
        return KvPressure(spec.max_kv_fraction)
    if isinstance(spec, ClassBasedSpill):
        idx = {c.name: i for i, c in enumerate(scenario.traffic.classes)}
        return ClassBased({idx[n] for n in spec.classes}, {idx[n] for n in spec.batch_classes},
                          spec.min_input_tokens)
    if isinstance(spec, RateBudgetSpill):
        return RateBudget(spec.fleet_rps, spec.burst_s)
    raise ValueError(f"unknown spill policy {spec!r}")  # pragma: no cover


# --- dispatcher ------------------------------------------------------------------------------------------
class SlotLike(Protocol):
    """What the spill dispatcher reads of a fleet slot (:class:`sim.fleet.fleet.Slot`)."""

    @property
    def node(self) -> NodeEngine | None:
        """The node running in this slot, None while it has none (down, starting, evicted)."""
        ...

    @property
    def pool(self) -> int:
        """Index of the slot's pool in ``fleet.pools`` (0 without pools)."""
        ...


class FleetLike(Protocol):
    """What the spill dispatcher reads and calls of the fleet (:class:`sim.fleet.fleet.FleetManager`): whether a
    node accepts a request, the node the router would pick (a policy looks at it before deciding), submitting to
    that node or dispatching (route, or hold while no node accepts), every slot (late spill withdraws stale
    waiting requests from their nodes; a slot's pool picks its wait-estimate parameters) and the held requests
    (late spill takes stale ones from there too)."""

    @property
    def slots(self) -> Sequence[SlotLike]: ...

    @property
    def pending(self) -> MutableSequence[Request]:
        """Requests held (FIFO) while no node accepts."""
        ...

    def dispatch(self, req: Request) -> None: ...

    def pick(self, req: Request) -> NodeEngine | None: ...

    def accepting(self, req: Request) -> bool: ...

    def submit(self, node: NodeEngine, req: Request) -> None: ...

    def next_pools(self, req: Request, node: NodeEngine) -> Iterable[NodeEngine]: ...


@dataclass(frozen=True)
class NodeParams:
    """What the wait estimates need of one pool's nodes: engine limits, full-budget prefill rate, the floor of a
    step, and the step-time model (None: no estimates, an infinitely fast prefill)."""

    block_size: int
    max_seqs: int
    prefill_tokens_per_s: float
    step_floor_s: float
    perf: StepTimeModel | None

    @classmethod
    def of(cls, engine: Engine, perf: StepTimeModel | None) -> NodeParams:
        if perf is None:
            return cls(engine.block_size, engine.max_num_seqs, math.inf, 0.0, None)
        b = engine.max_num_batched_tokens
        return cls(engine.block_size, engine.max_num_seqs, b / perf.step_s(b, attention_pairs(b, b), b),
                   perf.step_s(1, 1, 1, decode_only=True), perf)


class SpillDispatcher:
    """Dispatcher with a spill policy and a hosted API in front of the fleet (see the module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        fleet: FleetLike,
        on_done: Callable[[Request], None],
        perf: StepTimeModel | None = None,
        pool_nodes: Sequence[tuple[Engine, StepTimeModel | None]] | None = None,
    ) -> None:
        """``perf``: the single fleet's step-time model; ``pool_nodes``: (engine, perf) per pool instead."""
        if scenario.api is None and not isinstance(scenario.spill, (NeverSpill, type(None))):
            raise ConfigError(scenario.source, "api", "a spill policy needs an api section")
        self.env = env
        self.fleet = fleet
        self.policy = make_policy(scenario)
        self.api = HostedApi(env, resolve_api(scenario.api, scenario.source), scenario.seed, on_done,
                             self.give_back) if scenario.api is not None else None
        self.late = 0
        self.spilled_at_arrival = 0
        self._rates: dict[int, DepartureRate] = {}
        if pool_nodes is None:
            pool_nodes = [(scenario.fleet.engine, perf)]
        self._params = [NodeParams.of(eng, pf) for eng, pf in pool_nodes]
        self._slot_pool = [slot.pool for slot in fleet.slots]
        late = scenario.spill.late if scenario.spill is not None else None
        if late is not None and fleet.slots:
            env.process(self._late_spill(late.after_s, late.check_every_s))

    # -- estimates ---------------------------------------------------------------------------------------
    def on_fleet_done(self, req: Request) -> None:
        """Observer of terminal requests: completions on a node feed that node's departure rate."""
        if req.node >= 0 and not req.via_api and req.first_token_s >= 0:
            est = self._rates.get(req.node)
            if est is None:
                est = self._rates[req.node] = DepartureRate(DEPARTURE_TAU_S, 0.0)
            est.add(self.env.now)

    def params(self, node: NodeEngine) -> NodeParams:
        """The wait-estimate parameters of ``node``'s pool."""
        return self._params[self._slot_pool[node.node_id]] if len(self._params) > 1 else self._params[0]

    def departure_rate(self, node_idx: int, snap: NodeSnapshot, now: float) -> float:
        est = self._rates.get(node_idx)
        if est is not None and est.n >= MIN_DEPARTURES:
            r = est.rate(now)
            if r > 0:
                return r
        pp = self._params[self._slot_pool[node_idx]] if len(self._params) > 1 else self._params[0]
        running = max(snap.running, 1)
        ctx = snap.kv_used_blocks * pp.block_size
        step = pp.perf.step_s(running, ctx, ctx, decode_only=True) if pp.perf is not None else 1.0
        return running / (PRIOR_OUTPUT_TOKENS * step)

    # -- routing -----------------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> None:
        view = FleetView(self, req)
        route = self.policy.decide(req, view)
        if route == Route.FLEET:
            if view.picked:
                self.fleet.submit(view.node, req)
            else:
                self.fleet.dispatch(req)
            return
        if route == Route.API and view.picked:  # pool overflow: the next pools before the hosted API
            for node in self.fleet.next_pools(req, view.node):
                if self.policy.decide(req, FleetView(self, req, node)) == Route.FLEET:
                    self.fleet.submit(node, req)
                    return
        self.spilled_at_arrival += 1
        self.to_api(req, batch=route == Route.API_BATCH)

    def to_api(self, req: Request, batch: bool = False) -> None:
        """Send ``req`` to the hosted API now."""
        req.via_api = True
        req.spill_s = self.env.now
        req.node = -1
        if self.api is None:  # the constructor refuses a spilling policy without an api section
            raise RuntimeError("a request was spilled but the scenario has no api section")
        self.api.submit(req, batch)

    def give_back(self, req: Request) -> None:
        """The API gave up on ``req``: queue it on the fleet after all (``api.on_give_up: fleet``)."""
        req.via_api = False
        self.fleet.dispatch(req)

    def _late_spill(self, after_s: float, every_s: float) -> Generator[simpy.Event, Any, None]:  # a SimPy process
        env = self.env
        while True:
            yield env.timeout(every_s)
            now = env.now
            for slot in self.fleet.slots:
                node = slot.node
                if node is None:
                    continue
                stale = [r for r in node.waiting
                         if r.first_scheduled_s < 0 and r.api_attempts == 0 and now - r.attempt_s >= after_s]
                for req in stale:
                    if node.withdraw(req):
                        self.late += 1
                        self.to_api(req)
            held = self.fleet.pending
            stale = [r for r in held if r.api_attempts == 0 and now - r.attempt_s >= after_s]
            for req in stale:
                held.remove(req)
                self.late += 1
                self.to_api(req)

    def stats(self) -> dict[str, Any]:
        """API counters plus how requests got there (for ``SimResult.spill``)."""
        out = (self.api.stats if self.api is not None else ApiStats()).as_dict()
        out["policy"] = self.policy.name
        out["provider"] = self.api.spec.name if self.api is not None else None
        out["spilled_at_arrival"] = self.spilled_at_arrival
        out["late_spilled"] = self.late
        return out
