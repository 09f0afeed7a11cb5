"""Result folders replaced all or nothing, the lock, stale leftovers, SIGTERM and the umask."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim.cli import main
from sim.core import outdir
from sim.core.errors import FileError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "fleet.nodes=1", "--set", "duration_s=40", "--set", "traffic.rate_rps=3", "--set", "warmup_s=0"]


def complete_set(out: Path) -> str:
    """The run id of ``out`` if it holds exactly the files of its manifest, with their hashes; else fail."""
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest["files"]), f"files {sorted(on_disk)} vs manifest {sorted(manifest['files'])}"
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == meta["sha256"], name
    return manifest["run_id"]


def _capsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "sim", *args]


WRITER = """
import sys, uuid
from pathlib import Path
from sim.core.outdir import result_folder
out = Path(sys.argv[1])
print("ready", flush=True)  # imports done: the random kill instant counts from here, not from process start
while True:
    with result_folder(out) as st:
        run = uuid.uuid4().hex
        for i in range(30):
            (st / f"table_{i}.csv").write_text((run + "\\n") * 2000)
"""


def test_sigkill_at_random_instants_leaves_old_or_new_set(tmp_path: Path) -> None:
    """SIGKILL a process replacing its result folder over and over at many random instants: the folder always
    holds one complete set (every file of one manifest, nothing else), and the next writer cleans up."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("first")
    rng = random.Random(11)
    ids = {complete_set(out)}
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ids.add(complete_set(out))  # the complete old set or the complete new set, never a mix
    assert len(ids) > 5  # many kills fell after at least one swap
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("last")
    complete_set(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_sigkill_real_run_while_writing(tmp_path: Path) -> None:
    """The same with `capsim run` itself, killed at a random instant of its writing phase."""
    out = tmp_path / "out"
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("old")
    old = complete_set(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_capsim("run", *SMALL, "--out", str(out)), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / f".out.tmp-{proc.pid}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not any(staging.glob("*")):
        time.sleep(0.01)
    time.sleep(random.Random(3).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert complete_set(out) in (old, json.loads((out / "manifest.json").read_text())["run_id"])
    outdir.recover(out)  # what the next run does first
    complete_set(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_fallback_swap_interrupted_between_renames_is_recovered(tmp_path: Path, monkeypatch) -> None:
    """Without renameat2, a kill between renaming the old set aside and the new set in leaves no folder; the
    next writer (or recover) puts the old set back."""
    out = tmp_path / "out"
    with outdir.result_folder(out) as st:
        (st / "a.json").write_text("old")
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def dying_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL between the renames (no cleanup runs after it)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", dying_rename)
    monkeypatch.setattr(outdir.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    with pytest.raises(KeyboardInterrupt), outdir.result_folder(out) as st:
        (st / "a.json").write_text("new")
    monkeypatch.undo()
    assert not out.exists()
    # pretend the leftovers belong to a dead process
    for p in tmp_path.iterdir():
        if p.name.startswith(".out.") and p.name != ".out.lock":
            p.rename(p.with_name(p.name.rsplit("-", 1)[0] + "-99999999"))
    outdir.recover(out)
    assert (out / "a.json").read_text() == "old" and complete_set(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_exchange_swap_keeps_folder_at_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for text in ("one", "two", "three"):
        with outdir.result_folder(out) as st:
            (st / "summary.json").write_text(text)
            assert (not out.exists()) or (out / "summary.json").read_text() != text
        assert (out / "summary.json").read_text() == text
        complete_set(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_failure_inside_leaves_old_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("old")
    with pytest.raises(RuntimeError), outdir.result_folder(out) as st:
        (st / "summary.json").write_text("new")
        raise RuntimeError("boom")
    assert (out / "summary.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_second_writer_fails_with_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with outdir.locked(tmp_path / "out"):
        res = CliRunner().invoke(main, ["run", *SMALL, "--out", "out"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "another capsim command is writing this folder" in lines[0]
    assert not (tmp_path / "out").exists()


def test_foreign_folder_is_not_replaced(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    res = CliRunner().invoke(main, ["run", *SMALL, "--out", "mine"])
    assert res.exit_code == 2 and "files capsim did not write" in res.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    res = CliRunner().invoke(main, ["run", *SMALL, "--out", "."])
    assert res.exit_code == 2 and "working folder" in res.stderr


def test_stale_leftovers_of_dead_processes_are_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    dead = out / ".requests.parquet.99999999.tmp"  # left by a killed `run --stream` of an older capsim
    live = out / f".requests.parquet.{os.getpid()}.tmp"
    dead.write_bytes(b"x" * 100)
    live.write_bytes(b"x")
    (tmp_path / ".out.tmp-99999999").mkdir()
    (tmp_path / ".out.tmp-99999999" / "half.parquet").write_bytes(b"x")
    outdir.recover(out)
    assert not dead.exists() and live.exists()
    assert not (tmp_path / ".out.tmp-99999999").exists()


def test_files_follow_umask(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        res = CliRunner().invoke(main, ["run", *SMALL, "--out", "out"])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids |= {int(x) for x in (task / "children").read_text().split()}
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_sigterm_sweep_stops_workers_keeps_points_writes_tables(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: t\nbase: {name: b, duration_s: 400, seed: 1, traffic: {rate_rps: 30, classes: [{name: c,"
                   " share: 1, input_tokens: {dist: fixed, value: 300}, output_tokens: {dist: fixed, value: 100}}]},"
                   " fleet: {nodes: 2}}\naxes: {fleet.nodes: [1, 2, 3, 4, 5, 6, 7, 8]}\nseeds: 1\n")
    out = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_capsim("sweep", str(exp), "--workers", "2", "--out", str(out)), env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((out / "points").glob("*.json")):
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "the sweep should be running pool workers"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"orphaned workers {alive}"
    assert (out / "results.csv").exists() and list((out / "points").glob("*.json"))
    assert not list(out.rglob(".*.tmp"))


def test_sigterm_stream_run_leaves_old_results_and_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("old")
    before = complete_set(out)
    proc = subprocess.Popen(_capsim("run", "--set", "duration_s=100000", "--stream", "--out", str(out)), env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = tmp_path / f".out.tmp-{proc.pid}"
    deadline = time.time() + 30
    while time.time() < deadline and not staging.exists():
        time.sleep(0.05)
    assert staging.exists(), "the run should have started writing"
    time.sleep(1.0)  # into the simulation (the streamed file starts after 65,536 requests on a fast machine)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines() == ["capsim: interrupted"], err
    assert complete_set(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_file_error_names_path_and_problem() -> None:
    import errno

    err = FileError.from_os(OSError(errno.EROFS, "Read-only file system", "/x/summary.json"))
    assert str(err) == "/x/summary.json: read-only file system"
    err = FileError.from_os(OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
                            "/x/r.parquet")
    assert str(err) == "/x/r.parquet: no space left on device"


def test_interrupted_stream_removes_its_temporary_file(tmp_path: Path) -> None:
    """Ctrl-C / SIGTERM (a KeyboardInterrupt) while streaming: the partial Parquet file is removed."""
    from scenarios import make_scenario

    from sim.metrics.streaming import run_streaming

    seen = []

    def progress(t_s: float, duration_s: float) -> None:
        seen.extend(tmp_path.glob(".requests.parquet.*.tmp"))
        if seen:
            raise KeyboardInterrupt

    sc = make_scenario(**{"duration_s": 600, "traffic.rate_rps": 20.0})
    with pytest.raises(KeyboardInterrupt):
        run_streaming(sc, tmp_path / "requests.parquet", progress, chunk_rows=50)
    assert seen, "the streamed file should have been started"
    assert not list(tmp_path.iterdir())


def test_nested_result_folders_are_carried_over(tmp_path: Path, monkeypatch) -> None:
    """`capsim size` writes out/size/ and `capsim run` writes out/: replacing out keeps out/size, also when
    the writer is killed right after the swap (the next writer carries it over)."""
    out = tmp_path / "out"
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("one")
    with outdir.result_folder(out / "size") as st:
        (st / "sizing.json").write_text("sized")
    (out / "sweeps" / "x" / "points").mkdir(parents=True)
    (out / "sweeps" / "x" / "points" / "k.json").write_text("point")
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("two")
    assert (out / "summary.json").read_text() == "two"
    assert (out / "size" / "sizing.json").read_text() == "sized" and complete_set(out / "size")
    assert (out / "sweeps" / "x" / "points" / "k.json").read_text() == "point"
    monkeypatch.setattr(outdir, "_discard_previous", lambda previous, out: None)  # killed right after the swap
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text("three")
    monkeypatch.undo()
    assert (out / "summary.json").read_text() == "three" and not (out / "size").exists()
    outdir.recover(out)
    assert (out / "size" / "sizing.json").read_text() == "sized"
    assert (out / "sweeps" / "x" / "points" / "k.json").read_text() == "point"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]
