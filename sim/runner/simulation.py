"""Wire a scenario into a SimPy model and run it: arrivals → router → nodes, with a fixed-interval sampler.

Arrivals stop at ``duration_s``; the fleet then keeps serving (draining) until every request is done or
``max_drain_s`` has passed. Nothing here does I/O; :mod:`sim.metrics.tables` and :mod:`sim.report.run_report` turn the
result into tables, a summary and plots.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np
import simpy

from sim.core.config import Engine, Scenario, check_tensor_parallel
from sim.core.errors import ConfigError
from sim.core.rng import stream
from sim.engine import Node, ReferenceNode
from sim.engine.common import NodeSnapshot
from sim.engine.loop import call_later, make_environment
from sim.engine.protocol import NodeEngine
from sim.fleet.autoscale import autoscaler_process
from sim.fleet.fleet import FleetManager, SlotState
from sim.fleet.pools import PoolLayout, pool_layout
from sim.perf.catalog import GpuSpec, ModelSpec, engine_for_stack, get_gpu, get_model
from sim.perf.model import NodeMemory, StepTimeModel, plan_memory
from sim.perf.moe import resolve_layout
from sim.perf.speculative import expected_tokens_per_step
from sim.spill.deferred import BatchQueue
from sim.traffic.arrivals import ArrivalChunk, arrival_chunks
from sim.traffic.clients import Clients
from sim.traffic.request import Request, Status


@dataclass(frozen=True)
class NodeModel:
    """Everything static about one node: hardware, model, memory plan and step-time coefficients."""

    gpu: GpuSpec
    model: ModelSpec
    memory: NodeMemory
    perf: StepTimeModel
    max_model_len: int
    engine: Engine  # the scenario's engine limits completed by the software stack's defaults and scheduler


def work_coefficients(nm: NodeModel) -> tuple[float, float, float, float]:
    """(FLOPs per token, FLOPs per attention pair, HBM bytes per step, HBM bytes per context token) of one
    node: the step-time model's work terms without its efficiency factors (see :mod:`sim.perf.model`)."""
    return (2.0 * nm.model.params_active, nm.model.attention_flops_per_pair(), nm.memory.weight_bytes,
            nm.memory.kv_bytes_per_token)


def build_node_model(scenario: Scenario) -> NodeModel:
    fleet, src = scenario.fleet, scenario.source
    gpu = get_gpu(fleet.gpu, src)
    model = get_model(fleet.model, src)
    layout = resolve_layout(fleet.parallelism, model, gpu, fleet.gpus_per_node, src)
    if fleet.speculative is not None and fleet.speculative.draft_model is not None:
        get_model(fleet.speculative.draft_model, src, "fleet.speculative.draft_model")  # the file named if unknown
    check_tensor_parallel(gpu, model, layout.tensor, src,
                          "fleet.parallelism.tensor" if fleet.parallelism is not None else "fleet.gpus_per_node")
    try:  # the stack's engine defaults for unset fields, and its scheduler
        eng = engine_for_stack(gpu, fleet.stack, fleet.engine, src)
    except ConfigError as exc:
        where = exc.field if exc.field.startswith("fleet.engine") else "fleet.stack"
        raise ConfigError(src, where, exc.problem) from None
    if eng.step_jitter.cv > 0 and eng.step_jitter.seed is None:  # the scenario's seed drives step-time jitter
        eng = eng.model_copy(update={"step_jitter": eng.step_jitter.model_copy(update={"seed": scenario.seed})})
    memory = plan_memory(
        gpu,
        model,
        fleet.gpus_per_node,
        fleet.weights,
        fleet.kv_cache,
        eng.gpu_memory_utilization,
        eng.block_size,
        eng.activation_reserve_gb_per_gpu,
        source=src,
        layout=layout if fleet.parallelism is not None else None,
        speculative=fleet.speculative,
        max_num_seqs=eng.max_num_seqs,
    )
    if eng.num_gpu_blocks_override is not None:
        blocks = eng.num_gpu_blocks_override
        memory = replace(memory, kv_capacity_blocks=blocks, kv_capacity_tokens=blocks * eng.block_size)
    try:
        perf = StepTimeModel.build(gpu, model, fleet.gpus_per_node, fleet.weights, fleet.kv_cache, stack=fleet.stack,
                                   layout=layout, speculative=fleet.speculative)
    except ConfigError as exc:
        raise ConfigError(src, "fleet.stack" if fleet.stack else f"fleet.gpu ({exc.field})", exc.problem) from None
    spec = fleet.speculative
    classes = scenario.traffic.classes
    if spec is not None and any(c.spec_acceptance_rate is not None for c in classes):
        perf = replace(perf, class_tokens_per_step=tuple(
            expected_tokens_per_step(c.spec_acceptance_rate if c.spec_acceptance_rate is not None
                                     else spec.acceptance_rate, spec.num_tokens) for c in classes))
    max_len = min(eng.max_model_len or model.max_context, model.max_context)
    return NodeModel(gpu, model, memory, perf, max_len, eng)


