"""Preemptions under KV pressure: published closed-loop runs that report the engine's preemption count.

A *preemption point* is one measured number of a ``vllm bench serve``-style run (``--max-concurrency`` requests in
flight, the next sent when one finishes, every length drawn uniformly in ``[min, max]``) against a node whose KV
cache is smaller than the requests in flight need, so the engine preempts (vLLM V1: recompute of the newest running
request). ``calibration/data/preemption_points.csv`` carries the run's settings on every row and one of
:data:`METRICS`. Metrics follow ``vllm bench serve``: over every request of the run, ``duration`` from the first
send to the last answer; ``throughput`` = output tokens / duration; ``requests_per_s`` = completed / duration;
TTFT and end-to-end percentiles over the completed requests; ``preemptions`` = the engine's count (vLLM's
``vllm:num_preemptions`` counter).

Lengths are drawn from a seeded generator (the run's own draw is not published): the shape of the load is the
run's, the individual requests are not. Every point is held out (``calibration/fit_factors.py`` does not read it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import simpy
from pydantic import Field

from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.engine import Node
from sim.perf.benchmark import NodeSetup
from sim.perf.catalog import Calibration, get_stack
from sim.perf.points_csv import PublishedRun, read_rows
from sim.traffic.request import Request, Status

POINTS_FILE = "preemption_points.csv"
METRICS = ("preemptions", "throughput", "requests_per_s", "ttft_p50", "ttft_p99", "e2e_p50")
BLOCK_TOKENS = 16  # vLLM's default KV block size


class PreemptionPoint(PublishedRun):
    """One measured number of one closed-loop run, with the run's settings (repeated on every row)."""

    kv_cache_tokens: int = Field(ge=BLOCK_TOKENS)
    concurrency: int = Field(ge=1)
    requests: int = Field(ge=1)
    input_min: int = Field(ge=1)
    input_max: int = Field(ge=1)
    output_min: int = Field(ge=1)
    output_max: int = Field(ge=1)
    metric: Literal["preemptions", "throughput", "requests_per_s", "ttft_p50", "ttft_p99", "e2e_p50"]
    measured: float = Field(ge=0)

    def settings(self) -> tuple:
        """Everything but the id, metric and measured value: equal on every row of one run."""
        return tuple(v for k, v in self.model_dump().items() if k not in ("id", "metric", "measured"))


def points_path() -> Path:
    """``calibration/data/preemption_points.csv``."""
    from sim.perf.validation import calibration_data_dir

    return calibration_data_dir() / POINTS_FILE


def read_points(path: Path) -> list[PreemptionPoint]:
    """The rows of a preemption-points CSV; a bad cell raises :class:`ConfigError` naming the line and field."""
    out: list[PreemptionPoint] = []
    for i, p in read_rows(path, PreemptionPoint):
        if p.input_min > p.input_max or p.output_min > p.output_max:
            raise ConfigError(str(path), f"line {i}: input_min/output_min", "a minimum above its maximum")
        out.append(p)
    first: dict[str, PreemptionPoint] = {}
    for p in out:
        f = first.setdefault(p.run, p)
        if f.settings() != p.settings():
            raise ConfigError(str(path), f"id {p.id}", f"run {p.run} has other settings than row {f.id}")
    return out


@dataclass
class ClosedLoopOutcome:
    """A closed-loop run as ``vllm bench serve`` reports it."""

    completed: int
    duration_s: float
    output_tokens: int
    preemptions: int
    ttft_s: np.ndarray
    e2e_s: np.ndarray

    def metric(self, name: str) -> float:
        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if len(a) else float("nan")

        return {
            "preemptions": float(self.preemptions),
            "throughput": self.output_tokens / self.duration_s,
            "requests_per_s": self.completed / self.duration_s,
            "ttft_p50": pct(self.ttft_s, 50),
            "ttft_p99": pct(self.ttft_s, 99),
            "e2e_p50": pct(self.e2e_s, 50),
        }[name]


