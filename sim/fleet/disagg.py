"""Prefill/decode disaggregation: route a request to a prefill node, move its KV over a link, decode it elsewhere.

Model (docs/disaggregation.md; Splitwise, DistServe, Mooncake, NVIDIA Dynamo, vLLM's NIXL connector):

1. **Prefill role.** An arrival goes to the prefill node with the least outstanding tokens (ties: lowest index). The
   node schedules it as any node does (continuous batching, chunked prefill, preemption by recompute, its own KV
   limit). When the prompt is computed the node samples no token: it hands the request off
   (:attr:`sim.engine.node.Node.handoff`) and keeps the prompt's KV blocks until the transfer has completed (the
   decode side pulls them from the prefill GPU's memory, as Mooncake's transfer engine and NIXL do), then frees them
   (``release_kv``).
2. **Link.** At hand-off the decode node is chosen (least outstanding tokens plus the tokens already in transit
   to it) and the KV (``prompt_tokens × kv_bytes_per_token`` of the node) is sent from the prefill node's egress
   (its pool's ``interconnect``) into the decode node's ingress (its pool's; default InfiniBand)
   (:mod:`sim.fleet.link`: bandwidth, latency, layer-wise overlap, FCFS contention at both ends).
3. **Decode role.** When the KV has arrived the request joins the decode node's queue holding its prompt KV
   (``cached_tokens = prompt − 1``: the decode node's first step recomputes the last prompt position, a one-token
   step like any decode, and samples the first token). Admission is the decode node's own (``max_num_seqs``, token
   budget, KV blocks); until admitted, the received KV waits in the decode host's memory (a Mooncake-store-like
   buffer; its size is not limited). TTFT = queue + prefill + transfer + decode queue + first decode step.
4. **Preemption on the decode side** frees the request's GPU blocks; on readmission its prompt KV is re-loaded
   from that host buffer (load time not modelled) and its generated tokens are recomputed, as vLLM recomputes them.

Not modelled: the network core (non-blocking), transfer failures, spot/on-demand/autoscaled nodes, hosted-API spill
and client time-outs together with disaggregation (rejected at load time).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import simpy

from sim.core.config import Interconnect, Scenario, model_key
from sim.core.errors import ConfigError
from sim.engine.protocol import NodeEngine
from sim.fleet.link import Link
from sim.fleet.pools import PoolLayout
from sim.traffic.request import Handoff, Request, Status


class HandoffNode(NodeEngine, Protocol):
    """A node engine with the prefill role's hand-off and the batched arrivals of both engines
    (:class:`sim.engine.node.Node`, :class:`sim.engine.reference.ReferenceNode`)."""

    handoff: Callable[[Request], None] | None

    def release_kv(self, req: Request) -> None: ...

    def batched(self) -> AbstractContextManager[None]: ...


if TYPE_CHECKING:  # static conformance: both engines can serve a prefill pool
    from sim.engine.node import Node
    from sim.engine.reference import ReferenceNode

    _fast: type[HandoffNode] = Node
    _reference: type[HandoffNode] = ReferenceNode


def check_disaggregation(scenario: Scenario) -> None:
    """What disaggregated pools do not support yet: one ConfigError naming the field."""
    src = scenario.source
    pools = scenario.fleet.pool_list()
    for i, p in enumerate(pools):
        if p.role == "mixed":
            continue
        if p.spot.nodes or p.on_demand.max_nodes:
            raise ConfigError(src, f"fleet.pools.{i}", f"{p.role} pools take reserved nodes only (no spot or "
                              "on_demand nodes yet)")
        if p.nodes < 1:
            raise ConfigError(src, f"fleet.pools.{i}.nodes", f"a {p.role} pool needs at least one node")
        if any(q.role == "mixed" and model_key(q.model) == model_key(p.model) for q in pools):
            raise ConfigError(src, f"fleet.pools.{i}.role", f"model {p.model} has {p.role} pools and a mixed pool: "
                              "serve a model either disaggregated or mixed")
    if scenario.spill is not None or scenario.api is not None:
        raise ConfigError(src, "spill", "hosted-API spill is not supported with prefill/decode pools yet")
    for k, c in enumerate(scenario.traffic.classes):
        if c.client is not None and c.client.timeout_s is not None:
            raise ConfigError(src, f"traffic.classes.{k}.client.timeout_s",
                              "client time-outs are not supported with prefill/decode pools yet")
        if c.deferrable is not None:
            raise ConfigError(src, f"traffic.classes.{k}.deferrable",
                              "deferrable classes are not supported with prefill/decode pools yet")


class DisaggDispatcher:
    """Routes arrivals of a model served by ``prefill`` / ``decode`` pools to a prefill node, and hands each computed
    prompt to a decode node of the same model over the prefill pool's ``interconnect`` (one :class:`Link` per
    prefill node); arrivals of models served by mixed pools go to ``fleet.dispatch`` as before."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, fleet: Any, layout: PoolLayout,
                 pool_models: list[Any]) -> None:
        check_disaggregation(scenario)
        self.env = env
        self.fleet = fleet
        self.layout = layout
        n_groups = len(layout.group_models)
        self.prefill: list[list[HandoffNode]] = [[] for _ in range(n_groups)]  # per model group
        self.decode: list[list[HandoffNode]] = [[] for _ in range(n_groups)]
        self.links: dict[int, Link] = {}  # prefill node id -> its egress link
        self.ingress: dict[int, Link] = {}  # decode node id -> its ingress link (the decode pool's interconnect)
        self.kv_bytes_per_token: dict[int, float] = {}  # prefill node id -> the node's KV bytes per token
        self.layers: dict[int, int] = {}
        self.overlap: dict[int, bool] = {}
        for slot in fleet.slots:
            pool = layout.pools[slot.pool]
            if pool.role == "mixed" or slot.node is None:
                continue
            g = layout.pool_group[slot.pool]
            node = cast(HandoffNode, slot.node)
            ic = pool.interconnect if pool.interconnect is not None else Interconnect()
            if pool.role == "decode":
                self.decode[g].append(node)
                self.ingress[node.node_id] = Link(ic.bandwidth_bytes_per_s, ic.one_way_latency_s)
                continue
            self.prefill[g].append(node)
            self.links[node.node_id] = Link(ic.bandwidth_bytes_per_s, ic.one_way_latency_s)
            nm = pool_models[slot.pool]
            self.kv_bytes_per_token[node.node_id] = nm.memory.kv_bytes_per_token
            self.layers[node.node_id] = nm.model.layers
            self.overlap[node.node_id] = ic.overlap
            node.handoff = partial(self._prefilled, g, node)
        self.inbound_tokens: dict[int, int] = {n.node_id: 0 for nodes in self.decode for n in nodes}
        self.in_transfer = 0  # requests whose KV is on a link (owned by no node)
        self._cached: dict[int, int] = {}  # rid -> the request's own cached_tokens, restored when it is done
        self._prefix: dict[int, tuple[int, ...] | None] = {}  # rid -> its prefix hash chain, restored when done
        self._arrivals: dict[float, list[tuple[HandoffNode, HandoffNode, int, Request]]] = {}  # due time -> transfers
        self.transfer_s = array("d")  # per hand-off: prefill end → KV arrived (queueing on the link included)

    # -- routing ------------------------------------------------------------------------------------------
    @staticmethod
    def _least(nodes: list[HandoffNode], extra: dict[int, int] | None = None) -> HandoffNode:
        """The node with the fewest outstanding tokens (plus ``extra[node_id]``), ties to the first."""
        best, best_w = nodes[0], None
        for node in nodes:
            w = node.outstanding_tokens() + (extra[node.node_id] if extra is not None else 0)
            if best_w is None or w < best_w:
                best, best_w = node, w
        return best

    def dispatch(self, req: Request) -> None:
        """An arrival: to the least-loaded prefill node of its model, or to the fleet if its model is served mixed."""
        g = self.layout.class_group[req.class_idx]
        if not self.prefill[g]:
            self.fleet.dispatch(req)
            return
        node = self._least(self.prefill[g])
        req.handoff = Handoff(node.node_id)
        self.fleet.submit(node, req)

    # -- hand-off -----------------------------------------------------------------------------------------
    def _prefilled(self, g: int, src: HandoffNode, req: Request) -> None:
        """``src`` computed ``req``'s prompt: pick the decode node and book the KV transfer."""
        now = self.env.now
        self._cached[req.rid] = req.cached_tokens  # its prefix-cache hit on the prefill node
        dst = self._least(self.decode[g], self.inbound_tokens)
        tokens = req.output_tokens + 1
        self.inbound_tokens[dst.node_id] += tokens
        self.in_transfer += 1
        prefill_s = now - req.first_scheduled_s if req.first_scheduled_s >= 0 else 0.0
        sid = src.node_id
        link, kv_bytes = self.links[sid], req.prompt_tokens * self.kv_bytes_per_token[sid]
        arrive = link.send(now, kv_bytes, prefill_s, self.layers[sid], self.overlap[sid], self.ingress[dst.node_id])
        self.transfer_s.append(arrive - now)
        req.handoff = Handoff(sid, dst.node_id, link.last_start_s, arrive, arrive - now, kv_bytes)
        group = self._arrivals.get(arrive)
        if group is None:  # one event per instant: hand-offs of one step arrive together on a fast link
            group = self._arrivals[arrive] = []
            self.env.timeout(arrive - now).callbacks.append(partial(self._arrived, arrive))
        group.append((src, dst, tokens, req))

    def _arrived(self, at_s: float, _ev: simpy.Event) -> None:
        """KV of every transfer due now has arrived: the prefill nodes free it, the decode nodes queue the
        requests (each node schedules once for the whole instant, as the reference engine does)."""
        group = self._arrivals.pop(at_s)
        with ExitStack() as stack:
            for src in {id(t[0]): t[0] for t in group}.values():
                stack.enter_context(src.batched())
            for src, _, _, req in group:
                src.release_kv(req)
        with ExitStack() as stack:
            for dst in {id(t[1]): t[1] for t in group}.values():
                stack.enter_context(dst.batched())
            for _, dst, tokens, req in group:
                self.in_transfer -= 1
                self.inbound_tokens[dst.node_id] -= tokens
                self._cached[req.rid] = req.cached_tokens  # the prefill node's prefix-cache hit
                req.cached_tokens = max(req.prompt_tokens - 1, 0)
                # the prompt's KV came over the link, not from the decode node's prefix cache: no hash chain there
                self._prefix[req.rid] = req.prefix
                req.prefix = None
                req.num_computed = 0  # a new node's view: KV held outside its cache until admitted
                req.status = Status.WAITING
                self.fleet.submit(dst, req)

    def on_done(self, req: Request) -> None:
        """A request reached a terminal status: its own ``cached_tokens`` (its prefix-cache hit on the prefill node)
        and hash chain are restored for the request table."""
        req.cached_tokens = self._cached.pop(req.rid, req.cached_tokens)
        if req.rid in self._prefix:
            req.prefix = self._prefix.pop(req.rid)

    def stats(self) -> dict[str, float]:
        """Hand-offs, transfer time (mean, P95; queueing on the links included) and the mean utilisation of the
        prefill nodes' egress and the decode nodes' ingress links."""
        t = np.frombuffer(self.transfer_s, dtype=np.float64) if len(self.transfer_s) else np.zeros(0)
        end = max(self.env.now, 1e-9)
        links = list(self.links.values())
        return {
            "prefill_nodes": sum(len(n) for n in self.prefill),
            "decode_nodes": sum(len(n) for n in self.decode),
            "transfers": int(t.size),
            "transfer_mean_s": float(t.mean()) if t.size else 0.0,
            "transfer_p95_s": float(np.percentile(t, 95)) if t.size else 0.0,
            "kv_gb_sent": sum(lk.bytes_sent for lk in links) / 1e9,
            "link_busy_mean": sum(lk.busy_s for lk in links) / max(1, len(links)) / end,
            "ingress_busy_mean": sum(lk.busy_s for lk in self.ingress.values()) / max(1, len(self.ingress)) / end,
        }

