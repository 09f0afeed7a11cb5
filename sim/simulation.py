"""Wire a scenario into a SimPy model and run it: arrivals → router → nodes, with a fixed-interval sampler.

Arrivals stop at ``duration_s``; the fleet then keeps serving (draining) until every request is done or
``max_drain_s`` has passed. Nothing here does I/O; :mod:`sim.metrics` and :mod:`sim.report` turn the
result into tables, a summary and plots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import simpy

from .catalog import GpuSpec, ModelSpec, get_gpu, get_model
from .config import Scenario
from .engine import Node, ReferenceNode
from .perf import NodeMemory, StepTimeModel, plan_memory
from .request import Request, Status
from .router import make_router
from .rng import stream
from .workload import arrival_chunks


@dataclass(frozen=True)
class NodeModel:
    """Everything static about one node: hardware, model, memory plan and step-time coefficients."""

    gpu: GpuSpec
    model: ModelSpec
    memory: NodeMemory
    perf: StepTimeModel
    max_model_len: int


def build_node_model(scenario: Scenario) -> NodeModel:
    fleet, src = scenario.fleet, scenario.source
    gpu = get_gpu(fleet.gpu, src)
    model = get_model(fleet.model, src)
    eng = fleet.engine
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
    )
    perf = StepTimeModel.build(gpu, model, fleet.gpus_per_node, fleet.weights, fleet.kv_cache)
    max_len = min(eng.max_model_len or model.max_context, model.max_context)
    return NodeModel(gpu, model, memory, perf, max_len)


@dataclass
class TimeSeries:
    """Samples taken every ``interval_s``: fleet arrays and per-node arrays (shape [samples, nodes])."""

    interval_s: float
    time_s: list[float] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)  # arrivals during the interval ending at time_s
    completions: list[int] = field(default_factory=list)
    waiting: list[list[int]] = field(default_factory=list)
    running: list[list[int]] = field(default_factory=list)
    kv_used_blocks: list[list[int]] = field(default_factory=list)
    busy_s: list[list[float]] = field(default_factory=list)  # cumulative busy seconds per node


@dataclass
class SimResult:
    """Raw outcome of one run."""

    scenario: Scenario
    node_model: NodeModel
    class_names: list[str]
    requests: list[Request]
    series: TimeSeries
    end_s: float
    node_busy_s: list[float]
    node_steps: list[int]
    wall_s: float

    def counts(self) -> dict[str, int]:
        c = {"arrived": len(self.requests), "completed": 0, "spilled": 0, "rejected": 0, "failed": 0, "in_flight": 0}
        for r in self.requests:
            s = r.status
            if s == Status.COMPLETED:
                c["completed"] += 1
            elif s == Status.REJECTED:
                c["rejected"] += 1
            elif s == Status.SPILLED:
                c["spilled"] += 1
            elif s == Status.FAILED:
                c["failed"] += 1
            else:
                c["in_flight"] += 1
        return c


ProgressFn = Callable[[float, float], None]


def simulate(scenario: Scenario, progress: ProgressFn | None = None) -> SimResult:
    """Run ``scenario`` to the end of its drain; ``progress(sim_time_s, end_s)`` is called now and then."""
    wall0 = time.perf_counter()
    nm = build_node_model(scenario)
    env = simpy.Environment()
    requests: list[Request] = []
    done = [0]

    def on_done(_req: Request) -> None:
        done[0] += 1

    node_cls = Node if scenario.fleet.engine_impl == "fast" else ReferenceNode
    nodes = [
        node_cls(env, i, nm.perf, scenario.fleet.engine, nm.memory.kv_capacity_blocks, nm.max_model_len, on_done)
        for i in range(scenario.fleet.nodes)
    ]
    router = make_router(scenario.router.policy, nodes, stream(scenario.seed, "router"))
    series = TimeSeries(scenario.output.sample_interval_s)
    arrivals_since = [0]
    chunks = arrival_chunks(scenario)  # built now: bad data files fail before the run starts

    def arrival_process():  # noqa: ANN202 - SimPy process
        rid = 0
        for chunk in chunks:
            for t, k, p, o, c in zip(
                chunk.time_s.tolist(),
                chunk.class_idx.tolist(),
                chunk.prompt_tokens.tolist(),
                chunk.output_tokens.tolist(),
                chunk.cached_tokens.tolist(),
            ):
                delay = t - env.now
                if delay > 0:
                    yield env.timeout(delay)
                req = Request(rid, t, k, p, o, c)
                rid += 1
                requests.append(req)
                arrivals_since[0] += 1
                nodes[router.pick(req)].submit(req)

    def sampler():  # noqa: ANN202 - SimPy process
        last_done = 0
        while True:
            yield env.timeout(series.interval_s)
            snaps = [n.snapshot() for n in nodes]
            series.time_s.append(env.now)
            series.arrivals.append(arrivals_since[0])
            arrivals_since[0] = 0
            series.completions.append(done[0] - last_done)
            last_done = done[0]
            series.waiting.append([s.waiting for s in snaps])
            series.running.append([s.running for s in snaps])
            series.kv_used_blocks.append([s.kv_used_blocks for s in snaps])
            series.busy_s.append([s.busy_s for s in snaps])

    env.process(arrival_process())
    env.process(sampler())

    duration = scenario.duration_s
    end_limit = duration + scenario.max_drain_s
    step = max(series.interval_s, min(60.0, duration / 50))
    t = 0.0
    while True:
        t = min(t + step, end_limit)
        env.run(until=t)
        if progress is not None:
            progress(t, duration)
        if t >= end_limit or (t >= duration and done[0] >= len(requests)):
            break
    return SimResult(
        scenario=scenario,
        node_model=nm,
        class_names=[c.name for c in scenario.traffic.classes],
        requests=requests,
        series=series,
        end_s=env.now,
        node_busy_s=[n.snapshot().busy_s for n in nodes],
        node_steps=[n.steps for n in nodes],
        wall_s=time.perf_counter() - wall0,
    )
