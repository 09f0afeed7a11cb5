"""Pieces shared by the fast and the reference node engines."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from sim.core.config import Engine
from sim.engine.kv import cdiv
from sim.traffic.request import Request


class NodeSnapshot(NamedTuple):
    """State of one node at the current simulated time."""

    waiting: int
    running: int
    kv_used_blocks: int
    busy_s: float


class WorkDone:
    """Cumulative work of the engine steps a node has finished, for model-FLOPs and memory-bandwidth
    utilisation: ``tokens`` computed (Σ T), attention ``pairs`` (Σ A) and context tokens read (Σ C) over
    ``steps`` steps (the step-time model's T, A, C; see :mod:`sim.perf.model`)."""

    __slots__ = ("tokens", "pairs", "ctx", "steps")

    def __init__(self) -> None:
        self.tokens = 0
        self.pairs = 0.0
        self.ctx = 0.0
        self.steps = 0

    def add_step(self, tokens: int, pairs: float, ctx: float) -> None:
        self.tokens += tokens
        self.pairs += pairs
        self.ctx += ctx
        self.steps += 1

    def totals(self) -> tuple[int, float, float, int]:
        return self.tokens, self.pairs, self.ctx, self.steps


def decode_run_work(
    base: tuple[int, float, float, int], batch: int, ctx0: float, n: int
) -> tuple[int, float, float, int]:
    """``base`` plus ``n`` decode steps of ``batch`` sequences holding ``ctx0`` context tokens at the start
    (step ``j``: ``T = batch``, ``A = C = ctx0 + batch·j``)."""
    s = n * ctx0 + batch * n * (n + 1) / 2.0
    return base[0] + batch * n, base[1] + s, base[2] + s, base[3] + n


def admission_problem(req: Request, engine: Engine, capacity_blocks: int, max_model_len: int) -> str | None:
    """Why ``req`` can never be served on this node (it is then rejected at once), or None.

    A request is impossible when its full context exceeds ``max_model_len``, when its final KV footprint
    (prompt + output − 1 tokens) exceeds the node's whole cache, or, without chunked prefill, when its prompt
    exceeds ``max_num_batched_tokens``.
    """
    total = req.prompt_tokens + req.output_tokens
    if total > max_model_len:
        return f"context {total} > max_model_len {max_model_len}"
    bs = engine.block_size
    if cdiv(total - 1, bs) > capacity_blocks:
        return f"needs {total - 1} KV tokens, cache holds {capacity_blocks * bs}"
    if not engine.chunked_prefill and req.prompt_tokens - req.cached_tokens > engine.max_num_batched_tokens:
        return f"prompt {req.prompt_tokens} > max_num_batched_tokens without chunked prefill"
    return None


class PriorityWaitingQueue:
    """The waiting queue under ``scheduling_policy: priority`` (vLLM's): ordered by (priority, arrival time of the
    attempt), lower priority values first; a preempted request goes back at its own place rather than at the head.
    Same interface as the ``deque`` used for FCFS."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Request]] = []

    def append(self, req: Request) -> None:
        heapq.heappush(self._heap, (req.priority, req.attempt_s, req.rid, req))

    appendleft = append  # a preempted request keeps its (priority, arrival) place

    def popleft(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def __getitem__(self, i: int) -> Request:
        if i != 0:
            raise IndexError("only the head of a priority queue can be read")
        return self._heap[0][3]

    def remove(self, req: Request) -> None:
        for i, item in enumerate(self._heap):
            if item[3] is req:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                return
        raise ValueError("request not in queue")

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (item[3] for item in sorted(self._heap, key=lambda x: x[:3]))


def preemption_victim(running: list[Request], policy: str) -> int:
    """Index in ``running`` (admission order) of the request a full KV cache preempts: vLLM v1 takes the newest
    (``self.running.pop()``) under FCFS and, under the priority policy, ``max(self.running, key=(priority,
    arrival_time))`` (``vllm/v1/core/sched/scheduler.py``); ties on arrival go to the larger request id."""
    if policy != "priority":
        return len(running) - 1
    return max(range(len(running)), key=lambda k: (running[k].priority, running[k].attempt_s, running[k].rid))


def make_waiting_queue(engine: Engine) -> deque[Request] | PriorityWaitingQueue:
    """FCFS deque, or the priority queue under ``scheduling_policy: priority``."""
    return PriorityWaitingQueue() if engine.scheduling_policy == "priority" else deque()
