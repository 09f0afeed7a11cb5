"""KV-cache transfer links between a prefill node and a decode node (disaggregated serving).

Model (docs/disaggregation.md):

* A transfer moves ``prompt_tokens × kv_bytes_per_token`` bytes (the prefill node's KV of the prompt, all its
  GPUs together: :func:`sim.perf.model.kv_bytes_per_token`, as the engine's ledger counts it).
* Bandwidth: the prefill pool's ``interconnect`` (:class:`sim.core.config.Interconnect`: a link kind's default or
  ``bandwidth_gb_per_s``) is what one node sends at; a node with a NIC per GPU sends at the NICs' sum (give it as
  ``bandwidth_gb_per_s``). Wire time ``t = bytes / bandwidth`` (0 for an infinite bandwidth); each transfer also
  pays the one-way ``latency_s`` once, which does not occupy the link.
* Layer-wise overlap (Splitwise, DistServe and Mooncake stream layer ``l``'s KV while layer ``l+1`` computes):
  the transfer may start when the prompt's computation starts, still needs the whole wire time ``t`` on the
  link, and its last layer's share ``t / layers`` leaves only after the computation ends: it completes at
  ``max(start + t, prefill_end + t / layers)``. Without overlap it starts when the prefill ends.
* Contention: each prefill node's egress is one first-come-first-served server, booked when each prompt is done
  (a transfer starts no earlier than the previous booking ends), so transfers that share a node queue behind each
  other (FCFS serialisation: the same total drain time as fair sharing, earlier completion for the first); the
  link is busy the whole wire time, overlapped or not. Decode-side ingress and the network core are not
  modelled as bottlenecks (a non-blocking fabric).
"""

from __future__ import annotations

import math


def wire_s(bytes_: float, bandwidth_bytes_per_s: float) -> float:
    """Seconds on the wire for ``bytes_`` (0 on an infinitely fast link)."""
    return 0.0 if math.isinf(bandwidth_bytes_per_s) else bytes_ / bandwidth_bytes_per_s


def exposed_wire_s(wire: float, prefill_s: float, layers: int, overlap: bool) -> float:
    """Wire time left after the prefill ends on an idle link: all of it without overlap; with layer-wise streaming
    the part not hidden under ``prefill_s`` of compute, and never less than one layer's share."""
    if not overlap:
        return wire
    return max(wire / layers, wire - prefill_s)


class Link:
    """One prefill node's egress: a FCFS server of transfers (see the module docstring)."""

    __slots__ = ("bandwidth_bytes_per_s", "latency_s", "free_at_s", "busy_s", "transfers", "bytes_sent")

    def __init__(self, bandwidth_bytes_per_s: float, latency_s: float) -> None:
        if not bandwidth_bytes_per_s > 0 or latency_s < 0:
            raise ValueError("link bandwidth must be > 0 and latency >= 0")
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.latency_s = latency_s
        self.free_at_s = 0.0
        self.busy_s = 0.0  # Σ wire seconds of every transfer (utilisation)
        self.transfers = 0
        self.bytes_sent = 0.0

    def send(self, now_s: float, bytes_: float, prefill_s: float, layers: int, overlap: bool) -> float:
        """Book a transfer of ``bytes_`` whose prompt finished at ``now_s`` after ``prefill_s`` of compute;
        returns when its KV has fully arrived."""
        wire = wire_s(bytes_, self.bandwidth_bytes_per_s)
        if overlap:  # streamed from the prefill's start; the last layer leaves after it ends
            start = max(now_s - prefill_s, self.free_at_s)
            self.free_at_s = max(start + wire, now_s + wire / layers)
        else:
            self.free_at_s = max(now_s, self.free_at_s) + wire
        self.busy_s += wire
        self.transfers += 1
        self.bytes_sent += bytes_
        return self.free_at_s + self.latency_s
