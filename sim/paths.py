"""Where capsim finds its bundled data (hardware profiles, traffic shapes, experiments, traces).

The data folders live at the repository root beside the package (the design card's layout). A user may
point ``CAPSIM_HOME`` at another checkout; user-supplied files are always given by explicit path.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding ``hardware_profiles/``, ``traffic_shapes/`` and ``experiments/``."""
    env = os.environ.get("CAPSIM_HOME")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent


def hardware_dir() -> Path:
    return project_root() / "hardware_profiles"


def experiments_dir() -> Path:
    return project_root() / "experiments"


def traffic_shapes_dir() -> Path:
    return project_root() / "traffic_shapes"


def default_scenario_path() -> Path:
    return experiments_dir() / "default.yaml"
