"""Rate shapes: λ(t) = rate_rps × (Π multiplicative factors(t) + Σ additive excesses(t)).

Each component of a :class:`~sim.core.config.Shape` is a dimensionless factor of simulated time ``t_s``.
Periodic components (daily, office hours, hourly, weekly, harmonic) are normalised to mean 1 over their
period, so ``rate_rps`` is the mean rate outside events. They read the local clock: simulated time 0 is
``clock0_h`` hours into the week (0 = Monday 00:00). Event components (launch, viral, piecewise, growth)
count hours from the start of the run. Batch windows repeat at a clock hour on chosen weekdays.

Shapes are YAML files in ``traffic_shapes/`` (or any path); ``include`` composes files by multiplication.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from sim.core.config import (
    BatchWindow,
    DailyCurve,
    Growth,
    Harmonic,
    HourlyProfile,
    Launch,
    OfficeHours,
    Piecewise,
    Shape,
    ShapeComponent,
    Viral,
    WeeklyCurve,
    _format_error,
    read_yaml,
)
from sim.core.errors import ConfigError
from sim.core.paths import data_dirs

DAY_H = 24.0
WEEK_H = 168.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Factor = Callable[[np.ndarray], np.ndarray]  # hours-of-clock and hours-since-start → factor


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _normalised(f: Callable[[np.ndarray], np.ndarray], period_h: float, n: int = 20160) -> Callable:
    """``f`` divided by its mean over one period (midpoint rule on ``n`` points: exact for smooth periodic f)."""
    grid = (np.arange(n) + 0.5) * (period_h / n)
    mean = float(np.mean(f(grid)))
    if not mean > 0:
        raise ValueError("periodic component has zero mean")
    return lambda h: f(h) / mean


def _daily(c: DailyCurve) -> Callable[[np.ndarray], np.ndarray]:
    amp = math.log(c.peak_to_trough) / 2.0

    def f(h: np.ndarray) -> np.ndarray:
        g = np.cos(2 * np.pi * (h - c.peak_hour) / DAY_H)
        if c.sharpness != 1.0:
            g = 2.0 * ((1.0 + g) / 2.0) ** c.sharpness - 1.0
        return np.exp(amp * g)

    return _normalised(f, DAY_H)


def _office(c: OfficeHours) -> Callable[[np.ndarray], np.ndarray]:
    w = c.ramp_h / 4.4  # logistic 10–90 % rise time = 4.4 w

    def f(h: np.ndarray) -> np.ndarray:
        hd = np.mod(h, DAY_H)
        on = np.zeros_like(hd)
        for shift in (-DAY_H, 0.0, DAY_H):  # periodic wrap
            x = hd + shift
            on += _sigmoid((x - c.start_hour) / w) * _sigmoid((c.end_hour - x) / w)
        on = np.clip(on, 0.0, 1.0)
        if c.lunch_dip > 0:
            on = on * (1.0 - c.lunch_dip * np.exp(-(((hd - 12.5) / 0.6) ** 2)))
        return 1.0 + (c.peak_to_trough - 1.0) * on

    return _normalised(f, DAY_H)


def _hourly(c: HourlyProfile) -> Callable[[np.ndarray], np.ndarray]:
    v = np.asarray(c.values, dtype=float)
    xs = np.concatenate([[-0.5], np.arange(24) + 0.5, [24.5]])
    ys = np.concatenate([[v[-1]], v, [v[0]]])
    return _normalised(lambda h: np.interp(np.mod(h, DAY_H), xs, ys), DAY_H)


def _weekend_weight(c: WeeklyCurve) -> Callable[[np.ndarray], np.ndarray]:
    w = c.ramp_h / 4.4

    def wk(h: np.ndarray) -> np.ndarray:
        hw = np.mod(h, WEEK_H)
        out = np.zeros_like(hw)
        for d in set(c.weekend_days):
            for shift in (-WEEK_H, 0.0, WEEK_H):
                x = hw + shift
                out += _sigmoid((x - 24.0 * d) / w) * _sigmoid((24.0 * (d + 1) - x) / w)
        return np.clip(out, 0.0, 1.0)

    return wk


def _weekly(c: WeeklyCurve) -> Callable[[np.ndarray], np.ndarray]:
    wk = _weekend_weight(c)
    weekend = sorted(set(c.weekend_days))
    if len(weekend) == 7:
        return lambda h: np.ones_like(h)
    weekdays = [d for d in range(7) if d not in weekend]
    grid = (np.arange(7 * 1440) + 0.5) / 60.0
    wg = wk(grid).reshape(7, 1440).mean(axis=1)  # mean weekend weight per day

    def ratio(level: float) -> float:  # weekend level relative to weekday level 1
        day_means = 1.0 - (1.0 - level) * wg
        return float(day_means[weekdays].mean() / day_means[weekend].mean())

    # solve ratio(level) = target for the weekend level (monotone in level)
    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if ratio(mid) > c.weekday_to_weekend:
            lo = mid
        else:
            hi = mid
    level = math.sqrt(lo * hi)
    return _normalised(lambda h: 1.0 - (1.0 - level) * wk(h), WEEK_H, n=7 * 1440)


def _harmonic(c: Harmonic) -> Callable[[np.ndarray], np.ndarray]:
    def f(h: np.ndarray) -> np.ndarray:
        x = np.zeros_like(h)
        for term in c.terms:
            ang = 2 * np.pi * term.k * h / c.period_h
            x += term.cos * np.cos(ang) + term.sin * np.sin(ang)
        return np.exp(x)

    return _normalised(f, c.period_h)


def _launch(c: Launch) -> Callable[[np.ndarray], np.ndarray]:
    s, r, d = c.start_h, c.ramp_h, c.duration_h
    xs = np.array([s, s + r, s + r + d, s + 2 * r + d])
    ys = np.array([1.0, c.multiplier, c.multiplier, c.after])
    return lambda t: np.interp(t, xs, ys)


def _viral(c: Viral) -> Callable[[np.ndarray], np.ndarray]:
    def f(t: np.ndarray) -> np.ndarray:
        tau = t - c.start_h
        x = np.clip(tau / c.rise_h, 0.0, 1.0)
        rise = x * x * (3.0 - 2.0 * x)  # smoothstep
        decay = np.exp2(-np.maximum(tau - c.rise_h, 0.0) / c.half_life_h)
        return 1.0 + (c.peak - 1.0) * np.where(tau > 0, rise * decay, 0.0)

    return f


def _batch(c: BatchWindow) -> Callable[[np.ndarray], np.ndarray]:
    starts = np.array([24.0 * d + c.start_hour for d in sorted(set(c.days))])
    r = min(c.ramp_h, c.duration_h / 2)

    def f(h: np.ndarray) -> np.ndarray:
        hw = np.mod(h, WEEK_H)
        env = np.zeros_like(hw)
        for s in starts:
            for shift in (-WEEK_H, 0.0, WEEK_H):
                x = hw + shift - s
                env = np.maximum(env, np.clip(np.minimum(x, c.duration_h - x) / r, 0.0, 1.0))
        return 1.0 + (c.multiplier - 1.0) * env

    return f


def _piecewise(c: Piecewise) -> Callable[[np.ndarray], np.ndarray]:
    xs = np.array([p[0] for p in c.points], dtype=float)
    ys = np.array([p[1] for p in c.points], dtype=float)
    if c.interp == "linear":
        return lambda t: np.interp(t, xs, ys)
    return lambda t: ys[np.clip(np.searchsorted(xs, t, side="right") - 1, 0, len(xs) - 1)]


@dataclass(frozen=True)
class _Part:
    fn: Callable[[np.ndarray], np.ndarray]
    clock: bool  # evaluated on clock hours (True) or hours since start (False)
    add: bool  # combine by adding the excess (f − 1) instead of multiplying


def _part(c: ShapeComponent) -> _Part:
    if isinstance(c, DailyCurve):
        return _Part(_daily(c), True, False)
    if isinstance(c, OfficeHours):
        return _Part(_office(c), True, False)
    if isinstance(c, HourlyProfile):
        return _Part(_hourly(c), True, False)
    if isinstance(c, WeeklyCurve):
        return _Part(_weekly(c), True, False)
    if isinstance(c, Harmonic):
        return _Part(_harmonic(c), True, False)
    if isinstance(c, Launch):
        return _Part(_launch(c), False, c.combine == "add")
    if isinstance(c, Viral):
        return _Part(_viral(c), False, c.combine == "add")
    if isinstance(c, BatchWindow):
        return _Part(_batch(c), True, c.combine == "add")
    if isinstance(c, Growth):
        g = math.log1p(c.per_day) / DAY_H
        return _Part(lambda t: np.exp(g * t), False, False)
    if isinstance(c, Piecewise):
        return _Part(_piecewise(c), False, c.combine == "add")
    raise TypeError(f"unknown shape component {c!r}")  # pragma: no cover - schema is closed


class RateCurve:
    """λ(t) in requests/s for simulated time ``t_s`` (vectorised); ``clock0_h`` = hour of the week at t = 0."""

    def __init__(self, rate_rps: float, components: Sequence[ShapeComponent] = (), clock0_h: float = 0.0,
                 name: str = "") -> None:
        self.base_rps = float(rate_rps)
        self.clock0_h = float(clock0_h)
        self.components = list(components)
        self.name = name
        self._parts = [_part(c) for c in self.components]

    @property
    def constant(self) -> bool:
        return not self._parts

    def factor(self, t_s: np.ndarray | float) -> np.ndarray:
        """The dimensionless shape factor at ``t_s`` (≥ 0)."""
        t = np.asarray(t_s, dtype=float)
        since_h = t / 3600.0
        clock_h = since_h + self.clock0_h
        mult = np.ones_like(t)
        add = np.zeros_like(t)
        for p in self._parts:
            v = p.fn(clock_h if p.clock else since_h)
            if p.add:
                add = add + (v - 1.0)
            else:
                mult = mult * v
        return np.maximum(mult + add, 0.0)

    def rate_rps(self, t_s: np.ndarray | float) -> np.ndarray:
        return self.base_rps * self.factor(t_s)

    def integral(self, t0_s: float, t1_s: float, step_s: float = 10.0) -> float:
        """∫λ dt over [t0, t1] (composite Simpson on a ``step_s`` grid; shapes are smooth at that scale)."""
        return float(self.expected_counts(np.array([t0_s, t1_s]), step_s)[0])

    def expected_counts(self, edges_s: np.ndarray, step_s: float = 10.0) -> np.ndarray:
        """∫λ dt over each window [edges[i], edges[i+1]] (Simpson, at least 8 panels per window)."""
        edges = np.asarray(edges_s, dtype=float)
        out = np.empty(len(edges) - 1)
        for i, (a, b) in enumerate(itertools.pairwise(edges)):
            n = max(8, math.ceil((b - a) / step_s))
            n += n % 2
            x = np.linspace(a, b, n + 1)
            y = self.rate_rps(x)
            out[i] = (b - a) / (3 * n) * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())
        return out


# --- loading -------------------------------------------------------------------------------------------------
def available_shapes() -> list[str]:
    """Names of the shapes in ``traffic_shapes/``: the shipped ones and the user's (cwd, ``$CAPSIM_HOME``)."""
    return sorted({p.stem for d in data_dirs("traffic_shapes") for p in d.glob("*.yaml")})


