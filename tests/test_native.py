"""The optional compiled engine (``make native``, :mod:`sim._native`): used only when it matches the sources, and
byte-identical to pure Python (checked when a build is present; CI runs pure Python)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim import _native

ROOT = Path(__file__).resolve().parent.parent
BUILT = _native.fresh_build(ROOT) is not None

_RUN = """
import hashlib, json, sys
from sim import _native
from sim.core.config import load_scenario
from sim.metrics.tables import requests_table, summarize, timeseries_tables
from sim.runner.simulation import simulate
out = {"compiled": None}
for overrides in (["duration_s=120"], ["duration_s=90", "traffic.rate_rps=60",
                                        "fleet.engine.num_gpu_blocks_override=3000"]):
    r = simulate(load_scenario(sys.argv[1], overrides))
    req = requests_table(r)
    fleet_ts, nodes_ts = timeseries_tables(r)
    s = summarize(r, req, fleet_ts).to_json()
    s.pop("wall_s", None)
    out[" ".join(overrides)] = [json.dumps(s, sort_keys=True, default=str),
                                hashlib.sha256(req.to_csv().encode() + nodes_ts.to_csv().encode()).hexdigest()]
out["compiled"] = _native.compiled()
print(json.dumps(out))
"""


def _run(pure: bool) -> dict:
    env = dict(os.environ, CAPSIM_PURE_PYTHON="1") if pure else {
        k: v for k, v in os.environ.items() if k != "CAPSIM_PURE_PYTHON"}
    done = subprocess.run([sys.executable, "-c", _RUN, str(ROOT / "experiments" / "default.yaml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not BUILT, reason="no up-to-date compiled engine (make native)")
def test_compiled_engine_is_byte_identical_to_python() -> None:
    native, pure = _run(pure=False), _run(pure=True)
    assert native.pop("compiled") is True and pure.pop("compiled") is False
    assert native == pure


def _fake_build(root: Path, digest: dict[str, str]) -> None:
    for m in _native.MODULES:
        src = root / (m.replace(".", "/") + ".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / (m.replace(".", "/") + ".py"), src)
    native = root / _native.NATIVE_DIR
    native.mkdir()
    files = [m.replace(".", "/") + ".fake.so" for m in _native.MODULES]
    for f in files:
        (native / f).parent.mkdir(parents=True, exist_ok=True)
        (native / f).write_bytes(b"")
    (native / _native.MANIFEST).write_text(json.dumps({
        "python": sys.implementation.cache_tag, "modules": _native.MODULES, "files": files, "sources": digest}))


def test_a_stale_build_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CAPSIM_PURE_PYTHON", raising=False)
    installed: list[object] = []
    monkeypatch.setattr(sys, "meta_path", installed)
    digest = _native.source_digest(ROOT)
    stale = dict(digest, **{_native.MODULES[0]: "0" * 64})  # one source edited since the build
    _fake_build(tmp_path, stale)
    assert not _native.install(tmp_path)
    assert [type(f).__name__ for f in installed] == ["_StaleNotice"]  # serves nothing
    assert capsys.readouterr().err == ""  # silent until an engine is imported (after input validation)
    notice = installed.pop()
    assert notice.find_spec("sim.core.config") is None and capsys.readouterr().err == ""  # type: ignore[attr-defined]
    assert notice.find_spec("sim.engine.node") is None  # type: ignore[attr-defined]
    assert notice.find_spec("sim.engine.loop") is None  # type: ignore[attr-defined]
    assert capsys.readouterr().err.count("out of date") == 1  # once
    (tmp_path / _native.NATIVE_DIR / _native.MANIFEST).unlink()
    shutil.rmtree(tmp_path / _native.NATIVE_DIR)
    _fake_build(tmp_path, digest)  # matching sources: the finder is installed
    assert _native.install(tmp_path) and len(installed) == 1
    spec = installed[0].find_spec("sim.engine.node")  # type: ignore[attr-defined]
    assert spec is not None and spec.origin.endswith("node.fake.so")
    monkeypatch.setenv("CAPSIM_PURE_PYTHON", "1")
    assert not _native.install(tmp_path)


def _stale_checkout(tmp_path: Path) -> dict[str, str]:
    """A copy of the package beside a ``.native/`` built from other sources; the environment that runs it."""
    shutil.copytree(ROOT / "sim", tmp_path / "sim", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / _native.NATIVE_DIR).mkdir()
    (tmp_path / _native.NATIVE_DIR / _native.MANIFEST).write_text(json.dumps({
        "python": sys.implementation.cache_tag, "modules": _native.MODULES, "files": [],
        "sources": dict(_native.source_digest(ROOT), **{_native.MODULES[0]: "0" * 64})}))
    env = {k: v for k, v in os.environ.items() if k != "CAPSIM_PURE_PYTHON"}
    return dict(env, PYTHONPATH=str(tmp_path), CAPSIM_HOME=str(ROOT))  # profiles from the checkout


def test_a_stale_build_leaves_a_bad_input_error_one_line(tmp_path: Path) -> None:
    env = _stale_checkout(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration_s: -5\n")
    done = subprocess.run([sys.executable, "-m", "sim", "run", str(bad)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("capsim: error: ") and "duration_s" in done.stderr
    ok = subprocess.run([sys.executable, "-m", "sim", "run", "--set", "duration_s=5", "--set", "warmup_s=0",
                         "--set", "traffic.rate_rps=1", "--set", "fleet.nodes=1", "--out", str(tmp_path / "out"),
                         "--no-report"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.count("out of date") == 1  # a run that does simulate still says so, once
