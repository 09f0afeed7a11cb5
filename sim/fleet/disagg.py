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

5. **Nodes that come and go** (spot, on-demand, autoscaled pools), the hosted API and client time-outs: see
   :class:`DisaggDispatcher` and docs/disaggregation.md.

Not modelled: the network core (non-blocking), link failures; deferrable classes are refused at load time.
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
        if p.nodes + p.spot.nodes + p.on_demand.max_nodes < 1:
            raise ConfigError(src, f"fleet.pools.{i}.nodes", f"a {p.role} pool needs at least one node")
        if any(q.role == "mixed" and model_key(q.model) == model_key(p.model) for q in pools):
            raise ConfigError(src, f"fleet.pools.{i}.role", f"model {p.model} has {p.role} pools and a mixed pool: "
                              "serve a model either disaggregated or mixed")
    for k, c in enumerate(scenario.traffic.classes):
        if c.deferrable is not None:
            raise ConfigError(src, f"traffic.classes.{k}.deferrable",
                              "deferrable classes are not supported with prefill/decode pools yet")


class DisaggDispatcher:
    """Routes arrivals of a model served by ``prefill`` / ``decode`` pools to a prefill node, and hands each computed
    prompt to a decode node of the same model over the prefill pool's ``interconnect`` (one :class:`Link` per
    prefill node); arrivals of models served by mixed pools go to ``fleet.dispatch`` as before.

    Nodes come and go (spot evictions, on-demand nodes, autoscaling: docs/disaggregation.md): routing picks among
    the nodes that accept requests now (``fleet.active``); an arrival finding no prefill node waits in the fleet's
    held queue, a computed prompt finding no decode node keeps its KV on the prefill node until one comes up. A KV
    transfer whose decode node is gone when it arrives is sent again from the prefill node to another decode node;
    one whose prefill node was evicted is lost, and the request is re-queued as an evicted one (``on_eviction``).

    It is also the spill dispatcher's fleet (:class:`sim.spill.policy.FleetLike`): a spill policy judges the prefill
    node a request would go to, before the prefill pool."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, fleet: Any, layout: PoolLayout,
                 pool_models: list[Any]) -> None:
        check_disaggregation(scenario)
        self.env = env
        self.fleet = fleet
        self.layout = layout
        self.pool_models = pool_models
        roles = [p.role for p in layout.pools]
        # per slot: (model group, role) of its pool; which groups are disaggregated
        self._slot_role = [(layout.pool_group[p], roles[p]) for p in layout.slot_pool]
        self._disagg_group = [any(roles[p] != "mixed" for p in layout.group_pools(g))
                              for g in range(len(layout.group_models))]
        self.links: dict[int, Link] = {}  # prefill slot -> its egress link (slots that ran a node)
        self.ingress: dict[int, Link] = {}  # decode slot -> its ingress link (the decode pool's interconnect)
        self.inbound_tokens: dict[int, int] = {}  # decode slot -> tokens of the transfers on their way to it
        self.in_transfer = 0  # requests whose KV is on a link or parked waiting for a decode node (no node owns them)
        self._cached: dict[int, int] = {}  # rid -> the request's own cached_tokens, restored when it is done
        self._prefix: dict[int, tuple[int, ...] | None] = {}  # rid -> its prefix hash chain, restored when done
        self._arrivals: dict[float, list[tuple[HandoffNode, HandoffNode, int, Request]]] = {}  # due time -> transfers
        self._transit: dict[int, HandoffNode] = {}  # id() of a request whose KV is on a link -> its prefill node
        self._parked_on: dict[Any, int] = {}  # prefill node -> transfers still reading its KV
        self._no_decode: list[tuple[int, HandoffNode, Request]] = []  # (group, prefill node, request): no decode up
        # evicted nodes (their KV is gone) and requests re-queued after an eviction (their prefill starts afresh):
        # the objects themselves, so that a new object can never be mistaken for one of them
        self._killed: set[Any] = set()
        self._again: set[Request] = set()
        self.transfer_s = array("d")  # per hand-off: prefill end → KV arrived (queueing on the link included)
        for slot in fleet.slots:
            if slot.node is not None:
                self._attach(slot.node)
        fleet.node_hooks.append(self._node_event)
        fleet.redispatch = self.dispatch

    def _attach(self, node: Any) -> None:
        """A node came up in a slot of a prefill or decode pool: its link (once per slot) and its hand-off."""
        g, role = self._slot_role[node.node_id]
        if role == "mixed":
            return
        sid = node.node_id
        pool = self.layout.pools[self.layout.slot_pool[sid]]
        ic = pool.interconnect if pool.interconnect is not None else Interconnect()
        if role == "decode":
            self.ingress.setdefault(sid, Link(ic.bandwidth_bytes_per_s, ic.one_way_latency_s))
            self.inbound_tokens.setdefault(sid, 0)
            return
        self.links.setdefault(sid, Link(ic.bandwidth_bytes_per_s, ic.one_way_latency_s))
        cast(HandoffNode, node).handoff = partial(self._prefilled, g, node)

    def _node_event(self, what: str, node: Any) -> None:
        """Fleet hook: a node came up (attach it; parked hand-offs of its model go out to a new decode node) or was
        evicted (its KV is gone)."""
        if what == "killed":
            self._killed.add(node)
            lost = [t for t in self._no_decode if t[1] is node]
            if lost:  # prompts parked on it for want of a decode node: their KV is gone
                self._no_decode = [t for t in self._no_decode if t[1] is not node]
                for _, src, req in lost:
                    self.in_transfer -= 1
                    self._parked_on[src] -= 1
                    self.fleet.evicted_sink(req)
            return
        self._attach(node)
        g, role = self._slot_role[node.node_id]
        if role == "decode" and self._no_decode:
            waiting, self._no_decode = self._no_decode, []
            for grp, src, req in waiting:
                if grp != g:
                    self._no_decode.append((grp, src, req))
                    continue
                self.in_transfer -= 1
                self._prefilled(grp, src, req, resend=True)

    def wrap_evictions(self) -> None:
        """Evicted requests (fleet.evicted_sink) get their own prompt view back before they are re-queued: to a
        prefill node again (``on_eviction: requeue``) or to the hosted API (``spill``)."""
        sink = self.fleet.evicted_sink
        target = self.dispatch if sink == self.fleet.dispatch else sink

        def evicted(req: Request) -> None:
            self._restore(req)
            self._again.add(req)
            target(req)

        self.fleet.evicted_sink = evicted

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

    def _accepting(self, g: int, role: str) -> list[HandoffNode]:
        """The nodes of model group ``g``'s ``role`` pools that accept requests now, in slot order."""
        want = (g, role)
        return [cast(HandoffNode, n) for n in self.fleet.active if self._slot_role[n.node_id] == want]

    def _alive(self, node: Any) -> bool:
        return self.fleet.slots[node.node_id].node is node

    def pick(self, req: Request) -> NodeEngine | None:
        """The prefill node an arrival would go to (the fleet's pick for a model served mixed); None: none accepts."""
        g = self.layout.class_group[req.class_idx]
        if not self._disagg_group[g]:
            return cast(NodeEngine | None, self.fleet.pick(req))
        nodes = self._accepting(g, "prefill")
        return self._least(nodes) if nodes else None

    def accepting(self, req: Request) -> bool:
        g = self.layout.class_group[req.class_idx]
        if not self._disagg_group[g]:
            return bool(self.fleet.accepting(req))
        return bool(self._accepting(g, "prefill"))

    def submit(self, node: NodeEngine, req: Request) -> None:
        """Send ``req`` to ``node`` (a prefill node of its model, or a mixed node)."""
        if self._slot_role[node.node_id][1] == "prefill":
            req.handoff = Handoff(node.node_id)
        self.fleet.submit(node, req)

    def dispatch(self, req: Request) -> None:
        """An arrival: to the least-loaded prefill node of its model (held by the fleet while none accepts), or to
        the fleet if its model is served mixed."""
        g = self.layout.class_group[req.class_idx]
        if not self._disagg_group[g]:
            self.fleet.dispatch(req)
            return
        node = self.pick(req)
        if node is None:
            self.fleet.pending.append(req)
        else:
            self.submit(node, req)

    def next_pools(self, req: Request, node: NodeEngine) -> Any:
        """``pool_mode: overflow`` for models served mixed; prefill pools are spread over."""
        return self.fleet.next_pools(req, node) if not self._disagg_group[self.layout.class_group[req.class_idx]] \
            else iter(())

    @property
    def slots(self) -> Any:
        return self.fleet.slots

    @property
    def pending(self) -> Any:
        return self.fleet.pending

    def withdraw_in_transit(self, req: Request) -> bool:
        """A client gave up on ``req`` while its KV is on a link or parked waiting for a decode node: the transfer is
        abandoned (the link time booked stays spent), the prefill node frees the KV now, nothing is delivered.
        False: not in transit."""
        src = self._transit.pop(id(req), None)
        if src is None:
            waiting = [t for t in self._no_decode if t[2] is req]
            if not waiting:
                return False
            self._no_decode.remove(waiting[0])
            src = waiting[0][1]
        self.in_transfer -= 1
        req.cancelled = True
        self._release(src, req)
        return True

    # -- hand-off -----------------------------------------------------------------------------------------
    def _prefilled(self, g: int, src: HandoffNode, req: Request, resend: bool = False) -> None:
        """``src`` computed ``req``'s prompt: pick the decode node and book the KV transfer (``resend``: again,
        its first decode node having gone; the KV is still parked on ``src``)."""
        now = self.env.now
        sid = src.node_id
        if not resend:
            self._cached[req.rid] = req.cached_tokens  # its prefix-cache hit on the prefill node
            self._parked_on[src] = self._parked_on.get(src, 0) + 1
        self.in_transfer += 1
        decode = self._accepting(g, "decode")
        if not decode:  # no decode node up: the KV stays parked until one comes up
            self._no_decode.append((g, src, req))
            return
        dst = self._least(decode, self.inbound_tokens)
        tokens = req.output_tokens + 1
        self.inbound_tokens[dst.node_id] += tokens
        again = resend or req in self._again  # no overlap with a prefill whose start is not first_scheduled_s
        prefill_s = now - req.first_scheduled_s if req.first_scheduled_s >= 0 and not again else 0.0
        nm = self.pool_models[self.layout.slot_pool[sid]]
        overlap = not resend and self._overlap(sid)
        link, kv_bytes = self.links[sid], req.prompt_tokens * nm.memory.kv_bytes_per_token
        arrive = link.send(now, kv_bytes, prefill_s, nm.model.layers, overlap, self.ingress[dst.node_id])
        self.transfer_s.append(arrive - now)
        req.handoff = Handoff(sid, dst.node_id, link.last_start_s, arrive, arrive - now, kv_bytes)
        self._transit[id(req)] = src
        group = self._arrivals.get(arrive)
        if group is None:  # one event per instant: hand-offs of one step arrive together on a fast link
            group = self._arrivals[arrive] = []
            self.env.timeout(arrive - now).callbacks.append(partial(self._arrived, arrive))
        group.append((src, dst, tokens, req))

    def _overlap(self, sid: int) -> bool:
        pool = self.layout.pools[self.layout.slot_pool[sid]]
        return (pool.interconnect if pool.interconnect is not None else Interconnect()).overlap

    def _release(self, src: HandoffNode, req: Request) -> None:
        """The KV of ``req`` has left ``src`` (or will never be read): freed there, unless the node is gone; a
        draining prefill node with nothing left terminates."""
        left = self._parked_on[src] = self._parked_on[src] - 1
        if not self._alive(src):
            if not left:
                del self._parked_on[src]
            return
        src.release_kv(req)
        if not left:
            self.fleet.withdrawn(self.fleet.slots[src.node_id])  # terminates a draining node with nothing left

    def _arrived(self, at_s: float, _ev: simpy.Event) -> None:
        """KV of every transfer due now has arrived: the prefill nodes free it, the decode nodes queue the
        requests (each node schedules once for the whole instant, as the reference engine does). Transfers whose
        decode node is gone are sent again; those whose prefill node was evicted are lost (re-queued as evicted)."""
        group = self._arrivals.pop(at_s)
        deliver, resend, lost = [], [], []
        for t in group:
            src, dst, tokens, req = t
            self._transit.pop(id(req), None)
            self.inbound_tokens[dst.node_id] -= tokens
            if src in self._killed:
                lost.append(t)
            elif req.cancelled or self._alive(dst):
                deliver.append(t)
            else:
                resend.append(t)
        with ExitStack() as stack:
            for src in {id(t[0]): t[0] for t in deliver if self._alive(t[0]) and not t[3].cancelled}.values():
                stack.enter_context(src.batched())
            for src, _, _, req in deliver:
                if not req.cancelled:  # a withdrawn one's KV was freed when its client gave up
                    self._release(src, req)
        with ExitStack() as stack:
            for dst in {id(t[1]): t[1] for t in deliver if not t[3].cancelled}.values():
                stack.enter_context(dst.batched())
            for _, dst, _, req in deliver:
                if req.cancelled:  # its client gave up on the way: nothing to deliver (no longer counted)
                    continue
                self.in_transfer -= 1
                self._cached[req.rid] = req.cached_tokens  # the prefill node's prefix-cache hit
                req.cached_tokens = max(req.prompt_tokens - 1, 0)
                # the prompt's KV came over the link, not from the decode node's prefix cache: no hash chain there
                self._prefix[req.rid] = req.prefix
                req.prefix = None
                req.num_computed = 0  # a new node's view: KV held outside its cache until admitted
                req.status = Status.WAITING
                self.fleet.submit(dst, req)
        for src, _, _, req in resend:
            self.in_transfer -= 1
            self._prefilled(self.layout.pool_group[self.layout.slot_pool[src.node_id]], src, req, resend=True)
        for src, _, _, req in lost:
            if not req.cancelled:  # (a withdrawn one was counted off when its client gave up)
                self.in_transfer -= 1
                self._parked_on[src] -= 1
                req.num_computed = 0
                req.status = Status.WAITING
                self.fleet.evicted_sink(req)

    def _restore(self, req: Request) -> None:
        """``req``'s own ``cached_tokens`` (its prefix-cache hit on the prefill node) and hash chain, from before its
        decode node's view."""
        req.cached_tokens = self._cached.pop(req.rid, req.cached_tokens)
        if req.rid in self._prefix:
            req.prefix = self._prefix.pop(req.rid)

    def on_done(self, req: Request) -> None:
        """A request reached a terminal status: its own ``cached_tokens`` (its prefix-cache hit on the prefill node)
        and hash chain are restored for the request table."""
        self._restore(req)
        self._again.discard(req)

    def withdrawn(self, req: Request) -> None:
        """A client gave up on ``req`` (the attempt is retried afresh): its own prompt view back."""
        self._restore(req)

    def stats(self) -> dict[str, float]:
        """Hand-offs, transfer time (mean, P95; queueing on the links included) and the mean utilisation of the
        prefill nodes' egress and the decode nodes' ingress links."""
        t = np.frombuffer(self.transfer_s, dtype=np.float64) if len(self.transfer_s) else np.zeros(0)
        end = max(self.env.now, 1e-9)
        links = list(self.links.values())
        return {
            "prefill_nodes": len(self.links),
            "decode_nodes": len(self.ingress),
            "transfers": int(t.size),
            "transfer_mean_s": float(t.mean()) if t.size else 0.0,
            "transfer_p95_s": float(np.percentile(t, 95)) if t.size else 0.0,
            "kv_gb_sent": sum(lk.bytes_sent for lk in links) / 1e9,
            "link_busy_mean": sum(lk.busy_s for lk in links) / max(1, len(links)) / end,
            "ingress_busy_mean": sum(lk.busy_s for lk in self.ingress.values()) / max(1, len(self.ingress)) / end,
        }

