"""Sweeps: experiment files, point keys, the shared runner (in-process / process pool / Dask), resume after a
kill, failure records and the tidy tables."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.core.config import apply_overrides
from sim.core.errors import ConfigError
from sim.runner.executor import ExecutorSpec, iter_outcomes, map_summaries
from sim.sweep import load_experiment, run_sweep
from sim.sweep.experiment import yaml_value
from sim.sweep.store import PointStore

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "name": "tiny",
    "duration_s": 30,
    "seed": 7,
    "traffic": {
        "rate_rps": 4.0,
        "classes": [{"name": "chat", "share": 1.0,
                     "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 8000},
                     "output_tokens": {"dist": "lognormal", "median": 80, "p95": 300, "max": 1000}}],
    },
    "fleet": {"nodes": 1, "gpu": "H100-SXM", "model": "Llama-3.1-8B"},
}


def write_experiment(tmp_path: Path, filename: str = "exp.yaml", **fields) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"name": "tiny-sweep", "base": "base.yaml", "axes": {"fleet.nodes": [1, 2], "traffic.rate_rps": [3.0, 6.5]},
            "seeds": [1, 2]}
    spec.update(fields)
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table without what legitimately differs between executors (wall time)."""
    return df.drop(columns=["wall_s"]).reset_index(drop=True)


# --- experiment file ---------------------------------------------------------------------------------------
def test_points_grid_order_seeds_and_keys(tmp_path):
    exp = load_experiment(write_experiment(tmp_path))
    assert exp.axis_columns == ["fleet.nodes", "traffic.rate_rps"]
    assert len(exp.points) == 8 and exp.n_grid == 4 and exp.seeds == [1, 2]
    assert [(p.axes["fleet.nodes"], p.axes["traffic.rate_rps"], p.seed) for p in exp.points[:3]] == [
        (1, 3.0, 1), (1, 3.0, 2), (1, 6.5, 1)]
    p = exp.points[3]
    assert p.scenario.fleet.nodes == 1 and p.scenario.traffic.rate_rps == 6.5 and p.scenario.seed == 2
    assert len({q.key for q in exp.points}) == 8  # seeds and axes change the key
    # the key depends on the resolved scenario only: same scenario in another experiment → same key
    other = load_experiment(write_experiment(tmp_path, "other.yaml", name="renamed",
                                             axes={"traffic.rate_rps": [6.5], "fleet.nodes": [1]}, seeds=[2]))
    assert other.points[0].key == p.key
    # ... and changes with the metrics mode
    assert load_experiment(write_experiment(tmp_path), metrics="streaming").points[3].key != p.key


def test_seed_count_linked_axes_and_set(tmp_path):
    path = write_experiment(tmp_path, seeds=3, set=["duration_s=20"],
                            axes={"hw": [{"fleet.gpu": "H100-SXM", "fleet.gpus_per_node": 1},
                                         {"fleet.gpu": "H100-SXM", "fleet.gpus_per_node": 2}]})
    exp = load_experiment(path, overrides=["traffic.rate_rps=2"])
    assert exp.seeds == [7, 8, 9]  # a count starts at the base scenario's seed
    assert exp.axis_columns == ["fleet.gpu", "fleet.gpus_per_node"]
    assert [p.scenario.fleet.gpus_per_node for p in exp.points] == [1, 1, 1, 2, 2, 2]
    assert all(p.scenario.duration_s == 20 and p.scenario.traffic.rate_rps == 2 for p in exp.points)


def test_no_axes_is_one_point_per_seed(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={}, seeds=2))
    assert len(exp.points) == 2 and exp.axis_columns == []


@pytest.mark.parametrize("fields, where, problem", [
    ({"axes": {"traffic.rate_rps": [1, -2]}}, "point traffic.rate_rps=-2", "greater than 0"),
    ({"axes": {"fleet.nodez": [1]}}, "fleet.nodez", "unknown key"),
    ({"axes": {"fleet.nodes": []}}, "axes", "no values"),
    ({"seeds": [1, 1]}, "seeds", "distinct"),
    ({"axes": {"seed": [1, 2]}}, "axes", "seeds"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"base": "missing.yaml"}, "missing.yaml", "file not found"),
    ({"axes": {"a": [{"fleet.nodes": 1}], "fleet.nodes": [2]}}, "axes.fleet.nodes", "another axis"),
])
def test_bad_experiment_is_one_config_error(tmp_path, fields, where, problem):
    with pytest.raises(ConfigError) as err:
        load_experiment(write_experiment(tmp_path, **fields))
    assert where in str(err.value) and problem in str(err.value)


