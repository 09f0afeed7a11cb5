"""pytest fixtures; scenario helpers live in ``tests/scenarios.py`` (import it as ``from scenarios import ...``).

Hypothesis: locally each run explores new random examples; CI sets ``HYPOTHESIS_PROFILE=ci`` (see ``.ci/run``)
to derandomize, so a landing never depends on luck. A failure prints its reproduction blob either way.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from scenarios import make_scenario

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def scenario_factory():
    return make_scenario
