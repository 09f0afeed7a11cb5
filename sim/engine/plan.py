"""The fast engine's plan of what a busy node is doing: one engine step, or a jumped-over run of decode steps.

A :class:`StepPlan` is written when the node starts a step or a run (:meth:`StepPlan.step`, :meth:`StepPlan.run`)
and read when it ends, and in between by whoever asks the node's state (router, sampler, a withdrawal that cuts
the run short). One record per node, overwritten at each start, so starting a step allocates nothing.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from sim.perf.model import DecodeLines, dominant_line, run_on_lines
from sim.traffic.request import Request

_INF: Final = float("inf")


class StepPlan:
    """The step or decode run in progress on one node (meaningful while the node's mode is STEP or JUMP).

    Common: ``t0_s`` when it started, ``dt_s`` how long it takes (a cut-short run: up to its new end).
    A step: its prefill ``chunks`` ((request, new tokens) pairs; decoders are aggregated on the node) and its
    work ``tokens`` / ``pairs`` (attention pairs) / ``ctx`` (context tokens read). A decode run: ``n`` steps of
    ``batch`` decoders holding ``ctx0`` context tokens at the start; step ``j`` of it takes
    ``max(a1 + b1·j, a2 + b2·j) + k`` (``lines``), exactly ``a + b·j`` when one roof dominates the whole run
    (``line``, None otherwise); with step-time jitter ``cum_s`` holds the cumulative step times instead.
    """

    __slots__ = ("t0_s", "dt_s", "chunks", "tokens", "pairs", "ctx", "n", "batch", "ctx0", "lines", "line",
                 "cum_s", "done_steps", "done_until_s")

    def __init__(self) -> None:
        self.t0_s = 0.0
        self.dt_s = 0.0
        self.chunks: list[tuple[Request, int]] = []
        self.tokens = 0
        self.pairs = 0
        self.ctx = 0
        self.n = 0
        self.batch = 0
        self.ctx0 = 0
        self.lines: DecodeLines = (0.0, 0.0, 0.0, 0.0, 0.0)
        self.line: tuple[float, float] | None = None
        self.cum_s: np.ndarray | None = None
        self.done_steps = 0  # a decode run's steps finished as of a recent read, valid before done_until_s
        self.done_until_s = -_INF

    def step(self, t0_s: float, chunks: list[tuple[Request, int]], tokens: int, pairs: int, ctx: int,
             dt_s: float) -> None:
        """Plan one engine step."""
        self.t0_s, self.dt_s = t0_s, dt_s
        self.chunks = chunks
        self.tokens, self.pairs, self.ctx = tokens, pairs, ctx

    def run(self, t0_s: float, n: int, batch: int, ctx0: int, lines: DecodeLines,
            cum_s: np.ndarray | None) -> None:
        """Plan a run of ``n`` decode-only steps (``cum_s``: cumulative jittered step times, or None)."""
        self.t0_s = t0_s
        self.n, self.batch, self.ctx0 = n, batch, ctx0
        self.lines = lines
        self.cum_s = cum_s
        self.done_until_s = -_INF
        if cum_s is None:
            self.dt_s = run_on_lines(lines, n)
            self.line = dominant_line(lines, n)
        else:
            self.dt_s = float(cum_s[-1])
            self.line = None

    def run_s(self, steps: int) -> float:
        """Time from the run's start to the end of its step ``steps`` (the same floats as
        :meth:`sim.perf.model.StepTimeModel.decode_run_s`, or the jittered cumulative times)."""
        if self.cum_s is not None:
            return float(self.cum_s[steps - 1]) if steps > 0 else 0.0
        return run_on_lines(self.lines, steps)

    def cut(self, n: int) -> None:
        """The run now ends after its step ``n`` (a request arrived or left mid-run)."""
        self.n = n
        self.dt_s = self.run_s(n)
