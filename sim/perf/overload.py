"""Latency under load and past capacity: published serving runs whose arrival rate steps through a node's knee.

A *load-ladder run* is one benchmark run of one serving node: requests of fixed lengths arrive at a fixed rate for a
stage's duration, stage after stage (``calibration/data/load_ladder_points.csv``, one row per measured number).
Below the knee TTFT stays at a prefill's time and the end-to-end latency grows slowly with the batch; past it the
queue grows for as long as the stage lasts, TTFT grows with it, and the client's timeout turns the backlog into
failures while the work already done for them is wasted, so the completed output throughput falls below capacity.

Model of the harness (``inference-perf``'s ``constant`` load, which the published runs used): arrivals evenly
spaced at ``1 / rate``; every request is sent; the client gives up on a request that has not finished
``timeout_s`` after it was sent (aiohttp's default total timeout, 300 s) and the server drops it (vLLM aborts a
request whose client disconnected: queued → off the queue, running → freed after the step in progress, via
:meth:`sim.engine.Node.withdraw`). Per stage (requests by send time), over the requests that finished in time:
``ttft_p50``, ``e2e_p50``; ``completed_fraction`` = finished in time / sent; ``throughput`` = their output tokens /
(last answer or give-up of the stage − its first send), in the client's count (``client_output_tokens`` per answer:
inference-perf re-tokenises the streamed text, 1,101 tokens per 1,448-token answer on Llama-2-7B).

Prompts (:class:`PromptSet`): the runs' ``shared_prefix`` data generator builds a *finite* set of prompts (groups ×
prompts per group; each group shares a system prompt) and cycles through it for the whole run, so with vLLM V1's
automatic prefix caching (on by default) every prompt after the first cycle is cached but for its last block: the
node computes 1–16 prompt tokens per request, not the whole prompt. The harness sends each request with its prompt's
block hashes and the node's prefix cache (:mod:`sim.engine.kv`, vLLM's 16-token grain) decides the hits, evictions
included (past the knee the running requests' KV can push prompts out). Simplifications: API-server time (HTTP,
tokenisation, streaming) is not modelled; every prompt has the run's mean length; output lengths are the requested
ones (``ignore_eos``: vLLM generates ``max_tokens``; only the throughput is converted to the client's count).

Every point is held out: no factor is fitted to them (``calibration/fit_factors.py`` reads
``published_points.csv`` only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
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

BLOCK_TOKENS = 16
"""vLLM's KV block size (``CacheConfig.DEFAULT_BLOCK_SIZE``), also its prefix-cache grain: the prefix cache is hashed
per block here as in vLLM (a hit leaves 1-16 prompt tokens to compute)."""
LADDER_FILE = "load_ladder_points.csv"
METRICS = ("ttft_p50", "e2e_p50", "completed_fraction", "throughput")


class LadderPoint(PublishedRun):
    """One measured number of one stage of a load-ladder run, with the run's settings (repeated on every row)."""

    stage: int = Field(ge=0)
    arrivals: Literal["constant"]
    timeout_s: float = Field(gt=0)
    rate_rps: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)
    client_output_tokens: float = Field(gt=0)
    prompt_groups: int = Field(ge=1)
    prompts_per_group: int = Field(ge=1)
    system_prompt_tokens: int = Field(ge=0)
    prefix_caching: bool
    metric: Literal["ttft_p50", "e2e_p50", "completed_fraction", "throughput"]
    measured: float = Field(gt=0)


def ladder_path() -> Path:
    """``calibration/data/load_ladder_points.csv`` (next to the other published points)."""
    from sim.perf.validation import calibration_data_dir

    return calibration_data_dir() / LADDER_FILE


def read_points(path: Path) -> list[LadderPoint]:
    """The rows of a load-ladder CSV; a bad cell raises :class:`ConfigError` naming the line and field."""
    out = [p for _, p in read_rows(path, LadderPoint)]
    seen: dict[tuple[str, int], LadderPoint] = {}
    for p in out:
        first = seen.setdefault((p.run, p.stage), p)
        if (first.rate_rps, first.duration_s, first.input_tokens, first.output_tokens, first.client_output_tokens) != (
                p.rate_rps, p.duration_s, p.input_tokens, p.output_tokens, p.client_output_tokens):
            raise ConfigError(str(path), f"id {p.id}", f"stage {p.stage} of run {p.run} has other settings than row "
                              f"{first.id}")
    return out


