"""Clients that give up and retry (``traffic.classes[].client``): what turns overload into a retry storm.

Model, per attempt of a request of a class with a ``client.timeout_s``:

* **Timeout.** At ``attempt_s + timeout_s`` the client gives up if the attempt is still unanswered: a streaming
  client (``stream: true``) if no first token has arrived, a non-streaming one if the response is not complete.
  An attempt that has been handed to the hosted API (spilled) is not timed out: the API leg follows
  ``api.retry`` (its own timeout and retries) instead.
* **Withdrawal.** The attempt leaves the fleet: held in the fleet-level queue (no node up) → removed; queued on
  a node → removed from its waiting queue; running → the node cancels it at the end of the engine step in
  progress and frees its KV blocks (``node.withdraw``, the same in both engines); with prefill/decode pools, its
  KV on the way to a decode node → not delivered (the prefill node frees it when the transfer would have ended).
* **Retry.** With retries left, retry k is sent ``min(max_backoff_s, backoff_s × 2^(k−1)) × (1 − jitter × u)``
  seconds later, u uniform in [0, 1) from the run's ``clients`` random stream (only drawn when ``jitter`` > 0).
  It is a new attempt of the same logical request (:meth:`Request.retry`), dispatched afresh (router, spill
  policy), so retries add load. From the moment the client gives up, the per-request table holds the new
  attempt (status in flight while it backs off). Without retries left the request ends ``timed_out``.

Counts: ``retries`` (retry attempts sent), ``gave_up`` (attempts given up on, retried or not),
``cancelled_running`` (of those, attempts cancelled while running on a node) and ``in_backoff`` (logical
requests waiting to be re-sent, part of ``in_flight``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from sim.core.config import Client, Scenario
from sim.traffic.request import Request, Status

if TYPE_CHECKING:
    from sim.fleet.fleet import FleetManager

_OPEN = (Status.WAITING, Status.RUNNING)


class Clients:
    """Arms one timer per attempt sent (classes with a timeout only) and runs the give-up / retry loop."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        fleet: FleetManager,
        dispatch: Callable[[Request], None],
        on_done: Callable[[Request], None],
        replace: Callable[[Request], None],
        rng: np.random.Generator,
        disagg: Any = None,
    ) -> None:
        """``fleet``: the :class:`~sim.fleet.fleet.FleetManager` (its slots and held queue); ``dispatch``: where an
        attempt is sent; ``on_done``: a request timed out for good; ``replace(new)``: the new attempt now
        stands for its logical request; ``disagg``: the :class:`~sim.fleet.disagg.DisaggDispatcher` of prefill/decode
        pools (an attempt whose KV is on a link is withdrawn there)."""
        self.env = env
        self.disagg = disagg
        self.fleet = fleet
        self.dispatch = dispatch
        self.on_done = on_done
        self.replace = replace
        self.rng = rng
        self.specs: list[Client | None] = [
            c.client if c.client is not None and c.client.timeout_s is not None else None
            for c in scenario.traffic.classes
        ]
        self.enabled = any(s is not None for s in self.specs)
        self.retries = 0
        self.gave_up = 0
        self.cancelled_running = 0  # of those given up on: running on a node (prefill/decode work wasted)
        self.in_backoff = 0

    def sent(self, req: Request) -> None:
        """``req`` (an attempt) was just dispatched: start its client's clock."""
        spec = self.specs[req.class_idx]
        if spec is None or spec.timeout_s is None or req.status not in _OPEN:
            return
        self._after(spec.timeout_s, self._expire, req)

    def backoff_s(self, spec: Client, retry_k: int) -> float:
        """Delay before retry ``retry_k`` (1 for the first retry)."""
        base = min(spec.max_backoff_s, spec.backoff_s * 2.0 ** (retry_k - 1))
        if spec.jitter > 0:
            base *= 1.0 - spec.jitter * float(self.rng.random())
        return base

    # -- internals --------------------------------------------------------------------------------------
    def _expire(self, req: Request) -> None:
        spec = self.specs[req.class_idx]
        assert spec is not None
        if req.status not in _OPEN or req.cancelled or req.spill_s >= 0:
            return  # answered, rejected, failed, or on the hosted API's terms
        if spec.stream and req.first_token_s >= 0:
            return  # streaming: the first token arrived in time
        if not self._withdraw(req):
            return  # pragma: no cover - every open, unspilled attempt is held by the fleet or a node
        now = self.env.now
        self.gave_up += 1
        req.status = Status.TIMED_OUT
        req.finish_s = now
        if req.retries >= spec.retries:
            self.on_done(req)
            return
        delay = self.backoff_s(spec, req.retries + 1)
        new = req.retry(now + delay)
        self.replace(new)
        self.in_backoff += 1
        self._after(delay, self._send, new)

    def _after(self, delay_s: float, fn: Callable[[Request], None], req: Request) -> None:
        """Call ``fn(req)`` in ``delay_s`` simulated seconds."""

        def fire(_ev: simpy.events.Event) -> None:
            fn(req)

        self.env.timeout(delay_s).callbacks.append(fire)

    def _send(self, req: Request) -> None:
        self.in_backoff -= 1
        self.retries += 1
        self.dispatch(req)
        self.sent(req)

    def _withdraw(self, req: Request) -> bool:
        """Take the attempt off the fleet wherever it is; False if it is not there."""
        held = self.fleet.pending
        if held and req in held:
            held.remove(req)
            return self._withdrawn(req)
        if self.disagg is not None and self.disagg.withdraw_in_transit(req):  # KV between prefill and decode
            return self._withdrawn(req)
        if req.node < 0:
            return False
        slot = self.fleet.slots[req.node]
        running = req.status == Status.RUNNING
        if slot.node is None or not slot.node.withdraw(req):
            return False
        self.cancelled_running += running
        self.fleet.withdrawn(slot)
        return self._withdrawn(req)

    def _withdrawn(self, req: Request) -> bool:
        if self.disagg is not None:  # the attempt's own prompt view back (not its decode node's)
            self.disagg.withdrawn(req)
        return True

    def stats(self) -> dict[str, int]:
        """Counters for ``SimResult.clients``."""
        return {"retries": self.retries, "gave_up": self.gave_up, "cancelled_running": self.cancelled_running,
                "in_backoff": self.in_backoff}
