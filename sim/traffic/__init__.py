"""Traffic: rate shapes, exact NHPP sampling, request classes, trace replay and shape fitting.

See ``docs/traffic.md``. :func:`arrival_chunks` is the simulation's interface."""

from sim.traffic.arrivals import ArrivalChunk, arrival_chunks, rate_curve, traffic_chunks
from sim.traffic.classes import Z95, ClassMix, TokenSampler, read_pmf, resolve_data_path
from sim.traffic.sampling import CHUNK, GammaModulation, nhpp_times, poisson_times, renewal_times
from sim.traffic.shapes import RateCurve, available_shapes, resolve_components
from sim.traffic.traces import Trace, read_trace, replay

__all__ = [
    "CHUNK", "Z95", "ArrivalChunk", "ClassMix", "GammaModulation", "RateCurve", "TokenSampler", "Trace",
    "arrival_chunks", "available_shapes", "nhpp_times", "poisson_times", "rate_curve", "read_pmf", "read_trace",
    "renewal_times", "replay", "resolve_components", "resolve_data_path", "traffic_chunks",
]
