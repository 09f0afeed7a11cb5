"""capsim plan at the edges: all-or-nothing result folder, the cache beside it, the lock, the estimate (--dry-run,
--force), --set, an experiment file, SIGTERM."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from scenarios import BASE

from sim.cli import main
from sim.core import outdir

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"gpus": ["H100-SXM"], "gpus_per_node": [1], "precisions": ["fp8"], "pricing": ["on_demand"], "seeds": 1,
         "explore": 1}


def _scenario_file(tmp_path: Path, duration_s: float = 60) -> Path:
    raw = copy.deepcopy(BASE)
    raw.update({"duration_s": duration_s, "warmup_s": 5, "plan": SPACE})
    raw["traffic"]["rate_rps"] = 6.0
    raw["slo"] = {"ttft_p95_s": 1.0, "tpot_p95_s": 0.05}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line_error(res, text: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in res.output, res.output


def test_result_folder_is_a_complete_set_and_the_cache_survives_a_rerun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sc = _scenario_file(tmp_path)
    args = ["plan", str(sc), "--out", "res", "-q", "--workers", "1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    manifest = json.loads((tmp_path / "res" / "manifest.json").read_text())
    assert {"plan.json", "plan.html", "winner.yaml"} <= set(manifest["files"])
    assert not any(k.startswith("cache") for k in manifest["files"]), "the cache is not part of the result set"
    cache = tmp_path / "res.cache"
    assert list(cache.rglob("*.json")), "points are cached beside the result folder"
    assert json.loads((tmp_path / "res" / "plan.json").read_text())["runs_computed"] > 0
    second = CliRunner().invoke(main, args)  # replaces res/ as a whole; every point comes from the cache
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "res" / "plan.json").read_text())
    assert again["runs_computed"] == 0 and again["runs_cached"] > 0
    assert json.loads((tmp_path / "res" / "manifest.json").read_text())["run_id"] != manifest["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".res")) == [".res.lock"]


def test_second_writer_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sc = _scenario_file(tmp_path)
    with outdir.locked(tmp_path / "res"):
        res = CliRunner().invoke(main, ["plan", str(sc), "--out", "res", "-q", "--workers", "1"])
    _one_line_error(res, "another capsim command is writing this folder")
    assert not (tmp_path / "res.cache").exists() or not list((tmp_path / "res.cache").rglob("*.json"))


def test_dry_run_prints_candidates_and_estimate_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sc = _scenario_file(tmp_path)
    res = CliRunner().invoke(main, ["plan", str(sc), "--dry-run", "--gpu", "H100-SXM", "--gpu", "L40S",
                                    "--precision", "bf16", "--precision", "fp8"])
    assert res.exit_code == 0, res.output
    assert "4 candidates" in res.output and "estimate:" in res.output and "runs" in res.output
    assert not (tmp_path / "out").exists()
    # --set reaches the candidate space: a 1 ms TTFT target rules every candidate out by lone latency
    tight = CliRunner().invoke(main, ["plan", str(sc), "--dry-run", "--set", "slo.ttft_p95_s=0.001"])
    assert tight.exit_code == 2 and "no candidate can meet the SLO" in tight.output


def test_estimate_beyond_the_machine_is_refused_unless_forced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sc = _scenario_file(tmp_path)
    huge = ["--set", "duration_s=1e9", "--out", "res", "-q"]
    res = CliRunner().invoke(main, ["plan", str(sc), *huge])
    _one_line_error(res, "estimate:")
    assert "--force" in res.output and not (tmp_path / "res").exists()
    monkeypatch.setattr("sim.plan.search.run_plan", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    forced = CliRunner().invoke(main, ["plan", str(sc), *huge, "--force"])
    assert forced.exit_code == 130, forced.output  # past the estimate (then stopped: the search is not run)
    assert not (tmp_path / "res").exists() and not list(tmp_path.glob(".res.tmp-*"))


def test_experiment_file_is_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["plan", str(ROOT / "experiments" / "hybrid_spill.yaml"), "--no-report"])
    _one_line_error(res, "this is an experiment file, not a scenario: use capsim compare")
    run = CliRunner().invoke(main, ["run", str(ROOT / "experiments" / "hybrid_spill.yaml"), "--no-report"])
    assert run.output == res.output  # the same error as capsim run


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids |= {int(x) for x in (task / "children").read_text().split()}
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_sigterm_stops_workers_exits_130_and_keeps_the_old_set(tmp_path):
    sc = _scenario_file(tmp_path, duration_s=3000)
    out = tmp_path / "res"
    with outdir.result_folder(out) as st:
        (st / "plan.json").write_text("old")
    before = json.loads((out / "manifest.json").read_text())["run_id"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sim", "plan", str(sc), "--out", str(out), "--workers", "2",
                             "--seeds", "2", "-q"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if workers:
            break
        time.sleep(0.05)
    assert workers, f"the plan should be running pool workers (exit {proc.poll()})"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines() == ["capsim: interrupted"], err
    time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"orphaned workers {alive}"
    assert json.loads((out / "manifest.json").read_text())["run_id"] == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".res")) == [".res.lock"]


def test_inherited_sigterm_handler_ends_a_forked_worker_quietly():
    """A pool worker forked before its initializer ran inherits the driver's SIGTERM-as-Ctrl-C handler: there,
    SIGTERM must end it by the signal (no KeyboardInterrupt, no traceback on the shared stderr)."""
    from sim.cli import _sigterm_as_interrupt_in

    handler = _sigterm_as_interrupt_in(os.getpid())
    child = os.fork()
    if child == 0:  # the "worker": the driver's handler, then SIGTERM
        try:
            signal.signal(signal.SIGTERM, handler)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            os._exit(3)  # the bug: Ctrl-C raised in the worker
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # in the driver itself it is Ctrl-C
        handler(signal.SIGTERM, None)
