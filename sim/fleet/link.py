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
* Contention: each prefill node's egress and each decode node's ingress is one first-come-first-served server. A
  transfer holds both ends for its wire time at the slower end's bandwidth, booked when its prompt is done: it
  starts no earlier than both ends' previous bookings end (FCFS serialisation: the same total drain time as fair
  sharing, earlier completion for the first), so prompts leaving one prefill node, or several prefill nodes
  feeding one decode node, queue behind each other; a link is busy the whole wire time, overlapped or not. The
  network core is not a bottleneck (a non-blocking fabric).
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
    """One node's egress (prefill) or ingress (decode): a FCFS server of transfers (see the module docstring)."""

    __slots__ = ("bandwidth_bytes_per_s", "latency_s", "free_at_s", "busy_s", "transfers", "bytes_sent",
                 "last_start_s")

    def __init__(self, bandwidth_bytes_per_s: float, latency_s: float) -> None:
        if not bandwidth_bytes_per_s > 0 or latency_s < 0:
            raise ValueError("link bandwidth must be > 0 and latency >= 0")
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.latency_s = latency_s
        self.free_at_s = 0.0
        self.busy_s = 0.0  # Σ wire seconds of every transfer (utilisation)
        self.transfers = 0
        self.bytes_sent = 0.0
        self.last_start_s = 0.0  # when the latest transfer started on the wire

    def send(self, now_s: float, bytes_: float, prefill_s: float, layers: int, overlap: bool,
             to: Link | None = None) -> float:
        """Book a transfer of ``bytes_`` whose prompt finished at ``now_s`` after ``prefill_s`` of compute, into
        the receiving end ``to`` (None: an unconstrained receiver); returns when its KV has fully arrived."""
        ends = (self,) if to is None else (self, to)
        wire = wire_s(bytes_, min(e.bandwidth_bytes_per_s for e in ends))
        free = max(e.free_at_s for e in ends)
        if overlap:  # streamed from the prefill's start; the last layer leaves after it ends
            start = max(now_s - prefill_s, free)
            done = max(start + wire, now_s + wire / layers)
        else:
            start = max(now_s, free)
            done = start + wire
        self.last_start_s = start
        for e in ends:
            e.free_at_s = done
            e.busy_s += wire
            e.transfers += 1
            e.bytes_sent += bytes_
        return done + max(e.latency_s for e in ends)