def build_pool_models(scenario: Scenario) -> list[NodeModel]:
    """One :class:`NodeModel` per pool (``fleet.pools``; without them, the single fleet's). Errors name the
    pool's field (``fleet.pools.1.gpus_per_node``)."""
    fleet = scenario.fleet
    if not fleet.pooled:
        return [build_node_model(scenario)]
    out = []
    for i in range(len(fleet.pool_list())):
        try:
            out.append(build_node_model(pool_scenario(scenario, i)))
        except ConfigError as exc:
            field = exc.field.replace("fleet.", f"fleet.pools.{i}.", 1) if exc.field.startswith("fleet.") \
                else exc.field
            raise ConfigError(exc.source, field, exc.problem) from None
    return out


def pool_scenario(scenario: Scenario, pool: int) -> Scenario:
    """``scenario`` with its fleet replaced by pool ``pool`` alone (and that pool's pricing): what the per-node
    and per-fleet machinery (node model, capacity, energy, cost) reads for one pool."""
    fleet = scenario.fleet
    if not fleet.pooled:
        return scenario
    p = fleet.pool_list()[pool]
    update: dict[str, Any] = {"fleet": fleet.pool_fleet(pool)}
    if p.pricing is not None:
        update["pricing"] = p.pricing
    return scenario.model_copy(update=update)


def pool_speeds(scenario: Scenario, layout: PoolLayout, models: list[NodeModel]) -> list[float]:
    """Speed of one node of each pool for the weighted routers: the tokens/s (prompt + output, prefix caching left
    out) it sustains for the mix of the classes of its model (:func:`sim.perf.capacity.node_capacity`). A replayed
    trace without token distributions is taken as 1,024 input and 256 output tokens per request."""
    from sim.perf.capacity import node_capacity
    from sim.traffic.classes import ClassMix

    out = []
    for p, nm in enumerate(models):
        group = layout.pool_group[p]
        classes = [c for c, g in zip(scenario.traffic.classes, layout.class_group) if g == group]
        if classes and all(c.input_tokens is not None and c.output_tokens is not None for c in classes):
            mean_in, mean_out = ClassMix(classes, scenario.base_dir, nm.engine.block_size).mean_tokens()
        else:
            mean_in, mean_out = 1024.0, 256.0
        cap = node_capacity(nm, mean_in, mean_out, 0.0)
        out.append(cap.requests_per_s * (mean_in + mean_out))
    return out


