"""KV-cache transfer links between a prefill node and a decode node (disaggregated serving).

Model (docs/disaggregation.md):

* A transfer moves ``prompt_tokens × kv_bytes_per_token`` bytes (the whole node's KV of the prompt,
  :func:`sim.perf.model.kv_bytes_per_token` × the node's GPUs, as the engine's ledger counts it).
* Bandwidth: each GPU has its own lane (NVLink port or NIC: one 400 Gb/s ConnectX-7 per H100 in a DGX H100) and
  the tensor-parallel shards move their slices in parallel, so a node sends at ``bandwidth_gb_s × GPUs``.
  Wire time ``t = bytes / bandwidth``; each transfer also pays ``latency_s`` once (RDMA set-up and first byte),
  which does not occupy the link.
* Layer-wise overlap (Splitwise, DistServe and Mooncake stream layer ``l``'s KV while layer ``l+1`` computes):
  the part of the wire time hidden under the request's own prefill compute is not paid after the prefill; at least
  one layer's share ``t / layers`` always is: exposed ``max(t / layers, t − prefill_s)``.
* Contention: each prefill node's egress is one first-come-first-served server; a transfer starts when the link is
  free and the prompt is done, so transfers that share a node queue behind each other (FCFS serialisation: the
  same total drain time as fair sharing, earlier completion for the first). Decode-side ingress and the network
  core are not modelled as bottlenecks (a non-blocking fabric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interconnect:
    """One interconnect: per-GPU bandwidth in one direction (GB/s, 10⁹ bytes) and a per-transfer latency."""

    name: str
    bandwidth_gb_s: float
    latency_s: float
    source: str


# Bandwidths are line rates from the vendors' specifications (one direction, per GPU). Latencies are per-transfer
# set-up figures (RDMA write + completion, a few round trips), not the wire's sub-microsecond hop latency.
INTERCONNECTS: dict[str, Interconnect] = {
    "nvlink4": Interconnect(
        "NVLink 4 (H100/H200 SXM, NVSwitch)", 450.0, 5e-6,
        "NVIDIA H100 datasheet: 900 GB/s bidirectional NVLink per GPU"),
    "nvlink5": Interconnect(
        "NVLink 5 (B200, NVSwitch)", 900.0, 5e-6,
        "NVIDIA DGX B200 datasheet: 1.8 TB/s bidirectional NVLink per GPU"),
    "ib-ndr": Interconnect(
        "InfiniBand NDR 400 Gb/s (one ConnectX-7 per GPU)", 50.0, 20e-6,
        "NVIDIA ConnectX-7 / Quantum-2 datasheets: 400 Gb/s per port; DGX H100: 8 × 400 Gb/s compute NICs"),
    "ib-hdr": Interconnect(
        "InfiniBand HDR 200 Gb/s (one ConnectX-6 per GPU)", 25.0, 20e-6,
        "NVIDIA ConnectX-6 datasheet: 200 Gb/s per port (DGX A100: 8 × 200 Gb/s)"),
    "roce-400g": Interconnect(
        "RoCE v2 400 GbE (one NIC per GPU)", 50.0, 30e-6,
        "400GbE line rate (IEEE 802.3bs); RoCE set-up slower than InfiniBand"),
    "ethernet-100g": Interconnect(
        "Ethernet 100 GbE per node, TCP (no RDMA)", 12.5 / 8, 100e-6,
        "100GbE line rate (IEEE 802.3ba) shared by the node's 8 GPUs: 1.56 GB/s per GPU"),
    "infinite": Interconnect("infinitely fast link (theory checks)", math.inf, 0.0, "ideal"),
}


def get_interconnect(name: str) -> Interconnect:
    """The preset ``name`` (KeyError lists the known ones)."""
    try:
        return INTERCONNECTS[name]
    except KeyError:
        raise KeyError(f"unknown interconnect {name!r}; known: {', '.join(INTERCONNECTS)}") from None


def wire_s(bytes_: float, bandwidth_bytes_per_s: float) -> float:
    """Seconds on the wire for ``bytes_`` (0 on an infinitely fast link)."""
    return 0.0 if math.isinf(bandwidth_bytes_per_s) else bytes_ / bandwidth_bytes_per_s


def exposed_wire_s(wire: float, prefill_s: float, layers: int, overlap: bool) -> float:
    """Wire time left after the prefill ends: all of it without overlap; with layer-wise streaming the part not
    hidden under ``prefill_s`` of compute, and never less than one layer's share."""
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
        self.busy_s = 0.0  # Σ wire seconds of every transfer, overlapped parts included (utilisation)
        self.transfers = 0
        self.bytes_sent = 0.0

    def send(self, now_s: float, bytes_: float, prefill_s: float, layers: int, overlap: bool) -> float:
        """Book a transfer of ``bytes_`` whose prompt finished at ``now_s`` after ``prefill_s`` of compute;
        returns when its KV has fully arrived."""
        full = wire_s(bytes_, self.bandwidth_bytes_per_s)
        wire = exposed_wire_s(full, prefill_s, layers, overlap)
        start = max(now_s, self.free_at_s)
        self.free_at_s = start + wire
        self.busy_s += full  # the overlapped part used the link too, during the prefill
        self.transfers += 1
        self.bytes_sent += bytes_
        return self.free_at_s + self.latency_s
