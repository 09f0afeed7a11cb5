"""Statistics of an arrival stream, for sizing: windowed rate percentiles, peak/trough, weekday/weekend,
requests and tokens per day. Streams the chunks (memory ∝ number of 1-min windows, not arrivals).

Definitions: rates over 1-min and 10-min windows aligned to t = 0 (complete windows only);
``peak_to_trough`` = median over complete calendar days of (max hourly rate / min hourly rate);
``weekday_to_weekend`` = mean requests per complete Mon–Fri day / per complete Sat–Sun day (needs a known
calendar: shapes and scenarios have one, traces only when their timestamps are dates).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from sim.traffic.arrivals import ArrivalChunk
from sim.traffic.shapes import WEEKDAYS, RateCurve

PCTS = (50, 90, 95, 99)


def _pct(rates: np.ndarray) -> dict[str, float | None]:
    if len(rates) == 0:
        return {**{f"p{p}_rps": None for p in PCTS}, "peak_rps": None}
    out: dict[str, float | None] = {f"p{p}_rps": float(np.percentile(rates, p)) for p in PCTS}
    out["peak_rps"] = float(rates.max())
    return out


def minute_counts(curve: RateCurve, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrivals per 1-min window of the NHPP, drawn directly: counts in disjoint windows are independent
    Poisson(∫λ dt) (Simpson, 6 panels a minute) — exact in distribution for every windowed statistic,
    without generating each arrival."""
    n_min = math.ceil(duration_s / 60.0)
    a = np.arange(n_min) * 60.0
    b = np.minimum(a + 60.0, duration_s)
    x = a[:, None] + (b - a)[:, None] * (np.arange(7) / 6.0)[None, :]
    y = curve.rate_rps(x.ravel()).reshape(x.shape)
    w = np.array([1, 4, 2, 4, 2, 4, 1], dtype=float)
    expected = (b - a) / 18.0 * (y @ w)
    return rng.poisson(expected)


def counts_chunks(per_min: np.ndarray, mean_tokens: tuple[float, float] | None) -> Iterable[ArrivalChunk]:
    """Per-minute counts as pseudo-chunks (one entry per minute, weighted) for :func:`traffic_stats`."""
    t = np.arange(len(per_min)) * 60.0 + 30.0
    mi, mo = mean_tokens or (0.0, 0.0)
    yield ArrivalChunk(t, per_min, per_min * mi, per_min * mo, np.zeros(len(per_min)))