class TimeSeries:
    """Samples taken every ``interval_s``, stored compactly (``array`` buffers, not Python lists) so a week
    sampled every second stays small. Fleet series have one value per sample; per-node series one value
    per sample and node slot (``per_node(name)`` returns them as a [samples, nodes] array)."""

    _NODE_FIELDS: ClassVar[dict[str, str]] = {
        "waiting": "i", "running": "i", "kv_used_blocks": "i", "busy_s": "d", "up": "b", "flops": "d", "hbm_bytes": "d"}
    _FLEET_FIELDS: ClassVar[dict[str, str]] = {
        "time_s": "d", "arrivals": "i", "completions": "i", "deferred": "i", "nodes_up": "i", "nodes_billed": "i"}

    def __init__(self, interval_s: float, nodes: int) -> None:
        self.interval_s = interval_s
        self.nodes = nodes
        fields = {**self._NODE_FIELDS, **self._FLEET_FIELDS}
        self._data: dict[str, array[Any]] = {k: array(code) for k, code in fields.items()}
        self.pools = 0  # per-pool series (``fleet.pools`` runs): one value per sample and pool
        self._pool_data: dict[str, array[Any]] = {}

    def __len__(self) -> int:
        return len(self._data["time_s"])

    @classmethod
    def from_arrays(cls, interval_s: float, fleet: dict[str, np.ndarray],
                    per_node: dict[str, np.ndarray]) -> TimeSeries:
        """A series from every fleet field (one value per sample) and every per-node field ([samples, nodes])."""
        nodes = next(iter(per_node.values())).shape[1]
        out = cls(interval_s, nodes)
        for k, v in {**fleet, **per_node}.items():
            out.set_field(k, v)
        return out

    def set_field(self, name: str, values: np.ndarray) -> None:
        """Replace one fleet or per-node series (per-node: [samples, nodes]) with ``values``."""
        code = self._data[name].typecode
        self._data[name] = array(code, np.ascontiguousarray(values, dtype=np.dtype(code)).tobytes())

    def append(self, fleet: dict[str, float], per_node: dict[str, list]) -> None:
        for k, v in fleet.items():
            self._data[k].append(v)
        for k, values in per_node.items():
            self._data[k].extend(values)

    def append_pools(self, values: dict[str, list[int]]) -> None:
        """Per-pool counts of one sample: ``arrivals`` (requests sent to the pool's nodes during the interval),
        ``completions`` (completed on its nodes), ``nodes_billed``."""
        for k, v in values.items():
            self.pools = len(v)
            self._pool_data.setdefault(k, array("i")).extend(v)

    def set_pools(self, values: dict[str, np.ndarray]) -> None:
        """Every per-pool series at once ([samples, pools] arrays; a sharded run's merged cells)."""
        for k, v in values.items():
            self.pools = v.shape[1]
            self._pool_data[k] = array("i", np.ascontiguousarray(v, dtype=np.dtype("i")).tobytes())

    def per_pool(self, name: str) -> np.ndarray:
        """[samples, pools] array of a per-pool series (empty when the run had no ``fleet.pools``)."""
        if name not in self._pool_data or not self.pools:
            return np.zeros((len(self), 0))
        return np.frombuffer(self._pool_data[name], dtype="i").copy().reshape(len(self), self.pools)

    def fleet(self, name: str) -> np.ndarray:
        """One fleet series (``time_s``, ``arrivals`` during the interval, ``completions`` = requests reaching
        a terminal status, ``deferred`` batch requests held, ``nodes_up`` serving, ``nodes_billed`` paid for)."""
        return np.frombuffer(self._data[name], dtype=self._data[name].typecode).copy() if len(self) else np.array([])

    def per_node(self, name: str) -> np.ndarray:
        """[samples, nodes] array of ``waiting``, ``running``, ``kv_used_blocks``, cumulative ``busy_s``, ``up``,
        or cumulative model ``flops`` and ``hbm_bytes`` (weights + KV read) of the finished engine steps."""
        a = np.frombuffer(self._data[name], dtype=self._data[name].typecode).copy() if len(self) else np.array([])
        return a.reshape(len(self), self.nodes)


class Tally:
    """Request counts by outcome, kept as events happen (so they need no per-request records). ``arrived`` and
    the outcomes count logical requests; ``retries`` counts the extra attempts clients sent (sim.traffic.clients).

    The counts come from independent sources, so conservation (``arrived`` = terminal statuses +
    ``in_flight``) is a check, not an identity: ``arrived`` is counted by the arrival process, each terminal
    status when a request finishes, and ``in_flight`` is read at the end from the live state of the nodes
    (queued + running), the fleet's and the batch queue's holding queues, the hosted API's outstanding
    calls and the clients backing off before a retry (:func:`live_in_flight`)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.retries = 0
        self.by_status = [0] * len(Status)
        self.in_flight = 0  # set at the end of the run from the live state

    def count(self, req: Request) -> None:
        self.by_status[req.status] += 1

    def as_dict(self) -> dict[str, int]:
        out = {"arrived": self.arrived}
        for st in terminal_statuses():
            out[st.name.lower()] = self.by_status[st]
        out["in_flight"] = self.in_flight
        out["retries"] = self.retries
        return out


def terminal_statuses() -> list[Status]:
    """Every status a request ends in (any status but waiting and running), summary order first."""
    first = [Status.COMPLETED, Status.SPILLED, Status.REJECTED, Status.FAILED]
    return first + [st for st in Status if st not in first and st not in (Status.WAITING, Status.RUNNING)]


def live_in_flight(fleet: Any, batch: Any, spill: Any, clients: Clients, disagg: Any = None) -> int:
    """Requests not yet finished, counted where they are: on a node (queued or running), held by the fleet
    while no node accepts, held as deferrable batch work, or owned by the hosted API (in a call or backing
    off before a retry), or waiting out a client's back-off before its retry is sent."""
    on_nodes = sum(s.node.in_flight_count() for s in fleet.slots if s.node is not None)
    at_api = spill.api.outstanding if spill is not None and spill.api is not None else 0
    in_transfer = disagg.in_transfer if disagg is not None else 0  # KV on a prefill → decode link
    return on_nodes + len(fleet.pending) + len(batch) + at_api + clients.in_backoff + in_transfer