def find_shape_file(ref: str, base: Path | None = None) -> Path | None:
    """A shape reference → file: a path (relative to ``base`` or the working folder), else a name in a
    ``traffic_shapes/`` folder (the user's before the shipped one, see :mod:`sim.core.paths`)."""
    p = Path(ref)
    candidates = [p] if p.is_absolute() else [(base or Path.cwd()) / p, Path.cwd() / p]
    for d in reversed(data_dirs("traffic_shapes")):
        candidates += [d / p, d / f"{ref}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    return None


def load_shape_file(path: Path) -> Shape:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "expected a YAML mapping (a shape with 'components')")
    try:
        return Shape.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_error(exc)
        raise ConfigError(str(path), field, msg) from None


def resolve_components(
    shape: str | Shape | dict | list | None,
    base: Path | None = None,
    source: str = "scenario",
    field: str = "traffic.shape",
    _seen: tuple[str, ...] = (),
) -> list[ShapeComponent]:
    """All components of a shape reference, inline shape or list of them, ``include`` s expanded."""
    if shape is None:
        return []
    if isinstance(shape, dict):
        try:
            shape = Shape.model_validate(shape)
        except ValidationError as exc:
            f, msg = _format_error(exc)
            raise ConfigError(source, f"{field}.{f}", msg) from None
    if isinstance(shape, list):
        out: list[ShapeComponent] = []
        for i, s in enumerate(shape):
            out += resolve_components(s, base, source, f"{field}.{i}", _seen)
        return out
    if isinstance(shape, str):
        path = find_shape_file(shape, base)
        if path is None:
            names = ", ".join(available_shapes()) or "none"
            raise ConfigError(source, field, f"no shape file '{shape}' (shipped shapes: {names})")
        key = str(path.resolve())
        if key in _seen:
            raise ConfigError(str(path), "include", "shapes include each other in a cycle")
        loaded = load_shape_file(path)
        return resolve_components(loaded.include, path.parent, str(path), "include", _seen + (key,)) + list(
            loaded.components
        )
    return resolve_components(shape.include, base, source, f"{field}.include", _seen) + list(shape.components)


def clock0_hours(start_weekday: str, start_hour: float) -> float:
    """Hour of the week (0 = Monday 00:00) at simulated time 0."""
    return 24.0 * WEEKDAYS.index(start_weekday) + start_hour
