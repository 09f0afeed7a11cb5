"""Benchmark-style runs of one serving node: offline (all requests at t = 0, as ``trtllm-bench throughput``),
closed loop (a fixed number of requests always in flight, as ``vllm bench serve --max-concurrency``) and open
loop (requests at given arrival times, e.g. Poisson, as ``vllm bench serve --request-rate``).

Each run drives one :class:`sim.engine.Node` on its own ``simpy.Environment``; step times come from
:class:`sim.perf.model.StepTimeModel`. Metrics follow the benchmarks' definitions: TTFT = first token − arrival,
TPOT = (finish − first token) / (output − 1) per request, output throughput = output tokens / wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.engine import Node
from sim.perf.catalog import Calibration, GpuSpec, ModelSpec, engine_for_stack, get_gpu, get_model
from sim.perf.model import NodeMemory, StepTimeModel, plan_memory
from sim.perf.moe import resolve_layout
from sim.traffic.request import Request, Status

Lengths = Sequence[int] | np.ndarray  # token counts per request: a list or a numpy array


@dataclass(frozen=True)
class NodeSetup:
    """One serving node: hardware, model, precisions, engine limits and the resulting memory plan and perf model."""

    gpu: GpuSpec
    model: ModelSpec
    gpus: int
    weights: str
    kv_cache: str
    engine: Engine
    memory: NodeMemory
    perf: StepTimeModel
    max_model_len: int

    @classmethod
    def build(
        cls,
        gpu: str | GpuSpec,
        model: str | ModelSpec,
        gpus: int = 1,
        weights: str = "bf16",
        kv_cache: str = "bf16",
        engine: Engine | None = None,
        calibration: Calibration | None = None,
        stack: str | None = None,
        source: str = "profile",
        parallelism: Any = None,
        speculative: Any = None,
    ) -> NodeSetup:
        """A node of ``gpus``× ``gpu`` serving ``model``; ``parallelism`` / ``speculative``: ``fleet.parallelism`` /
        ``fleet.speculative`` blocks (:mod:`sim.perf.moe`, :mod:`sim.perf.speculative`)."""
        g = get_gpu(gpu, source, "--gpu") if isinstance(gpu, str) else gpu
        m = get_model(model, source, "--model") if isinstance(model, str) else model
        eng = engine_for_stack(g, stack, engine or Engine(), source, "engine")
        if gpus < 1:
            raise ConfigError(source, "--gpus", f"must be >= 1 (got {gpus})")
        layout = resolve_layout(parallelism, m, g, gpus, source, "--tensor/--expert")
        mem = plan_memory(
            g, m, gpus, weights, kv_cache, eng.gpu_memory_utilization, eng.block_size,
            eng.activation_reserve_gb_per_gpu, source=source, field="--model",
            layout=layout if parallelism is not None else None, speculative=speculative,
            max_num_seqs=eng.max_num_seqs,
        )
        perf = StepTimeModel.build(g, m, gpus, weights, kv_cache, calibration=calibration, stack=stack,
                                   layout=layout, speculative=speculative)
        max_len = min(eng.max_model_len or m.max_context, m.max_context)
        return cls(g, m, gpus, weights, kv_cache, eng, mem, perf, max_len)


@dataclass
class RunResult:
    """Outcome of one benchmark-style run (times in seconds)."""

    mode: str
    requests: int
    completed: int
    rejected: int
    duration_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    requests_per_s: float
    ttft_s: dict[str, float] = field(default_factory=dict)
    tpot_s: dict[str, float] = field(default_factory=dict)
    e2e_s: dict[str, float] = field(default_factory=dict)
    mean_running: float = 0.0

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "requests": self.requests,
            "completed": self.completed,
            "rejected": self.rejected,
            "duration_s": self.duration_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "input_tokens_per_s": self.input_tokens_per_s,
            "requests_per_s": self.requests_per_s,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "e2e_s": self.e2e_s,
            "mean_running": self.mean_running,
        }


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    return {
        "mean": float(x.mean()),
        "p50": float(np.percentile(x, 50)),
        "p90": float(np.percentile(x, 90)),
        "p99": float(np.percentile(x, 99)),
    }


def _summarise(
    mode: str, reqs: Sequence[Request], t0: float, t1: float, n_total: int, mean_running: float
) -> RunResult:
    """Latency statistics over ``reqs`` (completed ones) and throughput over the window [t0, t1]."""
    done = [r for r in reqs if r.status == Status.COMPLETED]
    rejected = sum(1 for r in reqs if r.status == Status.REJECTED)
    window = max(t1 - t0, 1e-12)
    out_tok = sum(r.output_tokens for r in done)
    in_tok = sum(r.prompt_tokens for r in done)
    ttft = np.array([r.first_token_s - r.arrival_s for r in done])
    tpot = np.array([(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in done if r.output_tokens > 1])
    e2e = np.array([r.finish_s - r.arrival_s for r in done])
    return RunResult(
        mode=mode,
        requests=n_total,
        completed=len(done),
        rejected=rejected,
        duration_s=window,
        output_tokens_per_s=out_tok / window,
        input_tokens_per_s=in_tok / window,
        requests_per_s=len(done) / window,
        ttft_s=_stats(ttft),
        tpot_s=_stats(tpot),
        e2e_s=_stats(e2e),
        mean_running=mean_running,
    )


def _new_node(setup: NodeSetup, env: simpy.Environment, on_done) -> Node:  # noqa: ANN001
    return Node(env, 0, setup.perf, setup.engine, setup.memory.kv_capacity_blocks, setup.max_model_len, on_done)


def _check_lengths(prompts: np.ndarray, outputs: np.ndarray) -> None:
    if len(prompts) != len(outputs) or len(prompts) == 0:
        raise ConfigError("profile", "requests", "need equally many (≥ 1) input and output lengths")
    if (np.asarray(prompts) < 1).any() or (np.asarray(outputs) < 1).any():
        raise ConfigError("profile", "requests", "input and output lengths must be >= 1 token")


def run_offline(setup: NodeSetup, prompts: Lengths, outputs: Lengths) -> RunResult:
    """All requests issued at t = 0; throughput = all output tokens / time until the last one finishes."""
    p, o = np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)
    _check_lengths(p, o)
    env = simpy.Environment()
    reqs = [Request(i, 0.0, 0, int(a), int(b)) for i, (a, b) in enumerate(zip(p.tolist(), o.tolist()))]
    node = _new_node(setup, env, lambda _r: None)
    for r in reqs:
        node.submit(r)
    env.run()
    end = max((r.finish_s for r in reqs), default=0.0)
    busy_running = _mean_running(reqs, 0.0, end)
    return _summarise("offline", reqs, 0.0, end, len(reqs), busy_running)


def run_open_loop(
    setup: NodeSetup, arrivals_s: Sequence[float] | np.ndarray, prompts: Lengths, outputs: Lengths
) -> RunResult:
    """Requests arrive at ``arrivals_s`` (sorted); throughput over [first arrival, last finish]."""
    p, o = np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)
    _check_lengths(p, o)
    t = np.asarray(arrivals_s, dtype=float)
    if len(t) != len(p) or (np.diff(t) < 0).any():
        raise ConfigError("profile", "arrivals", "need one sorted arrival time per request")
    env = simpy.Environment()
    reqs: list[Request] = []
    node = _new_node(setup, env, lambda _r: None)

    def arrivals():  # noqa: ANN202 - SimPy process
        for i, (ti, a, b) in enumerate(zip(t.tolist(), p.tolist(), o.tolist())):
            if ti > env.now:
                yield env.timeout(ti - env.now)
            r = Request(i, ti, 0, int(a), int(b))
            reqs.append(r)
            node.submit(r)

    env.process(arrivals())
    env.run()
    end = max((r.finish_s for r in reqs), default=0.0)
    return _summarise("open_loop", reqs, float(t[0]), end, len(reqs), _mean_running(reqs, float(t[0]), end))


def run_poisson(
    setup: NodeSetup, rate_rps: float, prompts: Lengths, outputs: Lengths, rng: np.random.Generator
) -> RunResult:
    """Poisson arrivals at ``rate_rps`` (exponential gaps drawn from ``rng``), one request per length pair."""
    if rate_rps <= 0:
        raise ConfigError("profile", "--rate", f"must be > 0 (got {rate_rps})")
    gaps = rng.exponential(1.0 / rate_rps, size=len(prompts))
    gaps[0] = 0.0
    return run_open_loop(setup, np.cumsum(gaps), prompts, outputs)


def run_closed_loop(
    setup: NodeSetup,
    concurrency: int,
    prompts: Lengths,
    outputs: Lengths,
    warmup_fraction: float = 0.2,
) -> RunResult:
    """``concurrency`` requests always in flight: each completion issues the next request at once.

    Steady state: latencies over requests issued after the first ``warmup_fraction`` of them, throughput over
    the time from the issue of the first such request to the last completion issued before the pool drains.
    """
    p, o = np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)
    _check_lengths(p, o)
    if concurrency < 1:
        raise ConfigError("profile", "--concurrency", f"must be >= 1 (got {concurrency})")
    n = len(p)
    env = simpy.Environment()
    reqs: list[Request] = []
    nxt = [0]
    node: Node

    def issue() -> None:
        i = nxt[0]
        if i >= n:
            return
        nxt[0] += 1
        r = Request(i, env.now, 0, int(p[i]), int(o[i]))
        reqs.append(r)
        node.submit(r)

    def on_done(_r: Request) -> None:
        ev = env.timeout(0)  # submit outside the node's own bookkeeping
        ev.callbacks.append(lambda _e: issue())

    node = _new_node(setup, env, on_done)
    for _ in range(min(concurrency, n)):
        issue()
    env.run()
    skip = min(int(n * warmup_fraction), max(n - concurrency, 0))
    steady = reqs[skip:]
    t0 = steady[0].arrival_s if steady else 0.0
    # stop the throughput window when the pool stops being full (the last request has been issued)
    t1 = reqs[-1].arrival_s if n > concurrency and reqs[-1].arrival_s > t0 else max(r.finish_s for r in reqs)
    res = _summarise("closed_loop", steady, t0, t1, n, _mean_running(reqs, t0, t1))
    # throughput: completions inside the window (whatever their issue time), each counted with all its tokens
    window = [r for r in reqs if r.status == Status.COMPLETED and t0 < r.finish_s <= t1]
    span = max(t1 - t0, 1e-12)
    res.output_tokens_per_s = sum(r.output_tokens for r in window) / span
    res.input_tokens_per_s = sum(r.prompt_tokens for r in window) / span
    res.requests_per_s = len(window) / span
    return res


def _mean_running(reqs: Sequence[Request], t0: float, t1: float) -> float:
    """Time-average number of requests between arrival and finish over [t0, t1]."""
    if t1 <= t0:
        return 0.0
    total = 0.0
    for r in reqs:
        if r.finish_s < 0:
            continue
        a, b = max(r.arrival_s, t0), min(r.finish_s, t1)
        if b > a:
            total += b - a
    return total / (t1 - t0)

