"""The fleet-level batch queue for deferrable request classes (the guide's "batch queue" pattern).

Requests of a class with ``deferrable`` settings are held here on arrival instead of going to the nodes.
Every ``check_interval_s`` (the smallest over deferrable classes):

1. requests within ``slack_s`` of their deadline (``arrival + deadline_s``) are released, whatever the load;
2. if no interactive request is waiting on any up node and the up nodes' mean KV-cache use is below the head
   request's ``release_below_kv``, up to ``release_per_node`` × (nodes up) requests are released, FCFS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from sim.core.config import Deferrable
from sim.fleet.fleet import Slot, SlotState
from sim.traffic.request import Request


class BatchQueue:
    """Holds deferrable requests and releases them to ``dispatch`` when there is spare capacity."""

    def __init__(self, env: simpy.Environment, classes: Sequence[Deferrable | None],
                 dispatch: Callable[[Request], None], slots: Sequence[Slot]) -> None:
        self.env = env
        self.classes = list(classes)
        self.dispatch = dispatch
        self.slots = slots
        self.held: deque[Request] = deque()
        if any(d is not None for d in self.classes):
            env.process(self._run())

    def deferrable(self, req: Request) -> bool:
        return self.classes[req.class_idx] is not None

    def hold(self, req: Request) -> None:
        self.held.append(req)

    def __len__(self) -> int:
        return len(self.held)

    def _spec(self, req: Request) -> Deferrable:
        """The deferrable settings of a held request's class (only such requests are held)."""
        d = self.classes[req.class_idx]
        if d is None:
            raise ValueError(f"a request of class {req.class_idx} was held, but that class is not deferrable")
        return d

    def _release_due(self, now: float) -> None:
        due = [r for r in self.held
               if now >= r.arrival_s + self._spec(r).deadline_s - self._spec(r).slack_s]
        for req in due:
            self.held.remove(req)
            self.dispatch(req)

    def _spare_capacity(self, head: Deferrable) -> int:
        """How many requests may go now (0 while interactive work queues or the KV cache is busy)."""
        up = [s.node for s in self.slots if s.state == SlotState.UP and s.node is not None]
        if not up:
            return 0
        snaps = [n.snapshot() for n in up]
        if any(x.waiting for x in snaps):
            return 0
        kv = sum(x.kv_used_blocks / n.capacity_blocks for x, n in zip(snaps, up)) / len(up)
        return head.release_per_node * len(up) if kv < head.release_below_kv else 0

    def _run(self) -> Generator[simpy.Event, Any, None]:  # a SimPy process
        interval = min(d.check_interval_s for d in self.classes if d is not None)
        while True:
            yield self.env.timeout(interval)
            if not self.held:
                continue
            self._release_due(self.env.now)
            if self.held:
                n = self._spare_capacity(self._spec(self.held[0]))
                for _ in range(min(n, len(self.held))):
                    self.dispatch(self.held.popleft())
