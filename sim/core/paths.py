"""Where capsim finds its data: hardware profiles, traffic shapes, experiments, trace samples and the published
measurements ``capsim validate`` re-runs (``calibration/data``).

The one place that resolves them. Three roots are searched, highest priority first:

1. ``$CAPSIM_HOME`` (when set): a folder laid out like the repository (``hardware_profiles/``, …);
2. the current working directory: a ``traffic_shapes/consumer_chat.yaml`` or
   ``hardware_profiles/gpus/my-gpu.yaml`` there overrides or adds to the shipped one;
3. the shipped data: the top-level folders of the source checkout (a development or editable install, so
   edits there show up at once) or, installed from a wheel, the copy packed as ``sim/_data/`` by the build
   (``setup.py``), read with :mod:`importlib.resources`.

A path the user gives explicitly (a scenario file, ``traffic.shape: ./my_shape.yaml``) is used as given.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

# the data folders, relative to a root; setup.py copies the same list into the wheel
DATA_FOLDERS = ("hardware_profiles", "traffic_shapes", "experiments", "data/traces", "calibration/data")
_SOURCE_TREE = Path(__file__).resolve().parents[2]


def bundled_root() -> Path:
    """The shipped data: the source checkout's root, or ``sim/_data`` inside an installed wheel."""
    if (_SOURCE_TREE / "pyproject.toml").is_file() and (_SOURCE_TREE / "hardware_profiles").is_dir():
        return _SOURCE_TREE
    return Path(str(files("sim") / "_data"))


def user_roots() -> list[Path]:
    """Roots whose files override the shipped ones, highest priority first: ``$CAPSIM_HOME``, then the cwd."""
    roots = [Path(env)] if (env := os.environ.get("CAPSIM_HOME")) else []
    return roots + [Path.cwd()]


def search_roots() -> list[Path]:
    """All roots, highest priority first, each once."""
    out: list[Path] = []
    for root in [*user_roots(), bundled_root()]:
        if all(root.resolve() != r.resolve() for r in out):
            out.append(root)
    return out


def find_data_file(rel: str | Path) -> Path | None:
    """The first existing ``root/rel`` over :func:`search_roots` (an absolute ``rel`` is returned if it exists)."""
    p = Path(rel)
    if p.is_absolute():
        return p if p.exists() else None
    for root in search_roots():
        if (root / p).exists():
            return root / p
    return None


def data_dirs(rel: str | Path) -> list[Path]:
    """Existing folders ``root/rel``, LOWEST priority first (shipped, cwd, ``$CAPSIM_HOME``): load them in
    this order and let later files replace earlier ones of the same name."""
    return [root / rel for root in reversed(search_roots()) if (root / rel).is_dir()]


def project_root() -> Path:
    """The root data files named in scenarios fall back to: ``$CAPSIM_HOME`` or the shipped data."""
    env = os.environ.get("CAPSIM_HOME")
    return Path(env) if env else bundled_root()


def hardware_dir() -> Path:
    """The shipped (or ``$CAPSIM_HOME``) ``hardware_profiles/``; :func:`data_dirs` gives the overlays too."""
    return project_root() / "hardware_profiles"


def experiments_dir() -> Path:
    return project_root() / "experiments"


def traffic_shapes_dir() -> Path:
    return project_root() / "traffic_shapes"


def api_catalogue_path() -> Path:
    """``hardware_profiles/apis.yaml``: the user's copy if there is one, else the shipped one."""
    return find_data_file("hardware_profiles/apis.yaml") or hardware_dir() / "apis.yaml"


def default_scenario_path() -> Path:
    """``experiments/default.yaml``: a user's (``$CAPSIM_HOME`` or cwd) if present, else the shipped one."""
    return find_data_file("experiments/default.yaml") or experiments_dir() / "default.yaml"


def scenario_path(given: Path | None) -> Path:
    """The scenario a command runs: the default without one; a path that exists as given; else a relative path
    found under a data root (``capsim run experiments/hybrid_spill.yaml`` works from any folder)."""
    if given is None:
        return default_scenario_path()
    if given.exists() or given.is_absolute():
        return given
    return find_data_file(given) or given
