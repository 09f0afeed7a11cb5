"""The one loader of experiment files (``capsim compare`` strategies, ``capsim sweep`` axes).

:func:`load_experiment_file` reads the YAML (a scenario given by mistake is named as such), then validates it
into the command's schema, a :class:`~sim.core.config.Strict` pydantic model (unknown keys are errors, values
frozen); the first problem is one :class:`~sim.core.errors.ConfigError` naming file, field and problem.
:func:`read_base_scenario` resolves the base scenario an experiment varies: an inline mapping, a path relative
to the experiment file, or (none given) the default scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from sim.core.config import read_yaml, validate_mapping
from sim.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Command = Literal["compare", "sweep"]


def load_experiment_file(path: Path, schema: type[M], command: Command) -> M:
    """``path`` read and validated as ``schema`` (see the module docstring)."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "fleet" in raw and "traffic" in raw:
        raise ConfigError(str(path), "", f"this is a scenario, not a `capsim {command}` experiment file "
                          f"(see docs/{'spillover' if command == 'compare' else 'sweeps'}.md; to simulate it: "
                          "capsim run)")
    return validate_mapping(schema, raw, str(path))


def read_base_scenario(base: str | dict[str, Any] | None, exp_path: Path) -> tuple[dict[str, Any], Path, str]:
    """The base scenario's raw mapping, the folder its relative data paths resolve against, and its name for
    error messages: ``base`` inline (a mapping), a file (relative to the experiment file), or the default."""
    if isinstance(base, dict):
        return base, exp_path.parent.resolve(), f"{exp_path} (base)"
    if base is None:
        from sim.core.paths import default_scenario_path

        path = default_scenario_path()
    else:
        path = Path(base)
        if not path.is_absolute():
            path = exp_path.parent / path
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "", "expected a YAML mapping at the top level")
    return raw, path.parent.resolve(), str(path)
