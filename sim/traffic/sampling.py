"""Exact sampling of arrival times, streamed in chunks.

* :func:`nhpp_times` — non-homogeneous Poisson process by thinning (Lewis & Shedler): on each segment a
  homogeneous process at a bound λ̄ ≥ λ(t) is drawn (Poisson count, sorted uniforms) and each candidate kept
  with probability λ(t)/λ̄. The bound is the segment's maximum on a fine grid × 1.25; a candidate above it
  (a feature narrower than the grid) makes the segment be redrawn with a larger bound, so the output is an
  exact NHPP for the given λ(t). Segments are sized to hold ~``CHUNK`` candidates, so memory is flat.
* :func:`renewal_times` — gamma renewal in operational time u = Λ(t): unit-mean gamma gaps with CV ``cv``,
  mapped back by t = Λ⁻¹(u) with Λ integrated on a ≤ 1-s grid (piecewise-constant λ within a grid cell).
  Counts keep mean ∫λdt; cv > 1 is burstier than Poisson, cv < 1 more regular.
* Modulated (Cox) traffic is :func:`nhpp_times` on λ(t)·m(t), m a mean-1 gamma factor per window
  (:class:`GammaModulation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

CHUNK = 8192
RateFn = Callable[[np.ndarray], np.ndarray]
MAX_SEGMENT_S = 3600.0


def poisson_times(
    rng: np.random.Generator, rate_rps: float, t_end_s: float, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
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


def nhpp_times(
    rng: np.random.Generator,
    rate: RateFn,
    t_end_s: float,
    t_start_s: float = 0.0,
    chunk: int = CHUNK,
    breakpoints_s: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Arrival times of a Poisson process with intensity ``rate(t)`` on [t_start, t_end), ascending chunks.

    ``breakpoints_s`` (sorted) are times where ``rate`` may jump (e.g. modulation windows); segments never
    straddle one, so the grid bound sees each constant piece."""
    t = t_start_s
    seg = min(MAX_SEGMENT_S, t_end_s - t_start_s)
    bp = np.asarray(breakpoints_s, dtype=float) if breakpoints_s is not None else None
    while t < t_end_s:
        b = min(t + seg, t_end_s)
        if bp is not None:
            j = np.searchsorted(bp, t, side="right")
            if j < len(bp) and bp[j] < b:
                b = float(bp[j])
        lam_max = 1.25 * float(np.max(rate(np.linspace(t, b, 129))))
        if lam_max * (b - t) > 4 * chunk and b - t > 1e-3:  # too many candidates: shrink the segment
            seg = max(1e-3, 2 * chunk / lam_max)
            continue
        while True:
            if lam_max <= 0:
                kept = np.empty(0)
                break
            n = rng.poisson(lam_max * (b - t))
            cand = np.sort(rng.uniform(t, b, size=n))
            lam = rate(cand)
            if n and float(lam.max()) > lam_max:
                lam_max = 2.0 * float(lam.max())
                continue
            kept = cand[rng.random(n) * lam_max < lam]
            break
        if len(kept):
            yield kept
        # next segment length: about `chunk` candidates at the current level
        seg = min(MAX_SEGMENT_S, max(1.0, chunk / max(lam_max, 1e-9)))
        t = b


def renewal_times(
    rng: np.random.Generator, rate: RateFn, t_end_s: float, cv: float, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """Gamma-renewal arrivals in operational time (see module docstring), ascending chunks."""
    shape = 1.0 / (cv * cv)
    scale = cv * cv  # unit mean
    # stationary start: the first event is a forward-recurrence time ~ uniform fraction of a length-biased gap
    u_next = float(rng.gamma(shape + 1.0, scale) * rng.random())
    t = 0.0
    lam_cum = 0.0  # Λ(t)
    while t < t_end_s:
        lam_now = float(rate(np.array([t]))[0])
        seg = min(MAX_SEGMENT_S, max(1.0, chunk / max(lam_now, 1e-9)), t_end_s - t)
        b = t + seg
        n_grid = max(2, math.ceil(seg) + 1)  # ≤ 1 s cells
        grid = np.linspace(t, b, n_grid)
        lam = rate(grid)
        mid = 0.5 * (lam[:-1] + lam[1:])
        cum = lam_cum + np.concatenate([[0.0], np.cumsum(mid * np.diff(grid))])
        if cum[-1] > lam_cum + 16 * chunk and seg > 1.0:  # very high rate: shorter segment
            t_end_seg = t + max(1.0, seg * 8 * chunk / (cum[-1] - lam_cum))
            keep = grid <= t_end_seg
            grid, cum = grid[keep], cum[keep]
            b = float(grid[-1])
        us = []
        u = u_next
        while u < cum[-1]:
            k = max(16, int((cum[-1] - u) * 1.1) + 16)
            gaps = rng.gamma(shape, scale, size=k)
            block = u + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
            inside = block[block < cum[-1]]
            us.append(inside)
            if len(inside) < k:
                u = float(block[len(inside)])
                break
            u = float(block[-1] + gaps[-1])
        u_next = u
        if us:
            uu = np.concatenate(us)
            # invert Λ: piecewise linear in t (λ constant per cell)
            times = np.interp(uu, cum, grid)
            times = times[times < t_end_s]
            if len(times):
                yield times
        lam_cum = float(cum[-1])
        t = b


class GammaModulation:
    """A mean-1 random rate factor, gamma with CV ``cv``, constant on windows of ``window_s`` (drawn for
    the whole run up front: ⌈duration / window⌉ floats)."""

    def __init__(self, rng: np.random.Generator, cv: float, window_s: float, duration_s: float) -> None:
        n = math.ceil(duration_s / window_s) + 1
        k = 1.0 / (cv * cv)
        self.window_s = window_s
        self.values = rng.gamma(k, 1.0 / k, size=n)

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        idx = np.minimum((np.asarray(t_s) // self.window_s).astype(np.int64), len(self.values) - 1)
        return self.values[idx]

    def breakpoints(self) -> np.ndarray:
        return np.arange(1, len(self.values)) * self.window_s
