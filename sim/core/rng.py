"""Seeded random streams. Every consumer gets its own ``numpy.random.Generator`` derived from the scenario
seed and a stream name, so adding a consumer never shifts another's draws (common random numbers across
policies and fleet sizes) and the same seed always gives the same results."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """Independent generator for (seed, name)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])
