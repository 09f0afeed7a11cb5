"""Build hook: copy the top-level data folders into the wheel as ``sim/_data/`` (package data).

The folders at the repository root (``hardware_profiles/``, ``traffic_shapes/``, ``experiments/``,
``data/traces/``) stay the single source of truth; nothing is duplicated in git. A regular (wheel) build copies
them under ``sim/_data/`` in the build tree, where :mod:`sim.core.paths` finds them with :mod:`importlib.resources`.
An editable install skips the copy: :mod:`sim.core.paths` then reads the top-level folders of the checkout, so edits
there show up at once. All other metadata lives in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (folder in the source tree, folder under sim/_data/ in the wheel); keep in step with sim/core/paths.py
DATA_FOLDERS = ("hardware_profiles", "traffic_shapes", "experiments", "data/traces", "calibration/data")


class BuildPyWithData(build_py):
    """``build_py`` that also copies the data folders into ``<build_lib>/sim/_data/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "sim" / "_data"
        for rel in DATA_FOLDERS:
            src = ROOT / rel
            if not src.is_dir():
                raise FileNotFoundError(f"{src}: data folder missing from the source tree (see MANIFEST.in)")
            dst = target / rel
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildPyWithData})
