"""vLLM v0's multi-step scheduling (``--num-scheduler-steps n``), shared by both node engines.

Model (vLLM 0.6-0.7 ``vllm/core/scheduler.py``): the scheduler runs only when the running batch has no steps left.
A batch of decodes is scheduled for ``n`` steps (``init_multi_step(num_lookahead_slots + 1)`` with
``num_lookahead_slots = n − 1``); a batch with prefill work runs one step (prefills get no lookahead slots). So a
request that arrives while a decode run is in progress waits for the run to end before it can be admitted: up to
``n − 1`` decode steps more than with ``n = 1``.

In capsim's terms: ``left`` is the number of decode steps the current run still owes. Admissions are allowed only
when ``left == 0``. After a step is scheduled: a step with prefill work leaves ``left = 0``; a decode-only step
advances the run, ``left = (left − 1) mod n`` (a decode step at ``left == 0`` starts a new run of ``n``). A node
with nothing running is between runs (``left = 0``). Simplifications (docs/performance-model.md): requests that
finish inside a run leave the batch at once (vLLM keeps computing them to the end of the run) and their tokens are
not held back to the end of the run.
"""

from __future__ import annotations


class MultiStep:
    """The multi-step run state of one node (``n`` = ``Engine.num_scheduler_steps`` > 1)."""

    __slots__ = ("n", "left")

    def __init__(self, n: int) -> None:
        self.n = n
        self.left = 0

    def can_admit(self) -> bool:
        """Whether the scheduler runs at this step (between runs), so waiting requests may be admitted."""
        return self.left == 0

    def idle(self) -> None:
        """Nothing is running: the node is between runs."""
        self.left = 0

    def after_step(self, decode_only: bool) -> None:
        """A step was scheduled: prefill work ends the run; a decode-only step advances it."""
        self.left = (self.left - 1) % self.n if decode_only else 0

    def after_decode_steps(self, k: int) -> None:
        """``k`` decode-only steps were executed (the fast engine's jump)."""
        self.left = (self.left - k) % self.n


def make_multistep(n: int) -> MultiStep | None:
    """A node's multi-step state, or None when every step is scheduled (``n == 1``)."""
    return MultiStep(n) if n > 1 else None
