"""Arrivals: when requests come, of which class, with how many input/output tokens.

Kept as the stable import point; the implementation lives in :mod:`sim.traffic` (shapes, exact NHPP
sampling, classes, trace replay). :func:`arrival_chunks` streams :class:`ArrivalChunk` s in time order.
"""

from __future__ import annotations

from .traffic.arrivals import ArrivalChunk, arrival_chunks, rate_curve, traffic_chunks
from .traffic.classes import Z95, ClassMix, TokenSampler, _column, resolve_data_path
from .traffic.sampling import CHUNK, nhpp_times, poisson_times

__all__ = [
    "CHUNK", "Z95", "ArrivalChunk", "ClassMix", "TokenSampler", "_column", "arrival_chunks", "nhpp_times",
    "poisson_times", "rate_curve", "resolve_data_path", "traffic_chunks",
]
