"""Small statistics shared by the experiments (sizing, compare, sweep) and the SLO verdict: replication seeds,
confidence intervals of a mean over independent replications, and a bound on a proportion."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.core.errors import ConfigError


def replication_seeds(base_seed: int, n_seeds: int, source: str = "--seeds") -> list[int]:
    """Independent replications: ``base_seed`` and the next ``n_seeds − 1`` integers (common random numbers
    across the configurations compared)."""
    if n_seeds < 1:
        raise ConfigError(source, "", f"need at least one seed (got {n_seeds})")
    return [base_seed + i for i in range(n_seeds)]


def t_half_width(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided Student-t interval of a mean of ``n`` values with sample std ``std``."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)


def mean_ci95(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its two-sided 95 % Student-t interval (None when undefined)."""
    x = np.array([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return None, None
    if len(x) == 1:
        return float(x[0]), None
    return float(x.mean()), t_half_width(float(x.std(ddof=1)), len(x))


def half_width_text(half: float) -> str:
    """A confidence-interval half-width for tables: two significant figures, whole units from 10 up (``89``, not
    ``89.``; ``6,252``)."""
    return f"{half:,.0f}" if abs(half) >= 9.95 else f"{half:#.2g}"


def wilson_upper(share: float, n: int, z: float = 1.645) -> float:
    """Upper Wilson score bound on a proportion observed as ``share`` of ``n`` trials (z = 1.645: one-sided 95 %)."""
    z2 = z * z
    return (share + z2 / (2 * n) + z * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))) / (1 + z2 / n)
