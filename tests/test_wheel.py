"""Installed from a wheel, away from the source tree, capsim finds its shipped data and the user's own files.

Builds the wheel, installs it (no dependencies) into a fresh venv that borrows this environment's packages, and
runs the CLI from an empty folder. Slow (a wheel build, ~30–60 s), so marked ``wheel`` and left out of the
default run; ``.ci/wheel_check`` (called by ``.ci/run``) and ``make wheel-check`` run it.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the capsim wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp / "dist")],
                   check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("capsim-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    (purelib,) = env_dir.glob("lib/python*/site-packages")
    # dependencies come from this environment's site-packages, after the venv's own (a .pth line only adds the
    # folder: the editable install's finder there is not activated, so `sim` resolves to the wheel's copy)
    (purelib / "_borrowed_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                    "--no-deps", "-q", str(wheel)], check=True, cwd=tmp)
    return env_dir / "bin"


def _capsim(bin_dir: Path, cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CAPSIM_HOME", "PYTHONPATH")}
    proc = subprocess.run([str(bin_dir / "capsim"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"capsim {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_wheel_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    where = _capsim(installed, tmp_path, "--version")
    assert version("capsim") in where
    # the package really is the wheel's copy, with the data packed inside it
    probe = subprocess.run([str(installed / "python"), "-c", "import sim.core.paths as p; print(p.bundled_root())"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert probe.endswith(os.path.join("sim", "_data")) and not probe.startswith(str(ROOT))

    summary = json.loads(_capsim(installed, tmp_path, "run", "--json", "--out", "out"))
    assert summary["scenario"] == "default-chat-8b" and summary["requests"]["completed"] > 10_000
    assert (tmp_path / "out" / "report.html").is_file()

    assert "H100-SXM" in _capsim(installed, tmp_path, "catalog")
    assert "KV" in _capsim(installed, tmp_path, "profile", "--gpu", "H100-SXM", "--model", "llama-3.1-8b")
    assert "consumer_chat" in _capsim(installed, tmp_path, "traffic", "consumer_chat")
    # the published measurements ship too: capsim validate re-runs them
    assert "held" in _capsim(installed, tmp_path, "validate").lower()
    # a shipped example by its repository path (shaped traffic: the shape file is shipped too)
    week = json.loads(_capsim(installed, tmp_path, "run", "experiments/consumer_chat_week.yaml", "--json",
                              "--no-report", "--set", "duration_s=1200", "--set", "traffic.rate_rps=5"))
    assert week["scenario"] == "consumer-chat-week" and week["requests"]["arrived"] > 0
    # a user's scenario naming a shipped trace sample by its repository path
    mine = tmp_path / "azure.yaml"
    mine.write_text("name: azure\nduration_s: 60\ntraffic:\n  rate_rps: 2\n  classes:\n    - name: conv\n"
                    "      share: 1\n      input_tokens: {dist: empirical, file: data/traces/azure2023_conv.csv, "
                    "column: ContextTokens}\n      output_tokens: {dist: fixed, value: 50}\n"
                    "fleet: {nodes: 1, gpu: H100-SXM, model: Llama-3.1-8B}\n")
    assert json.loads(_capsim(installed, tmp_path, "run", str(mine), "--json", "--no-report"))["requests"]["arrived"]


def test_users_own_files_override_the_shipped_ones(installed: Path, tmp_path: Path) -> None:
    shapes = tmp_path / "traffic_shapes"
    shapes.mkdir()
    (shapes / "my_flat.yaml").write_text("components:\n  - {type: daily, peak_hour: 12, peak_to_trough: 1.5}\n")
    gpus = tmp_path / "hardware_profiles" / "gpus"
    gpus.mkdir(parents=True)
    shipped = (ROOT / "hardware_profiles" / "gpus" / "H100-SXM.yaml").read_text()
    (gpus / "H100-SXM.yaml").write_text(shipped.replace("usd_per_gpu_hour: 2.50", "usd_per_gpu_hour: 9.75"))
    exp = tmp_path / "experiments"
    exp.mkdir()
    default = (ROOT / "experiments" / "default.yaml").read_text()
    (exp / "default.yaml").write_text(default.replace("name: default-chat-8b", "name: my-default")
                                      .replace("duration_s: 600", "duration_s: 60"))

    assert "my_flat" in _capsim(installed, tmp_path, "traffic", "my_flat")
    summary = json.loads(_capsim(installed, tmp_path, "run", "--json", "--no-report"))
    assert summary["scenario"] == "my-default"  # ./experiments/default.yaml wins
    assert summary["cost"]["usd_per_gpu_hour"] == 9.75  # ./hardware_profiles/gpus/h100_sxm.yaml wins