def test_cli_bad_experiment_exits_2_with_one_line(tmp_path):
    res = CliRunner().invoke(main, ["sweep", str(write_experiment(tmp_path, seeds=[1, 1])), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "seeds" in res.output


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.booleans(),
                 st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.sampled_from("abc"), st.floats(0, 1e9))))
def test_axis_values_round_trip_through_set(value):
    """An axis value reaches the scenario exactly as written, whatever its YAML-ambiguous form."""
    assert apply_overrides({"x": None}, [f"x={yaml_value(value)}"])["x"] == value


# --- runner -----------------------------------------------------------------------------------------------
def test_dask_process_pool_and_in_process_give_the_same_table(tmp_path):
    """Done-means: a Dask LocalCluster via --scheduler, the process pool and in-process → identical tables."""
    distributed = pytest.importorskip("distributed")
    path = write_experiment(tmp_path)
    runner = CliRunner()
    tables = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  protocol="tcp") as cluster:
        for mode, args in (("dask", ["--scheduler", cluster.scheduler_address]), ("pool", ["--workers", "2"]),
                           ("inproc", ["--in-process"])):
            out = tmp_path / mode
            res = runner.invoke(main, ["sweep", str(path), "--out", str(out), "--json", *args])
            assert res.exit_code == 0, res.output
            report = json.loads(res.output)
            assert report["computed"] == 8 and report["failed"] == 0
            tables[mode] = pd.read_parquet(out / "results.parquet")
            rec = json.loads(next((out / "points").glob("*.json")).read_text())
            assert rec["executor"] == {"dask": "dask", "pool": "process", "inproc": "in_process"}[mode]
    assert len(tables["dask"]) == 8 and (tables["dask"]["status"] == "ok").all()
    assert tables["dask"]["latency.ttft_s.p95"].notna().all()
    pd.testing.assert_frame_equal(comparable(tables["dask"]), comparable(tables["pool"]))
    pd.testing.assert_frame_equal(comparable(tables["dask"]), comparable(tables["inproc"]))
    # CSV mirrors the Parquet table
    csv = pd.read_csv(tmp_path / "dask" / "results.csv")
    assert list(csv.columns) == list(tables["dask"].columns) and len(csv) == 8


