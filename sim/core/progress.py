"""Progress for long commands (``run``, ``run --stream``, ``compare``, ``sweep``, ``traffic --fit-shape``): one helper.

On a terminal: a transient rich progress bar on stderr, shown only once the work has taken ``delay_s`` (2 s),
so quick commands stay quiet. Without a terminal (logs, CI, pipes): a plain line on stderr at most every
``interval_s`` (10 s), e.g. ``capsim run: 42% (2,520 of 6,000 s simulated), 31 s elapsed``, and nothing for
work that ends within the first interval. Never on stdout (``--json`` output stays clean).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``update(done, total)`` as work advances; ``close()`` (or use as a context manager) at the end.

    ``label`` names the command (``capsim compare``); ``unit`` formats the counts (``"s simulated"``,
    ``"runs"``). ``enabled=False`` makes every call a no-op. ``clock`` and ``stream`` are injectable for tests.
    """

    def __init__(self, label: str, unit: str = "", *, enabled: bool = True, stream: TextIO | None = None,
                 interval_s: float = 10.0, delay_s: float = 2.0, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit, self.enabled = label, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s, self.delay_s, self.clock = interval_s, delay_s, clock
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = clock()
        self._last_line = self.t0
        self._bar: Any = None
        self._task: Any = None

    def _fmt(self, v: float) -> str:
        return f"{v:,.0f}"

    def update(self, done: float, total: float | None = None, note: str = "") -> None:
        """Report ``done`` of ``total`` (None: unknown total); ``note`` is appended (e.g. "draining")."""
        if not self.enabled:
            return
        now = self.clock()
        elapsed = now - self.t0
        if self.tty:
            if self._bar is None:
                if elapsed < self.delay_s:
                    return
                self._start_bar(total)
            self._bar.update(self._task, completed=min(done, total) if total else done, total=total,
                             note=f"{self._fmt(done)} {self.unit}" + (f" ({note})" if note else ""))
            return
        if now - self._last_line < self.interval_s:
            return
        self._last_line = now
        share = f"{100 * min(done / total, 1.0):.0f}% (" if total else "("
        of = f" of {self._fmt(total)}" if total else ""
        extra = f", {note}" if note else ""
        print(f"{self.label}: {share}{self._fmt(done)}{of} {self.unit}){extra}, {elapsed:,.0f} s elapsed",
              file=self.stream, flush=True)

    def _start_bar(self, total: float | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn(self.label), BarColumn(), TextColumn("{task.fields[note]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                        console=Console(file=self.stream))
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total, note="")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def sim_time(self, t_s: float, duration_s: float) -> None:
        """The ``simulate(progress=…)`` hook: simulated seconds of ``duration_s`` (then "draining")."""
        self.update(min(t_s, duration_s), duration_s, "draining" if t_s > duration_s else "")

    def iterate(self, items: Iterable[T], position: Callable[[T], float], total: float) -> Iterator[T]:
        """Yield ``items``, reporting ``position(item)`` of ``total`` after each."""
        for item in items:
            yield item
            self.update(position(item), total)
