"""Search for the threshold of a monotone pass/fail test: walk to bracket it, then bisect.

One implementation for the searches of ``capsim size`` (and ``capsim plan``, which sizes through it): the per-node
goodput (a continuous rate, passing below the threshold), the minimum fleet (an integer node count, passing above
it) and the minimum growth pool of a fleet with ``fleet.pools``. All assume the test is monotone in ``x``.

Each search is written once, as a generator that yields the points to test and is sent each verdict
(:func:`walk_points`, :func:`bisect_points`, :func:`smallest_passing`), so a caller can drive several searches in
lockstep (the pool search simulates every model's next point in one run); :func:`walk` and :func:`bisect` drive one
with a ``test`` callable, called once per point visited, in the order given here (callers memoise their
simulations if they revisit points).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

X = TypeVar("X", int, float)
T = TypeVar("T")


def walk_points(x: X, step: Callable[[X], X | None], keep: bool) -> Generator[X, bool, tuple[X | None, X | None]]:
    """Visit ``x``, ``step(x)``, ``step(step(x))``, … while the verdict is ``keep``.

    Returns ``(last, first)``: the last point whose verdict was ``keep`` (None when ``x``'s was not) and the first
    whose verdict was not (None when ``step`` ran out, i.e. returned None)."""
    last: X | None = None
    while True:
        if (yield x) != keep:
            return last, x
        last = x
        nxt = step(x)
        if nxt is None:
            return last, None
        x = nxt


def bisect_points(good: X, bad: X, midpoint: Callable[[X, X], X | None]) -> Generator[X, bool, tuple[X, X]]:
    """Narrow a bracket where ``good`` passes and ``bad`` does not, until ``midpoint(good, bad)`` returns None (the
    bracket is tight enough). ``good`` may lie above or below ``bad``."""
    while (mid := midpoint(good, bad)) is not None:
        if (yield mid):
            good = mid
        else:
            bad = mid
    return good, bad


def smallest_passing(start: int, floor: int, ceiling: int) -> Generator[int, bool, int | None]:
    """The smallest integer in ``[floor, ceiling]`` that passes (None when ``ceiling`` does not): test ``start``
    (clamped to the range), double until a pass, then bisect between the largest miss and the smallest pass
    (``floor − 1`` counts as a miss)."""
    x = min(ceiling, max(start, floor))
    last_fail, first_pass = yield from walk_points(x, lambda n: min(ceiling, max(2 * n, n + 1)) if n < ceiling
                                                   else None, keep=False)
    if first_pass is None:
        return None
    bad = floor - 1 if last_fail is None else last_fail
    good, _ = yield from bisect_points(first_pass, bad, lambda g, b: (g + b) // 2 if g - b > 1 else None)
    return good


def drive(search: Generator[X, bool, T], test: Callable[[X], bool]) -> T:
    """Run ``search`` to its answer, testing each point it yields with ``test``."""
    try:
        x = next(search)
        while True:
            x = search.send(test(x))
    except StopIteration as done:
        return done.value


def walk(test: Callable[[X], bool], x: X, step: Callable[[X], X | None], keep: bool) -> tuple[X | None, X | None]:
    """:func:`walk_points` with ``test`` giving the verdicts."""
    return drive(walk_points(x, step, keep), test)


def bisect(test: Callable[[X], bool], good: X, bad: X, midpoint: Callable[[X, X], X | None]) -> tuple[X, X]:
    """:func:`bisect_points` with ``test`` giving the verdicts."""
    return drive(bisect_points(good, bad, midpoint), test)
