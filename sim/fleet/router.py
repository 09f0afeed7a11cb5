"""Routers: pick the node for each arriving request. ``pick`` returns an index into the node list the router
was built with; the fleet mutates that list in place as nodes come and go, so routers never cache its length.

``round_robin`` cycles through nodes. ``least_work`` picks the node with the fewest outstanding tokens
(queued and running, prefill and decode still to do; ties to the lowest index), as design §9 asks: counting
only queued requests leaves replicas badly unbalanced. ``power_of_two`` samples two distinct nodes and takes
the one with less outstanding work (Mitzenmacher's two choices).

For nodes of different speeds (pools of different GPUs, docs/pools.md), ``weighted_least_work`` picks the node
with the least outstanding tokens ÷ speed (the time it needs to clear its work; ties to the lowest index) and
``weighted_round_robin`` sends each node a share of arrivals proportional to its speed (smooth weighted round
robin, as nginx: every pick adds each node's weight to its credit, takes the node with the most credit, ties to
the lowest index, and charges it the total weight). A node's speed comes from the fleet (its pool's sustainable
tokens/s for the traffic mix, :func:`sim.runner.simulation.pool_speeds`).
The cache-aware routers (``prefix_aware``, ``session_affinity``) and the stale view every load-reading router
(except the speed-weighted ones) can use instead of the exact state are in :mod:`sim.fleet.cache_routing`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Final, Protocol, cast

import numpy as np
import simpy
from mypy_extensions import mypyc_attr

from sim.core.config import Router as RouterSpec
from sim.engine.node import Node
from sim.engine.protocol import IndexedNodeEngine, NodeEngine
from sim.fleet.stale import StaleView
from sim.traffic.request import Request


class Router(Protocol):
    def pick(self, req: Request) -> int: ...

    def nodes_changed(self) -> None:
        """Called by the fleet after it adds or removes a node in the list the router was built with."""


class RoundRobin:
    def __init__(self, nodes: Sequence[NodeEngine]) -> None:
        self.nodes = nodes
        self.next = 0

    def nodes_changed(self) -> None:
        pass

    def pick(self, req: Request) -> int:
        i = self.next % len(self.nodes)
        self.next = i + 1
        return i


_INF: Final = float("inf")
# below this many nodes a plain scan is as fast as the index (measured: benchmarks/engine_speed.py)
INDEX_MIN_NODES = 48
# nodes the least-work index keeps by exact value (its low set) after a rebuild, at first
LOW_NODES = 64


@mypyc_attr(allow_interpreted_subclasses=True)  # tests check it through a subclass
class LeastWork:
    """The node with the fewest outstanding tokens, ties to the lowest index (the first in the node list).

    Nodes that support it (the fast engine: ``work_level`` and a ``work_changed`` hook) are kept in an exact
    incremental index instead of being scanned on every arrival. The index keeps a level ``L`` and splits the
    nodes in two: the *low* set, whose work is at most ``L``, held by exact value in a heap (a node in a decode
    run is re-read when its next step ends: its work falls then), and the others, which need no look until the
    time their work can first fall to ``L`` (known in advance: a decode run's step times are; idle or stepping,
    never) — a heap of those times. A node that reports a change (a step or decode run starts, a request arrives
    or leaves) is re-read at the next pick and re-filed. While the low set's best is at most ``L``, it is the
    fleet's best (every other node is above ``L``), ties included: the same node as a full scan. When the low set
    runs dry (the least work rose above ``L``), the index is rebuilt in O(n) with ``L`` at the ``k``-th smallest
    work; ``k`` doubles when rebuilds come sooner than every ``n`` picks (so they cost O(1) per pick) and halves
    when they come later than every ``16 n``. A node above ``L`` that reports a change is not even re-read unless
    its work can reach ``L`` before its next report (``work_floor``). A pick costs O(log n) per node re-read: the
    picked node, the low nodes whose step ended, the nodes reaching ``L`` — not every node near the least work,
    as an index of lower bounds must (the previous one re-read ~6 nodes per pick at 1,000 nodes, ~5 now:
    ``benchmarks/engine_speed.py``). Nodes without the hooks (the
    reference engine), and fleets under ``index_min_nodes`` (where a scan costs no more), are scanned. The fleet
    calls :meth:`nodes_changed` when the node list changes.
    """

    def __init__(self, nodes: Sequence[NodeEngine], index_min_nodes: int | None = None,
                 low_nodes: int = LOW_NODES) -> None:
        self.nodes = nodes
        # the module's INDEX_MIN_NODES when the router is built (a benchmark or test may change it)
        self.index_min_nodes = INDEX_MIN_NODES if index_min_nodes is None else index_min_nodes
        self._indexed: bool | None = None  # decided when the node list is (re)read
        self._fast = False  # every node is the fast engine: scanned through its compiled method (`make native`)
        self._members: list[IndexedNodeEngine] = []
        self._pos: dict[int, int] = {}  # node_id -> index in ``nodes``
        self._ver: list[int] = []  # per index: entries with another version are stale
        self._low: list[tuple[int, int, int]] = []  # (work, index, version): exact values now
        self._due: list[tuple[float, int, int]] = []  # (t_s, index, version): re-read a node at t_s
        self._level = 0  # L
        self._k = max(1, low_nodes)  # low-set size aimed at by a rebuild
        self._picks = 0  # since the last rebuild
        self._is_low: list[bool] = []  # per index: filed in the low set
        self._dirty: dict[int, IndexedNodeEngine] = {}  # index -> node: to re-read at the next pick

    def nodes_changed(self) -> None:
        """The node list was mutated (a node added or removed): rebuild the index at the next pick."""
        self._indexed = None

    def _mark(self, node: IndexedNodeEngine) -> None:
        """A node's work changed: re-read it at the next pick, unless it was above ``L`` and stays there until its
        next report (an entry it has in the due heap is then early: harmless)."""
        i = self._pos.get(node.node_id)
        if i is not None and (self._is_low[i] or _floor(node, self._fast) <= self._level):
            self._dirty[i] = node

    def _rebuild(self) -> None:
        for node in self._members:
            node.work_changed = None
        nodes = list(self.nodes)
        self._fast = all(type(n) is Node for n in nodes)
        self._indexed = len(nodes) >= self.index_min_nodes and all(
            hasattr(n, "work_level") and hasattr(n, "work_changed") for n in nodes)
        self._members, self._pos, self._dirty = [], {}, {}
        self._low, self._due, self._ver = [], [], []
        if not self._indexed:
            return
        self._members = nodes  # type: ignore[assignment]
        self._pos = {node.node_id: i for i, node in enumerate(nodes)}
        self._ver = [0] * len(nodes)
        self._is_low = [False] * len(nodes)
        for node in self._members:
            node.work_changed = self._mark
        self._relevel()

    def _relevel(self) -> None:
        """Set ``L`` to the ``k``-th smallest work now and re-file every node (O(n)): nodes above ``L`` whose work
        stays there until their next report get no entry."""
        members, ver, is_low = self._members, self._ver, self._is_low
        fast = self._fast
        works = [cast(Node, node).outstanding_tokens() if fast else node.outstanding_tokens() for node in members]
        self._level = level = sorted(works)[min(self._k, len(works)) - 1]
        self._low, self._due, self._dirty = [], [], {}
        self._picks = 0
        for i, node in enumerate(members):
            if works[i] <= level or _floor(node, fast) <= level:
                self._file(i, node)
            else:
                ver[i] += 1
                is_low[i] = False

    def _file(self, i: int, node: IndexedNodeEngine) -> None:
        """Read node ``i`` now and file it: in the low set (exact value; re-read when it may change) or due
        when its work may reach ``L``."""
        v = self._ver[i] + 1
        self._ver[i] = v
        w, t = cast(Node, node).work_level(self._level) if self._fast else node.work_level(self._level)
        low = w <= self._level
        self._is_low[i] = low
        if low:
            heapq.heappush(self._low, (w, i, v))
        if t < _INF:
            heapq.heappush(self._due, (t, i, v))

    def _scan(self) -> int:
        if self._fast:
            return _scan_fast(self.nodes)
        best, best_work = 0, None
        for i, node in enumerate(self.nodes):
            w = node.outstanding_tokens()
            if best_work is None or w < best_work:
                best, best_work = i, w
                if w == 0:
                    break
        return best

    def pick(self, req: Request) -> int:
        if self._indexed is None:
            self._rebuild()
        if not self._indexed:
            return self._scan()
        members, ver, low, due = self._members, self._ver, self._low, self._due
        now = members[0].env.now
        if len(low) + len(due) > 4 * len(members) + 64:  # compact stale entries
            low[:] = [e for e in low if ver[e[1]] == e[2]]
            due[:] = [e for e in due if ver[e[1]] == e[2]]
            heapq.heapify(low)
            heapq.heapify(due)
        if self._dirty:
            for i, node in self._dirty.items():
                self._file(i, node)
            self._dirty.clear()
        if due and due[0][0] <= now:  # low nodes whose step ended, other nodes whose work may have reached L
            todo = []
            while due and due[0][0] <= now:
                todo.append(heapq.heappop(due))
            for _, i, v in todo:
                if ver[i] == v:
                    self._file(i, members[i])
        self._picks += 1
        while True:
            while low and ver[low[0][1]] != low[0][2]:
                heapq.heappop(low)
            if low and low[0][0] <= self._level:
                return low[0][1]
            # the least work is above L: some node outside the low set may hold it
            if self._picks < len(members):  # rebuilds should cost O(1) per pick: aim at a larger low set
                self._k = min(2 * self._k, len(members))
            elif self._picks > 16 * len(members):  # rare: a smaller one costs fewer re-reads at step ends
                self._k = max(self._k // 2, 1)
            self._relevel()
            low = self._low
            due = self._due


def _floor(node: IndexedNodeEngine, fast: bool) -> int:
    """``node.work_floor()`` (a native call on a fast-engine node when compiled)."""
    return cast(Node, node).work_floor() if fast else node.work_floor()


def _scan_fast(nodes: Sequence[NodeEngine]) -> int:
    """:meth:`LeastWork._scan` over fast-engine nodes (compiled by `make native`: a native call per node)."""
    best, best_work = 0, -1
    for i in range(len(nodes)):
        w = cast(Node, nodes[i]).outstanding_tokens()
        if best_work < 0 or w < best_work:
            best, best_work = i, w
            if w == 0:
                break
    return best


class PowerOfTwo:
    def __init__(self, nodes: Sequence[NodeEngine], rng: np.random.Generator, view: StaleView | None = None) -> None:
        self.nodes = nodes
        self.rng = rng
        self.view = view  # None: exact loads now
        self._buf: list[float] = []

    def nodes_changed(self) -> None:
        pass

    def _draw(self) -> tuple[int, int]:
        """Two distinct uniform indices into the current node list."""
        n = len(self.nodes)
        if len(self._buf) < 2:
            self._buf = self.rng.random(8192).tolist()
        a = int(self._buf.pop() * n)
        b = int(self._buf.pop() * (n - 1))
        if b >= a:
            b += 1
        return a, b

    def pick(self, req: Request) -> int:
        if len(self.nodes) == 1:
            return 0
        a, b = self._draw()
        na, nb = self.nodes[a], self.nodes[b]
        view = self.view
        if view is None:
            wa, wb = na.outstanding_tokens(), nb.outstanding_tokens()
        else:
            wa, wb = view.load(na), view.load(nb)
        pick = b if wb < wa or (wb == wa and b < a) else a
        if view is not None:
            view.sent(self.nodes[pick], req)
        return pick


class WeightedLeastWork:
    """Least outstanding tokens ÷ node speed (module docstring); a scan over the nodes."""

    def __init__(self, nodes: Sequence[NodeEngine], speed: Callable[[NodeEngine], float]) -> None:
        self.nodes = nodes
        self.speed = speed

    def nodes_changed(self) -> None:
        pass

    def pick(self, req: Request) -> int:
        best, best_t = 0, _INF
        for i, node in enumerate(self.nodes):
            t = node.outstanding_tokens() / self.speed(node)
            if t < best_t:
                best, best_t = i, t
        return best


class WeightedRoundRobin:
    """Smooth weighted round robin by node speed (module docstring)."""

    def __init__(self, nodes: Sequence[NodeEngine], speed: Callable[[NodeEngine], float]) -> None:
        self.nodes = nodes
        self.speed = speed
        self.credit: dict[int, float] = {}  # node_id -> credit

    def nodes_changed(self) -> None:
        live = {n.node_id for n in self.nodes}
        self.credit = {k: v for k, v in self.credit.items() if k in live}

    def pick(self, req: Request) -> int:
        credit = self.credit
        best, best_c, total = 0, -_INF, 0.0
        for i, node in enumerate(self.nodes):
            w = self.speed(node)
            total += w
            c = credit.get(node.node_id, 0.0) + w
            credit[node.node_id] = c
            if c > best_c:
                best, best_c = i, c
        credit[self.nodes[best].node_id] -= total
        return best


def make_router(policy: str, nodes: Sequence[NodeEngine], rng: np.random.Generator,
                spec: RouterSpec | None = None, env: simpy.Environment | None = None,
                speed: Callable[[NodeEngine], float] | None = None) -> Router:
    """The router of ``policy`` over ``nodes``; ``spec`` (the scenario's ``router`` section) adds staleness and
    the prefix weight (a stale view needs ``env`` for its sampling process); ``speed`` gives the speed-weighted
    routers each node's speed."""
    from sim.fleet.cache_routing import PrefixAware, SessionAffinity, StaleLeastWork

    if policy in ("weighted_least_work", "weighted_round_robin"):
        if speed is None:
            raise ValueError(f"router policy {policy!r} needs node speeds")
        return WeightedLeastWork(nodes, speed) if policy == "weighted_least_work" else WeightedRoundRobin(nodes, speed)
    spec = spec or RouterSpec(policy=policy)  # type: ignore[arg-type]
    view = None
    if spec.staleness_s > 0 and policy != "round_robin":
        if env is None:
            raise ValueError("a stale router needs the simulation environment")
        view = StaleView(nodes, env, spec.staleness_s, spec.count_own, policy == "prefix_aware")
    if policy == "round_robin":
        return RoundRobin(nodes)
    if policy == "least_work":
        return LeastWork(nodes) if view is None else StaleLeastWork(nodes, view)
    if policy == "power_of_two":
        return PowerOfTwo(nodes, rng, view)
    if policy == "prefix_aware":
        return PrefixAware(nodes, spec.prefix_weight, view)
    if policy == "session_affinity":
        return SessionAffinity(nodes, LeastWork(nodes) if view is None else StaleLeastWork(nodes, view))
    raise ValueError(f"unknown router policy {policy!r}")
