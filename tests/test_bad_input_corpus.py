"""A corpus of bad inputs: config fields, scenario files, traces, command-line arguments and file-system faults.
Every case must end with exit code 2, exactly one line on stderr and no traceback (in-process, via click's
CliRunner; file-system faults are injected with monkeypatch)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim.cli import main
from sim.core import outdir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "duration_s=10", "--set", "warmup_s=0", "--set", "traffic.rate_rps=1", "--set", "fleet.nodes=1"]


def assert_one_line_exit_2(args: list[str], cwd: Path | None = None) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=True)
    err = res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in err and "Traceback" not in res.stdout
    assert res.exit_code == 2, f"exit {res.exit_code}: {err or res.stdout}"
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("capsim: error: ")
    return lines[0]


# --- config fields (`--set` on the embedded default) ----------------------------------------------------
BAD_SETS = [
    "duration_s=-1", "duration_s=0", "duration_s=abc", "duration_s=.nan", "duration_s=.inf", "duration_s=[1]",
    "duration_s={a: 1}", "duration_s=", "duration_s=1e12", "seed=x", "seed=1.5", "seed=[1]",
    "warmup_s=-1", "warmup_s=700", "warmup_s=x", "max_drain_s=-1", "max_drain_s=x", "name=[1, 2]",
    "traffic.rate_rps=-1", "traffic.rate_rps=0", "traffic.rate_rps=x", "traffic.rate_rps=.nan",
    "traffic.rate_rps=.inf", "traffic.rate_rps=1e9", "traffic.rate_rps=[1]",
    "traffic.classes.0.share=0", "traffic.classes.0.share=-1", "traffic.classes.0.share=0.9",
    "traffic.classes.0.share=x", "traffic.classes.1.share=0.5", "traffic.classes.2.share=0.3",
    "traffic.classes.0.input_tokens.dist=bogus", "traffic.classes.0.input_tokens.median=-5",
    "traffic.classes.0.input_tokens.p95=1", "traffic.classes.0.input_tokens.min=-1",
    "traffic.classes.0.input_tokens=5", "traffic.classes.0.output_tokens=x",
    "traffic.classes.0.output_tokens.median=0", "traffic.classes.0.input_tokens={dist: fixed, value: -3}",
    "traffic.classes.0.input_tokens={dist: fixed}", "traffic.classes.0.input_tokens={dist: empirical}",
    "traffic.classes.0.input_tokens={dist: empirical, file: nope.csv, column: x}",
    "traffic.classes.0.input_tokens={dist: pmf, file: nope.csv}",
    "traffic.classes.0.prefix_hit_rate=2", "traffic.classes.0.prefix_hit_rate=-0.1",
    "traffic.classes.0.prefix_tokens=-1", "traffic.classes.0.name=rag", "traffic.classes.0.bogus=1",
    "traffic.classes.0.share_by_hour=[1, 2]", "traffic.classes.0.share_by_hour=x",
    "traffic.classes.0.priority=x", "traffic.classes.0.deferrable={deadline_s: -1}",
    "traffic.classes.0.slo={ttft_p95_s: -1}",
    "traffic.classes=[]", "traffic.classes=x", "traffic.classes.9.share=1", "traffic.classes.x.share=1",
    "traffic.shape=no_such_shape", "traffic.shape=42", "traffic.shape={daily: {amplitude: x}}",
    "traffic.shape={bogus: 1}", "traffic.dispersion.model=bogus", "traffic.dispersion={model: gamma, cv: -1}",
    "traffic.start_weekday=funday", "traffic.start_hour=25", "traffic.start_hour=-1",
    "traffic.trace={file: nope.csv}", "traffic.trace={file: x.csv, format: csv}",
    "traffic.trace={file: x.csv, time_scale: 0}", "traffic.trace={file: x.csv, window_s: [5, 1]}",
    "traffic.trace={file: x.csv, format: parquet}", "traffic=5", "traffic.bogus=1",
    "fleet.nodes=-1", "fleet.nodes=x", "fleet.nodes=1.5", "fleet.nodes=100000", "fleet.nodes=0",
    "fleet.gpu=NoSuchGPU", "fleet.model=NoSuchModel", "fleet.gpu=[1]",
    "fleet.gpus_per_node=0", "fleet.gpus_per_node=-2", "fleet.gpus_per_node=3", "fleet.gpus_per_node=5",
    "fleet.gpus_per_node=6", "fleet.gpus_per_node=7", "fleet.gpus_per_node=16", "fleet.gpus_per_node=64",
    "fleet.gpus_per_node=x", "fleet.weights=fp7", "fleet.kv_cache=xx", "fleet.weights=1",
    "fleet.model=Llama-3.1-405B", "fleet.stack=bogus-stack", "fleet.engine_impl=slow", "fleet.bogus=1",
    "fleet.engine.max_num_seqs=0", "fleet.engine.max_num_seqs=-1", "fleet.engine.max_num_seqs=x",
    "fleet.engine.block_size=0", "fleet.engine.gpu_memory_utilization=0", "fleet.engine.gpu_memory_utilization=1.5",
    "fleet.engine.gpu_memory_utilization=-0.1", "fleet.engine.max_num_batched_tokens=0",
    "fleet.engine.scheduling_policy=lifo", "fleet.engine.chunked_prefill=maybe", "fleet.engine.max_model_len=0",
    "fleet.engine.activation_reserve_gb_per_gpu=-1", "fleet.engine.num_gpu_blocks_override=0",
    "fleet.engine.bogus=1", "fleet.spot.nodes=-1", "fleet.spot.evictions_per_node_hour=-1",
    "fleet.spot={nodes: 1, on_eviction: spill}", "fleet.on_demand.max_nodes=-1", "fleet.autoscaler.policy=bogus",
    "fleet.autoscaler.policy=target_utilisation", "fleet.autoscaler={policy: schedule}",
    "router.policy=random", "router=x", "spill.policy=bogus", "spill={policy: queue_wait, max_wait_s: 1}",
    "spill={policy: all_api}", "api={input_usd_per_mtok: -1, output_usd_per_mtok: 1}", "api=x",
    "api={provider: nobody, model: nothing}", "slo.ttft_p95_s=-1", "slo.tpot_p95_s=x", "slo.bogus=1",
    "pricing.mode=leased", "pricing.usd_per_gpu_hour=-2", "pricing.owned.pue=x",
    "output.sample_interval_s=0", "output.sample_interval_s=-1", "output=x",
    "fleet.parallelism={expert: 8}", "fleet.parallelism.expert=0", "fleet.parallelism={tensor: 3}",
    "fleet.parallelism.expert_imbalance=0.5", "fleet.speculative={method: magic, num_tokens: 3, acceptance_rate: 0.5}",
    "fleet.speculative={method: eagle, num_tokens: 3, acceptance_rate: 1.5}",
    "fleet.speculative={method: draft, num_tokens: 3, acceptance_rate: 0.5}",
    "fleet.speculative={method: draft, draft_model: nope, num_tokens: 2, acceptance_rate: 0.5}",
    "fleet.speculative={method: eagle, num_tokens: 4, acceptance_rate: 0.5, verify_tokens: 3}",
    "traffic.classes.0.spec_acceptance_rate=2",
    "foo=1", "fleet", "=3", "fleet.nodes=[1", "fleet.nodes={", "traffic.classes.0=5",
]


@pytest.mark.parametrize("item", BAD_SETS)
def test_bad_config_field(item: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_exit_2(["run", "--no-report", "--set", item])


# --- scenario files -----------------------------------------------------------------------------------
SCENARIO_FILES = {
    "binary": b"\x00\x01\x02\x89PNG\r\n" * 50,
    "latin1": "name: caf\xe9\nduration_s: 60\n".encode("latin-1"),
    "empty": b"",
    "only_comment": b"# nothing here\n",
    "list": b"- 1\n- 2\n",
    "scalar": b"42\n",
    "bad_yaml": b"name: [unclosed\nduration_s: 60\n",
    "tabs": b"name: x\n\tduration_s: 60\n",
    "unknown_top_key": b"name: x\nduration_s: 60\nbogus: 1\ntraffic: {rate_rps: 1, classes: []}\nfleet: {nodes: 1}\n",
    "missing_fleet": b"name: x\nduration_s: 60\ntraffic: {rate_rps: 1}\n",
    "missing_duration": b"name: x\ntraffic: {rate_rps: 1}\nfleet: {nodes: 1}\n",
    "compare_experiment": b"name: x\nbase: default.yaml\nstrategies: [{name: a}]\n",
    "sweep_experiment": b"name: x\nbase: default.yaml\naxes: {fleet.nodes: [1, 2]}\n",
}


@pytest.mark.parametrize("name", sorted(SCENARIO_FILES))
def test_bad_scenario_file(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_bytes(SCENARIO_FILES[name])
    line = assert_one_line_exit_2(["run", "--no-report", "s.yaml"])
    assert "s.yaml" in line


def test_experiment_file_given_to_run_names_the_commands() -> None:
    line = assert_one_line_exit_2(["run", "--no-report", str(ROOT / "experiments" / "hybrid_spill.yaml")])
    assert "experiment file" in line and "capsim compare" in line


@pytest.mark.parametrize("path", ["missing.yaml", "."])
def test_scenario_path_not_a_file(path: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_exit_2(["run", "--no-report", path])


# --- traces (as a scenario's traffic.trace, and as `capsim traffic` input) -----------------------------------
TRACES = {
    "zero_span.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n" + b"2023-11-16 18:15:46,100,10\n" * 20,
    "binary.csv": bytes(range(256)) * 40,
    "latin1.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,100,10\n\xe9\n".encode("latin-1"),
    "empty.csv": b"",
    "header_only.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n",
    "one_row.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,100,10\n",
    "non_numeric.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,abc,10\n"
                       b"2023-11-16 18:15:47,100,10\n",
    "bad_time.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,100,10\nnoon,100,10\n",
    "unknown_columns.csv": b"a,b,c\n1,2,3\n4,5,6\n",
    "zero_tokens.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,10\n"
                       b"2023-11-16 18:15:47,0,10\n",
    "bad.jsonl": b'{"timestamp": 1, "input_length": 5}\nnot json\n',
    "zero_span.jsonl": b'{"timestamp": 5, "input_length": 50, "output_length": 5, "hash_ids": [1]}\n' * 5,
    "binary.jsonl": b"\x00\xff\x00\xfe" * 100,
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_bad_trace_in_scenario(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(TRACES[name])
    line = assert_one_line_exit_2(["run", "--no-report", *TINY[:4], "--set", f"traffic={{trace: {{file: {name}}}}}"])
    assert name in line


@pytest.mark.parametrize("name", sorted(TRACES))
def test_bad_trace_to_traffic_command(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(TRACES[name])
    assert_one_line_exit_2(["traffic", name])


def test_zero_span_trace_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_bytes(TRACES["zero_span.csv"])
    line = assert_one_line_exit_2(["traffic", "t.csv"])
    assert "zero time span" in line


# --- command-line arguments of every command ------------------------------------------------------------
def _files(tmp_path: Path) -> None:
    (tmp_path / "bin.json").write_bytes(b"\x00\x01" * 100)
    (tmp_path / "latin1.csv").write_bytes("gpu,gpus\nH100\xe9,1\n".encode("latin-1"))
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "scenario.yaml").write_bytes((ROOT / "experiments" / "default.yaml").read_bytes())
    (tmp_path / "notjson.json").write_text("{not json")


BAD_ARGS = [
    ["bogus-command"], ["run", "--bogus"], ["run", "--seed", "x"], ["run", "--out"], ["run", "a.yaml", "b.yaml"],
    ["run", "--no-requests"], ["run", "--set"],  # --stream --no-report is valid: the summary only
    ["sweep"], ["sweep", "missing.yaml"], ["sweep", "scenario.yaml"], ["sweep", "bin.json"],
    ["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--workers", "0"],
    ["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--workers", "x"],
    ["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--in-process", "--scheduler", "tcp://x:1"],
    ["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--metrics", "approx"],
    ["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--set", "fleet.nodes=x"],
    ["compare"], ["compare", "missing.yaml"], ["compare", "scenario.yaml"], ["compare", "bin.json"],
    ["compare", str(ROOT / "experiments" / "hybrid_spill.yaml"), "--seeds", "x"],
    ["compare", str(ROOT / "experiments" / "hybrid_spill.yaml"), "--set", "duration_s=-5"],
    ["size", "--seeds", "0"], ["size", "--slo", "ttft"], ["size", "--slo", "ttft_p95_s=x"],
    ["size", "--rule", "bogus"], ["size", "--set", "fleet.nodes=x"], ["size", "missing.yaml"],
    ["size", "--slo", "ttft_p95_s=none", "--slo", "tpot_p95_s=none"], ["size", "bin.json"],
    ["profile"], ["profile", "--gpu", "Nope", "--model", "llama-3.1-8b"],
    ["profile", "--gpu", "H100-SXM", "--model", "nope"], ["profile", "--gpu", "H100-SXM"],
    ["profile", "--gpu", "H100-SXM", "--model", "llama-3.1-8b", "--weights", "fp7"],
    ["profile", "--gpu", "H100-SXM", "--model", "llama-3.1-405b"],
    ["profile", "--gpu", "H100-SXM", "--model", "llama-3.1-8b", "--gpus", "x"],
    ["calibrate"], ["calibrate", "missing.json"], ["calibrate", "bin.json"], ["calibrate", "latin1.csv"],
    ["calibrate", "empty.csv"], ["calibrate", "notjson.json"],
    ["traffic"], ["traffic", "no_such_shape"], ["traffic", "bin.json"], ["traffic", "consumer_chat", "--days", "x"],
    ["traffic", "consumer_chat", "--start-weekday", "funday"],
    ["catalog", "--bogus"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=[" ".join(a)[:60] for a in BAD_ARGS])
def test_bad_command_line(args: list[str], tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    assert_one_line_exit_2(args)


# --- file-system faults (injected), earlier results intact ----------------------------------------------
ERRNOS = [errno.EROFS, errno.ENOSPC, errno.EACCES, errno.ENOENT, errno.EDQUOT, errno.EIO]


@pytest.fixture
def previous(tmp_path, monkeypatch) -> Path:
    """A result folder from an earlier run, to be left intact."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with outdir.result_folder(out) as st:
        (st / "summary.json").write_text('{"earlier": true}\n')
    return out


