"""What a simulated result depends on, as one hash: the key of on-disk result caches (sweeps, plan).

A cached result may be reused only if nothing that determines it has changed: the resolved scenario, the GPU,
model and software-stack profiles it resolves to (a user may edit a profile YAML between two runs), and the
simulator's own code. The code enters as a hash of the package's Python source, so an upgrade, a local edit or
a different checkout never reuses results computed by other code (the version string alone does not change
between development commits).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from sim.core.config import Scenario
from sim.core.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]


@cache
def code_fingerprint() -> str:
    """SHA-256 over the package's ``*.py`` files (relative path and content), computed once per process."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def profiles_payload(scenario: Scenario) -> dict[str, Any]:
    """The GPU, model and stack profiles ``scenario`` resolves to, as JSON-ready dicts (empty where a name is
    unknown: such a run fails when it runs, and the scenario alone keys it)."""
    from sim.perf.catalog import get_gpu, get_model, resolve_stack

    out: dict[str, Any] = {}
    try:
        gpu = get_gpu(scenario.fleet.gpu, scenario.source)
        out["gpu"] = gpu.model_dump(mode="json")
        out["model"] = get_model(scenario.fleet.model, scenario.source).model_dump(mode="json")
        stack = resolve_stack(gpu, scenario.fleet.stack)
        out["stack"] = stack.model_dump(mode="json") if stack is not None else None
    except ConfigError:
        pass
    return out


def result_key(scenario_dump: dict[str, Any], scenario: Scenario, chars: int, **extra: Any) -> str:
    """Hash of ``scenario_dump`` (the caller decides which cosmetic fields to leave out), the profiles it
    resolves to, the code fingerprint and any ``extra`` fields; the first ``chars`` hex digits."""
    payload = {"scenario": scenario_dump, "code": code_fingerprint(), **profiles_payload(scenario), **extra}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:chars]