def test_killed_sweep_resumes_computing_only_missing_points(tmp_path):
    """Done-means: SIGKILL a sweep midway; the re-run computes exactly the points that were not saved."""
    path = write_experiment(tmp_path, axes={"fleet.nodes": [1, 2], "traffic.rate_rps": [3.0, 4.0, 5.0, 6.0]},
                            seeds=[1, 2, 3], set=["duration_s=40"])
    out = tmp_path / "out"
    points = out / "points"
    proc = subprocess.Popen([sys.executable, "-m", "sim", "sweep", str(path), "--out", str(out), "--in-process"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(points.glob("*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in points.glob("*.json")}
    assert 3 <= len(saved) < 24, "the sweep should have been killed midway"
    assert not (out / "results.parquet").exists()
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--json", "--workers", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["cached"] == len(saved) and report["computed"] == 24 - len(saved)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in points.glob("*.json")}
    assert len(after) == 24 and all(after[k] == v for k, v in saved.items())  # old results untouched
    assert not list(out.rglob(".*.tmp"))
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 24 and (table["status"] == "ok").all()
    # the resumed table equals a clean one-go sweep
    clean = run_sweep(load_experiment(path), tmp_path / "clean", ExecutorSpec(workers=2)).table
    pd.testing.assert_frame_equal(comparable(table), comparable(clean))


def test_failing_point_is_recorded_and_does_not_stop_the_others(tmp_path):
    path = write_experiment(tmp_path, axes={"fleet.gpu": ["H100-SXM", "NoSuchGPU-9000"]}, seeds=[1])
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--workers", "2"])
    assert res.exit_code == 1
    table = pd.read_parquet(out / "results.parquet")
    assert list(table["status"]) == ["ok", "failed"]
    assert "NoSuchGPU-9000" in table["error"].iloc[1] and pd.isna(table["error"].iloc[0])
    assert math.isnan(table["latency.ttft_s.p95"].iloc[1]) and table["latency.ttft_s.p95"].iloc[0] > 0
    rec = json.loads((out / "points" / f"{table['key'].iloc[1]}.json").read_text())
    assert rec["status"] == "failed" and "Traceback" in rec["traceback"]
    # --skip-failed keeps the failure; the default retries only it
    exp = load_experiment(path)
    skipped = run_sweep(exp, out, ExecutorSpec(workers=1), retry_failed=False)
    assert skipped.computed == [] and len(skipped.failed) == 1
    retried = run_sweep(exp, out, ExecutorSpec(workers=1))
    assert retried.computed == [table["key"].iloc[1]] and len(retried.cached) == 1


def test_aggregates_mean_and_t_interval(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"fleet.nodes": [1, 2]}, seeds=[1, 2, 3]))
    rep = run_sweep(exp, tmp_path / "out", ExecutorSpec(workers=1))
    t, agg = rep.table, rep.aggregates
    assert set(agg.columns) >= {"point", "fleet.nodes", "metric", "n", "mean", "std", "ci95_low", "ci95_high"}
    x = t.loc[t["fleet.nodes"] == 2, "latency.e2e_s.p95"].to_numpy()
    row = agg[(agg["fleet.nodes"] == 2) & (agg["metric"] == "latency.e2e_s.p95")].iloc[0]
    half = 4.302652729911275 * x.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert row["n"] == 3 and row["mean"] == pytest.approx(x.mean())
    assert row["ci95_low"] == pytest.approx(x.mean() - half) and row["ci95_high"] == pytest.approx(x.mean() + half)
    assert x.std() > 0  # seeds really differ
    met = agg[(agg["fleet.nodes"] == 1) & (agg["metric"] == "slo.met")]
    assert len(met) == 1 and 0 <= met["mean"].iloc[0] <= 1
    assert (tmp_path / "out" / "aggregates.csv").exists() and (tmp_path / "out" / "aggregates.parquet").exists()


def test_streaming_points_and_saved_requests(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"fleet.nodes": [1]}, seeds=[1], metrics="streaming",
                                           save_requests=True))
    rep = run_sweep(exp, tmp_path / "out", ExecutorSpec(workers=1))
    key = exp.points[0].key
    req = pd.read_parquet(PointStore(tmp_path / "out").requests_path(key))
    assert len(req) == rep.table["requests.completed"].iloc[0] + rep.table["requests.rejected"].iloc[0]
    exact = load_experiment(write_experiment(tmp_path, axes={"fleet.nodes": [1]}, seeds=[1]))
    ex = run_sweep(exact, tmp_path / "exact", ExecutorSpec(workers=1)).table
    assert rep.table["requests.completed"].iloc[0] == ex["requests.completed"].iloc[0]
    assert rep.table["latency.ttft_s.p95"].iloc[0] == pytest.approx(ex["latency.ttft_s.p95"].iloc[0], rel=2e-3)


def test_dry_run_lists_todo_and_done(tmp_path):
    path = write_experiment(tmp_path, axes={"fleet.nodes": [1, 2]}, seeds=[1])
    out = tmp_path / "out"
    exp = load_experiment(path)
    run_sweep(exp, out, ExecutorSpec(workers=1))
    (out / "points" / f"{exp.points[1].key}.json").unlink()
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--dry-run"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].startswith("done") and lines[1].startswith("todo") and "1 of 2" in lines[2]


def test_corrupt_or_foreign_point_file_is_recomputed(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"fleet.nodes": [1]}, seeds=[1]))
    out = tmp_path / "out"
    store = PointStore(out)
    store.points_dir.mkdir(parents=True)
    store.path(exp.points[0].key).write_text("{not json")
    (store.points_dir / ".x.json.99999999.tmp").write_text("partial")
    rep = run_sweep(exp, out, ExecutorSpec(workers=1))
    assert rep.computed == [exp.points[0].key]
    assert not list(store.points_dir.glob(".*.tmp"))


# --- the shared runner --------------------------------------------------------------------------------------
def _square_or_die(x: int) -> int:
    if x == 3:
        os._exit(1)  # a worker process dies (as if OOM-killed)
    return x * x


def test_dead_worker_fails_only_its_task():
    outs = {o.index: o for o in iter_outcomes(_square_or_die, list(range(6)), ExecutorSpec(workers=2))}
    assert sorted(outs) == list(range(6))
    assert outs[3].error is not None and "died" in str(outs[3].error)
    assert all(outs[i].error is None and outs[i].value == i * i for i in (0, 1, 2, 4, 5))


def _die_fast_or_sleep(x: int) -> int:
    if x == 3:
        time.sleep(0.2)
        os._exit(1)  # dies while the slow bystanders are still running
    time.sleep(1.0)
    return x


