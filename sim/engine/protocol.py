"""What the rest of the simulator may use of a node engine (vLLM's ``EngineCore`` seen from the front end).

Both engines satisfy :class:`NodeEngine` (mypy checks it where the simulation builds them: see
:func:`sim.runner.simulation.make_node_factory`); the fleet, the routers, the spill dispatcher, the clients and the
sampler see nodes only through it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import simpy

from sim.core.config import Engine
from sim.engine.common import NodeSnapshot, PriorityWaitingQueue
from sim.engine.kv import BlockLedger
from sim.perf.model import StepTimeModel
from sim.traffic.request import Request

WaitingQueue = deque[Request] | PriorityWaitingQueue


class NodeEngine(Protocol):
    """A serving replica: takes requests, runs engine steps on simulated time, reports its state."""

    env: simpy.Environment
    node_id: int
    perf: StepTimeModel
    engine: Engine
    capacity_blocks: int  # KV cache size in blocks of ``engine.block_size`` tokens
    kv: BlockLedger  # its KV blocks and prefix cache
    waiting: WaitingQueue  # queued requests, in the order the scheduler will consider them

    @property
    def steps(self) -> int:
        """Engine iterations executed so far."""

    def submit(self, req: Request) -> None:
        """Queue ``req`` (or reject it at once if it can never fit this node)."""

    def withdraw(self, req: Request) -> bool:
        """Take ``req`` off this node (its client gave up); False if it is not queued or running here."""

    def in_flight(self) -> list[Request]:
        """Requests this node still owes an answer."""

    def in_flight_count(self) -> int:
        """``len(in_flight())`` without building the list."""

    def outstanding_tokens(self) -> int:
        """Tokens still to compute or generate on this node now (the least-work router's measure)."""

    def prefix_match_tokens(self, req: Request) -> int:
        """Prompt tokens of ``req`` this node's prefix cache holds now (0 without caching or hashes)."""

    def prefix_unit_set(self) -> frozenset[int]:
        """The prefix-cache units this node holds now."""

    def snapshot(self) -> NodeSnapshot:
        """Queue length, running requests, KV blocks held and busy seconds, now."""

    def work_totals(self) -> tuple[int, float, float, int]:
        """(Σ tokens, Σ attention pairs, Σ context tokens, steps) over the steps finished by now."""

    def kill(self) -> list[Request]:
        """The node disappears now; returns its requests, reset for recompute elsewhere."""


class IndexedNodeEngine(NodeEngine, Protocol):
    """A node that keeps the least-work router's index informed (the fast engine, :class:`sim.engine.Node`)."""

    work_changed: Callable[[Any], None] | None  # the router's hook; Any: each engine names its own class

    def work_level(self, level: int) -> tuple[int, float]:
        """``(work, t_s)``: see :meth:`sim.engine.node.Node.work_level`."""

    def work_floor(self) -> int:
        """The least work this node reaches before it next reports a change."""


NodeFactory = Callable[[int, Callable[[Request], None]], NodeEngine]
