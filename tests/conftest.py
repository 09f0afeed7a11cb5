"""pytest fixtures; scenario helpers live in ``tests/scenarios.py`` (import it as ``from scenarios import ...``)."""

from __future__ import annotations

import pytest
from scenarios import make_scenario


@pytest.fixture
def scenario_factory():
    return make_scenario