@dataclass
class SimResult:
    """Raw outcome of one run. ``requests`` is empty when the run did not keep per-request records."""

    scenario: Scenario
    node_model: NodeModel
    class_names: list[str]
    requests: list[Request]
    series: TimeSeries
    end_s: float
    node_busy_s: list[float]
    node_steps: list[int]
    wall_s: float
    tally: Tally
    gpu_hours: dict[str, float] = field(default_factory=dict)  # billed over [0, duration_s], by node kind
    fleet_events: list[tuple[float, int, str, str]] = field(default_factory=list)
    spill: dict[str, Any] | None = None  # hosted-API counters (sim.spill.policy.SpillDispatcher.stats), if configured
    clients: dict[str, int] | None = None  # client give-up / retry counters (sim.traffic.clients.Clients.stats), if any
    pool_models: list[NodeModel] = field(default_factory=list)  # one per pool (``fleet.pools``), else [node_model]
    layout: PoolLayout | None = None  # which slot is in which pool, which class asks for which model
    pool_gpu_hours: list[dict[str, float]] = field(default_factory=list)  # billed GPU-hours per pool, by node kind
    disagg: dict[str, float] | None = None  # KV-transfer counters (sim.fleet.disagg.DisaggDispatcher.stats), if any
    transfer_s: np.ndarray | None = None  # per KV hand-off: prefill end → KV arrived (sharded runs merge these)
    marks: list[tuple[list[float], list[int]]] = field(default_factory=list)  # per node (busy_s, steps) at window marks

    def counts(self) -> dict[str, int]:
        """arrived = completed + spilled + rejected + failed + timed_out + in_flight (logical requests);
        ``retries``: attempts re-sent by clients that gave up."""
        return self.tally.as_dict()


ProgressFn = Callable[[float, float], None]
_DOWN = NodeSnapshot(0, 0, 0, 0.0)
DoneFn = Callable[[Request], None]


class Dispatcher(Protocol):
    """Decides where an arriving request goes (a node via the router, or elsewhere, e.g. a hosted API)."""

    def dispatch(self, req: Request) -> None: ...


@dataclass(frozen=True)
class SimWindow:
    """A time slice of a run (:mod:`sim.runner.slices`): the clock starts at ``start_s`` with an empty fleet, only
    arrivals in ``[start_s, stop_arrivals_s)`` are admitted, and the run's own requests are those arriving in
    ``[keep_from_s, keep_to_s)`` (the others only load the fleet): only they are counted, kept and reported to
    ``on_request_done``. The run stops once its own requests are finished (not before ``keep_to_s``), or as an
    unsliced run would (``last``: the final slice drains). Each node's (busy seconds, engine steps) are recorded
    at ``keep_from_s`` and ``keep_to_s`` (``SimResult.marks``)."""

    start_s: float
    keep_from_s: float
    keep_to_s: float
    stop_arrivals_s: float
    last: bool

    def keeps(self, arrival_s: float) -> bool:
        return self.keep_from_s <= arrival_s < self.keep_to_s

    def admitted(self, chunks: Iterator[ArrivalChunk]) -> Iterator[ArrivalChunk]:
        """The chunks' arrivals in ``[start_s, stop_arrivals_s)`` (the stream is not read past that)."""
        for chunk in chunks:
            t = chunk.time_s
            lo, hi = np.searchsorted(t, [self.start_s, self.stop_arrivals_s], side="left").tolist()
            if hi > lo:
                yield chunk if (lo, hi) == (0, len(t)) else ArrivalChunk(
                    t[lo:hi], chunk.class_idx[lo:hi], chunk.prompt_tokens[lo:hi], chunk.output_tokens[lo:hi],
                    chunk.cached_tokens[lo:hi], None if chunk.prefix is None else chunk.prefix[lo:hi],
                    None if chunk.session is None else chunk.session[lo:hi])
            if hi < len(t):
                return


