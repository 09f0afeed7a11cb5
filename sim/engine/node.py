"""Fast node engine: the reference scheduler's semantics, with runs of unchanged decode steps jumped over.

Same rules as :mod:`sim.engine.reference` (read that first). What makes it fast:

* Running requests in decode are kept as an aggregate. They advance one token per step together, so each
  stores its state at the step counter value it joined (``dec_step0``) and its current state is derived from
  the node's step counter ``S``. Advancing ``n`` steps is O(1): ``S += n``.
* A decoder needs a new KV block at a step iff its context is a multiple of ``block_size``; that phase is
  fixed while it decodes, so a histogram over phases gives the blocks needed by any run of steps in
  O(block_size), and the longest run the free blocks allow.
* Finishing steps are known in advance (a heap keyed by step number).
* When the next step is decode-only and the waiting queue is empty or its head cannot be admitted (nothing
  that could change that happens during a decode run), the node jumps straight to the next change: the first
  finish, the last step before the cache runs out, or — if a request reaches the head of the waiting queue
  meanwhile (an arrival to an empty queue, a higher-priority arrival, a withdrawal of the head) — the end of
  the step in progress. The run's duration has a closed form (:meth:`StepTimeModel.decode_run_s`), and so
  has its inverse (how many steps have finished by a given time), which routing and sampling use.

A running request withdrawn mid-run (its client gave up) stops the run at the end of the step in progress too;
it is dropped at that step boundary, before finishes are processed, exactly as in the reference.

Steps that contain prefill work, admissions or preemptions are simulated one at a time. The engine's cost
therefore grows with the number of requests (a few events each), not with the number of tokens.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, Final

import numpy as np
import simpy

from sim.core.config import Engine
from sim.engine.admission import Limits, admit_with, make_admission
from sim.engine.common import (
    NodeSnapshot,
    WorkDone,
    admission_problem,
    decode_run_work,
    make_waiting_queue,
    preemption_victim,
)
from sim.engine.jitter import make_jitter
from sim.engine.kv import cdiv, make_ledger
from sim.engine.loop import Environment, call_later
from sim.engine.multistep import make_multistep
from sim.engine.plan import StepPlan
from sim.perf.model import StepTimeModel, attention_pairs, steps_on_line
from sim.traffic.request import Request, Status

_INF: Final = float("inf")


class Mode(Enum):
    """What a busy fast node is doing: one engine ``STEP``, a ``JUMP`` over a run of decode steps, or ``DEAD``
    (killed). An idle node has no mode (None)."""

    STEP = "step"
    JUMP = "jump"
    DEAD = "dead"



class Node:
    """A serving replica (continuous batching, paged KV cache) simulated event by event."""

    def __init__(
        self,
        env: simpy.Environment,
        node_id: int,
        perf: StepTimeModel,
        engine: Engine,
        capacity_blocks: int,
        max_model_len: int,
        on_done: Callable[[Request], None],
    ) -> None:
        self.env = env
        # the loop itself when it is sim.engine.loop's: its clock is then read without an attribute lookup
        loop: Any = env  # Any: the two loops are unrelated classes (sim.engine.loop)
        self._loop: Environment | None = loop if isinstance(loop, Environment) else None
        self.node_id = node_id
        self.perf = perf
        self.engine = engine
        self._limits = Limits(engine)  # what the admission rule reads, as plain attributes
        self.bs = engine.block_size
        self.capacity_blocks = capacity_blocks
        self.max_model_len = max_model_len
        self.on_done = on_done
        self.max_batched = engine.max_num_batched_tokens
        self.reserve = engine.reserve_kv
        # a request of at most this many tokens always fits (admission_problem is asked only above it, or without
        # chunked prefill)
        self._fit_tokens = min(max_model_len, capacity_blocks * self.bs + 1)
        self._chunked = engine.chunked_prefill

        self.waiting = make_waiting_queue(engine)
        self.admission = make_admission(engine, self.bs)  # SGLang's new-token ratio, or None
        self.jitter = make_jitter(engine.step_jitter.cv, engine.step_jitter.seed, node_id)
        self.multistep = make_multistep(engine.num_scheduler_steps)  # vLLM v0 multi-step runs, or None
        self.fin_sum = 0  # Σ fin_step over decoders: their decode tokens still to come = fin_sum − len(decoding)·S
        self.decoding: dict[int, Request] = {}  # admission order
        self.prefilling: list[Request] = []  # running, prefill not finished; always after the decoders
        self.S = 0  # engine steps executed
        self.dec_ctx_sum = 0  # Σ num_computed over decoders, as of step S
        self.phase_cnt = [0] * self.bs  # decoders by (num_computed − S) mod block_size
        self.fin_heap: list[tuple[int, int, Request]] = []
        self.kv = make_ledger(engine, capacity_blocks)
        self._cancelled: list[Request] = []  # running requests withdrawn, dropped at the next step boundary
        # priority-policy preemption inside one step (vLLM v1 evicts the largest (priority, arrival), which may be a
        # request already in the step): blocks each decoder / prefill chunk took in this step, token budget given
        # back, and the decoders that sit the step out because scheduling stopped before them
        self._dec_step_blocks: set[int] = set()
        self._chunk_blocks: dict[int, int] = {}
        self._chunks_now: list[tuple[Request, int]] = []
        self._budget_back = 0
        self._phase2 = False
        self._sitout: list[Request] = []
        self._preempted = False  # the last scheduling pass preempted something
        self.work = 0  # Σ (prompt + output − computed) over requests on this node, as of step S
        self.busy_s = 0.0
        self.done_work = WorkDone()  # finished steps' T, A, C (committed at step and run ends)
        self._seq = 0

        self._mode: Mode | None = None  # current activity; None: idle
        self._plan = StepPlan()  # the step or decode run in progress (while the mode is STEP or JUMP)
        # fires at the end of the planned step or run (a bare timer on sim.engine.loop's environment)
        self._timer: Any = None
        self._on_step_end = self._end_step  # bound once: a timer costs no closure
        self._on_jump_end = self._end_jump
        self.work_changed: Callable[[Node], None] | None = None  # set by the least-work router's index
        self.handoff: Callable[[Request], None] | None = None  # prefill role: called when a prompt is computed
        self._parked: dict[int, int] = {}  # prefill role: rid -> KV blocks held until release_kv (sim.fleet.disagg)
        self._holding = False  # inside batched(): an idle node ticks once at its end
        # speculative decoding with per-class acceptance: decoders per class set the decode steps' τ
        self._base_perf = perf
        n_cls = len(perf.class_tokens_per_step)
        self._class_cnt: list[int] | None = [0] * n_cls if n_cls else None

    def _now(self) -> float:
        loop = self._loop
        return loop.now if loop is not None else self.env.now

    # -- interface ------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Engine iterations executed so far."""
        return self.S

    def submit(self, req: Request) -> None:
        req.node = self.node_id
        if ((req.prompt_tokens + req.output_tokens > self._fit_tokens or not self._chunked)
                and admission_problem(req, self.engine, self.capacity_blocks, self.max_model_len) is not None):
            req.status = Status.REJECTED
            req.finish_s = self._now()
            self.on_done(req)
            return
        self.waiting.append(req)
        self.work += req.prompt_tokens + req.output_tokens
        if self._mode is None:
            if not self._holding:
                # an idle node schedules at the end of this instant, as the reference's process resumes after the
                # instant's callbacks: requests arriving at the same time (trace replay) share its first step
                self._holding = True
                call_later(self.env, 0, self._wake_at_instant_end)
        elif self._mode is Mode.JUMP and self.waiting[0] is req:
            # a new head of the queue (the queue was empty, or it outranks the blocked head under the priority
            # policy) may be admissible: stop the run at the end of the step in progress
            self._shorten_jump()
        if self.work_changed is not None:
            self.work_changed(self)

    def outstanding_tokens(self) -> int:
        """Tokens still to compute or generate on this node at the current time."""
        if self._mode is Mode.JUMP:
            plan = self._plan
            if self._now() < plan.done_until_s:  # the run's step count is cached until its next step ends
                return self.work - plan.batch * plan.done_steps
            return self.work - plan.batch * self._steps_done_in_jump()
        return self.work

    def work_level(self, level: int) -> tuple[int, float]:
        """For the least-work index: ``(work, t_s)``, ``work`` = :meth:`outstanding_tokens` now. Unless the node
        reports a change (``work_changed``) first, its work stays ``work`` until ``t_s`` if ``work <= level``, and
        stays above ``level`` until ``t_s`` otherwise (inf: for ever). Idle or stepping, the work is constant; in a
        decode run it falls by ``batch`` at each step end, known in advance (the run's step times)."""
        if self._mode is not Mode.JUMP:
            return self.work, _INF
        plan = self._plan
        b, n_run = plan.batch, plan.n
        m = self._steps_done_in_jump()
        w = self.work - b * m
        # steps from the run's start until the work is at the level: the next step end if it is there already
        j = m + 1 if w <= level else -((level - self.work) // b)
        # 1 µs short of that step's end: float rounding in the engine's own step count stays inside it
        return w, _INF if j > n_run else plan.t0_s + plan.run_s(j) - 1e-6

    def work_floor(self) -> int:
        """The least :meth:`outstanding_tokens` reaches before this node next reports a change (``work_changed``):
        the work left at the end of the decode run in progress, or the work now."""
        if self._mode is Mode.JUMP:
            return self.work - self._plan.batch * self._plan.n
        return self.work

    def prefix_match_tokens(self, req: Request) -> int:
        """Prompt tokens of ``req`` held by this node's prefix cache now (inside a decode run, cached units the
        run's block allocations have evicted by now do not count)."""
        pending = self._blocks_for_steps(self.S, self._steps_done_in_jump()) if self._mode is Mode.JUMP else 0
        return self.kv.match_tokens(req, pending)

    def prefix_unit_set(self) -> frozenset[int]:
        """The prefix-cache units held now (a stale router's copy; see :meth:`prefix_match_tokens`)."""
        pending = self._blocks_for_steps(self.S, self._steps_done_in_jump()) if self._mode is Mode.JUMP else 0
        return self.kv.unit_set(pending)

    def snapshot(self) -> NodeSnapshot:
        running = len(self.decoding) + len(self.prefilling) + len(self._sitout)
        if self._mode is Mode.JUMP:
            j = self._steps_done_in_jump()
            used = self.kv.held + self._blocks_for_steps(self.S, j)
            return NodeSnapshot(len(self.waiting), running, used, self.busy_s + self._now() - self._plan.t0_s)
        # idle or dead: frozen
        busy = self.busy_s + (self._now() - self._plan.t0_s if self._mode is Mode.STEP else 0.0)
        return NodeSnapshot(len(self.waiting), running, self.kv.held, busy)

    def work_totals(self) -> tuple[int, float, float, int]:
        """(Σ tokens, Σ attention pairs, Σ context tokens, steps) over the steps finished by now."""
        base = self.done_work.totals()
        if self._mode is Mode.JUMP:
            return decode_run_work(base, self._plan.batch, self._plan.ctx0, self._steps_done_in_jump())
        return base

    def in_flight(self) -> list[Request]:
        """Requests this node still owes an answer (running ones already withdrawn are not)."""
        running = list(self.decoding.values()) + list(self.prefilling) + self._sitout
        return list(self.waiting) + [r for r in running if not r.cancelled]

    def withdraw(self, req: Request) -> bool:
        """Take ``req`` off this node, as the reference does: queued → off the queue now; running → dropped
        at the end of the step in progress (a decode run is cut there), its KV blocks freed then. False if it
        is not queued or running here (or already withdrawn)."""
        if req.status == Status.WAITING:
            was_head = bool(self.waiting) and self.waiting[0] is req
            try:
                self.waiting.remove(req)
            except ValueError:
                return False
            self.work -= req.prompt_tokens + req.output_tokens
            if was_head and self._mode is Mode.JUMP and self.waiting:
                self._shorten_jump()  # the next request, now at the head, may be admissible
            if self.work_changed is not None:
                self.work_changed(self)
            return True
        if req.status == Status.RUNNING and not req.cancelled and (
                self.decoding.get(req.rid) is req or req in self.prefilling or req in self._sitout):
            req.cancelled = True
            self._cancelled.append(req)
            if self._mode is Mode.JUMP:
                self._shorten_jump()  # the batch changes after the step in progress
            return True
        return False

    def in_flight_count(self) -> int:
        return (len(self.waiting) + len(self.decoding) + len(self.prefilling) + len(self._sitout)
                - len(self._cancelled))

    def kill(self) -> list[Request]:
        """The node disappears now (e.g. a spot eviction): its step in progress is lost, its KV freed.

        Returns its requests, reset for recompute elsewhere (generated tokens are kept, as after a
        preemption) in admission order, queued ones last. The node does nothing afterwards."""
        self._cancel_timer()
        if self._mode is Mode.JUMP:  # the decode steps of the run finished by now count (the reference's do)
            n = self._steps_done_in_jump()
            w = decode_run_work(self.done_work.totals(), self._plan.batch, self._plan.ctx0, n)
            self.done_work.tokens, self.done_work.pairs, self.done_work.ctx, self.done_work.steps = w
            self.S += n
        if self._mode is not None:
            self.busy_s += self._now() - self._plan.t0_s
        self._mode = Mode.DEAD
        out: list[Request] = []
        for req in list(self.decoding.values()):
            self._materialize(req)
            out.append(req)
        out.extend(self._sitout)
        out.extend(self.prefilling)
        out = [r for r in out if not r.cancelled]
        self._cancelled.clear()
        for req in out:
            req.preemptions += 1
        out.extend(self.waiting)
        for req in out:
            req.num_computed = 0
            req.status = Status.WAITING
            req.fin_step = -1
        self.waiting.clear()
        self.decoding.clear()
        self.prefilling.clear()
        self._sitout = []
        self.fin_heap.clear()
        self.fin_sum = 0
        if self._class_cnt is not None:
            self._class_cnt = [0] * len(self._class_cnt)
        self.kv.clear()
        self.work = 0
        return out

    def release_kv(self, req: Request) -> None:
        """Prefill role: the KV of handed-off ``req`` has left this node; its blocks are freed now."""
        self.kv.release(req, self._parked.pop(req.rid), self.S)
        if self._mode is None and not self._holding:
            self._tick()

    def _wake_at_instant_end(self, _event: object) -> None:
        self._holding = False
        if self._mode is None:
            self._tick()

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Several submissions / releases at one instant: an idle node schedules once, after all of them (as the
        reference, whose process wakes once after the instant's callbacks)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._mode is None:
            self._tick()

    # -- lazy decoder state ---------------------------------------------------------------------------
    def _materialize(self, req: Request) -> None:
        k = self.S - req.dec_step0
        req.num_computed += k
        req.num_generated += k
        req.dec_step0 = self.S

    def _add_decoder(self, req: Request) -> None:
        req.dec_step0 = self.S
        req.fin_step = self.S + req.output_tokens - req.num_generated
        self.fin_sum += req.fin_step
        self.decoding[req.rid] = req
        if self._class_cnt is not None:
            self._class_cnt[req.class_idx] += 1
        self.dec_ctx_sum += req.num_computed
        self.phase_cnt[(req.num_computed - self.S) % self.bs] += 1
        self._seq += 1
        heapq.heappush(self.fin_heap, (req.fin_step, self._seq, req))

    def _remove_decoder(self, req: Request) -> None:
        """Take a decoder out of the aggregate (its state materialised); its heap entry goes stale."""
        self._materialize(req)
        del self.decoding[req.rid]
        if self._class_cnt is not None:
            self._class_cnt[req.class_idx] -= 1
        self.dec_ctx_sum -= req.num_computed
        self.phase_cnt[(req.num_computed - self.S) % self.bs] -= 1
        self.fin_sum -= req.fin_step
        req.fin_step = -1

    def _blocks(self, tokens: int) -> int:
        return cdiv(tokens, self.bs)

    def _full_blocks(self, req: Request) -> int:
        """Blocks of a request's final context (prompt + output − 1 tokens), reserved up front with reserve_kv."""
        return cdiv(req.prompt_tokens + req.output_tokens - 1, self.bs)

    def _held(self, req: Request) -> int:
        return self._full_blocks(req) if self.reserve else self._blocks(req.num_computed)

    def _blocks_for_steps(self, s0: int, n: int) -> int:
        """KV blocks the decoders allocate in steps s0+1 … s0+n."""
        if n <= 0 or not self.decoding or self.reserve:
            return 0
        full, rem = divmod(n, self.bs)
        total = full * len(self.decoding)
        bs, cnt = self.bs, self.phase_cnt
        for k in range(rem):
            total += cnt[(-(s0 + k)) % bs]
        return total

    def _max_steps_kv(self, limit: int, free: int | None = None) -> int:
        """Most decode steps (≤ limit) whose block allocations all succeed (fit ``free`` blocks; default: the
        ledger's free blocks)."""
        dec_n = len(self.decoding)
        if self.reserve:
            return limit
        if free is None:
            free = self.kv.free_blocks
        q = free // dec_n
        n0 = q * self.bs
        if n0 >= limit:
            return limit
        r = free - q * dec_n
        bs, cnt, s = self.bs, self.phase_cnt, self.S + n0
        k = 0
        while k < bs:
            need = cnt[(-(s + k)) % bs]
            if need > r:
                break
            r -= need
            k += 1
        return min(limit, n0 + k)

    # -- scheduling -----------------------------------------------------------------------------------
    def _head_admissible(self) -> bool:
        """Whether the next step would admit the waiting head, given decoders only are running (one or more)."""
        if not self.waiting or (self.multistep is not None and not self.multistep.can_admit()):
            return False
        dec_n = len(self.decoding)
        free = self.kv.free_blocks
        if not self.reserve:
            free -= self.phase_cnt[(-self.S) % self.bs]  # blocks the decoders allocate in that step
        adm = self.admission
        future = self._future_decode_tokens() if adm is not None else 0
        head = self.waiting[0]
        return admit_with(head, self._limits, dec_n, self.max_batched - dec_n, free, adm, self.S,
                          future, self.kv.lookup(head)) is not None

    def _future_decode_tokens(self) -> int:
        """Decode tokens still to come of the running requests (SGLang's admission reserves a share of them)."""
        return self.fin_sum - len(self.decoding) * self.S + sum(r.output_tokens - r.num_generated
                                                                for r in self.prefilling)

    def _next_finish_step(self) -> int:
        heap = self.fin_heap
        while heap:
            fin, _, req = heap[0]
            if req.fin_step == fin:
                return fin
            heapq.heappop(heap)
        raise RuntimeError("decoders without a finish step")  # pragma: no cover

    def _tick(self) -> None:
        """At a step boundary (or on waking): choose and start the next step or decode run."""
        if self._class_cnt is not None:
            self.perf = self._base_perf.for_decoders(self._class_cnt)
        # under SGLang's admission a blocked head can become admissible mid-run (the ratio decays), so jump only
        # with an empty queue
        waiting = self.waiting
        if (self.decoding and not self.prefilling
                and (not waiting or (self.admission is None and not self._head_admissible()))):
            limit = self._next_finish_step() - self.S
            n = limit if self.reserve else self._max_steps_kv(limit)
            if waiting and self.kv.cached_free:
                # an eviction can shorten a blocked head's hit and so its block need: run no step that evicts
                n = self._max_steps_kv(n, self.kv.unused_blocks)
            ms = self.multistep
            if ms is not None and self.waiting and ms.left > 0:
                n = min(n, ms.left)  # the run ends there: the scheduler may then admit the head
            if n >= 1:
                self._start_jump(n)
                if self.work_changed is not None:
                    self.work_changed(self)
                return
        chunks = self._schedule_step()
        if self._class_cnt is not None:  # preemptions may have removed decoders
            self.perf = self._base_perf.for_decoders(self._class_cnt)
        dec_n = len(self.decoding)
        if not chunks and dec_n == 0:
            if self._sitout:  # nothing runs: the decoders that sat out are running again, unadvanced
                for req in self._sitout:
                    self._add_decoder(req)
                self._sitout = []
            if self._preempted:
                self._tick()  # nothing ran but requests were preempted: schedule again at once (as the reference)
                return
            self._mode = None
            if self.work_changed is not None:
                self.work_changed(self)
            return
        tokens = dec_n
        ctx = self.dec_ctx_sum + dec_n
        attn = ctx
        for req, n in chunks:
            end = req.num_computed + n
            tokens += n
            ctx += end
            attn += attention_pairs(n, end)
        dt = self.perf.step_s(tokens, attn, ctx, decode_only=not chunks)  # speculative decoding: decode-only
        if self.multistep is not None:
            self.multistep.after_step(not chunks)
        if self.jitter is not None:
            dt *= self.jitter.factor(self.S)
        self._mode = Mode.STEP
        self._plan.step(self._now(), chunks, tokens, attn, ctx, dt)
        self._set_timer(dt, self._on_step_end)
        if self.work_changed is not None:
            self.work_changed(self)

    def _pop_newest(self) -> Request:
        if self.prefilling:
            return self.prefilling.pop()
        rid = next(reversed(self.decoding))
        req = self.decoding[rid]
        self._remove_decoder(req)
        return req

    def _pop_victim(self) -> Request:
        """Take the request a full cache preempts out of the batch (:func:`sim.engine.common.preemption_victim`:
        the newest, or under the priority policy the largest (priority, arrival)), giving back the blocks and token
        budget it already took in this step (``_budget_back``), as the reference does."""
        if self.engine.scheduling_policy != "priority":
            return self._pop_newest()  # the newest was never scheduled before the request being scheduled
        running = list(self.decoding.values()) + self.prefilling
        victim = running[preemption_victim(running, "priority")]
        if self.decoding.get(victim.rid) is victim:
            self._remove_decoder(victim)
            if not self._phase2:
                if victim.rid in self._dec_step_blocks:
                    self._dec_step_blocks.discard(victim.rid)
                    self.kv.free(1)
            else:  # every decoder is in the step by now
                self._budget_back += 1
                if not self.reserve and victim.num_computed % self.bs == 0:
                    self.kv.free(1)
        else:
            self.prefilling.remove(victim)
            for k, (r, n) in enumerate(self._chunks_now):
                if r is victim:
                    del self._chunks_now[k]
                    self._budget_back += n
                    self.kv.free(self._chunk_blocks.pop(victim.rid))
                    break
        return victim

    def _drop_cancelled(self) -> None:
        """At a step boundary: withdrawn running requests leave, their KV blocks freed."""
        for req in self._cancelled:
            if self.decoding.get(req.rid) is req:
                self._remove_decoder(req)
            else:
                self.prefilling.remove(req)
            self.kv.release(req, self._held(req), self.S)
            self.work -= req.prompt_tokens + req.output_tokens - req.num_computed
        self._cancelled.clear()

    def _preempt(self, req: Request) -> None:
        self.kv.release(req, self._held(req), self.S)
        self.work += req.num_computed
        req.num_computed = 0
        req.status = Status.WAITING
        req.preemptions += 1
        self.waiting.appendleft(req)

    def _allocate_or_preempt(self, req: Request, need: int) -> tuple[bool, bool]:
        """Allocate ``need`` blocks for running ``req``, preempting the newest running requests until they fit.
        Returns (allocated, preempted anything); not allocated when ``req`` itself had to be preempted."""
        preempted = False
        while not self.kv.can_allocate(need):
            victim = self._pop_victim()
            self._preempt(victim)
            preempted = True
            if victim is req:
                return False, True
        self.kv.allocate(need)
        return True, preempted

    def _schedule_step(self) -> list[tuple[Request, int]]:
        """One step of the reference scheduler; decoders stay aggregated. Returns the prefill chunks."""
        budget = self.max_batched
        preempted = False
        stop = False
        bs = self.bs
        ms = self.multistep
        if ms is not None and not self.decoding and not self.prefilling:
            ms.idle()
        self._dec_step_blocks.clear()
        self._chunk_blocks.clear()
        self._budget_back = 0
        self._phase2 = False
        chunks: list[tuple[Request, int]] = []
        self._chunks_now = chunks
        # 1. decoders, in admission order, one token each
        need = 0 if self.reserve else self.phase_cnt[(-self.S) % bs]
        if self.kv.can_allocate(need):
            self.kv.allocate(need)
        else:
            order = list(self.decoding.values())
            for k, req in enumerate(order):
                if self.decoding.get(req.rid) is not req:
                    continue  # preempted as a victim
                if (req.num_computed + self.S - req.dec_step0) % bs != 0:
                    continue
                ok, victims = self._allocate_or_preempt(req, 1)
                preempted = preempted or victims
                if not ok:
                    stop = True
                    # scheduling stops here (vLLM): decoders after it (priority policy only) sit this step out
                    self._sitout = [r for r in order[k + 1:] if self.decoding.get(r.rid) is r]
                    for r in self._sitout:
                        self._remove_decoder(r)
                    break
                self._dec_step_blocks.add(req.rid)
        budget -= len(self.decoding)
        # 2. running requests still in prefill
        self._phase2 = True
        if not stop:
            for req in list(self.prefilling):
                if req not in self.prefilling:
                    continue  # preempted as a victim
                n_new = min(req.num_tokens - req.num_computed, budget)
                if n_new <= 0:
                    continue
                need = 0 if self.reserve else self._blocks(req.num_computed + n_new) - self._blocks(req.num_computed)
                ok, victims = self._allocate_or_preempt(req, need)
                preempted = preempted or victims
                budget += self._budget_back
                self._budget_back = 0
                if not ok:
                    break
                chunks.append((req, n_new))
                self._chunk_blocks[req.rid] = need
                budget -= n_new
        adm = self.admission
        if preempted and adm is not None:
            running = list(self.decoding.values()) + self.prefilling + self._sitout
            generated = sum(r.num_generated + (self.S - r.dec_step0) for r in self.decoding.values())
            generated += sum(r.num_generated for r in self.prefilling + self._sitout)
            adm.on_retract(self.S, generated, sum(r.output_tokens for r in running), len(running))
        # 3. admissions, FCFS, only if nothing was preempted (and, with multi-step runs, between runs)
        if not preempted and (ms is None or ms.can_admit()):
            now = self._now()
            future = self._future_decode_tokens() if adm is not None else 0
            admitted = 0  # decode tokens to come of the requests admitted in this step (SGLang: in full)
            while self.waiting:
                req = self.waiting[0]
                hit = self.kv.lookup(req)
                fit = admit_with(req, self._limits, len(self.decoding) + len(self.prefilling), budget,
                                 self.kv.free_blocks, adm, self.S, future, hit, admitted)
                if fit is None:
                    break
                n_new, need = fit
                if adm is not None:
                    admitted += req.output_tokens - req.num_generated
                cached = hit[0]
                self.waiting.popleft()
                self.kv.admit(req, need, hit)
                req.num_computed = cached
                self.work -= cached
                req.status = Status.RUNNING
                if req.first_scheduled_s < 0:
                    req.first_scheduled_s = now
                self.prefilling.append(req)
                chunks.append((req, n_new))
                budget -= n_new
        self._preempted = preempted
        return chunks

    # -- time ------------------------------------------------------------------------------------------
    def _set_timer(self, delay: float, callback: Callable[[Any], None]) -> None:
        """Call ``callback`` ``delay`` from now. The previous timer must have fired or been cancelled (a step or
        run is planned at its end, or on waking an idle node; only :meth:`_shorten_jump` replaces a pending one)."""
        loop = self._loop
        self._timer = loop.call_later(delay, callback) if loop is not None else call_later(self.env, delay, callback)

    def _cancel_timer(self) -> None:
        """A pending timer fires with nothing to do (SimPy cannot unschedule an event); a timer that already fired
        (its callbacks set to None by SimPy) is left alone."""
        # Any: SimPy's hints call its callbacks a list, None once fired (`make native` turns typed reads into checks)
        timer: Any = self._timer
        if self._loop is not None and timer is not None:
            self._loop.cancel(timer)  # the loop drops cancelled timers from its queue when they pile up
        elif timer is not None:
            callbacks = timer.callbacks
            if callbacks:
                callbacks.clear()

    def _end_step(self, _timer: object = None) -> None:
        now = self._now()
        dec_n = len(self.decoding)
        plan = self._plan
        self.S += 1
        self.dec_ctx_sum += dec_n
        self.busy_s += plan.dt_s
        self.done_work.add_step(plan.tokens, plan.pairs, plan.ctx)
        self.work -= dec_n
        if self._sitout:  # decoders that sat the step out rejoin, in admission order, unadvanced
            for req in self._sitout:
                self._add_decoder(req)
            self._sitout = []
        for req, n in plan.chunks:
            req.num_computed += n
            self.work -= n
            if not req.cancelled:  # a prefill chunk: its full units enter the prefix cache
                self.kv.promote(req, min(req.num_computed, req.prompt_tokens))
            if req.num_computed == req.num_tokens and not req.cancelled:
                if self.handoff is not None:  # prefill role: no token here, the KV leaves (sim.fleet.disagg)
                    self.prefilling.remove(req)
                    self.work -= req.output_tokens - req.num_generated  # its rest (generated: recomputed here)
                    self._parked[req.rid] = self._held(req)
                    self.handoff(req)
                    continue
                req.num_generated += 1
                if req.first_token_s < 0:
                    req.first_token_s = now
                self.prefilling.remove(req)
                if req.num_generated == req.output_tokens:
                    self._finish(req, now)
                else:
                    self._add_decoder(req)
        plan.chunks = []
        if self._cancelled:
            self._drop_cancelled()
        self._finish_decoders(now)
        self._tick()

    def _finish(self, req: Request, now: float) -> None:
        self.kv.promote(req, req.num_computed)
        self.kv.release(req, self._held(req), self.S)
        self.work -= req.prompt_tokens + req.output_tokens - req.num_computed
        req.status = Status.COMPLETED
        req.finish_s = now
        self.on_done(req)

    def _finish_decoders(self, now: float) -> None:
        heap = self.fin_heap
        S = self.S
        while heap and heap[0][0] <= S:
            fin, _, req = heapq.heappop(heap)
            if req.fin_step != fin:
                continue  # stale: the request was preempted after this entry was pushed
            self._remove_decoder(req)
            self._finish(req, now)

    def _start_jump(self, n: int) -> None:
        self._mode = Mode.JUMP
        b, c0 = len(self.decoding), self.dec_ctx_sum
        perf = self.perf
        # with jitter, O(n): each step has its own factor
        cum = None if self.jitter is None else np.cumsum(
            perf.decode_step_times(b, c0, n) * self.jitter.factors(self.S, n))
        plan = self._plan
        plan.run(self._now(), n, b, c0, perf.decode_lines(b, c0), cum)
        self._set_timer(plan.dt_s, self._on_jump_end)

    def _steps_done_in_jump(self) -> int:
        """Steps of the current run finished by now (O(1): the run's step-time line is cached; the answer is kept
        until 1 µs before the next step ends, so the router's and sampler's reads between step ends cost a
        comparison)."""
        plan = self._plan
        now = self._now()
        until = plan.done_until_s
        if now < until:
            return plan.done_steps
        line = plan.line
        if line is not None and until > -_INF:
            # usually one step ended since the last read: step c + 1 ended at ≈ until + 1 µs; when ``now`` is
            # clear of that end and before the next one, the count is c + 1 (no root to solve)
            k = plan.done_steps + 1
            if k < plan.n and now >= until + 2e-6:
                nxt = plan.t0_s + (line[0] * (k + 1) + line[1] * (k + 1) * (k + 2) / 2.0) - 1e-6
                if now < nxt:
                    plan.done_steps = k
                    plan.done_until_s = nxt
                    return k
        elapsed = now - plan.t0_s
        if elapsed <= 0:
            return 0
        if plan.cum_s is not None:  # jitter on: the run's cumulative step times
            n = min(plan.n, int(np.searchsorted(plan.cum_s, elapsed, side="right")))
        else:
            m = steps_on_line(line[0], line[1], elapsed, plan.n) if line is not None else None
            n = m if m is not None else self.perf.decode_steps_within(plan.batch, plan.ctx0, elapsed, plan.n)
        plan.done_steps = n
        # kept until 1 µs short of the next step's end (float rounding of the count near a step end, or of the
        # sum below, stays outside the cache)
        if n >= plan.n:
            plan.done_until_s = _INF
        elif line is not None:  # step j takes a + b·j
            k = n + 1
            plan.done_until_s = plan.t0_s + (line[0] * k + line[1] * k * (k + 1) / 2.0) - 1e-6
        else:
            plan.done_until_s = plan.t0_s + plan.run_s(n + 1) - 1e-6
        return n

    def _shorten_jump(self) -> None:
        """A request arrived mid-run: stop at the end of the step in progress so the scheduler sees it."""
        n = self._steps_done_in_jump() + 1
        plan = self._plan
        if n >= plan.n:
            return
        plan.cut(n)
        self._cancel_timer()
        self._set_timer(plan.t0_s + plan.dt_s - self._now(), self._on_jump_end)

    def _end_jump(self, _timer: object = None) -> None:
        plan = self._plan
        n, b = plan.n, plan.batch
        if not self.reserve:
            self.kv.allocate(self._blocks_for_steps(self.S, n))
        self.done_work.add_run(b, plan.ctx0, n)
        self.S += n
        self.dec_ctx_sum += b * n
        self.work -= b * n
        if self.multistep is not None:
            self.multistep.after_decode_steps(n)
        self.busy_s += plan.dt_s
        if self._cancelled:
            self._drop_cancelled()
        self._finish_decoders(self._now())
        self._tick()
