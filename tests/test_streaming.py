"""Streaming metrics: same summary as metrics.summarize (percentiles within the histogram's bound), streamed
Parquet equal to the in-memory request table, mergeable histograms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics.streaming import DEFAULT_REL_ERROR, LogHistogram, StreamingCollector, run_streaming
from sim.runner.pipeline import run_scenario
from sim.runner.simulation import simulate


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.fixture(scope="module")
def busy(request):
    """A loaded two-class scenario with warm-up, an E2E target and rejections (prompts over max_model_len)."""
    from scenarios import make_scenario

    sc = make_scenario(**{
        "duration_s": 90, "warmup_s": 10, "traffic.rate_rps": 18.0, "fleet.nodes": 1,
        "fleet.engine": {"max_model_len": 4096},
        "slo": {"ttft_p95_s": 0.5, "tpot_p95_s": 0.05, "e2e_p95_s": 8.0},
        "traffic.classes": [
            {"name": "chat", "share": 0.7,
             "input_tokens": {"dist": "lognormal", "median": 400, "p95": 3000, "max": 9000},
             "output_tokens": {"dist": "lognormal", "median": 120, "p95": 500, "max": 2000}},
            {"name": "one", "share": 0.3, "input_tokens": {"dist": "fixed", "value": 200},
             "output_tokens": {"dist": "fixed", "value": 1}, "slo": {"ttft_p95_s": 0.3}},
        ],
    })
    return sc


@pytest.fixture(scope="module")
def spilling(busy):
    """``busy`` with a hosted API taking what would wait > 0.3 s, and a deferrable batch class."""
    raw = busy.model_dump()
    raw["api"] = {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.6}
    raw["spill"] = {"policy": "queue_wait", "max_wait_s": 0.3}
    raw["traffic"]["classes"][0]["share"] = 0.5  # shares sum to 1 with the batch class
    raw["traffic"]["classes"].append({
        "name": "batch", "share": 0.2, "input_tokens": {"dist": "fixed", "value": 800},
        "output_tokens": {"dist": "fixed", "value": 200}, "deferrable": {"deadline_s": 60, "slack_s": 20}})
    from sim.core.config import validate_scenario

    return validate_scenario(raw, "test")


@pytest.fixture(scope="module")
def impatient(busy):
    """``busy`` with non-streaming chat clients that give up after 5 s and retry twice."""
    raw = busy.model_dump()
    raw["traffic"]["classes"][0]["client"] = {"timeout_s": 5.0, "stream": False, "retries": 2, "backoff_s": 0.5,
                                              "jitter": 0.5}
    from sim.core.config import validate_scenario

    return validate_scenario(raw, "test")


@pytest.fixture(scope="module")
def pooled(busy):
    """``busy`` on two pools of different GPUs serving 8B chat and a pool of Qwen3-30B-A3B serving the ``one`` class
    (per-pool and per-model sections, a pool column)."""
    raw = busy.model_dump()
    raw["fleet"]["nodes"] = 3
    raw["fleet"]["pools"] = [{"name": "h100", "nodes": 1}, {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 1},
                             {"name": "moe", "model": "Qwen3-30B-A3B", "nodes": 1}]
    raw["traffic"]["classes"][1]["model"] = "Qwen3-30B-A3B"
    raw["router"] = {"policy": "weighted_least_work"}
    from sim.core.config import validate_scenario

    return validate_scenario(raw, "test")


@pytest.fixture(scope="module")
def disaggregated(busy):
    """``busy`` on one prefill and two decode nodes over InfiniBand (the hand-off columns of the table)."""
    raw = busy.model_dump()
    raw["fleet"]["nodes"] = 3
    raw["fleet"]["pools"] = [{"name": "p", "role": "prefill", "nodes": 1, "interconnect": {"kind": "infiniband"}},
                             {"name": "d", "role": "decode", "nodes": 2}]
    from sim.core.config import validate_scenario

    return validate_scenario(raw, "test")


@pytest.mark.parametrize("which", ["busy", "spilling", "impatient", "pooled", "disaggregated"])
def test_summary_matches_summarize(which, request, tmp_path):
    sc = request.getfixturevalue(which)
    exact = run_scenario(sc)
    st_out = run_streaming(sc, tmp_path / "req.parquet", chunk_rows=97)  # many partial chunks
    a, b = flat(exact.summary.to_json()), flat(st_out.summary.to_json())
    assert a.keys() == b.keys()
    assert a["requests.rejected"] > 0 and a["requests.completed"] > 1000
    if which == "spilling":
        assert a["spill.requests"] > 0 and a["batch.arrived"] > 0 and a["requests.in_flight"] == 0
    if which == "impatient":
        assert a["requests.timed_out"] > 0 and a["requests.retries"] > 0
    if which in ("pooled", "disaggregated"):  # every pool and model section streamed too (none left empty)
        assert a["requests.in_flight"] == 0
        assert all(p.requests.completed > 0 for name, p in exact.summary.pools.items() if name != "p")
        assert len(exact.summary.models) == (2 if which == "pooled" else 1)
        pd.testing.assert_frame_equal(st_out.timeseries, exact.timeseries)  # per-pool series: the same code
        pd.testing.assert_frame_equal(st_out.timeseries_nodes, exact.timeseries_nodes)
    assert st_out.result.requests == []  # nothing kept per request
    for k in a:
        pct = (k.split(".")[-1] in ("p50", "p90", "p95", "p99")) or k.endswith(".actual")
        if k.startswith("slo.worst_window.") and k.endswith("_p95_s") and a[k] is not None:
            assert b[k] == pytest.approx(a[k], rel=0.0116), k  # per-window histograms: 100 bins per decade
        elif k == "slo.windows":
            assert [w["arrived"] for w in b[k]] == [w["arrived"] for w in a[k]]
            assert [w["attainment"] for w in b[k]] == pytest.approx([w["attainment"] for w in a[k]], rel=1e-9)
        elif pct and a[k] is not None:
            assert b[k] == pytest.approx(a[k], rel=DEFAULT_REL_ERROR * 1.0001, abs=1e-6), k
        elif isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k
        else:
            assert b[k] == a[k], k


@pytest.mark.parametrize("which", ["busy", "impatient", "pooled", "disaggregated"])
def test_streamed_parquet_equals_request_table(which, request, tmp_path):
    sc = request.getfixturevalue(which)
    exact = run_scenario(sc).requests
    out = run_streaming(sc, tmp_path / "r.parquet", chunk_rows=500)
    got = pd.read_parquet(out.requests_path).sort_values("request_id").reset_index(drop=True)
    want = exact[exact["status"] != "in_flight"].reset_index(drop=True)
    assert out.requests_written == len(got) == len(want)
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if isinstance(want[c].dtype, pd.CategoricalDtype):
            assert list(got[c].astype(str)) == list(want[c].astype(str)), c
        else:
            np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_run_leaves_no_partial_file(busy, tmp_path):
    target = tmp_path / "r.parquet"

    def boom(t_s: float, duration_s: float) -> None:
        if t_s > 30:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_streaming(busy, target, progress=boom, chunk_rows=50)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_collector_buffer_is_bounded(busy):
    col = StreamingCollector(busy, chunk_rows=64)
    peak = [0]

    def on_done(req) -> None:
        col(req)
        peak[0] = max(peak[0], len(col._buf))

    res = simulate(busy, keep_requests=False, on_request_done=on_done)
    col.flush()
    assert peak[0] < 64 and res.requests == []
    assert col.completed == res.counts()["completed"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-5, 1e5), min_size=1, max_size=400), st.integers(0, 40))
def test_histogram_quantiles_within_relative_bound(values, zeros):
    x = np.asarray(values + [0.0] * zeros)
    h = LogHistogram()
    h.add(x)
    pcts = [0, 1, 25, 50, 90, 95, 99, 99.9, 100]
    for p, got in zip(pcts, h.quantiles(pcts)):
        want = float(np.percentile(x, p))
        assert abs(got - want) <= h.rel_error * want * (1 + 1e-9) + 1e-12, (p, got, want)
    assert h.mean() == pytest.approx(x.mean())
    assert h.rel_error == pytest.approx(DEFAULT_REL_ERROR) and h.rel_error < 0.0012


def test_histogram_merge_and_round_trip():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 2, 5000), rng.lognormal(-3, 1, 3000)
    ha, hb, hab = LogHistogram(), LogHistogram(), LogHistogram()
    ha.add(a)
    hb.add(b)
    hab.add(np.concatenate([a, b]))
    ha.merge(hb)
    assert ha.total == hab.total and np.array_equal(ha.counts, hab.counts)
    assert ha.quantiles([50, 99]) == hab.quantiles([50, 99])
    back = LogHistogram.from_dict(hab.to_dict())
    assert np.array_equal(back.counts, hab.counts) and back.sum == hab.sum
    with pytest.raises(ValueError):
        ha.merge(LogHistogram(bins_per_decade=10))


def test_histogram_edges():
    h = LogHistogram(min_value=1e-3, max_value=10, bins_per_decade=100)
    assert h.quantiles([50]) == [None] and h.stats()["mean"] is None
    h.add(np.array([np.nan, -1.0, 0.0, 5e-4, 50.0, 1.0]))
    assert h.total == 5  # NaN ignored
    q = h.quantiles([0, 100])
    assert q[0] == 0.0 and q[1] == 10.0  # below min → 0, overflow → max_value
    assert math.isclose(h.quantiles([75])[0], 1.0, rel_tol=h.rel_error)


@pytest.mark.parametrize("which", ["busy", "spilling"])
def test_the_lean_table_a_summary_only_run_reduces_is_the_full_table_less_the_unread_columns(which, request):
    """Without a Parquet file the collector tabulates each chunk without the columns its reduction never reads;
    the rest is the full table, column for column (rejected and spilled requests, NaNs included)."""
    from sim.metrics.tables import LEAN_SKIPPED, requests_table

    res = run_scenario(request.getfixturevalue(which)).result
    full, lean = requests_table(res), requests_table(res, lean=True)
    assert (full["status"] == "rejected").any() and full["ttft_s"].isna().any()
    assert list(lean.columns) == [c for c in full.columns if c not in LEAN_SKIPPED]
    assert lean.equals(full.drop(columns=list(LEAN_SKIPPED)))


@pytest.mark.parametrize("which", ["busy", "pooled"])
def test_requests_tabulated_early_reduce_to_the_same_summary_and_file(which, request, tmp_path, monkeypatch):
    """The collector tabulates finished requests every SUB_ROWS (dropping the objects) and reduces every chunk_rows:
    the chunks, so the summary and the Parquet file, are those of tabulating each chunk at once."""
    import json

    import sim.metrics.streaming as streaming

    sc = request.getfixturevalue(which)
    once = run_streaming(sc, tmp_path / "a.parquet", chunk_rows=97)
    monkeypatch.setattr(streaming, "SUB_ROWS", 7)
    early = run_streaming(sc, tmp_path / "b.parquet", chunk_rows=97)
    lean = run_streaming(sc, None, chunk_rows=97)
    a, b, c = (json.dumps(x.summary.to_json()) for x in (once, early, lean))
    assert a == b == c
    assert pd.read_parquet(tmp_path / "a.parquet").equals(pd.read_parquet(tmp_path / "b.parquet"))