def _forecast(scenario: Scenario) -> tuple[Callable[[float], float] | None, float]:
    """λ(t) of the scenario's traffic (None for a replayed trace) and the clock hour of the week at t = 0."""
    from sim.traffic.arrivals import rate_curve
    from sim.traffic.shapes import clock0_hours

    tr = scenario.traffic
    clock0_h = clock0_hours(tr.start_weekday, tr.start_hour)
    if tr.trace is not None or tr.rate_rps is None:
        return None, clock0_h
    curve = rate_curve(tr, scenario.base_dir, scenario.source)
    return (lambda t: float(curve.rate_rps(t))), clock0_h


def _model_share(rate_at: Callable[[float], float], scenario: Scenario, layout: PoolLayout,
                 group: int) -> Callable[[float], float]:
    """λ(t) of the classes of one model: the traffic's rate × their static share (``share_by_hour`` ignored)."""
    classes = scenario.traffic.classes
    share = sum(c.share for c, g in zip(classes, layout.class_group) if g == group) / sum(c.share for c in classes)
    return lambda t: rate_at(t) * share


def simulate(
    scenario: Scenario,
    progress: ProgressFn | None = None,
    keep_requests: bool = True,
    on_request_done: DoneFn | None = None,
    arrivals: Callable[[Iterator[ArrivalChunk]], Iterator[ArrivalChunk]] | None = None,
    window: SimWindow | None = None,
) -> SimResult:
    """Run ``scenario`` to the end of its drain.

    ``progress(sim_time_s, duration_s)`` is called now and then. ``on_request_done(req)`` is called once per
    logical request when it reaches a terminal status (completed, rejected, spilled, failed, timed out); with
    ``keep_requests=False`` no per-request list is kept (memory stays flat on long runs). ``arrivals``, if
    given, filters the scenario's arrival chunks (a cell of a sharded run keeps its share: :mod:`sim.runner.shards`).
    ``window``: simulate one time slice of the run (:class:`SimWindow`, :mod:`sim.runner.slices`).
    """
    wall0 = time.perf_counter()
    layout = pool_layout(scenario)
    pool_models = build_pool_models(scenario)
    nm = pool_models[0]
    # the fast engine's runs on the loop with bare timers (same event order: sim.engine.loop); the reference on SimPy's
    fast = scenario.fleet.engine_impl == "fast"
    t0_s = window.start_s if window is not None else 0.0
    env = make_environment(t0_s) if fast else simpy.Environment(initial_time=t0_s)
    requests: list[Request] = []
    tally = Tally()
    done = [0]
    own_done = [0]  # requests of this window finished (window runs)
    done_observers: list[DoneFn] = []  # e.g. the spill dispatcher's departure-rate estimates

    def on_done(req: Request) -> None:
        done[0] += 1
        own = window is None or window.keeps(req.arrival_s)
        if own:
            own_done[0] += 1
            tally.count(req)
        for observe in done_observers:
            observe(req)
        if own and on_request_done is not None:
            on_request_done(req)

    node_cls = Node if fast else ReferenceNode
    slot_pool = layout.slot_pool

    def make_node(slot: int, done: Callable[[Request], None]) -> NodeEngine:
        m = pool_models[slot_pool[slot]]
        return node_cls(env, slot, m.perf, m.engine, m.memory.kv_capacity_blocks, m.max_model_len, done)

    speed = None
    if scenario.router.policy.startswith("weighted_"):
        speeds = pool_speeds(scenario, layout, pool_models)

        def speed(node: NodeEngine) -> float:
            return speeds[slot_pool[node.node_id]]

    fleet = FleetManager(env, scenario, make_node, on_done, stream(scenario.seed, "router"),
                         stream(scenario.seed, "spot"), layout, speed)
    slots = fleet.slots
    pooled = scenario.fleet.pooled
    pool_done = [0] * len(pool_models)
    if pooled:
        def count_pool_done(req: Request) -> None:
            if req.status == Status.COMPLETED and req.node >= 0 and not req.via_api:
                pool_done[slot_pool[req.node]] += 1

        done_observers.append(count_pool_done)
    series = TimeSeries(scenario.output.sample_interval_s, len(slots))
    dispatcher: Dispatcher = fleet
    disagg = None
    if any(p.role != "mixed" for p in layout.pools):  # prefill and decode pools, KV over links (sim.fleet.disagg)
        from sim.fleet.disagg import DisaggDispatcher

        disagg = dispatcher = DisaggDispatcher(env, scenario, fleet, layout, pool_models)
        done_observers.append(disagg.on_done)
    spill = None
    if scenario.spill is not None or scenario.api is not None:  # hosted API / spill policy (sim.spill.policy)
        from sim.spill.policy import SpillDispatcher

        # in front of the prefill pools when they exist: a policy judges the prefill node a request would go to
        spill = dispatcher = SpillDispatcher(env, scenario, disagg if disagg is not None else fleet, on_done, nm.perf,
                                             [(m.engine, m.perf) for m in pool_models])
        done_observers.append(spill.on_fleet_done)
        if any(p.spot.on_eviction == "spill" for p in layout.pools):  # evictions of every pool go to the API
            # evicted requests are re-served whole by the API (prompt and every output token, billed again)
            fleet.evicted_sink = spill.to_api
    if disagg is not None:
        disagg.wrap_evictions()
    for i, pool in enumerate(layout.pools):
        if pool.autoscaler.policy != "none":
            rate_at, clock0_h = _forecast(scenario)
            if rate_at is not None and len(layout.group_models) > 1:  # a pool forecasts its own model's traffic
                rate_at = _model_share(rate_at, scenario, layout, layout.pool_group[i])
            env.process(autoscaler_process(env, pool.autoscaler, fleet, rate_at, clock0_h, pool=i))
    arrivals_since = [0]
    chunks = arrival_chunks(scenario)  # built now: bad data files fail before the run starts
    if arrivals is not None:
        chunks = arrivals(chunks)
    if window is not None:
        chunks = window.admitted(chunks)
    priorities = [c.priority for c in scenario.traffic.classes]
    batch = BatchQueue(env, [c.deferrable for c in scenario.traffic.classes], dispatcher.dispatch, slots)

    def replace(req: Request) -> None:  # a retry now stands for its logical request (rid = index)
        if keep_requests:
            requests[req.rid] = req

    clients = Clients(env, scenario, fleet, dispatcher.dispatch, on_done, replace, stream(scenario.seed, "clients"),
                      disagg)

    class ArrivalDriver:
        """Feeds the arrival chunks into the model: one timeout per distinct arrival time, whose callback admits
        every request due then and schedules the next (no SimPy process: a callback costs less than resuming a
        generator)."""

        def __init__(self) -> None:
            self.rows = self._rows()
            self.next: tuple[float, int, int, int, int, tuple[int, ...] | None, int] | None = next(self.rows, None)
            self.rid = 0

        @staticmethod
        def _rows() -> Iterator[tuple[float, int, int, int, int, tuple[int, ...] | None, int]]:
            for chunk in chunks:
                n = len(chunk)
                chains = chunk.prefix if chunk.prefix is not None else [None] * n
                sessions = chunk.session.tolist() if chunk.session is not None else [-1] * n
                yield from zip(chunk.time_s.tolist(), chunk.class_idx.tolist(), chunk.prompt_tokens.tolist(),
                               chunk.output_tokens.tolist(), chunk.cached_tokens.tolist(), chains, sessions)

        def fire(self, _event: object = None) -> None:
            rows, row = self.rows, self.next
            while row is not None:
                t, k, p, o, c, h, sid = row
                delay = t - env.now
                if delay > 0:
                    call_later(env, delay, self.fire)
                    self.next = row
                    return
                req = Request(self.rid, t, k, p, o, c)
                req.prefix = h
                req.session = sid
                req.priority = priorities[k]
                self.rid += 1
                if window is None or window.keeps(t):
                    tally.arrived += 1
                if keep_requests:
                    requests.append(req)
                arrivals_since[0] += 1
                if batch.deferrable(req):
                    batch.hold(req)
                else:
                    dispatcher.dispatch(req)
                    if clients.enabled:
                        clients.sent(req)
                row = next(rows, None)
            self.next = None

    coeffs = [work_coefficients(m) for m in pool_models]  # per pool: FLOPs and HBM bytes per unit of work
    slot_coeffs = [coeffs[slot_pool[s.index]] for s in slots]

    def sampler() -> Generator[simpy.Event, Any, None]:
        last_done = 0
        last_sent = [0] * len(pool_models)
        last_pool_done = [0] * len(pool_models)
        while True:
            yield env.timeout(series.interval_s)
            snaps = [s.node.snapshot() if s.node is not None else _DOWN for s in slots]
            up = [s.node is not None for s in slots]
            works = [s.work_totals() for s in slots]
            series.append(
                {
                    "time_s": env.now,
                    "arrivals": arrivals_since[0],
                    "completions": done[0] - last_done,
                    "deferred": len(batch),
                    "nodes_up": sum(up),
                    "nodes_billed": sum(1 for s in slots if s.state != SlotState.DOWN),
                },
                {
                    "waiting": [x.waiting for x in snaps],
                    "running": [x.running for x in snaps],
                    "kv_used_blocks": [x.kv_used_blocks for x in snaps],
                    "busy_s": [s.busy_prev_s + x.busy_s for s, x in zip(slots, snaps)],  # = Slot.busy_s()
                    "up": up,
                    "flops": [c[0] * w[0] + c[1] * w[1] for c, w in zip(slot_coeffs, works)],
                    "hbm_bytes": [c[2] * w[3] + c[3] * w[2] for c, w in zip(slot_coeffs, works)],
                },
            )
            if pooled:
                series.append_pools({
                    "arrivals": [a - b for a, b in zip(fleet.submitted, last_sent)],
                    "completions": [a - b for a, b in zip(pool_done, last_pool_done)],
                    "nodes_billed": [sum(1 for s in slots if s.pool == p and s.state != SlotState.DOWN)
                                     for p in range(len(pool_models))],
                })
                last_sent, last_pool_done = list(fleet.submitted), list(pool_done)
            arrivals_since[0] = 0
            last_done = done[0]

    call_later(env, 0, ArrivalDriver().fire)
    env.process(sampler())
    marks: list[tuple[list[float], list[int]]] = []
    if window is not None:
        def mark(_event: simpy.Event) -> None:
            marks.append(([s.busy_s() for s in slots],
                          [s.steps_prev + (s.node.steps if s.node is not None else 0) for s in slots]))

        for at in (window.keep_from_s, window.keep_to_s):
            env.timeout(max(0.0, at - env.now)).callbacks.append(mark)

    duration = scenario.duration_s
    end_limit = duration + scenario.max_drain_s
    step = max(series.interval_s, min(60.0, duration / 50))
    t = env.now
    stop_s = duration if window is None or window.last else window.keep_to_s
    while True:
        t = min(t + step, end_limit)
        env.run(until=t)
        if progress is not None:
            progress(t, duration)
        if window is not None:
            if t >= end_limit or (t >= stop_s and len(marks) == 2 and own_done[0] >= tally.arrived):
                break
        elif t >= end_limit or (t >= duration and done[0] >= tally.arrived):
            break
    tally.retries = clients.retries
    tally.in_flight = (tally.arrived - own_done[0] if window is not None
                       else live_in_flight(fleet, batch, spill, clients, disagg))
    return SimResult(
        scenario=scenario,
        node_model=nm,
        class_names=[c.name for c in scenario.traffic.classes],
        requests=requests if window is None else [r for r in requests if window.keeps(r.arrival_s)],
        series=series,
        end_s=env.now,
        node_busy_s=[s.busy_s() for s in slots],
        node_steps=[s.steps_prev + (s.node.steps if s.node is not None else 0) for s in slots],
        wall_s=time.perf_counter() - wall0,
        tally=tally,
        gpu_hours=fleet.billed_gpu_hours(scenario.duration_s),
        fleet_events=fleet.events,
        spill=spill.stats() if spill is not None else None,
        clients=clients.stats() if clients.enabled else None,
        pool_models=pool_models,
        layout=layout,
        pool_gpu_hours=[fleet.billed_gpu_hours(scenario.duration_s, p) for p in range(len(pool_models))],
        disagg=disagg.stats() if disagg is not None else None,
        transfer_s=np.array(disagg.transfer_s, dtype=np.float64) if disagg is not None else None,
        marks=marks,
    )
