"""The scenario's arrival stream: :func:`arrival_chunks` (consumed by :mod:`sim.runner.simulation`).

Shaped traffic is an NHPP at ``rate_rps × shape(t)`` (or a gamma-renewal / gamma-modulated variant, see
``traffic.dispersion``), sampled exactly and streamed; class and tokens are drawn per arrival. A replayed
trace keeps its own timestamps and token lengths; classes are drawn by share. Files are read and checked
when :func:`arrival_chunks` is called, so bad input fails before the run starts. Two independent random
streams (``arrivals`` for times, ``attributes`` for classes and tokens) make arrivals reproducible by seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.core.config import Scenario, Traffic
from sim.core.errors import ConfigError
from sim.core.rng import stream
from sim.traffic.classes import ClassMix, resolve_data_path
from sim.traffic.prefixes import PrefixStreams, regroup_chain
from sim.traffic.sampling import GammaModulation, nhpp_times, poisson_times, renewal_times
from sim.traffic.shapes import RateCurve, clock0_hours, resolve_components
from sim.traffic.traces import Trace, read_trace_spec, replay, window


@dataclass(frozen=True, slots=True)
class ArrivalChunk:
    """A batch of consecutive arrivals (arrays of equal length, times ascending)."""

    time_s: np.ndarray
    class_idx: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    prefix: list[tuple[int, ...] | None] | None = None  # prefix-cache hash chains (sim.engine.kv), if any
    session: np.ndarray | None = None  # conversation ids (−1: none), if any

    def __len__(self) -> int:
        return len(self.time_s)


def rate_curve(traffic: Traffic, base: Path, source: str = "scenario") -> RateCurve:
    """The scenario's λ(t) (shape files are read now)."""
    if traffic.rate_rps is None:
        raise ConfigError(source, "traffic.rate_rps", "required for shaped traffic")
    comps = resolve_components(traffic.shape, base, source)
    return RateCurve(traffic.rate_rps, comps, clock0_hours(traffic.start_weekday, traffic.start_hour))


def load_trace(traffic: Traffic, base: Path) -> Trace:
    """The scenario's trace, windowed (not yet scaled)."""
    assert traffic.trace is not None
    spec = traffic.trace
    path = resolve_data_path(spec.file, base)
    trace = read_trace_spec(spec, path)
    if spec.window_s is not None:
        trace = window(trace, *spec.window_s)
    return trace


def trace_rate_scale(traffic: Traffic, trace: Trace) -> float:
    """k such that the replay's mean rate is ``rate_rps`` (when given), else ``trace.rate_scale``."""
    assert traffic.trace is not None
    if traffic.rate_rps is None:
        return traffic.trace.rate_scale
    native = trace.mean_rate_rps / traffic.trace.time_scale
    return traffic.rate_rps / native


def time_stream(traffic: Traffic, curve: RateCurve, duration_s: float, seed: int) -> Iterator[np.ndarray]:
    """Arrival times of shaped traffic, ascending chunks."""
    rng = stream(seed, "arrivals")
    disp = traffic.dispersion
    if disp.model == "gamma_renewal":
        return renewal_times(rng, curve.rate_rps, duration_s, disp.cv)
    if disp.model == "modulated":
        mod = GammaModulation(stream(seed, "modulation"), disp.cv, disp.window_s, duration_s)
        return nhpp_times(rng, lambda t: curve.rate_rps(t) * mod(t), duration_s, breakpoints_s=mod.breakpoints())
    if curve.constant:
        return poisson_times(rng, curve.base_rps, duration_s)
    return nhpp_times(rng, curve.rate_rps, duration_s)


