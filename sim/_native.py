"""Loads the optional compiled engine (``.native/``, built by ``make native``: ``tools/build_native.py``) when it
matches the sources.

A meta-path finder serves the modules in :data:`MODULES` from their mypyc-compiled extensions instead of their
``.py`` files, but only if ``.native/manifest.json`` was built by this Python and every listed source is unchanged
since (SHA-256); otherwise nothing is installed and the modules run as Python (a stale build warns once on stderr,
when an engine is first imported: after input validation, so a bad-input error stays one line).
``CAPSIM_PURE_PYTHON=1`` turns it off. A wheel or a checkout without ``.native/`` is pure Python.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ExtensionFileLoader, ModuleSpec
from pathlib import Path
from typing import Any

# the hot path of a run: compiled together (they call each other natively)
MODULES = ["sim.engine.node", "sim.engine.plan", "sim.engine.kv", "sim.engine.common", "sim.engine.admission",
           "sim.traffic.request", "sim.perf.model", "sim.fleet.router",
           "sim.engine.loop", "sim.fleet.fleet"]
# importing one of these means a simulation is about to run: where a stale build says so
ENGINE_ENTRY = frozenset({"sim.engine.node", "sim.engine.loop"})
NATIVE_DIR = ".native"
MANIFEST = "manifest.json"
_ROOT = Path(__file__).resolve().parent.parent


def source_digest(root: Path) -> dict[str, str]:
    """SHA-256 of each compiled module's source under ``root``."""
    return {m: hashlib.sha256((root / (m.replace(".", "/") + ".py")).read_bytes()).hexdigest() for m in MODULES}


class _NativeFinder(MetaPathFinder):
    """Finds the compiled extension of each listed module (and mypyc's shared runtime module)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        so = self.files.get(fullname)
        if so is None:
            return None
        return ModuleSpec(fullname, ExtensionFileLoader(fullname, str(so)), origin=str(so))


class _StaleNotice(MetaPathFinder):
    """Finds nothing; says once on stderr that the build is out of date, when an engine module is first imported."""

    def __init__(self, native: Path) -> None:
        self.native = native
        self.said = False

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname in ENGINE_ENTRY and not self.said:
            self.said = True
            print(f"capsim: {self.native} is out of date with its sources; running pure Python (rebuild: make native)",
                  file=sys.stderr)
        return None


def fresh_build(root: Path = _ROOT) -> dict[str, Any] | None:
    """The manifest of ``root``'s build if it was made by this Python from the sources as they are now, else None."""
    try:
        info: dict[str, Any] = json.loads((root / NATIVE_DIR / MANIFEST).read_text())
        ok = info["python"] == sys.implementation.cache_tag and info["sources"] == source_digest(root)
    except (OSError, ValueError, KeyError):
        return None
    return info if ok else None


def install(root: Path = _ROOT) -> bool:
    """Serve the compiled modules if a build matching the sources under ``root`` is present; True if installed."""
    native = root / NATIVE_DIR
    if os.environ.get("CAPSIM_PURE_PYTHON") or not (native / MANIFEST).is_file():
        return False
    info = fresh_build(root)
    if info is None:
        sys.meta_path.insert(0, _StaleNotice(native))  # first: it must see the import, then finds nothing
        return False
    files = {}
    for rel in info["files"]:
        name = rel.split(".")[0].replace("/", ".")  # sim/engine/node.cpython-311-x86_64-linux-gnu.so -> module
        files[name] = native / rel
    if not all(m in files and files[m].is_file() for m in MODULES):
        return False
    sys.meta_path.insert(0, _NativeFinder(files))
    return True


def compiled() -> bool:
    """Whether the engine modules in use are the compiled ones."""
    node = sys.modules.get("sim.engine.node")
    return node is not None and not str(getattr(node, "__file__", "")).endswith(".py")
