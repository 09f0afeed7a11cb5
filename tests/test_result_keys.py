"""Result caches (sweep points, plan points) are keyed by everything that determines a result: a user's edit of
a GPU profile or a change of the simulator's code must never reuse a cached result computed before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from scenarios import make_scenario

from sim.core import fingerprint
from sim.plan.search import scenario_key
from sim.sweep.experiment import point_key

ROOT = Path(__file__).resolve().parent.parent


def _home_with_h100(tmp_path: Path, name: str, usd_per_gpu_hour: float) -> Path:
    home = tmp_path / name
    gpus = home / "hardware_profiles" / "gpus"
    gpus.mkdir(parents=True)
    spec = yaml.safe_load((ROOT / "hardware_profiles" / "gpus" / "H100-SXM.yaml").read_text())
    spec["usd_per_gpu_hour"] = usd_per_gpu_hour
    (gpus / "H100-SXM.yaml").write_text(yaml.safe_dump(spec))
    return home


def test_keys_change_when_a_profile_is_edited(tmp_path, monkeypatch) -> None:
    sc = make_scenario()
    keys = []
    for name, price in (("a", 2.5), ("b", 3.5), ("c", 2.5)):
        monkeypatch.setenv("CAPSIM_HOME", str(_home_with_h100(tmp_path, name, price)))
        keys.append((point_key(sc), scenario_key(sc)))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    assert keys[0] == keys[2]  # same content in another folder: same key


def test_keys_change_with_the_code(tmp_path, monkeypatch) -> None:
    sc = make_scenario()
    before = (point_key(sc), scenario_key(sc))
    assert before == (point_key(sc), scenario_key(sc))
    fake = tmp_path / "sim"
    shutil.copytree(fingerprint._PACKAGE, fake, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    (fake / "perf" / "model.py").write_text((fake / "perf" / "model.py").read_text() + "\n# a local edit\n")
    monkeypatch.setattr(fingerprint, "_PACKAGE", fake)
    fingerprint.code_fingerprint.cache_clear()
    try:
        after = (point_key(sc), scenario_key(sc))
    finally:
        fingerprint.code_fingerprint.cache_clear()
    assert after[0] != before[0] and after[1] != before[1]
