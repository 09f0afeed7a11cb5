"""Cache-aware routers and the stale least-work router.

* :class:`PrefixAware` — each node's cost is its outstanding tokens plus ``prefix_weight`` × the request's prompt
  tokens that node would have to prefill (prompt − the longest prefix its cache holds); the cheapest node wins, ties
  to the lowest index. This is the cost of NVIDIA Dynamo's KV router (``overlap_score_weight`` × prefill blocks +
  active decode blocks), and trades hits against load as llm-d's weighted prefix-cache and load scorers and
  SGLang's cache-aware router (longest tree match unless load is imbalanced) do. With no hits anywhere it is
  least work (counting the request's own prompt alike on every node).
* :class:`SessionAffinity` — a conversation (``Request.session`` ≥ 0) stays on the node of its first turn while
  that node accepts requests; first turns and requests without a session go to the fallback (least work).
* :class:`StaleLeastWork` — least work over a :class:`~sim.fleet.stale.StaleView` (a scan; the exact incremental
  index of :class:`~sim.fleet.router.LeastWork` is for exact state).

Each scans the nodes (O(nodes × hit units) per arrival for ``prefix_aware``): fine for the fleets the cache-aware
comparisons use (docs/prefix-cache.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sim.engine.protocol import NodeEngine
from sim.fleet.stale import StaleView
from sim.traffic.request import Request


class _Picker(Protocol):
    def pick(self, req: Request) -> int: ...

    def nodes_changed(self) -> None: ...


class StaleLeastWork:
    """The node with the fewest outstanding tokens as the stale view sees them (ties to the lowest index)."""

    def __init__(self, nodes: Sequence[NodeEngine], view: StaleView) -> None:
        self.nodes = nodes
        self.view = view

    def nodes_changed(self) -> None:
        pass

    def pick(self, req: Request) -> int:
        view = self.view
        best, best_w = 0, None
        for i, node in enumerate(self.nodes):
            w = view.load(node)
            if best_w is None or w < best_w:
                best, best_w = i, w
        view.sent(self.nodes[best], req)
        return best


class PrefixAware:
    """Lowest ``outstanding tokens + prefix_weight × uncached prompt tokens`` (Dynamo's KV-router cost)."""

    def __init__(self, nodes: Sequence[NodeEngine], prefix_weight: float, view: StaleView | None = None) -> None:
        self.nodes = nodes
        self.weight = prefix_weight
        self.view = view
        self.hit_tokens = 0  # Σ over picks of the cached prompt tokens the router expected on the node it chose

    def nodes_changed(self) -> None:
        pass

    def pick(self, req: Request) -> int:
        view = self.view
        best, best_cost, best_hit = 0, 0.0, 0
        prompt = req.prompt_tokens
        for i, node in enumerate(self.nodes):
            if view is None:
                load, hit = node.outstanding_tokens(), node.prefix_match_tokens(req)
            else:
                load, hit = view.load(node), view.match(node, req)
            cost = load + self.weight * (prompt - hit)
            if i == 0 or cost < best_cost:
                best, best_cost, best_hit = i, cost, hit
        self.hit_tokens += best_hit
        if view is not None:
            view.sent(self.nodes[best], req, best_hit)
        return best


class SessionAffinity:
    """A conversation's turns on one node; first turns and session-less requests to ``fallback``."""

    def __init__(self, nodes: Sequence[NodeEngine], fallback: _Picker) -> None:
        self.nodes = nodes
        self.fallback = fallback
        self._home: dict[int, int] = {}  # session -> node_id
        self._pos: dict[int, int] | None = None  # node_id -> index in ``nodes``

    def nodes_changed(self) -> None:
        self._pos = None
        self.fallback.nodes_changed()

    def pick(self, req: Request) -> int:
        if self._pos is None:
            self._pos = {n.node_id: i for i, n in enumerate(self.nodes)}
        sid = req.session
        if sid >= 0:
            home = self._home.get(sid)
            if home is not None and home in self._pos:
                return self._pos[home]
        i = self.fallback.pick(req)
        if sid >= 0:
            self._home[sid] = self.nodes[i].node_id
        return i