def _intact(out: Path) -> None:
    assert (out / "summary.json").read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "summary.json"]
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".out")) == [".out.lock"]


@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
def test_fault_creating_staging_folder(code: int, previous: Path, monkeypatch) -> None:
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name.startswith(".out.tmp-"):
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    line = assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    assert ".out.tmp-" in line or "out" in line
    _intact(previous)


@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
def test_fault_opening_lock(code: int, previous: Path, monkeypatch) -> None:
    real = os.open

    def fake_open(path, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(outdir.os, "open", fake_open)
    assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    _intact(previous)


@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
def test_fault_writing_a_file(code: int, previous: Path, monkeypatch) -> None:
    import sim.core.atomic_io

    def fail_replace(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(sim.core.atomic_io.os, "replace", fail_replace)
    line = assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    assert ".parquet" in line or ".json" in line
    _intact(previous)


def test_disk_full_inside_pyarrow(previous: Path, monkeypatch) -> None:
    import pandas as pd

    def full(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    line = assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    assert line.endswith("no space left on device") and "requests.parquet" in line
    _intact(previous)


@pytest.mark.parametrize("code", [errno.EROFS])
def test_fault_swapping_in(code: int, previous: Path, monkeypatch) -> None:
    def fail(a, b):
        raise OSError(code, os.strerror(code), str(b))

    monkeypatch.setattr(outdir, "_exchange", fail)
    line = assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    assert "out" in line
    _intact(previous)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_fault_in_sweep_folder(code: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name == "points":
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert_one_line_exit_2(["sweep", str(ROOT / "experiments" / "sweep_example.yaml"), "--in-process",
                            "--out", "sw", "--set", "duration_s=30"])


def test_out_is_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("x")
    line = assert_one_line_exit_2(["run", *TINY, "--out", "out"])
    assert "is a file" in line or "not a folder" in line


def test_out_parent_is_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    assert_one_line_exit_2(["run", *TINY, "--out", "f/out"])


# --- the exit-code convention -------------------------------------------------------------------------------
def test_bare_capsim_prints_help() -> None:
    res = CliRunner().invoke(main, [])
    assert res.exit_code == 0 and "Usage: " in res.stdout and "COMMAND" in res.stdout


def test_interrupt_exits_130_and_keeps_previous_results(previous: Path, monkeypatch) -> None:
    import sim.runner.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.runner.pipeline, "run_scenario", interrupted)
    res = CliRunner().invoke(main, ["run", *TINY, "--out", "out"])
    assert res.exit_code == 130 and res.stderr.strip() == "capsim: interrupted"
    _intact(previous)


def test_internal_error_exits_1_with_traceback(previous: Path, monkeypatch) -> None:
    import sim.runner.pipeline

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sim.runner.pipeline, "run_scenario", bug)
    res = CliRunner().invoke(main, ["run", *TINY, "--out", "out"])
    assert res.exit_code == 1 and isinstance(res.exception, ZeroDivisionError)
    _intact(previous)