def test_a_slow_bystander_of_a_dying_task_is_not_reported_failed():
    """Retried together, the culprit killed the retry pool too and its bystanders counted a second death;
    suspects now re-run one at a time, so only the culprit fails."""
    outs = {o.index: o for o in iter_outcomes(_die_fast_or_sleep, [3, 0, 1], ExecutorSpec(workers=2))}
    assert sorted(outs) == [0, 1, 2]
    assert outs[0].error is not None and "died" in str(outs[0].error)
    assert [outs[i].error for i in (1, 2)] == [None, None] and [outs[i].value for i in (1, 2)] == [0, 1]


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


@pytest.mark.parametrize("spec", [ExecutorSpec(workers=1), ExecutorSpec(workers=2)])
def test_iter_outcomes_delivers_errors_per_task(spec):
    outs = {o.index: o for o in iter_outcomes(_fail_on_two, list(range(5)), spec)}
    assert isinstance(outs[2].error, ValueError) and [outs[i].value for i in (0, 1, 3, 4)] == [0, 1, 3, 4]


def test_map_summaries_same_in_process_and_pool():
    from scenarios import make_scenario

    scs = [make_scenario(**{"duration_s": 20, "seed": s, "fleet.nodes": 1}) for s in (1, 2, 3)]
    a = map_summaries(scs, 1)
    b = map_summaries(scs, 2)
    assert a == b and [s.seed for s in a] == [1, 2, 3]
    with pytest.raises(ConfigError):
        map_summaries([scs[0], make_scenario(**{"fleet.gpu": "NoSuchGPU"})], 2)


def test_example_experiment_loads():
    exp = load_experiment(ROOT / "experiments" / "sweep_example.yaml")
    assert len(exp.points) == 2 * 3 * 2 * 3
    assert len({p.scenario.fleet.gpu for p in exp.points}) == 2
    assert sorted({p.scenario.fleet.nodes for p in exp.points}) == [2, 3, 4]
    assert len({json.dumps(p.axes, sort_keys=True) for p in exp.points}) == 12
    assert np.all([p.scenario.duration_s <= 600 for p in exp.points])


def test_progress_lines_without_a_terminal(tmp_path, monkeypatch):
    """Without a terminal a sweep reports progress as plain stderr lines (here every point: interval 0)."""
    import functools

    import sim.core.progress

    monkeypatch.setattr(sim.core.progress.Progress, "__init__",
                        functools.partialmethod(sim.core.progress.Progress.__init__, interval_s=0.0, tty=False))
    path = write_experiment(tmp_path, axes={"fleet.nodes": [1, 2]}, seeds=[1])
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("capsim sweep:")]
    assert lines and "2 of 2 runs" in lines[-1]


def test_cli_seeds_replicates_every_point_with_confidence_intervals(tmp_path):
    """``--seeds N`` replaces the file's seeds by the base seed and the next N − 1, the same for every point (as
    ``capsim compare --seeds``); the overview and sweep.html give mean ± 95 % CI, and name a field a linked axis
    leaves unset '(default)'."""
    path = write_experiment(tmp_path, axes={"v": [{"fleet.nodes": 1}, {"fleet.nodes": 2, "traffic.rate_rps": 3.0}]},
                            seeds=[1])
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["sweep", str(path), "--seeds", "3", "--out", str(out), "--in-process"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["seed"].unique()) == [7, 8, 9]  # BASE's seed 7 and the next two
    assert table.groupby("point")["seed"].apply(sorted).tolist() == [[7, 8, 9]] * 2
    assert "mean ± 95% CI across seeds" in res.output
    overview = res.output.split("mean ± 95% CI across seeds")[1]
    assert overview.count(" ± ") >= 2 * 4  # every interval of both points
    html = (out / "sweep.html").read_text()
    assert "mean ± 95 % confidence interval across seeds" in html and " ± " in html
    assert "(default)" in overview and "(default)" in html
    bad = CliRunner().invoke(main, ["sweep", str(path), "--seeds", "0", "--out", str(out), "--in-process"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_overview_says_why_a_point_misses_the_slo(tmp_path):
    """A point whose SLO is missed says why (as compare's 'missed by'): in results.csv per run, in the printed
    overview and in sweep.html per point."""
    path = write_experiment(tmp_path, axes={"slo.ttft_p95_s": [100.0, 0.001]}, seeds=[1])
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--in-process"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert table["slo_missed"].tolist()[0] == "" and "P95 TTFT" in table["slo_missed"].tolist()[1]
    assert "missed by" in res.output and "P95 TTFT" in res.output
    html = (out / "sweep.html").read_text()
    assert "<th>missed by</th>" in html and "P95 TTFT" in html
    assert "_ci95" not in html  # one seed: no interval columns
