"""Request classes: which class an arrival belongs to and how many tokens it carries.

Token lengths are drawn per class from its distribution (fixed, lognormal by median/p95, empirical column of
a CSV, or a PMF file). A class with a shared prefix has, with probability ``prefix_hit_rate``, its first
``prefix_tokens`` (rounded down to whole KV blocks, at most prompt − 1) served from the prefix cache.
Class shares may vary with the clock hour (``share_by_hour``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from sim.core.config import EmpiricalTokens, FixedTokens, LognormalTokens, PmfTokens, RequestClass
from sim.core.errors import ConfigError
from sim.core.paths import project_root

Z95 = 1.6448536269514722  # standard normal 95th percentile
TokenDistT = FixedTokens | LognormalTokens | EmpiricalTokens | PmfTokens


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


@lru_cache(maxsize=32)
def read_pmf(path: str, value_column: str = "value",
             probability_column: str = "probability") -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of a PMF CSV; probabilities normalised, duplicate values merged."""
    try:
        df = pd.read_csv(path, usecols=[value_column, probability_column])
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except ValueError:
        raise ConfigError(path, "", f"needs columns '{value_column}' and '{probability_column}'") from None
    v = pd.to_numeric(df[value_column], errors="coerce").to_numpy(dtype=float)
    p = pd.to_numeric(df[probability_column], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(v) & np.isfinite(p)
    if not ok.all():
        raise ConfigError(path, "", f"{int((~ok).sum())} rows are not numbers")
    if (p < 0).any():
        raise ConfigError(path, probability_column, "negative probability")
    if p.sum() <= 0:
        raise ConfigError(path, probability_column, "probabilities sum to 0")
    vals, inv = np.unique(np.rint(v).astype(np.int64), return_inverse=True)
    probs = np.bincount(inv, weights=p)
    return vals, probs / probs.sum()


class TokenSampler:
    """Draws token counts from one configured distribution."""

    def __init__(self, dist: TokenDistT, base: Path, field: str) -> None:
        self.dist = dist
        self._values: np.ndarray | None = None
        self._cdf: np.ndarray | None = None
        if isinstance(dist, (EmpiricalTokens, PmfTokens)):
            path = resolve_data_path(dist.file, base)
            try:
                if isinstance(dist, EmpiricalTokens):
                    self._values = np.clip(_column(str(path), dist.column), dist.min, dist.max)
                else:
                    vals, probs = read_pmf(str(path), dist.value_column, dist.probability_column)
                    self._values = np.clip(vals, dist.min, dist.max)
                    self._probs = probs
                    self._cdf = np.cumsum(probs)
                    self._cdf[-1] = 1.0
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
        if self._cdf is not None:
            return float(np.dot(self._values, self._probs))
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
        if self._cdf is not None:
            return self._values[np.searchsorted(self._cdf, rng.random(n), side="right").clip(0, len(self._values) - 1)]
        return self._values[rng.integers(0, len(self._values), size=n)]


class ClassMix:
    """Request classes with normalised (optionally hour-of-day varying) shares and their token samplers.

    With ``tokens=False`` (trace replay) classes need no token distributions; :meth:`draw_classes` and
    :meth:`prefix_cached` are used instead of :meth:`draw`."""

    def __init__(self, classes: list[RequestClass], base: Path, block_size: int, clock0_h: float = 0.0,
                 tokens: bool = True) -> None:
        self.classes = classes
        shares = np.array([c.share for c in classes], dtype=float)
        self.probs = shares / shares.sum()
        self.block_size = block_size
        self.clock0_h = clock0_h
        self.time_varying = any(c.share_by_hour is not None for c in classes)
        self.inputs: list[TokenSampler] = []
        self.outputs: list[TokenSampler] = []
        if tokens:
            for i, c in enumerate(classes):
                if c.input_tokens is None or c.output_tokens is None:
                    raise ConfigError("scenario", f"traffic.classes.{i}", "input_tokens and output_tokens required")
                self.inputs.append(TokenSampler(c.input_tokens, base, f"traffic.classes.{i}.input_tokens"))
                self.outputs.append(TokenSampler(c.output_tokens, base, f"traffic.classes.{i}.output_tokens"))
        xs = np.concatenate([[-0.5], np.arange(24) + 0.5, [24.5]])
        self._hour_x = xs
        self._hour_y = []
        for c in classes:
            v = np.asarray(c.share_by_hour if c.share_by_hour is not None else [1.0] * 24, dtype=float)
            self._hour_y.append(np.concatenate([[v[-1]], v, [v[0]]]))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def shares_at(self, t_s: np.ndarray) -> np.ndarray:
        """Class probabilities at each time, shape (n, classes)."""
        t = np.asarray(t_s, dtype=float)
        if not self.time_varying:
            return np.broadcast_to(self.probs, (len(t), len(self.probs)))
        hd = np.mod(t / 3600.0 + self.clock0_h, 24.0)
        w = np.stack([self.probs[k] * np.interp(hd, self._hour_x, y) for k, y in enumerate(self._hour_y)], axis=1)
        tot = w.sum(axis=1, keepdims=True)
        w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), self.probs)
        return w

    def mean_tokens(self) -> tuple[float, float]:
        """Share-weighted mean input and output tokens per request (static shares)."""
        mi = sum(p * s.mean() for p, s in zip(self.probs, self.inputs))
        mo = sum(p * s.mean() for p, s in zip(self.probs, self.outputs))
        return float(mi), float(mo)

    def draw_classes(self, rng: np.random.Generator, n: int, t_s: np.ndarray | None = None) -> np.ndarray:
        """Class index of ``n`` arrivals (at times ``t_s`` when shares vary by hour)."""
        k = len(self.classes)
        if k == 1:
            return np.zeros(n, np.int64)
        if self.time_varying and t_s is not None:
            cum = np.cumsum(self.shares_at(t_s), axis=1)
            u = rng.random(n)
            return np.minimum((u[:, None] >= cum).sum(axis=1), k - 1).astype(np.int64)
        return rng.choice(k, size=n, p=self.probs).astype(np.int64)

    def prefix_cached(self, hits: np.ndarray, cls: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        """Cached prefix tokens from the classes' ``prefix_tokens`` / ``prefix_hit_rate`` (``hits``: U(0,1))."""
        n = len(cls)
        cached = np.zeros(n, dtype=np.int64)
        for k, c in enumerate(self.classes):
            if c.prefix_tokens <= 0 or c.prefix_hit_rate <= 0:
                continue
            idx = np.flatnonzero(cls == k)
            if len(idx) == 0:
                continue
            hit = hits[idx] < c.prefix_hit_rate
            cap = np.minimum(c.prefix_tokens, prompt[idx] - 1)
            blocks = (cap // self.block_size) * self.block_size
            cached[idx] = np.where(hit, np.maximum(blocks, 0), 0)
        return cached

    def draw(self, rng: np.random.Generator, n: int, t_s: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Class index, prompt, output and cached-prefix tokens for ``n`` requests."""
        cls = self.draw_classes(rng, n, t_s)
        hits = rng.random(n)
        prompt = np.empty(n, dtype=np.int64)
        output = np.empty(n, dtype=np.int64)
        for k in range(len(self.classes)):
            idx = np.flatnonzero(cls == k)
            if len(idx) == 0:
                continue
            prompt[idx] = self.inputs[k].sample(rng, len(idx))
            output[idx] = self.outputs[k].sample(rng, len(idx))
        cached = self.prefix_cached(hits, cls, prompt)
        return cls, prompt, output, cached