@dataclass
class StageResult:
    """What the simulated run gave for one stage."""

    sent: int
    completed: int
    ttft_p50_s: float
    e2e_p50_s: float
    throughput_tok_s: float

    def metric(self, name: str) -> float:
        return {
            "ttft_p50": self.ttft_p50_s,
            "e2e_p50": self.e2e_p50_s,
            "completed_fraction": self.completed / self.sent if self.sent else float("nan"),
            "throughput": self.throughput_tok_s,
        }[name]


@dataclass
class RunOutcome:
    """Per-stage results of one simulated run, the node's preemption count and its prefix-cache hit ratio
    (prompt tokens served from the cache ÷ prompt tokens, over the requests it admitted)."""

    stages: dict[int, StageResult]
    preemptions: int
    timed_out: int
    cache_hit_ratio: float = 0.0


@dataclass(frozen=True)
class Stage:
    """One load stage: ``requests`` evenly spaced over ``duration_s``, of fixed lengths. ``client_output_tokens``:
    what the client counts per answer (inference-perf re-tokenises the streamed text, which reads other than the
    ``output_tokens`` the node generates); the stage's throughput is in the client's tokens (None: the node's)."""

    rate_rps: float
    duration_s: float
    input_tokens: int
    output_tokens: int
    client_output_tokens: float | None = None

    @property
    def requests(self) -> int:
        return max(1, round(self.rate_rps * self.duration_s))


