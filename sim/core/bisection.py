"""Search for the threshold of a monotone pass/fail test: walk to bracket it, then bisect.

One implementation for the two searches of ``capsim size`` (and ``capsim plan``, which sizes through it): the
per-node goodput (a continuous rate, passing below the threshold) and the minimum fleet (an integer node count,
passing above it). Both assume the test is monotone in ``x``; ``test`` is called once per point visited, in
the order given here (callers memoise their simulations if they revisit points).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

X = TypeVar("X", int, float)


def walk(test: Callable[[X], bool], x: X, step: Callable[[X], X | None], keep: bool) -> tuple[X | None, X | None]:
    """Visit ``x``, ``step(x)``, ``step(step(x))``, … while ``test`` gives ``keep``.

    Returns ``(last, first)``: the last point where ``test`` gave ``keep`` (None when ``x`` itself did not)
    and the first where it did not (None when ``step`` ran out, i.e. returned None)."""
    last: X | None = None
    while True:
        if test(x) != keep:
            return last, x
        last = x
        nxt = step(x)
        if nxt is None:
            return last, None
        x = nxt


def bisect(test: Callable[[X], bool], good: X, bad: X, midpoint: Callable[[X, X], X | None]) -> tuple[X, X]:
    """Narrow a bracket where ``test(good)`` holds and ``test(bad)`` does not, until ``midpoint(good, bad)``
    returns None (the bracket is tight enough). ``good`` may lie above or below ``bad``."""
    while (mid := midpoint(good, bad)) is not None:
        if test(mid):
            good = mid
        else:
            bad = mid
    return good, bad
