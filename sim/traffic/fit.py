"""Shape from data: fit a daily + weekly harmonic curve to arrival times or a rate series.

Model: counts in bin i ~ Poisson(exposure_i · exp(β₀ + Σ_k daily_k(h_i) + Σ_k weekly_k(h_i))), with h_i the
clock hour of the bin centre, daily terms cos/sin(2πk h/24) for k ≤ ``daily_terms`` and weekly terms
cos/sin(2πk h/168) for k ≤ ``weekly_terms``, k not a multiple of 7 (those are daily harmonics). Fitted by
IRLS (Poisson log-linear GLM). Daily terms need ≥ 24 h of data and weekly terms ≥ 168 h; shorter spans drop
them. The result is a :class:`~sim.core.config.Shape` of ``harmonic`` components plus the mean rate, so
``rate_rps × shape`` reproduces the data's total count over the fitted bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.core.config import Harmonic, HarmonicTerm, Shape, ShapeComponent
from sim.core.errors import ConfigError
from sim.traffic.shapes import DAY_H, WEEK_H, RateCurve


@dataclass(frozen=True)
class ShapeFit:
    rate_rps: float  # mean rate over the fitted bins
    shape: Shape
    deviance_explained: float  # 1 − deviance / null deviance
    bins: int

    def to_yaml_dict(self) -> dict:
        d = self.shape.model_dump(mode="json", exclude_defaults=True)
        d.setdefault("components", [])
        return d


def _design(clock_h: np.ndarray, daily: int, weekly: int) -> tuple[np.ndarray, list[tuple[float, int]]]:
    cols = [np.ones_like(clock_h)]
    labels: list[tuple[float, int]] = []
    for period, terms in ((DAY_H, daily), (WEEK_H, weekly)):
        for k in range(1, terms + 1):
            if period == WEEK_H and k % 7 == 0:  # weekly harmonic 7k is the daily harmonic k
                continue
            ang = 2 * np.pi * k * clock_h / period
            cols += [np.cos(ang), np.sin(ang)]
            labels.append((period, k))
    return np.stack(cols, axis=1), labels


def fit_counts(bin_start_s: np.ndarray, counts: np.ndarray, bin_s: float, clock0_h: float = 0.0,
               daily_terms: int = 4, weekly_terms: int = 13, name: str = "fitted", source: str = "data") -> ShapeFit:
    """Fit the harmonic model to ``counts`` in bins of ``bin_s`` starting at ``bin_start_s``."""
    t = np.asarray(bin_start_s, dtype=float)
    y = np.asarray(counts, dtype=float)
    if len(t) < 4 or y.sum() <= 0:
        raise ConfigError(source, "", "too little data to fit a shape")
    span_h = (t.max() - t.min() + bin_s) / 3600.0
    daily = daily_terms if span_h >= DAY_H - 1e-9 else 0
    weekly = weekly_terms if span_h >= WEEK_H - 1e-9 else 0
    if daily == 0:
        raise ConfigError(source, "", f"data spans {span_h:.2f} h; fitting a daily curve needs at least 24 h")
    clock_h = clock0_h + (t + bin_s / 2) / 3600.0
    X, labels = _design(clock_h, daily, weekly)
    expo = np.full(len(y), float(bin_s))
    beta = np.zeros(X.shape[1])
    beta[0] = np.log(y.sum() / expo.sum())
    for _ in range(100):
        eta = X @ beta + np.log(expo)
        mu = np.exp(eta)
        z = eta - np.log(expo) + (y - mu) / mu
        W = mu
        XtW = X.T * W
        new = np.linalg.solve(XtW @ X + 1e-9 * np.eye(X.shape[1]), XtW @ z)
        if np.max(np.abs(new - beta)) < 1e-10:
            beta = new
            break
        beta = new
    mu = np.exp(X @ beta) * expo
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = 2 * np.sum(np.where(y > 0, y * np.log(y / mu), 0.0) - (y - mu))
        mu0 = np.full_like(y, y.mean())
        dev0 = 2 * np.sum(np.where(y > 0, y * np.log(y / mu0), 0.0) - (y - mu0))
    comps: list[ShapeComponent] = []
    for period in (DAY_H, WEEK_H):
        terms = [
            HarmonicTerm(k=k, cos=round(float(beta[1 + 2 * j]), 6), sin=round(float(beta[2 + 2 * j]), 6))
            for j, (p, k) in enumerate(labels) if p == period
        ]
        if terms:
            comps.append(Harmonic(type="harmonic", period_h=period, terms=terms))
    shape = Shape(name=name, description=f"daily+weekly harmonics fitted to {source}", components=comps)
    factor = RateCurve(1.0, comps, clock0_h).factor(t + bin_s / 2)
    rate = float(mu.sum() / bin_s / factor.sum())
    return ShapeFit(rate, shape, float(1 - dev / dev0) if dev0 > 0 else 1.0, len(y))


def fit_times(times_s: np.ndarray, clock0_h: float = 0.0, bin_s: float = 600.0, **kw: Any) -> ShapeFit:
    """Fit to arrival times (seconds from the start; ``clock0_h`` = hour of the week at t = 0)."""
    t = np.asarray(times_s, dtype=float)
    n_bins = int(np.ceil((t.max() + 1e-9) / bin_s))
    counts = np.bincount((t // bin_s).astype(np.int64), minlength=n_bins)[:n_bins]
    return fit_counts(np.arange(n_bins) * bin_s, counts, bin_s, clock0_h, **kw)


def fit_rate_series(window_start_s: np.ndarray, rate_rps: np.ndarray, window_s: float, clock0_h: float = 0.0,
                    skip_zero: bool = True, **kw: Any) -> ShapeFit:
    """Fit to a rate series (e.g. ServeGen's 600-s windows). Zero windows are gaps in the data and are
    skipped unless ``skip_zero`` is false."""
    w = np.asarray(window_start_s, dtype=float)
    r = np.asarray(rate_rps, dtype=float)
    keep = r > 0 if skip_zero else np.isfinite(r)
    return fit_counts(w[keep], r[keep] * window_s, window_s, clock0_h, **kw)
