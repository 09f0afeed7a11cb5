"""Routers: pick the node for each arriving request. ``pick`` returns an index into the node list the router
was built with; the fleet mutates that list in place as nodes come and go, so routers never cache its length.

``round_robin`` cycles through nodes. ``least_work`` picks the node with the fewest outstanding tokens
(queued and running, prefill and decode still to do; ties to the lowest index), as design §9 asks: counting
only queued requests leaves replicas badly unbalanced. ``power_of_two`` samples two distinct nodes and takes
the one with less outstanding work (Mitzenmacher's two choices).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .request import Request


class _HasWork(Protocol):
    def outstanding_tokens(self) -> int: ...


class Router(Protocol):
    def pick(self, req: Request) -> int: ...


class RoundRobin:
    def __init__(self, nodes: Sequence[_HasWork]) -> None:
        self.nodes = nodes
        self.next = 0

    def pick(self, req: Request) -> int:
        i = self.next % len(self.nodes)
        self.next = i + 1
        return i


class LeastWork:
    def __init__(self, nodes: Sequence[_HasWork]) -> None:
        self.nodes = nodes

    def pick(self, req: Request) -> int:
        best, best_work = 0, None
        for i, node in enumerate(self.nodes):
            w = node.outstanding_tokens()
            if best_work is None or w < best_work:
                best, best_work = i, w
                if w == 0:
                    break
        return best


class PowerOfTwo:
    def __init__(self, nodes: Sequence[_HasWork], rng: np.random.Generator) -> None:
        self.nodes = nodes
        self.rng = rng
        self._buf: list[float] = []

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
        wa, wb = self.nodes[a].outstanding_tokens(), self.nodes[b].outstanding_tokens()
        if wb < wa or (wb == wa and b < a):
            return b
        return a


def make_router(policy: str, nodes: Sequence[_HasWork], rng: np.random.Generator) -> Router:
    if policy == "round_robin":
        return RoundRobin(nodes)
    if policy == "least_work":
        return LeastWork(nodes)
    if policy == "power_of_two":
        return PowerOfTwo(nodes, rng)
    raise ValueError(f"unknown router policy {policy!r}")
