"""Optional accelerator: compile the engine's hot modules with mypyc into ``.native/`` (``make native``).

The modules in :data:`sim._native.MODULES` (the fast node engine, its step plan, KV ledger and admission rule, the
request record and the step-time model) are pure Python, typed; mypyc (part of mypy) turns each into a C extension
with the same behaviour (same integer and IEEE float arithmetic: a run's ``summary.json`` is byte-identical either
way; ``tests/test_native.py`` checks it when a build is present). The extensions go to ``.native/`` at the
repository root, never beside the sources, with a manifest of the sources' hashes: :mod:`sim._native` loads them
only while every source is unchanged, so an edited module runs as Python until the next ``make native``.
Needs mypy and a C compiler (gcc or clang) and Python's headers; takes a few CPU-minutes.

    python tools/build_native.py          # build (or rebuild) .native/
    python tools/build_native.py --clean  # remove .native/ (pure Python again)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["CAPSIM_PURE_PYTHON"] = "1"  # the build reads the sources, never an older build

from sim._native import MANIFEST, MODULES, NATIVE_DIR, source_digest  # noqa: E402


def build() -> Path:
    from mypyc.build import mypycify
    from setuptools import Distribution

    os.chdir(ROOT)  # mypyc names modules by their path from here
    paths = [m.replace(".", "/") + ".py" for m in MODULES]
    with tempfile.TemporaryDirectory(prefix="capsim-native-") as tmp:
        exts = mypycify(paths, opt_level="3", target_dir=str(Path(tmp) / "c"))
        out = Path(tmp) / "lib"
        # a bare Distribution: setup() would read pyproject.toml, whose metadata this build does not need
        dist = Distribution({"name": "capsim-native", "ext_modules": exts, "script_name": "build_native.py",
                             "script_args": ["build_ext", "--build-lib", str(out), "--build-temp",
                                             str(Path(tmp) / "obj")]})
        dist.parse_command_line()
        dist.run_commands()
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*.so"))
        manifest = {"python": sys.implementation.cache_tag, "modules": MODULES, "files": files,
                    "sources": source_digest(ROOT)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        staged = ROOT / (NATIVE_DIR + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(out, staged)
    target = ROOT / NATIVE_DIR
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = ap.parse_args()
    if args.clean:
        shutil.rmtree(ROOT / NATIVE_DIR, ignore_errors=True)
        print(f"removed {NATIVE_DIR}/: pure Python")
        return
    target = build()
    print(f"compiled {len(MODULES)} modules into {target.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
