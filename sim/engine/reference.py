"""Step-by-step reference engine: one SimPy timeout per engine iteration, every request updated every step.

Kept for tests: it implements the scheduler semantics below in the plainest way, and the fast engine
(:mod:`sim.engine.node`) must reproduce its per-request timestamps. Semantics (vLLM v1 scheduler):

1. One token budget (``max_num_batched_tokens``) per step. Running requests are visited in admission order;
   each gets ``min(num_tokens − num_computed, budget)`` new tokens (1 for a decode, a chunk for a prefill).
2. KV blocks (``block_size`` tokens each) are allocated for ``num_computed + new`` tokens. If none are free,
   the newest running request is preempted (its blocks freed, ``num_computed = 0``, put back at the head of
   the waiting queue); if the request being scheduled is itself the newest, it is preempted and the loop ends.
   Under ``scheduling_policy: priority`` the victim is vLLM v1's: the running request with the largest
   (priority, arrival) (:func:`sim.engine.common.preemption_victim`); one already scheduled in this step leaves the
   step, and its blocks and token budget are given back.
3. Only if nothing was preempted this step, waiting requests are admitted in queue order (FCFS, or by class
   priority then arrival under ``scheduling_policy: priority``, where a preempted request returns to its own
   place instead of the head) while ``max_num_seqs``, the
   budget and free blocks allow. A prefix-cache hit starts the request at ``num_computed = cached_tokens``.
   Without chunked prefill a prompt that does not fit the remaining budget waits. Under ``scheduler: sglang``
   a request is admitted only if the KV left after its prefill blocks also holds the new-token ratio × the decode
   tokens still to come of the requests running before this step, plus those of the requests admitted in this
   step and of itself in full (unless nothing runs); a step that preempted
   resets the ratio (:class:`sim.engine.admission.SglangRatio`). With ``num_scheduler_steps`` n > 1 (vLLM v0
   multi-step) admissions happen only between runs: a decode-only step commits the batch to n decode steps
   (:class:`sim.engine.multistep.MultiStep`).
4. The step takes :meth:`StepTimeModel.step_s` (× the node's jitter factor for that step, when on); a step whose
   requests are all decoding (each sampled a token since it was admitted; no prefill chunk) is ``decode_only``,
   which decides whether the stack's CUDA-graph padding applies, and with speculative decoding such a step is
   ``1/τ`` of a verification pass, ``τ`` the mean over the running decoders' classes (:mod:`sim.perf.speculative`);
   then every
   scheduled request advances; a request whose
   ``num_computed`` reaches ``num_tokens`` samples a token (the first one is its TTFT); at ``output_tokens``
   generated tokens it finishes and frees its blocks.
5. Withdrawal (:meth:`ReferenceNode.withdraw`: the client gave up, or a late spill): a queued request leaves the
   waiting queue at once; a running one is cancelled at the end of the step in progress (vLLM applies aborts
   between engine iterations): that step's output for it is discarded, it leaves the running list and its KV
   blocks are freed before the next step is scheduled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import simpy

from sim.core.config import Engine
from sim.engine.admission import Limits, admit_with, make_admission
from sim.engine.common import NodeSnapshot, WorkDone, admission_problem, make_waiting_queue, preemption_victim
from sim.engine.jitter import make_jitter
from sim.engine.kv import cdiv, make_ledger
from sim.engine.multistep import make_multistep
from sim.perf.model import StepTimeModel, attention_pairs
from sim.traffic.request import Request, Status


class ReferenceNode:
    """A serving replica simulated one iteration at a time."""

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
        self.node_id = node_id
        self.perf = perf
        self.engine = engine
        self.limits = Limits(engine)  # what the admission rule reads
        self.bs = engine.block_size
        self.capacity_blocks = capacity_blocks
        self.max_model_len = max_model_len
        self.on_done = on_done
        self.waiting = make_waiting_queue(engine)
        self.admission = make_admission(engine, self.bs)  # SGLang's new-token ratio, or None
        self.jitter = make_jitter(engine.step_jitter.cv, engine.step_jitter.seed, node_id)
        self.multistep = make_multistep(engine.num_scheduler_steps)  # vLLM v0 multi-step runs, or None
        self.running: list[Request] = []
        self._decoders: set[int] = set()  # rids of running requests past their prefill (one decode token a step)
        self.kv = make_ledger(engine, capacity_blocks)
        self._cancelled = 0  # running requests withdrawn, dropped at the end of the step in progress
        self._preempted = False  # the last scheduling pass preempted something
        self.busy_s = 0.0
        self.steps = 0
        self.done_work = WorkDone()  # finished steps' T, A, C
        self._step_t0 = -1.0
        self._wake: simpy.Event | None = None
        self.dead = False
        self.handoff: Callable[[Request], None] | None = None  # prefill role: called when a prompt is computed
        self._parked: dict[int, int] = {}  # prefill role: rid -> KV blocks held until release_kv (sim.fleet.disagg)
        env.process(self._run())

    # -- interface shared with the fast node -----------------------------------------------------------
    def submit(self, req: Request) -> None:
        req.node = self.node_id
        if admission_problem(req, self.engine, self.capacity_blocks, self.max_model_len) is not None:
            req.status = Status.REJECTED
            req.finish_s = self.env.now
            self.on_done(req)
            return
        self.waiting.append(req)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def outstanding_tokens(self) -> int:
        """Tokens still to compute or generate: Σ (prompt + output − computed) over queued and running."""
        return sum(r.prompt_tokens + r.output_tokens - r.num_computed for r in self.waiting) + sum(
            r.prompt_tokens + r.output_tokens - r.num_computed for r in self.running
        )

    def prefix_match_tokens(self, req: Request) -> int:
        """Prompt tokens of ``req`` held by this node's prefix cache now."""
        return self.kv.match_tokens(req)

    def prefix_unit_set(self) -> frozenset[int]:
        """The prefix-cache units held now (a stale router's copy)."""
        return self.kv.unit_set()

    def snapshot(self) -> NodeSnapshot:
        busy = self.busy_s + (self.env.now - self._step_t0 if self._step_t0 >= 0 else 0.0)
        return NodeSnapshot(len(self.waiting), len(self.running), self.kv.held, busy)

    def work_totals(self) -> tuple[int, float, float, int]:
        """(Σ tokens, Σ attention pairs, Σ context tokens, steps) over the steps finished by now."""
        return self.done_work.totals()

    def in_flight(self) -> list[Request]:
        """Requests this node still owes an answer (running ones already withdrawn are not)."""
        return list(self.waiting) + [r for r in self.running if not r.cancelled]

    def withdraw(self, req: Request) -> bool:
        """Take ``req`` off this node (rule 5 of the module docstring). False if it is not queued or running
        here (or already withdrawn)."""
        if req.status == Status.WAITING:
            try:
                self.waiting.remove(req)
            except ValueError:
                return False
            return True
        if req.status == Status.RUNNING and not req.cancelled and req in self.running:
            req.cancelled = True
            self._cancelled += 1
            return True
        return False

    def in_flight_count(self) -> int:
        return len(self.waiting) + len(self.running) - self._cancelled

    def kill(self) -> list[Request]:
        """The node disappears now; returns its requests reset for recompute (see ``Node.kill``)."""
        self.dead = True
        if self._step_t0 >= 0:
            self.busy_s += self.env.now - self._step_t0
            self._step_t0 = -1.0
        out = [r for r in self.running if not r.cancelled]
        for req in out:
            req.preemptions += 1
        out.extend(self.waiting)
        for req in out:
            req.num_computed = 0
            req.status = Status.WAITING
        self.waiting.clear()
        self.running.clear()
        self._decoders.clear()
        self.kv.clear()
        self._cancelled = 0
        return out

    def release_kv(self, req: Request) -> None:
        """Prefill role: the KV of handed-off ``req`` has left this node; its blocks are freed now."""
        self.kv.release(req, self._parked.pop(req.rid), self.steps)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Several submissions / releases at one instant: nothing to do here (the process wakes once, after the
        instant's callbacks)."""
        yield

    # -- engine ---------------------------------------------------------------------------------------
    def _blocks(self, tokens: int) -> int:
        return cdiv(tokens, self.bs)

    def _full_blocks(self, req: Request) -> int:
        """Blocks of a request's final context (prompt + output − 1 tokens), reserved up front with reserve_kv."""
        return self._blocks(req.prompt_tokens + req.output_tokens - 1)

    def _held(self, req: Request) -> int:
        return self._full_blocks(req) if self.engine.reserve_kv else self._blocks(req.num_computed)

    def _drop_cancelled(self) -> None:
        """End of a step: withdrawn running requests leave, their KV blocks freed."""
        keep = []
        for req in self.running:
            if req.cancelled:
                self._decoders.discard(req.rid)
                self.kv.release(req, self._held(req), self.steps)
            else:
                keep.append(req)
        self.running = keep
        self._cancelled = 0

    def _preempt(self, req: Request) -> None:
        self._decoders.discard(req.rid)
        self.kv.release(req, self._held(req), self.steps)
        req.num_computed = 0
        req.status = Status.WAITING
        req.preemptions += 1
        self.waiting.appendleft(req)

    def _schedule(self) -> list[tuple[Request, int]]:
        eng = self.engine
        ms = self.multistep
        if ms is not None and not self.running:
            ms.idle()
        budget = eng.max_num_batched_tokens
        scheduled: list[tuple[Request, int]] = []
        step_blocks: dict[int, int] = {}  # rid -> blocks allocated in this step (freed if it is preempted)
        preempted = False
        i = 0
        while i < len(self.running):
            req = self.running[i]
            n_new = min(req.num_tokens - req.num_computed, budget)
            if n_new <= 0:
                i += 1
                continue
            ok = True
            while True:
                need = 0 if eng.reserve_kv else self._blocks(req.num_computed + n_new) - self._blocks(req.num_computed)
                if self.kv.can_allocate(need):
                    self.kv.allocate(need)
                    step_blocks[req.rid] = need
                    break
                vi = preemption_victim(self.running, eng.scheduling_policy)
                victim = self.running.pop(vi)
                if victim.rid in step_blocks:  # scheduled earlier in this step: out of the step, its budget back
                    self.kv.free(step_blocks.pop(victim.rid))
                    budget += next(n for r, n in scheduled if r is victim)
                    scheduled = [(r, n) for r, n in scheduled if r is not victim]
                if vi < i:
                    i -= 1
                self._preempt(victim)
                preempted = True
                if victim is req:
                    ok = False
                    break
            if not ok:
                break
            scheduled.append((req, n_new))
            budget -= n_new
            i += 1
        adm = self.admission
        if preempted and adm is not None:
            adm.on_retract(
                self.steps,
                sum(r.num_generated for r in self.running),
                sum(r.output_tokens for r in self.running),
                len(self.running),
            )
        if not preempted and (ms is None or ms.can_admit()):
            future = sum(r.output_tokens - r.num_generated for r in self.running)  # decode tokens still to come
            admitted = 0  # those of the requests admitted in this step (SGLang reserves them in full)
            while self.waiting:
                req = self.waiting[0]
                hit = self.kv.lookup(req)
                fit = admit_with(req, self.limits, len(self.running), budget, self.kv.free_blocks, adm, self.steps,
                                 future, hit, admitted)
                if fit is None:
                    break
                n_new, need = fit
                admitted += req.output_tokens - req.num_generated
                cached = hit[0]
                self.waiting.popleft()
                self.kv.admit(req, need, hit)
                req.num_computed = cached
                req.status = Status.RUNNING
                if req.first_scheduled_s < 0:
                    req.first_scheduled_s = self.env.now
                self.running.append(req)
                scheduled.append((req, n_new))
                budget -= n_new
        self._preempted = preempted
        return scheduled

    def _run(self):  # noqa: ANN202 - SimPy process
        env = self.env
        while True:
            scheduled = self._schedule()
            if not scheduled and self._preempted:
                continue  # nothing ran but requests were preempted: schedule again at once (vLLM's next iteration)
            if not scheduled:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                if self.dead:
                    return
                continue
            tokens = sum(n for _, n in scheduled)
            attn = sum(attention_pairs(n, r.num_computed + n) for r, n in scheduled)
            ctx = sum(r.num_computed + n for r, n in scheduled)
            decode_only = all(r.rid in self._decoders for r, _ in scheduled)  # speculative decoding applies
            if self.multistep is not None:
                self.multistep.after_step(decode_only)
            perf = self.perf
            if decode_only and perf.class_tokens_per_step:  # per-class acceptance: τ over the running decoders
                per_class = [0] * len(perf.class_tokens_per_step)
                for r, _ in scheduled:
                    per_class[r.class_idx] += 1
                perf = perf.for_decoders(per_class)
            dt = perf.step_s(tokens, attn, ctx, decode_only=decode_only)
            if self.jitter is not None:
                dt *= self.jitter.factor(self.steps)
            self._step_t0 = env.now
            yield env.timeout(dt)
            if self.dead:
                return
            self._step_t0 = -1.0
            self.busy_s += dt
            self.steps += 1
            self.done_work.add_step(tokens, attn, ctx)
            now = env.now
            for req, n in scheduled:
                req.num_computed += n
                if req.cancelled:
                    continue  # withdrawn during the step: its output is discarded
                if req.num_computed - n < req.prompt_tokens:  # a prefill chunk: its full units enter the cache
                    self.kv.promote(req, min(req.num_computed, req.prompt_tokens))
                if req.num_computed == req.num_tokens:
                    if self.handoff is not None:  # prefill role: no token here, the KV leaves (sim.fleet.disagg)
                        self.running.remove(req)
                        self._parked[req.rid] = self._held(req)
                        self.handoff(req)
                        continue
                    req.num_generated += 1
                    if req.first_token_s < 0:
                        req.first_token_s = now
                    self._decoders.add(req.rid)
                    if req.num_generated == req.output_tokens:
                        self._decoders.discard(req.rid)
                        self.running.remove(req)
                        self.kv.promote(req, req.num_computed)
                        self.kv.release(req, self._held(req), self.steps)
                        req.status = Status.COMPLETED
                        req.finish_s = now
                        self.on_done(req)
            if self._cancelled:
                self._drop_cancelled()