def traffic_stats(chunks: Iterable[ArrivalChunk], duration_s: float, clock0_h: float | None = 0.0,
                  curve: RateCurve | None = None, tokens: bool = True, weighted: bool = False) -> tuple[dict, dict]:
    """(stats dict, series dict for plotting). ``clock0_h``: hour of the week at t = 0, None if unknown.
    ``weighted``: chunks come from :func:`counts_chunks` (``class_idx`` holds counts; tokens are totals)."""
    n_min = math.ceil(duration_s / 60.0)
    per_min = np.zeros(n_min, dtype=np.int64)
    c0 = clock0_h if clock0_h is not None else 0.0
    first_day = math.floor(c0 / 24.0)
    n_days = math.floor((c0 + duration_s / 3600.0) / 24.0) - first_day + 1
    day_req = np.zeros(n_days)
    day_in = np.zeros(n_days)
    day_out = np.zeros(n_days)
    day_cached = np.zeros(n_days)
    total = 0
    tok_in = tok_out = tok_cached = 0
    for ch in chunks:
        if not len(ch):
            continue
        wts = ch.class_idx.astype(float) if weighted else None
        m = (ch.time_s // 60.0).astype(np.int64)
        per_min += np.rint(np.bincount(np.minimum(m, n_min - 1), weights=wts, minlength=n_min)).astype(np.int64)
        d = np.floor((c0 + ch.time_s / 3600.0) / 24.0).astype(np.int64) - first_day
        d = np.clip(d, 0, n_days - 1)
        day_req += np.bincount(d, weights=wts, minlength=n_days)
        day_in += np.bincount(d, weights=ch.prompt_tokens, minlength=n_days)
        day_out += np.bincount(d, weights=ch.output_tokens, minlength=n_days)
        day_cached += np.bincount(d, weights=ch.cached_tokens, minlength=n_days)
        total += int(wts.sum()) if wts is not None else len(ch)
        tok_in += int(ch.prompt_tokens.sum())
        tok_out += int(ch.output_tokens.sum())
        tok_cached += int(ch.cached_tokens.sum())
    full_min = int(duration_s // 60)
    r1 = per_min[:full_min] / 60.0
    n10 = full_min // 10
    r10 = per_min[: n10 * 10].reshape(n10, 10).sum(axis=1) / 600.0 if n10 else np.empty(0)

    # calendar days fully inside [0, duration)
    days = []
    for i in range(n_days):
        start_h = (first_day + i) * 24.0 - c0
        if start_h >= -1e-9 and (start_h + 24.0) * 3600.0 <= duration_s + 1e-6:
            days.append((i, start_h))
    ptt = None
    if days:
        ratios = []
        for _, start_h in days:
            a = round(start_h * 60)
            hourly = per_min[a : a + 1440].reshape(24, 60).sum(axis=1)
            if hourly.min() > 0:
                ratios.append(hourly.max() / hourly.min())
        ptt = float(np.median(ratios)) if ratios else None
    wdwe = None
    per_day: list[dict[str, Any]] = []
    for i, _ in days:
        wd = (first_day + i) % 7
        per_day.append({
            "day": len(per_day),
            "weekday": WEEKDAYS[wd] if clock0_h is not None else None,
            "requests": int(day_req[i]),
            **({"input_tokens": int(day_in[i]), "output_tokens": int(day_out[i]),
                "cached_tokens": int(day_cached[i])} if tokens else {}),
        })
    if clock0_h is not None and days:
        wk = [day_req[i] for i, _ in days if (first_day + i) % 7 < 5]
        we = [day_req[i] for i, _ in days if (first_day + i) % 7 >= 5]
        if wk and we and np.mean(we) > 0:
            wdwe = float(np.mean(wk) / np.mean(we))
    mean = total / duration_s
    p10 = _pct(r10)
    stats: dict = {
        "duration_s": duration_s,
        "requests": total,
        "mean_rps": mean,
        **p10,
        "rps_1min": _pct(r1),
        "peak_to_trough": ptt,
        "weekday_to_weekend": wdwe,
        "requests_per_day": mean * 86400.0,
        "sizing_rps_p95_plus_30pct": p10["p95_rps"] * 1.3 if p10["p95_rps"] is not None else None,
        "per_day": per_day,
    }
    if tokens:
        stats.update({
            "input_tokens_per_day": tok_in / duration_s * 86400.0,
            "output_tokens_per_day": tok_out / duration_s * 86400.0,
            "cached_tokens_per_day": tok_cached / duration_s * 86400.0,
            "mean_input_tokens": tok_in / total if total else None,
            "mean_output_tokens": tok_out / total if total else None,
        })
    if curve is not None and not curve.constant:
        grid = np.arange(0.0, duration_s, 60.0) + 30.0
        lam = curve.rate_rps(grid)
        stats["rate_curve"] = {"mean_rps": curve.integral(0.0, duration_s) / duration_s,
                               "peak_rps": float(lam.max()), "trough_rps": float(lam.min())}
    series = {"per_min": per_min, "r10": r10, "curve": curve, "clock0_h": clock0_h, "duration_s": duration_s}
    return stats, series


def plot_rate(series: dict, stats: dict, path: str, title: str) -> None:
    """Rate over time: 1-min and 10-min windowed rates, λ(t) when known, mean and P95 lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dur = series["duration_s"]
    in_days = dur > 2 * 86400
    unit, div = ("days", 86400.0) if in_days else ("hours", 3600.0)
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=110)
    pm = series["per_min"][: int(dur // 60)]
    ax.plot((np.arange(len(pm)) * 60 + 30) / div, pm / 60.0, lw=0.4, color="#9ecae1", label="1-min rate")
    r10 = series["r10"]
    ax.plot((np.arange(len(r10)) * 600 + 300) / div, r10, lw=1.2, color="#08519c", label="10-min rate")
    curve = series["curve"]
    if curve is not None and not curve.constant:
        t = np.linspace(0, dur, 4000)
        ax.plot(t / div, curve.rate_rps(t), "--", lw=1.0, color="#e6550d", label="λ(t) (shape)")
    ax.axhline(stats["mean_rps"], color="grey", lw=0.8, ls=":", label=f"mean {stats['mean_rps']:.3g} req/s")
    if stats["p95_rps"] is not None:
        ax.axhline(stats["p95_rps"], color="#31a354", lw=0.8, ls="-.",
                   label=f"P95 (10-min) {stats['p95_rps']:.3g} req/s")
    c0 = series["clock0_h"]
    if c0 is not None:  # shade weekends
        first = math.floor(c0 / 24.0)
        for d in range(first, first + int(dur / 86400) + 2):
            if d % 7 >= 5:
                a = max(0.0, (d * 24.0 - c0) * 3600.0) / div
                b = min(dur, ((d + 1) * 24.0 - c0) * 3600.0) / div
                if b > a:
                    ax.axvspan(a, b, color="#f0f0f0", zorder=0)
    ax.set_xlabel(f"time since start ({unit})" + (" — weekends shaded" if c0 is not None and in_days else ""))
    ax.set_ylabel("arrival rate (requests/s)")
    ax.set_title(title)
    ax.set_xlim(0, dur / div)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
