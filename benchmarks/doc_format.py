"""How the generated doc blocks write figures (one rule for every script in benchmarks/ that writes docs)."""

from __future__ import annotations

import math


def seconds(value_s: float | None) -> str:
    """A latency as the docs write it: 311 ms, 56.0 ms, 4.6 ms below a second; 3.3 s, 79.4 s, 1,488 s above (never
    an exponent); n/a for a missing figure."""
    if value_s is None or math.isnan(value_s):
        return "n/a"
    ms = value_s * 1e3
    if round(ms) < 1000:  # 999.6 ms is 1.0 s
        return f"{ms:.0f} ms" if round(ms, 1) >= 100 else f"{ms:.1f} ms"
    return f"{value_s:.1f} s" if round(value_s, 1) < 100 else f"{value_s:,.0f} s"


def pct(share: float | None) -> str:
    """A share as a percentage with one decimal: 99.3 %; n/a for a missing figure."""
    return "n/a" if share is None or math.isnan(share) else f"{share * 100:.1f} %"
