"""One LLM request and its life-cycle timestamps (all times in simulated seconds).

Token accounting follows vLLM: a request holds ``num_tokens = prompt_tokens + generated`` tokens, of which
``num_computed`` have KV in the cache. A step schedules ``num_tokens − num_computed`` new tokens (a prefill
chunk or one decode token); when ``num_computed`` reaches ``num_tokens`` a token is sampled. Preemption by
recompute sets ``num_computed`` back to 0 (the generated tokens are kept and recomputed with the prompt).

A client that gives up and retries (``traffic.classes[].client``) sends a new *attempt* of the same logical
request: a fresh :class:`Request` made by :meth:`Request.retry` (same ``rid``, class, tokens and
``arrival_s``; ``retries`` one higher; ``attempt_s`` the time it was sent). The attempt that was given up on
is dropped; one logical request is one row of the per-request table, its last attempt.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class Status(IntEnum):
    """Where a request is. Every arrived request ends in exactly one terminal status or is in flight."""

    WAITING = 0
    RUNNING = 1
    COMPLETED = 2
    REJECTED = 3
    SPILLED = 4
    FAILED = 5
    TIMED_OUT = 6  # the client gave up (after its last retry) before the answer came


class Handoff(NamedTuple):
    """Where a disaggregated request's prompt was computed and how its KV moved (:mod:`sim.fleet.disagg`): the
    prefill node it was sent to and, once the prompt was computed, the decode node, when the KV transfer started on
    the wire (before the prefill ended under layer-wise overlap) and when the KV had fully arrived, the time from the
    prefill's end to that arrival (queueing on the links included) and the bytes moved (−1 / NaN / 0 before the
    hand-off)."""

    prefill_node: int
    decode_node: int = -1
    kv_start_s: float = -1.0
    kv_end_s: float = -1.0
    kv_transfer_s: float = float("nan")
    kv_bytes: float = 0.0


class Request:
    """A request; engine fields are owned by the node that serves it."""

    __slots__ = (
        "rid",
        "arrival_s",
        "class_idx",
        "prompt_tokens",
        "output_tokens",
        "cached_tokens",
        "priority",
        "node",
        "status",
        "first_scheduled_s",
        "first_token_s",
        "finish_s",
        "preemptions",
        # shared prefix cache (sim.engine.kv): chained unit hashes of the token stream, conversation id
        "prefix",
        "session",
        "shared_units",
        # client retries (sim.traffic.clients)
        "retries",
        "attempt_s",
        "cancelled",
        # hosted-API facts (sim.spill.api / sim.spill.policy)
        "via_api",
        "spill_s",
        "api_attempts",
        "api_429s",
        "api_errors",
        "api_cost_usd",
        # disaggregated serving (sim.fleet.disagg): None, or a :class:`Handoff` of its latest prefill → decode hand-off
        "handoff",
        # engine state
        "num_computed",
        "num_generated",
        "dec_step0",
        "fin_step",
    )

    def __init__(
        self,
        rid: int = -1,
        arrival_s: float = 0.0,
        class_idx: int = 0,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
    ) -> None:
        # every argument has a default so that a copy compiled by `make native` (mypyc) can be unpickled (a sharded
        # run's cells return requests from worker processes): it is built empty, then its attributes are restored
        self.rid = rid
        self.arrival_s = arrival_s
        self.class_idx = class_idx
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = cached_tokens
        self.priority = 0  # lower is served first under scheduling_policy: priority
        self.node = -1
        self.status = Status.WAITING
        self.first_scheduled_s = -1.0
        self.first_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0
        self.prefix: tuple[int, ...] | None = None  # with a prefix cache, cached_tokens is set at each admission
        self.session = -1  # conversation id (session-affinity routing), −1: none
        self.shared_units = 0  # leading units of ``prefix`` this request references in its node's cache
        self.retries = 0  # attempts before this one (each given up on by the client)
        self.attempt_s = arrival_s  # when this attempt was sent (the queue order of scheduling_policy: priority)
        self.cancelled = False  # withdrawn while running: its node drops it at the end of the step in progress
        self.via_api = False  # handed to the hosted API (and not given back to the fleet)
        self.spill_s = -1.0  # when it was handed to the API (−1: never)
        self.api_attempts = 0
        self.api_429s = 0
        self.api_errors = 0  # 5xx, transient failures and timeouts
        self.api_cost_usd = 0.0
        self.handoff: Handoff | None = None
        self.num_computed = 0
        self.num_generated = 0
        self.dec_step0 = 0
        self.fin_step = 0

    def retry(self, now: float) -> Request:
        """A new attempt of this logical request, sent at ``now`` (engine and API state start afresh;
        preemptions so far are carried over)."""
        new = Request(self.rid, self.arrival_s, self.class_idx, self.prompt_tokens, self.output_tokens,
                      self.cached_tokens)
        new.priority = self.priority
        new.prefix = self.prefix
        new.session = self.session
        if self.prefix is not None:
            new.cached_tokens = 0
        new.retries = self.retries + 1
        new.attempt_s = now
        new.preemptions = self.preemptions
        return new

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_generated

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (
            f"Request({self.rid}, t={self.arrival_s:.3f}, P={self.prompt_tokens}, O={self.output_tokens}, "
            f"status={self.status.name})"
        )


# the per-request table's columns read from the records (sim.metrics.tables.requests_table), in this order
FLOAT_COLUMNS = ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "spill_s", "api_cost_usd")
INT_COLUMNS = ("rid", "class_idx", "node", "status", "prompt_tokens", "output_tokens", "cached_tokens", "preemptions",
               "retries", "via_api", "api_attempts", "api_429s", "api_errors")


def record_columns(reqs: list[Request], start: int, stop: int) -> tuple[list[float], list[int]]:
    """The values of :data:`FLOAT_COLUMNS` and :data:`INT_COLUMNS` of ``reqs[start:stop]``, row after row, in two flat
    lists (one pass over the records; compiled by ``make native``, where it reads the records natively)."""
    fl: list[float] = []
    il: list[int] = []
    for i in range(start, stop):
        r = reqs[i]
        fl.append(r.arrival_s)
        fl.append(r.first_scheduled_s)
        fl.append(r.first_token_s)
        fl.append(r.finish_s)
        fl.append(r.spill_s)
        fl.append(r.api_cost_usd)
        il.append(r.rid)
        il.append(r.class_idx)
        il.append(r.node)
        il.append(int(r.status))
        il.append(r.prompt_tokens)
        il.append(r.output_tokens)
        il.append(r.cached_tokens)
        il.append(r.preemptions)
        il.append(r.retries)
        il.append(1 if r.via_api else 0)
        il.append(r.api_attempts)
        il.append(r.api_429s)
        il.append(r.api_errors)
    return fl, il
