"""Step-time jitter: a seeded, per-node multiplicative noise on every engine step, the same in both engines.

Real servers do not repeat a step in exactly the same time (host scheduling, Python overhead, allocator and
network hiccups, clock changes). Without any variability a closed loop of identical requests never
de-synchronises: each "wave" queues behind the others' prefills for ever. With ``fleet.engine.step_jitter.cv > 0``
step ``k`` of a node takes ``step_s × X_k``, ``X_k`` lognormal with mean 1 and coefficient of variation ``cv``.

``X_k`` depends only on (seed, node, k): it is drawn in blocks of :data:`BLOCK` steps from a
``numpy.random.Generator(Philox)`` keyed by (seed, node, block), so the step-by-step reference engine and the fast
engine (which sums a run of decode steps at once) see the same factor for the same step. Off by default: a run of
``n`` decode steps then costs O(n) instead of O(1) in the fast engine.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 4096


class StepJitter:
    """Factors ``X_k`` (mean 1, coefficient of variation ``cv``) for the steps ``k = 0, 1, …`` of one node."""

    def __init__(self, cv: float, seed: int, node_id: int) -> None:
        sigma2 = math.log1p(cv * cv)
        self.sigma = math.sqrt(sigma2)
        self.mu = -sigma2 / 2.0
        self.key = (int(seed) & 0xFFFFFFFFFFFFFFFF, int(node_id))
        self._block = -1
        self._values = np.empty(0)

    def _load(self, block: int) -> np.ndarray:
        if block != self._block:
            bg = np.random.Philox(key=[self.key[0], (self.key[1] << 32) | (block & 0xFFFFFFFF)])
            self._values = np.random.Generator(bg).lognormal(self.mu, self.sigma, BLOCK)
            self._block = block
        return self._values

    def factor(self, k: int) -> float:
        """The factor of step ``k``."""
        return float(self._load(k // BLOCK)[k % BLOCK])

    def factors(self, k0: int, n: int) -> np.ndarray:
        """The factors of steps ``k0 … k0 + n − 1``."""
        out = np.empty(n)
        i = 0
        while i < n:
            k = k0 + i
            b, off = divmod(k, BLOCK)
            take = min(n - i, BLOCK - off)
            out[i:i + take] = self._load(b)[off:off + take]
            i += take
        return out


def make_jitter(cv: float, seed: int | None, node_id: int) -> StepJitter | None:
    """A node's jitter, or None when ``cv`` is 0 (no jitter)."""
    return StepJitter(cv, seed or 0, node_id) if cv > 0 else None