def simulate(setup: NodeSetup, kv_blocks: int, concurrency: int, prompts: Sequence[int],
             outputs: Sequence[int]) -> ClosedLoopOutcome:
    """``concurrency`` requests in flight on one node with ``kv_blocks`` KV blocks, the next sent when one
    finishes, until every request has been sent and answered."""
    env = simpy.Environment()
    reqs: list[Request] = []
    nxt = [0]

    def issue() -> None:
        i = nxt[0]
        if i < len(prompts):
            nxt[0] += 1
            r = Request(i, env.now, 0, int(prompts[i]), int(outputs[i]))
            reqs.append(r)
            node.submit(r)

    def on_done(_r: Request) -> None:
        env.timeout(0).callbacks.append(lambda _e: issue())  # the client's next send, after the node's bookkeeping

    node = Node(env, 0, setup.perf, setup.engine, kv_blocks, setup.max_model_len, on_done)
    for _ in range(min(concurrency, len(prompts))):
        issue()
    env.run()
    done = [r for r in reqs if r.status == Status.COMPLETED]
    duration = max((r.finish_s for r in reqs), default=0.0)
    return ClosedLoopOutcome(
        completed=len(done), duration_s=max(duration, 1e-12), output_tokens=sum(r.output_tokens for r in done),
        preemptions=sum(r.preemptions for r in reqs),
        ttft_s=np.array([r.first_token_s - r.arrival_s for r in done]),
        e2e_s=np.array([r.finish_s - r.arrival_s for r in done]))


def draw_lengths(p: PreemptionPoint, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Input and output lengths, uniform integers in ``[min, max]`` (``vllm bench serve``'s random dataset with a
    range ratio), from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return (rng.integers(p.input_min, p.input_max + 1, p.requests),
            rng.integers(p.output_min, p.output_max + 1, p.requests))


def _setup(p: PreemptionPoint, cal: Calibration) -> NodeSetup:
    engine = Engine(max_num_seqs=p.max_num_seqs, max_num_batched_tokens=p.max_num_batched_tokens,
                    max_model_len=p.max_model_len, chunked_prefill=True, block_size=BLOCK_TOKENS)
    return NodeSetup.build(p.gpu, p.model, p.gpus, p.weights, p.kv, engine, calibration=cal, stack=p.stack,
                           source=p.id)


@dataclass
class PreemptionReport:
    """Per-point rows (measured, predicted, error)."""

    rows: list[dict] = field(default_factory=list)


def run(points: Sequence[PreemptionPoint], calibrations: dict[str, Calibration] | None = None) -> PreemptionReport:
    """Simulate every run once and compare each of its points; ``calibrations`` per stack (default: shipped)."""
    by_run: dict[str, list[PreemptionPoint]] = {}
    for p in points:
        by_run.setdefault(p.run, []).append(p)
    report = PreemptionReport()
    for pts in by_run.values():
        first = pts[0]
        cal = (calibrations or {}).get(first.stack) or get_stack(first.stack, first.id, "stack").calibration
        prompts, outputs = draw_lengths(first)
        out = simulate(_setup(first, cal), first.kv_cache_tokens // BLOCK_TOKENS, first.concurrency,
                       prompts.tolist(), outputs.tolist())
        for p in pts:
            v = out.metric(p.metric)
            err = (v - p.measured) / p.measured * 100.0 if p.measured and math.isfinite(v) else float("nan")
            report.rows.append({"id": p.id, "run": p.run, "gpu": p.gpu, "gpus": p.gpus, "model": p.model,
                                "metric": p.metric, "measured": p.measured, "predicted": v, "error_pct": err,
                                "source": p.source})
    return report


def _fmt(metric: str, v: float) -> str:
    if not math.isfinite(v):
        return "–"
    if metric == "preemptions":
        return f"{v:,.0f}"
    if metric == "throughput":
        return f"{v:,.0f} tok/s"
    if metric == "requests_per_s":
        return f"{v:.3f} req/s"
    return f"{v:,.2f} s"


def markdown_report(report: PreemptionReport) -> str:
    """A markdown table of every point."""
    out = ["| point | hardware | model | metric | measured | predicted | error |", "|---|---|---|---|---|---|---|"]
    for r in report.rows:
        out.append(f"| {r['id']} | {r['gpus']}× {r['gpu']} | {r['model']} | {r['metric']} | "
                   f"{_fmt(r['metric'], r['measured'])} | {_fmt(r['metric'], r['predicted'])} | "
                   f"{r['error_pct']:+.1f} % |")
    return "\n".join(out)


def format_report(report: PreemptionReport) -> str:
    """Plain text: every point."""
    lines = [f"{'point':44} {'measured':>14} {'predicted':>14} {'error':>8}"]
    for r in report.rows:
        lines.append(f"{r['id'][:44]:44} {_fmt(r['metric'], r['measured']):>14} "
                     f"{_fmt(r['metric'], r['predicted']):>14} {r['error_pct']:+7.1f}%")
    return "\n".join(lines)
