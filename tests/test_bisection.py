"""The shared walk-and-bisect search (sim/core/bisection.py) finds the threshold of a monotone test, on
integers (minimum fleet) and reals (goodput), whichever side passes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim.core.bisection import bisect, drive, smallest_passing, walk


@given(threshold=st.integers(1, 500), start=st.integers(1, 500))
def test_integer_threshold_found_exactly(threshold: int, start: int) -> None:
    """Passing above a threshold (more nodes): double up to a pass, then bisect to the smallest pass."""
    seen: list[int] = []

    def passes(n: int) -> bool:
        seen.append(n)
        return n >= threshold

    last_fail, first_pass = walk(passes, start, lambda n: 2 * n if n < 1000 else None, keep=False)
    assert first_pass is not None and passes(first_pass)
    if last_fail is None:  # the start passed: walk down one at a time to the first fail
        good, bad = walk(passes, start - 1, lambda n: n - 1 if n > 0 else None, keep=True)
        assert bad == threshold - 1 and good in (None, threshold)
        return
    good, bad = bisect(passes, first_pass, last_fail, lambda g, b: (g + b) // 2 if g - b > 1 else None)
    assert (good, bad) == (threshold, threshold - 1)
    assert len(seen) <= 2 * 12 + 2  # log2 steps each way, not a scan


@given(threshold=st.floats(0.01, 1000.0), start=st.floats(0.01, 1000.0))
def test_real_threshold_bracketed_within_tolerance(threshold: float, start: float) -> None:
    """Passing below a threshold (a rate one node sustains): the bracket ends within the relative tolerance."""
    def passes(r: float) -> bool:
        return r <= threshold

    lo, hi = walk(passes, start, lambda r: 2 * r, keep=True)
    if lo is None:
        last_fail, lo = walk(passes, start / 2, lambda r: r / 2, keep=False)
        hi = last_fail if last_fail is not None else start
    assert lo is not None and hi is not None and passes(lo) and not passes(hi)
    lo, hi = bisect(passes, lo, hi, lambda g, b: 0.5 * (g + b) if b - g > 0.01 * g else None)
    assert lo <= threshold < hi and hi - lo <= 0.01 * lo


@given(threshold=st.integers(0, 80), start=st.integers(0, 80), floor=st.integers(0, 2), ceiling=st.integers(2, 64))
def test_smallest_passing_count(threshold: int, start: int, floor: int, ceiling: int) -> None:
    """The growth-pool search: the smallest passing count in [floor, ceiling], None when the ceiling fails; never a
    point outside the range, never one twice."""
    seen: list[int] = []

    def passes(n: int) -> bool:
        seen.append(n)
        return n >= threshold

    got = drive(smallest_passing(start, floor, ceiling), passes)
    assert got == (max(threshold, floor) if max(threshold, floor) <= ceiling else None)
    assert all(floor <= n <= ceiling for n in seen) and len(seen) == len(set(seen))
    assert len(seen) <= 2 * 7 + 1  # doubling then bisection, not a scan
