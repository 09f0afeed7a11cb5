"""Prefill/decode disaggregation: route a request to a prefill node, move its KV over a link, decode it elsewhere.

Model (docs/disaggregation.md; Splitwise, DistServe, Mooncake, NVIDIA Dynamo, vLLM's NIXL connector):

1. **Prefill role.** An arrival goes to the prefill node with the least outstanding tokens (ties: lowest index). The
   node schedules it as any node does (continuous batching, chunked prefill, preemption by recompute, its own KV
   limit). When the prompt is computed the node samples no token: it hands the request off
   (:attr:`sim.engine.node.Node.handoff`) and keeps the prompt's KV blocks until the transfer has completed (the
   decode side pulls them from the prefill GPU's memory, as Mooncake's transfer engine and NIXL do), then frees them
   (``release_kv``).
2. **Link.** At hand-off the decode node is chosen (least outstanding tokens plus the tokens already in transit
   to it) and the KV (``prompt_tokens × kv_bytes_per_token`` of the node) is sent over the prefill node's egress
   link (:mod:`sim.fleet.link`: bandwidth, latency, layer-wise overlap, FCFS contention).
3. **Decode role.** When the KV has arrived the request joins the decode node's queue holding its prompt KV
   (``cached_tokens = prompt − 1``: the decode node's first step recomputes the last prompt position, a one-token
   step like any decode, and samples the first token). Admission is the decode node's own (``max_num_seqs``, token
   budget, KV blocks); until admitted, the received KV waits in the decode host's memory (a Mooncake-store-like
   buffer; its size is not limited). TTFT = queue + prefill + transfer + decode queue + first decode step.
4. **Preemption on the decode side** frees the request's GPU blocks; on readmission its prompt KV is re-loaded
   from that host buffer (load time not modelled) and its generated tokens are recomputed, as vLLM recomputes them.

Not modelled: decode-side ingress contention, transfer failures, spot/on-demand/autoscaled nodes, hosted-API spill
and client time-outs together with disaggregation (rejected at load time).
"""

from __future__ import annotations

from array import array
from contextlib import ExitStack
from functools import partial
from typing import Any

import numpy as np
import simpy

from sim.core.config import Scenario
from sim.engine.protocol import NodeEngine
from sim.fleet.link import Link, get_interconnect
from sim.traffic.request import Request, Status


