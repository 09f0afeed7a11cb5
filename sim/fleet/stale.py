"""Stale node state for routers (``router.staleness_s`` > 0).

Model: a real router reads replica state from metrics scraped or pushed every so often (llm-d's scorers read
vLLM's Prometheus metrics and KV-cache events; SGLang's router and Dynamo's KV router track workers from periodic
load reports and KV events). :class:`StaleView` samples every node's outstanding tokens (and, for the prefix-aware
router, its cached prefix units) every ``interval_s`` seconds of simulated time, starting at t = 0; between samples,
with ``count_own``, it adds the tokens (prompt + output) of each request the router itself sent to a node, as routers
count their own in-flight requests — the uncached part of the prompt (prompt − the hit the router expected on that
node) plus the output — and takes the prefix units of those requests as cached on that node (as Dynamo's KV router
does in its approximate mode without KV events). A node that appears between samples (scaled up) is sampled on
first sight.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import simpy

from sim.engine.kv import match_in
from sim.engine.protocol import NodeEngine
from sim.traffic.request import Request


class StaleView:
    """What a router sees of its nodes: the last sample, plus its own dispatches since then."""

    def __init__(self, nodes: Sequence[NodeEngine], env: simpy.Environment, interval_s: float, count_own: bool,
                 prefixes: bool) -> None:
        self.nodes = nodes
        self.env = env
        self.interval_s = interval_s
        self.count_own = count_own
        self.prefixes = prefixes
        self._load: dict[int, int] = {}
        self._units: dict[int, set[int]] = {}
        self.samples = 0
        env.process(self._run())

    def _sample_node(self, node: NodeEngine) -> None:
        self._load[node.node_id] = node.outstanding_tokens()
        if self.prefixes:
            self._units[node.node_id] = set(node.prefix_unit_set())

    def _run(self) -> Generator[simpy.Event, Any, None]:
        while True:
            self._load.clear()
            self._units.clear()
            for node in self.nodes:
                self._sample_node(node)
            self.samples += 1
            yield self.env.timeout(self.interval_s)

    def load(self, node: NodeEngine) -> int:
        """Outstanding tokens of ``node`` as last sampled (+ the router's own dispatches since)."""
        if node.node_id not in self._load:
            self._sample_node(node)
        return self._load[node.node_id]

    def match(self, node: NodeEngine, req: Request) -> int:
        """Prompt tokens of ``req`` in ``node``'s prefix cache as last sampled."""
        if node.node_id not in self._load:
            self._sample_node(node)
        return match_in(self._units.get(node.node_id, set()), req, node.kv.unit_tokens)

    def sent(self, node: NodeEngine, req: Request, hit_tokens: int = 0) -> None:
        """The router sent ``req`` to ``node``, expecting ``hit_tokens`` of its prompt cached there."""
        if self.count_own:
            nid = node.node_id
            self._load[nid] = self.load(node) + req.prompt_tokens - hit_tokens + req.output_tokens
            if self.prefixes and req.prefix and node.kv.unit_tokens:
                self._units.setdefault(nid, set()).update(req.prefix[: req.prompt_tokens // node.kv.unit_tokens])
