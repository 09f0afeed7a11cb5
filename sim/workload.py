"""Arrivals: when requests come, of which class, with how many input/output tokens.

The simulation consumes :class:`ArrivalChunk` s (sorted arrival times with their attributes) from
:func:`arrival_chunks`, a generator, so a long run never holds all arrivals in memory. Token lengths are
drawn per class from :mod:`sim.config` distributions; a class with a shared prefix has, with probability
``prefix_hit_rate``, its first ``prefix_tokens`` (rounded down to whole KV blocks, at most prompt − 1) served
from the prefix cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .config import EmpiricalTokens, FixedTokens, LognormalTokens, RequestClass, Scenario
from .errors import ConfigError
from .paths import project_root
from .rng import stream

Z95 = 1.6448536269514722  # standard normal 95th percentile
CHUNK = 8192


@dataclass(frozen=True, slots=True)
class ArrivalChunk:
    """A batch of consecutive arrivals (arrays of equal length, times ascending)."""

    time_s: np.ndarray
    class_idx: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.time_s)


def resolve_data_path(file: str, base: Path) -> Path:
    """A data file named in a scenario: relative to the scenario's folder, else to the capsim root."""
    p = Path(file)
    if p.is_absolute():
        return p
    for candidate in (base / p, project_root() / p):
        if candidate.exists():
            return candidate
    return base / p


@lru_cache(maxsize=32)
def _column(path: str, column: str) -> np.ndarray:
    try:
        df = pd.read_csv(path, usecols=[column])
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except ValueError:
        raise ConfigError(path, column, "no such column") from None
    values = pd.to_numeric(df[column], errors="coerce").dropna().to_numpy()
    if len(values) == 0:
        raise ConfigError(path, column, "column has no numeric values")
    return values.astype(np.int64)


class TokenSampler:
    """Draws token counts from one configured distribution."""

    def __init__(self, dist: FixedTokens | LognormalTokens | EmpiricalTokens, base: Path, field: str) -> None:
        self.dist = dist
        self._values: np.ndarray | None = None
        if isinstance(dist, EmpiricalTokens):
            path = resolve_data_path(dist.file, base)
            try:
                self._values = np.clip(_column(str(path), dist.column), dist.min, dist.max)
            except ConfigError as exc:
                raise ConfigError(exc.source, f"{field}.file", f"{exc.field} {exc.problem}".strip()) from None

    def mean(self) -> float:
        d = self.dist
        if isinstance(d, FixedTokens):
            return float(d.value)
        if isinstance(d, LognormalTokens):
            sigma = np.log(d.p95 / d.median) / Z95
            return float(d.median * np.exp(sigma**2 / 2))
        assert self._values is not None
        return float(self._values.mean())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        d = self.dist
        if isinstance(d, FixedTokens):
            return np.full(n, d.value, dtype=np.int64)
        if isinstance(d, LognormalTokens):
            mu = np.log(d.median)
            sigma = np.log(d.p95 / d.median) / Z95
            x = np.rint(rng.lognormal(mu, sigma, size=n))
            return np.clip(x, d.min, d.max).astype(np.int64)
        assert self._values is not None
        return self._values[rng.integers(0, len(self._values), size=n)]


class ClassMix:
    """Request classes with normalised shares and their token samplers."""

    def __init__(self, classes: list[RequestClass], base: Path, block_size: int) -> None:
        self.classes = classes
        shares = np.array([c.share for c in classes], dtype=float)
        self.probs = shares / shares.sum()
        self.block_size = block_size
        self.inputs = [
            TokenSampler(c.input_tokens, base, f"traffic.classes.{i}.input_tokens") for i, c in enumerate(classes)
        ]
        self.outputs = [
            TokenSampler(c.output_tokens, base, f"traffic.classes.{i}.output_tokens") for i, c in enumerate(classes)
        ]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def mean_tokens(self) -> tuple[float, float]:
        """Share-weighted mean input and output tokens per request."""
        mi = sum(p * s.mean() for p, s in zip(self.probs, self.inputs))
        mo = sum(p * s.mean() for p, s in zip(self.probs, self.outputs))
        return float(mi), float(mo)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Class index, prompt, output and cached-prefix tokens for ``n`` requests."""
        cls = rng.choice(len(self.classes), size=n, p=self.probs) if len(self.classes) > 1 else np.zeros(n, np.int64)
        prompt = np.empty(n, dtype=np.int64)
        output = np.empty(n, dtype=np.int64)
        cached = np.zeros(n, dtype=np.int64)
        hits = rng.random(n)
        for k, c in enumerate(self.classes):
            idx = np.flatnonzero(cls == k)
            if len(idx) == 0:
                continue
            prompt[idx] = self.inputs[k].sample(rng, len(idx))
            output[idx] = self.outputs[k].sample(rng, len(idx))
            if c.prefix_tokens > 0 and c.prefix_hit_rate > 0:
                hit = hits[idx] < c.prefix_hit_rate
                cap = np.minimum(c.prefix_tokens, prompt[idx] - 1)
                blocks = (cap // self.block_size) * self.block_size
                cached[idx] = np.where(hit, np.maximum(blocks, 0), 0)
        return cls.astype(np.int64), prompt, output, cached


def poisson_times(rng: np.random.Generator, rate_rps: float, t_end_s: float, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Homogeneous Poisson arrival times in [0, t_end_s), in ascending chunks (exponential gaps)."""
    t = 0.0
    while True:
        gaps = rng.exponential(1.0 / rate_rps, size=chunk)
        times = t + np.cumsum(gaps)
        inside = times[times < t_end_s]
        if len(inside):
            yield inside
        if len(inside) < chunk:
            return
        t = float(times[-1])


def arrival_chunks(scenario: Scenario) -> Iterator[ArrivalChunk]:
    """All arrivals of the scenario, in time order, in chunks (files are read and checked at call time)."""
    mix = ClassMix(scenario.traffic.classes, scenario.base_dir, scenario.fleet.engine.block_size)
    t_rng = stream(scenario.seed, "arrivals")
    a_rng = stream(scenario.seed, "attributes")

    def gen() -> Iterator[ArrivalChunk]:
        for times in poisson_times(t_rng, scenario.traffic.rate_rps, scenario.duration_s):
            cls, prompt, output, cached = mix.draw(a_rng, len(times))
            yield ArrivalChunk(times, cls, prompt, output, cached)

    return gen()
