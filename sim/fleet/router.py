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
from typing import Protocol

import numpy as np
import simpy

from sim.core.config import Router as RouterSpec
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


_INF = float("inf")
# below this many nodes a plain scan is as fast as the index (measured: benchmarks/engine_speed.py)
INDEX_MIN_NODES = 48


class LeastWork:
    """The node with the fewest outstanding tokens, ties to the lowest index (the first in the node list).

    Nodes that support it (the fast engine: ``work_bound`` and a ``work_changed`` hook) are kept in an exact
    incremental index instead of being scanned on every arrival. A node reports when its work changes (a step
    or decode run starts, a request arrives or leaves); its work is then known exactly until a time it gives
    (for ever while idle or stepping; until the end of the step in progress inside a jumped-over decode run)
    and bounded from below after that by a line falling at the run's fastest decode rate. Exact values sit in
    one heap; expired ones move to a second heap keyed by ``base + R·t_start``, where ``R`` is at least every
    node's decode rate (raised, and that heap re-keyed, when a faster run appears), so ``key − R·now`` is a
    lower bound whose order never changes with time. ``pick`` takes the lowest exact value and evaluates (and
    re-indexes) only nodes whose bound could beat it or tie with a lower index, taking them from the top of the
    second heap: the same node as a full scan, at O(log n) per reported change
    plus the few nodes near the minimum (each taken off the second heap and re-indexed), instead of n
    evaluations per arrival. Nodes without the hooks (the
    reference engine), and fleets under ``index_min_nodes`` (where a scan costs no more), are scanned. The fleet
    calls :meth:`nodes_changed` when the node list changes.
    """

    def __init__(self, nodes: Sequence[NodeEngine], index_min_nodes: int = INDEX_MIN_NODES) -> None:
        self.nodes = nodes
        self.index_min_nodes = index_min_nodes
        self._indexed: bool | None = None  # decided when the node list is (re)read
        self._members: list[IndexedNodeEngine] = []
        self._pos: dict[int, int] = {}  # node_id -> index in ``nodes``
        self._entry: dict[int, tuple] = {}  # node_id -> its live entry (in either heap); others are stale
        self._exact: list[tuple] = []  # (work, node_id, seq, node, until_s, step_tokens, rate, floor)
        self._expiry: list[tuple[float, int, tuple]] = []  # (until_s, seq, exact entry) for finite until_s
        self._falling: list[tuple] = []  # (base + R·t_start, node_id, seq, node, floor, base, t_start)
        self._floored: list[tuple] = []  # (floor, node_id, seq, node): decode runs whose bound reached its floor
        self._rate = 0.0  # R
        self._dirty: dict[int, IndexedNodeEngine] = {}  # nodes that reported a change since the last pick
        self._seq = 0

    def nodes_changed(self) -> None:
        """The node list was mutated (a node added or removed): rebuild the index at the next pick."""
        self._indexed = None

    def _mark(self, node: IndexedNodeEngine) -> None:
        self._dirty[node.node_id] = node

    def _rebuild(self) -> None:
        for node in self._members:
            node.work_changed = None
        nodes = list(self.nodes)
        self._indexed = len(nodes) >= self.index_min_nodes and all(
            hasattr(n, "work_bound") and hasattr(n, "work_changed") for n in nodes)
        self._members = []
        self._pos, self._entry, self._dirty = {}, {}, {}
        self._exact, self._expiry, self._falling, self._floored = [], [], [], []
        if not self._indexed:
            return
        self._members = nodes  # type: ignore[assignment]
        for i, node in enumerate(self._members):
            self._pos[node.node_id] = i
            node.work_changed = self._mark
            self._dirty[node.node_id] = node

    def _put(self, nid: int, node: IndexedNodeEngine, bound: tuple[int, float, int, float, int], now: float) -> None:
        work, until, step, rate, floor = bound
        self._seq += 1
        if rate > self._rate:
            self._rekey(rate * 1.25)
        if until > now:
            e: tuple = (work, nid, self._seq, node, until, step, rate, floor)
            heapq.heappush(self._exact, e)
            if until < _INF:
                heapq.heappush(self._expiry, (until, self._seq, e))
        else:
            base = work - step
            e = (base + self._rate * until, nid, self._seq, node, floor, base, until)
            heapq.heappush(self._falling, e)
        self._entry[nid] = e

    def _rekey(self, rate: float) -> None:
        """Raise R to ``rate`` and re-key the falling heap (dropping its stale entries)."""
        self._rate = rate
        entry = self._entry
        fresh = []
        for e in self._falling:
            if entry.get(e[1]) is e:
                ne = (e[5] + rate * e[6],) + e[1:]
                entry[e[1]] = ne
                fresh.append(ne)
        heapq.heapify(fresh)
        self._falling = fresh

    def _scan(self) -> int:
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
        now = self._members[0].env.now
        entry, pos = self._entry, self._pos
        if len(self._exact) + len(self._falling) + len(self._floored) > 4 * len(pos) + 64:  # compact stale entries
            for name in ("_exact", "_falling", "_floored"):
                heap: list[tuple] = [e for e in getattr(self, name) if entry.get(e[1]) is e]  # type: ignore[misc]
                heapq.heapify(heap)
                setattr(self, name, heap)
            self._expiry = [x for x in self._expiry if entry.get(x[2][1]) is x[2]]
            heapq.heapify(self._expiry)
        if self._dirty:
            for nid, node in self._dirty.items():
                if nid in pos:
                    self._put(nid, node, node.work_bound(), now)
            self._dirty.clear()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:  # exact values that may have changed: bounds from now on
            _, _, e = heapq.heappop(expiry)
            if entry.get(e[1]) is e:
                self._seq += 1
                base = e[0] - e[5]
                f: tuple = (base + self._rate * e[4], e[1], self._seq, e[3], e[7], base, e[4])
                heapq.heappush(self._falling, f)
                entry[e[1]] = f
        exact = self._exact
        while exact and entry.get(exact[0][1]) is not exact[0]:
            heapq.heappop(exact)
        best_id, best_w = -1, 0
        if exact:  # every entry here is exact: the top is the lowest work, lowest id among ties
            best_w, best_id = exact[0][0], exact[0][1]
        falling = self._falling
        fresh: list[tuple[int, IndexedNodeEngine, tuple[int, float, int, float, int]]] = []
        if falling:
            shift = self._rate * now + 1.0  # bound = key − R·now; 1 token of slack for rounding
            # best first: every entry taken is stale (dropped) or evaluated (and re-indexed below)
            while falling:
                e = falling[0]
                nid = e[1]
                if entry.get(nid) is not e:
                    heapq.heappop(falling)
                    continue
                if best_id >= 0 and e[0] - shift > best_w:
                    break  # no node left here can beat the best, or tie with it at a lower id
                heapq.heappop(falling)
                if best_id < 0 or e[4] < best_w or (e[4] == best_w and nid < best_id):
                    bound = e[3].work_bound()
                    w = bound[0]
                    if best_id < 0 or w < best_w or (w == best_w and nid < best_id):
                        best_id, best_w = nid, w
                    fresh.append((nid, e[3], bound))
                else:  # even the work left at the end of its run cannot beat the best: its floor bounds it
                    self._seq += 1
                    fl: tuple = (e[4], nid, self._seq, e[3])
                    heapq.heappush(self._floored, fl)
                    entry[nid] = fl
        floored = self._floored
        while floored:
            e = floored[0]
            nid = e[1]
            if entry.get(nid) is e and best_id >= 0 and (e[0] > best_w or (e[0] == best_w and nid > best_id)):
                break
            heapq.heappop(floored)
            if entry.get(nid) is e:
                bound = e[3].work_bound()
                w = bound[0]
                if best_id < 0 or w < best_w or (w == best_w and nid < best_id):
                    best_id, best_w = nid, w
                fresh.append((nid, e[3], bound))
        for nid, node, bound in fresh:
            self._put(nid, node, bound, now)
        return pos[best_id]


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