class DisaggDispatcher:
    """Routes arrivals to the prefill nodes (slots ``0 … prefill_nodes−1`` of ``fleet``) and hands computed prompts
    to the decode nodes (the other reserved slots) over one :class:`Link` per prefill node."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, fleet: Any, kv_bytes_per_token_node: float,
                 layers: int) -> None:
        spec = scenario.fleet.disaggregation
        assert spec is not None
        self.env = env
        self.fleet = fleet
        ic = get_interconnect(spec.interconnect)
        gpus = scenario.fleet.gpus_per_node
        bw = (spec.bandwidth_gb_s if spec.bandwidth_gb_s is not None else ic.bandwidth_gb_s) * 1e9 * gpus
        latency = spec.latency_s if spec.latency_s is not None else ic.latency_s
        self.overlap = spec.layerwise_overlap
        self.layers = layers
        self.kv_bytes_per_token = kv_bytes_per_token_node
        n_prefill = spec.prefill_nodes
        self.prefill: list[NodeEngine] = [s.node for s in fleet.slots[:n_prefill]]
        self.decode: list[NodeEngine] = [s.node for s in fleet.slots[n_prefill:scenario.fleet.nodes]]
        self.links = [Link(bw, latency) for _ in self.prefill]
        self.inbound_tokens = [0] * len(self.decode)  # tokens on their way to each decode node
        self.in_transfer = 0  # requests whose KV is on a link (owned by no node)
        self._cached: dict[int, int] = {}  # rid -> the request's own cached_tokens, restored when it is done
        self._arrivals: dict[float, list[tuple[int, int, int, Request]]] = {}  # due time -> transfers
        self.transfer_s = array("d")  # per hand-off: prefill end → KV arrived (queueing on the link included)
        for i, node in enumerate(self.prefill):
            node.handoff = partial(self._prefilled, i)  # type: ignore[attr-defined]  # both engines have it

    # -- routing ------------------------------------------------------------------------------------------
    @staticmethod
    def _least(nodes: list[NodeEngine], extra: list[int] | None = None) -> int:
        best, best_w = 0, None
        for i, node in enumerate(nodes):
            w = node.outstanding_tokens() + (extra[i] if extra is not None else 0)
            if best_w is None or w < best_w:
                best, best_w = i, w
        return best

    def dispatch(self, req: Request) -> None:
        """An arrival: to the prefill node with the least outstanding tokens."""
        self._cached[req.rid] = req.cached_tokens
        self.prefill[self._least(self.prefill)].submit(req)

    # -- hand-off -----------------------------------------------------------------------------------------
    def _prefilled(self, i: int, req: Request) -> None:
        now = self.env.now
        d = self._least(self.decode, self.inbound_tokens)
        tokens = req.output_tokens + 1
        self.inbound_tokens[d] += tokens
        self.in_transfer += 1
        prefill_s = now - req.first_scheduled_s if req.first_scheduled_s >= 0 else 0.0
        arrive = self.links[i].send(now, req.prompt_tokens * self.kv_bytes_per_token, prefill_s, self.layers,
                                    self.overlap)
        self.transfer_s.append(arrive - now)
        group = self._arrivals.get(arrive)
        if group is None:  # one event per instant: hand-offs of one step arrive together on a fast link
            group = self._arrivals[arrive] = []
            self.env.timeout(arrive - now).callbacks.append(partial(self._arrived, arrive))
        group.append((i, d, tokens, req))

    def _arrived(self, at_s: float, _ev: simpy.Event) -> None:
        """KV of every transfer due now has arrived: the prefill nodes free it, the decode nodes queue the
        requests (each node schedules once for the whole instant, as the reference engine does)."""
        group = self._arrivals.pop(at_s)
        with ExitStack() as stack:
            for i in sorted({g[0] for g in group}):
                stack.enter_context(self.prefill[i].batched())  # type: ignore[attr-defined]
            for i, _, _, req in group:
                self.prefill[i].release_kv(req)  # type: ignore[attr-defined]  # both engines have it
        with ExitStack() as stack:
            for d in sorted({g[1] for g in group}):
                stack.enter_context(self.decode[d].batched())  # type: ignore[attr-defined]
            for _, d, tokens, req in group:
                self.in_transfer -= 1
                self.inbound_tokens[d] -= tokens
                req.cached_tokens = max(req.prompt_tokens - 1, 0)
                req.num_computed = 0  # a new node's view: KV held outside its cache until admitted
                req.status = Status.WAITING
                self.decode[d].submit(req)

    def on_done(self, req: Request) -> None:
        """A request reached a terminal status: its own ``cached_tokens`` (a prefix-cache hit) is restored for
        the request table."""
        req.cached_tokens = self._cached.pop(req.rid, req.cached_tokens)

    def stats(self) -> dict[str, float]:
        """Hand-offs, transfer time (mean, P95; queueing on the link included) and link utilisation."""
        t = np.frombuffer(self.transfer_s, dtype=np.float64) if len(self.transfer_s) else np.zeros(0)
        end = max(self.env.now, 1e-9)
        return {
            "prefill_nodes": len(self.prefill),
            "decode_nodes": len(self.decode),
            "transfers": int(t.size),
            "transfer_mean_s": float(t.mean()) if t.size else 0.0,
            "transfer_p95_s": float(np.percentile(t, 95)) if t.size else 0.0,
            "kv_gb_sent": sum(lk.bytes_sent for lk in self.links) / 1e9,
            "link_busy_mean": sum(lk.busy_s for lk in self.links) / len(self.links) / end,
        }