def trace_chains(trace: Trace, hash_block_tokens: int, unit_tokens: int, source: str) -> list[tuple[int, ...]]:
    """A hashed trace's rows as prefix-cache chains of ``unit_tokens``-token units."""
    assert trace.hashes is not None
    if unit_tokens % hash_block_tokens and hash_block_tokens % unit_tokens:
        raise ConfigError(source, "fleet.engine.prefix_unit_tokens",
                          f"{unit_tokens} must divide or be a multiple of the trace's hash_block_tokens "
                          f"({hash_block_tokens})")
    return [regroup_chain(h, hash_block_tokens, unit_tokens) for h in trace.hashes]


def traffic_chunks(traffic: Traffic, base: Path, duration_s: float, seed: int, block_size: int = 16,
                   source: str = "scenario", prefix_unit_tokens: int | None = None) -> Iterator[ArrivalChunk]:
    """Arrivals of a :class:`~sim.core.config.Traffic` section over [0, duration_s) (files read now).

    ``prefix_unit_tokens``: the prefix cache's unit when the engine caches prefixes (None: it does not; a hashed
    trace then gives each request the infinite-cache hit of its ``hash_ids``, the approximation kept from before).
    Classes with a ``prefix`` section always get their composed prompts and hash chains."""
    clock0 = clock0_hours(traffic.start_weekday, traffic.start_hour)
    a_rng = stream(seed, "attributes")
    unit = prefix_unit_tokens or 256
    prefixes = PrefixStreams(traffic.classes, base, unit, stream(seed, "prefixes"))
    if traffic.trace is not None:
        trace = load_trace(traffic, base)
        mix = ClassMix(traffic.classes, base, block_size, clock0, tokens=False)
        k = trace_rate_scale(traffic, trace)
        spec = traffic.trace
        t_rng = stream(seed, "arrivals")
        chains = (trace_chains(trace, spec.hash_block_tokens, prefix_unit_tokens, source)
                  if prefix_unit_tokens is not None and trace.hashes is not None else None)

        def gen_trace() -> Iterator[ArrivalChunk]:
            for times, rows in replay(trace, t_rng, duration_s, k, spec.time_scale, spec.loop):
                n = len(times)
                cls = mix.draw_classes(a_rng, n, times)
                prompt = trace.prompt_tokens[rows].astype(np.int64)
                output = trace.output_tokens[rows].astype(np.int64)
                if chains is not None:
                    yield ArrivalChunk(times, cls, prompt, output, np.zeros(n, np.int64),
                                       [chains[r] for r in rows.tolist()])
                    continue
                if trace.cached_tokens is not None and spec.prefix_hits == "none":
                    cached = np.zeros(n, np.int64)
                elif trace.cached_tokens is not None:
                    c = trace.cached_tokens[rows]
                    cached = np.maximum((np.minimum(c, prompt - 1) // block_size) * block_size, 0)
                else:
                    cached = mix.prefix_cached(a_rng.random(n), cls, prompt)
                yield ArrivalChunk(times, cls, prompt, output, cached.astype(np.int64))

        return gen_trace()

    curve = rate_curve(traffic, base, source)
    mix = ClassMix(traffic.classes, base, block_size, clock0)
    times_iter = time_stream(traffic, curve, duration_s, seed)

    def gen() -> Iterator[ArrivalChunk]:
        for times in times_iter:
            cls, prompt, output, cached = mix.draw(a_rng, len(times), times)
            if prefixes.active:
                prompt, chains, sessions = prefixes.apply(times, cls, prompt, output)
                yield ArrivalChunk(times, cls, prompt, output, cached, chains, sessions)
            else:
                yield ArrivalChunk(times, cls, prompt, output, cached)

    return gen()


def arrival_chunks(scenario: Scenario) -> Iterator[ArrivalChunk]:
    """All arrivals of the scenario, in time order, in chunks (files are read and checked at call time)."""
    eng = scenario.fleet.engine
    return traffic_chunks(scenario.traffic, scenario.base_dir, scenario.duration_s, scenario.seed,
                          eng.block_size, scenario.source, eng.prefix_unit_tokens if eng.prefix_caching else None)
