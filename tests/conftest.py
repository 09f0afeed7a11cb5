"""pytest fixtures; scenario helpers live in ``tests/scenarios.py`` (import it as ``from scenarios import ...``).

Hypothesis: locally each run explores new random examples; CI sets ``HYPOTHESIS_PROFILE=ci`` (see ``.ci/run``)
to derandomize, so a landing never depends on luck. A failure prints its reproduction blob either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from scenarios import make_scenario

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def run_once() -> Callable[..., Any]:
    """``run_once(**overrides)`` = ``run_scenario(make_scenario(**overrides))``, simulated once per session (per
    xdist worker) for each distinct set of overrides: a baseline several tests compare against is not re-run
    for each of them. The result is shared: read it, never modify it."""
    from sim.runner.pipeline import run_scenario

    cache: dict[str, Any] = {}

    def run(**overrides: Any) -> Any:
        key = repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = run_scenario(make_scenario(**overrides))
        return cache[key]

    return run