@dataclass(frozen=True)
class PromptSet:
    """The finite prompt set ``inference-perf``'s ``shared_prefix`` data generator sends, cycled for the whole run.

    It builds ``groups`` × ``per_group`` prompts once (a system prompt of ``system_tokens`` random tokens per group,
    then a random question per prompt), shuffles them, and request ``n`` (counted over the whole run) sends prompt
    ``n mod (groups × per_group)`` of that order. With a prefix cache a prompt sent before is cached but for its
    last unit: after the first cycle a request's prefill is its last few tokens. ``order_seed`` fixes the shuffle
    (the source's is unseeded; it only decides which group's system prompt the first cycle shares first).
    """

    groups: int
    per_group: int
    system_tokens: int
    order_seed: int = 0

    @property
    def prompts(self) -> int:
        return self.groups * self.per_group

    def chains(self, prompt_tokens: int, unit_tokens: int) -> list[tuple[int, ...]]:
        """Each prompt's chained unit hashes (:mod:`sim.engine.kv`), in the order the client sends them: the first
        ``system_tokens // unit_tokens`` units are its group's, the rest its own (whole units only)."""
        units = prompt_tokens // unit_tokens
        shared = min(units, self.system_tokens // unit_tokens)
        out = []
        for g in range(self.groups):
            head = tuple(((g + 1) << 20) | i for i in range(shared))
            for q in range(self.per_group):
                out.append(head + tuple(((g + 1) << 40) | ((q + 1) << 20) | i for i in range(shared, units)))
        order = np.random.default_rng(self.order_seed).permutation(len(out))
        return [out[i] for i in order]


def _fire(fn: Callable[[Request], None], req: Request, _event: simpy.Event) -> None:
    fn(req)


def simulate(setup: NodeSetup, stages: Sequence[Stage], timeout_s: float,
             prompts: PromptSet | None = None) -> RunOutcome:
    """Drive one node through ``stages`` back to back with a client that gives up after ``timeout_s``;
    ``prompts``: the client's finite prompt set (each request carries its prompt's hashes, which a node with
    ``engine.prefix_caching`` hits), or None (every prompt new)."""
    env = simpy.Environment()
    node = Node(env, 0, setup.perf, setup.engine, setup.memory.kv_capacity_blocks, setup.max_model_len,
                lambda _r: None)
    plan: list[tuple[float, int, Stage]] = []
    t0 = 0.0
    for k, st in enumerate(stages):
        plan += [(t0 + i / st.rate_rps, k, st) for i in range(st.requests)]
        t0 += st.duration_s
    reqs: list[tuple[int, Request]] = []
    timed_out = [0]
    unit = setup.engine.prefix_unit_tokens
    chains: dict[int, list[tuple[int, ...]]] = {}  # by prompt length (stages of a run share their prompts)

    def give_up(req: Request) -> None:
        if req.status in (Status.WAITING, Status.RUNNING) and node.withdraw(req):
            req.status = Status.TIMED_OUT
            req.finish_s = env.now
            timed_out[0] += 1

    def send() -> Generator[simpy.Event, None, None]:
        for i, (t, k, st) in enumerate(plan):
            if t > env.now:
                yield env.timeout(t - env.now)
            r = Request(i, t, 0, st.input_tokens, st.output_tokens)
            if prompts is not None:
                if st.input_tokens not in chains:
                    chains[st.input_tokens] = prompts.chains(st.input_tokens, unit)
                r.prefix = chains[st.input_tokens][i % prompts.prompts]
            reqs.append((k, r))
            node.submit(r)
            env.timeout(timeout_s).callbacks.append(partial(_fire, give_up, r))

    env.process(send())
    env.run()
    results: dict[int, StageResult] = {}
    for k in range(len(stages)):
        mine = [r for s, r in reqs if s == k]
        done = [r for r in mine if r.status == Status.COMPLETED and r.finish_s - r.arrival_s <= timeout_s]
        start = min(r.arrival_s for r in mine)
        end = max(r.finish_s if r.finish_s >= 0 else r.arrival_s + timeout_s for r in mine)
        ttft = np.array([r.first_token_s - r.arrival_s for r in done])
        e2e = np.array([r.finish_s - r.arrival_s for r in done])
        st = stages[k]
        counted = st.client_output_tokens if st.client_output_tokens is not None else st.output_tokens
        results[k] = StageResult(
            sent=len(mine), completed=len(done),
            ttft_p50_s=float(np.median(ttft)) if done else float("nan"),
            e2e_p50_s=float(np.median(e2e)) if done else float("nan"),
            throughput_tok_s=len(done) * counted / max(end - start, 1e-12) if done else 0.0,
        )
    preemptions = sum(r.preemptions for _, r in reqs)
    admitted = [r for _, r in reqs if r.first_scheduled_s >= 0]
    prompt = sum(r.prompt_tokens for r in admitted)
    hit = sum(r.cached_tokens for r in admitted) / prompt if prompt else 0.0
    return RunOutcome(results, preemptions, timed_out[0], hit)


def _run_setup(p: LadderPoint, cal: Calibration) -> NodeSetup:
    # vLLM V1: chunked prefill always on; automatic prefix caching on by default, at its 16-token block grain
    engine = Engine(max_num_seqs=p.max_num_seqs, max_num_batched_tokens=p.max_num_batched_tokens,
                    max_model_len=p.max_model_len, chunked_prefill=True, prefix_caching=p.prefix_caching,
                    prefix_unit_tokens=BLOCK_TOKENS, block_size=BLOCK_TOKENS)
    return NodeSetup.build(p.gpu, p.model, p.gpus, p.weights, p.kv, engine, calibration=cal, stack=p.stack,
                           source=p.id)


@dataclass
class LadderReport:
    """Per-point rows (measured, predicted, error) and per-run preemption / time-out counts."""

    rows: list[dict] = field(default_factory=list)
    runs: dict[str, dict] = field(default_factory=dict)


def run(points: Sequence[LadderPoint], calibrations: dict[str, Calibration] | None = None) -> LadderReport:
    """Simulate every run once (its stages back to back) and compare each point; ``calibrations`` per stack
    (default: the shipped ones)."""
    by_run: dict[str, list[LadderPoint]] = {}
    for p in points:
        by_run.setdefault(p.run, []).append(p)
    # measured regime: a stage whose run published time-outs (it carries a completed_fraction point) is past the knee
    past_knee = {(p.run, p.stage) for p in points if p.metric == "completed_fraction" and p.measured < 1}
    report = LadderReport()
    for name, pts in by_run.items():
        first = pts[0]
        cal = (calibrations or {}).get(first.stack) or get_stack(first.stack, first.id, "stack").calibration
        stage_of = {p.stage: Stage(p.rate_rps, p.duration_s, p.input_tokens, p.output_tokens, p.client_output_tokens)
                    for p in pts}
        order = sorted(stage_of)
        if order != list(range(len(order))):
            raise ConfigError(first.id, "stage", f"run {name} needs stages 0..{len(order) - 1} (got {order})")
        prompts = PromptSet(first.prompt_groups, first.prompts_per_group, first.system_prompt_tokens)
        out = simulate(_run_setup(first, cal), [stage_of[k] for k in order], first.timeout_s, prompts)
        report.runs[name] = {"preemptions": out.preemptions, "timed_out": out.timed_out,
                             "sent": sum(s.sent for s in out.stages.values()), "cache_hit": out.cache_hit_ratio}
        for p in pts:
            value = out.stages[p.stage].metric(p.metric)
            err = (value - p.measured) / p.measured * 100.0 if math.isfinite(value) else float("nan")
            report.rows.append({"id": p.id, "run": p.run, "stage": p.stage, "rate_rps": p.rate_rps,
                                "gpu": p.gpu, "gpus": p.gpus, "model": p.model, "metric": p.metric,
                                "measured": p.measured, "predicted": value, "error_pct": err,
                                "overloaded": (p.run, p.stage) in past_knee,
                                "role": "held-out", "source": p.source})
    return report


def summarise(report: LadderReport) -> list[dict]:
    """Mean, median and worst absolute % error per (regime, metric): ``past knee`` (the measured stage timed
    requests out) vs ``below knee`` (one saturated prediction dominates a mean: read the median too)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in report.rows:
        regime = "past knee" if r["overloaded"] else "below knee"
        e = abs(r["error_pct"]) if math.isfinite(r["error_pct"]) else 1000.0
        groups.setdefault((regime, r["metric"]), []).append(e)
    return [{"regime": k[0], "metric": k[1], "n": len(v), "mape_pct": float(np.mean(v)),
             "median_ape_pct": float(np.median(v)), "max_ape_pct": float(np.max(v))} for k, v in sorted(groups.items())]


def _fmt(metric: str, v: float) -> str:
    if not math.isfinite(v):
        return "–"
    if metric == "completed_fraction":
        return f"{v:.1%}"
    if metric == "throughput":
        return f"{v:,.0f} tok/s"
    return f"{v * 1e3:,.1f} ms" if v < 10 else f"{v:,.1f} s"


def format_report(report: LadderReport) -> str:
    """Plain text: the per-regime summary, then every point and each run's preemptions and time-outs."""
    lines = [f"{'regime':11} {'metric':19} {'MAPE':>9} {'median':>8} {'worst':>9}  n"]
    for s in summarise(report):
        lines.append(f"{s['regime']:11} {s['metric']:19} {s['mape_pct']:8.1f}% {s['median_ape_pct']:7.1f}% "
                     f"{s['max_ape_pct']:8.1f}%  {s['n']}")
    lines.append("")
    lines.append(f"{'point':44} {'req/s':>6} {'measured':>14} {'predicted':>14} {'error':>8}")
    for r in report.rows:
        lines.append(f"{r['id'][:44]:44} {r['rate_rps']:6g} {_fmt(r['metric'], r['measured']):>14} "
                     f"{_fmt(r['metric'], r['predicted']):>14} {r['error_pct']:+7.1f}%")
    for name, d in report.runs.items():
        lines.append(f"run {name}: {d['sent']} sent, {d['timed_out']} timed out, {d['preemptions']} preemptions, "
                     f"{d['cache_hit']:.0%} of prompt tokens from the prefix cache (simulated)")
    return "\n".join(lines)


def markdown_report(report: LadderReport) -> str:
    """Markdown tables of :func:`summarise` and of every point."""
    out = ["| regime | metric | MAPE (n) | median APE | worst |", "|---|---|---|---|---|"]
    for s in summarise(report):
        out.append(f"| {s['regime']} | {s['metric']} | {s['mape_pct']:,.1f} % ({s['n']}) | "
                   f"{s['median_ape_pct']:,.1f} % | {s['max_ape_pct']:,.1f} % |")
    out += ["", "| point | hardware | model | load | metric | measured | predicted | error |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        out.append(f"| {r['id']} | {r['gpus']}× {r['gpu']} | {r['model']} | {r['rate_rps']:g} req/s | {r['metric']} | "
                   f"{_fmt(r['metric'], r['measured'])} | {_fmt(r['metric'], r['predicted'])} | "
                   f"{r['error_pct']:+.1f} % |")
    out.append("")
    for name, d in report.runs.items():
        out.append(f"* `{name}`: {d['sent']} requests sent, {d['timed_out']} timed out, {d['preemptions']} "
                   f"preemptions, {d['cache_hit']:.1%} of prompt tokens from the prefix cache (simulated; the source "
                   "publishes neither)")
    return "\n".join(out)
