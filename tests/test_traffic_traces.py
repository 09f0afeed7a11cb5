"""Trace replay: the shipped traces replay exactly; readers, scaling, windows and loops."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sim.core.config import Traffic, validate_scenario
from sim.core.errors import ConfigError
from sim.traffic import read_trace, traffic_chunks
from sim.traffic.arrivals import arrival_chunks

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "data" / "traces"
# rows, mean rate (1 / mean inter-arrival = (rows − 1) / span), mean input, mean output — from data/traces/README.md
# (computed from the files)
SHIPPED = {
    "azure2023_code.csv": (8819, 2.566, 2047.8, 27.9),
    "azure2023_conv.csv": (19366, 5.530, 1154.7, 211.1),
    "mooncake_conversation.jsonl": (12031, 3.401, 12035.1, 342.6),
}


def independent_read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps (s), input and output tokens, parsed without capsim."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return (np.array([r["timestamp"] / 1000 for r in rows]), np.array([r["input_length"] for r in rows]),
                np.array([r["output_length"] for r in rows]))
    from datetime import datetime

    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    ts = np.array([datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in rows])
    return ts, np.array([int(r["ContextTokens"]) for r in rows]), np.array([int(r["GeneratedTokens"]) for r in rows])


def replay_all(traffic: dict, duration_s: float, seed: int = 0):
    tr = Traffic.model_validate(traffic)
    chunks = list(traffic_chunks(tr, ROOT, duration_s, seed))
    cat = lambda f: np.concatenate([getattr(c, f) for c in chunks])
    return cat("time_s"), cat("prompt_tokens"), cat("output_tokens"), cat("cached_tokens"), cat("class_idx")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_trace_replays_exactly(name: str) -> None:
    rows, rate, mean_in, mean_out = SHIPPED[name]
    ts, inp, out = independent_read(TRACES / name)
    t, p, o, c, _ = replay_all({"trace": {"file": f"data/traces/{name}"}}, 86400.0)
    assert len(t) == rows == len(ts)
    assert np.all(np.diff(t) >= 0) and t[0] == 0.0
    span = ts.max() - ts.min()
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx((rows - 1) / span, rel=1e-9)
    assert round((len(t) - 1) / (t[-1] - t[0]), 3) == rate
    assert read_trace(TRACES / name).mean_rate_rps == pytest.approx((rows - 1) / span, rel=1e-9)
    assert p.sum() == inp.sum() and o.sum() == out.sum()  # exact token totals, hence means
    assert round(p.mean(), 1) == mean_in and round(o.mean(), 1) == mean_out
    order = np.argsort(ts, kind="stable")
    assert np.allclose(t, ts[order] - ts.min(), atol=2e-6)
    assert np.array_equal(p, inp[order]) and np.array_equal(o, out[order])
    assert np.all(c < p)


def test_mooncake_prefix_sharing_matches_published_cache_ratio() -> None:
    tr = read_trace(TRACES / "mooncake_conversation.jsonl")
    assert tr.format == "mooncake"
    assert tr.cached_tokens.sum() / tr.prompt_tokens.sum() == pytest.approx(0.374, abs=0.002)
    _, p, _, c, _ = replay_all({"trace": {"file": "data/traces/mooncake_conversation.jsonl"}}, 1e5)
    assert np.all(c % 16 == 0) and 0.36 < c.sum() / p.sum() < 0.38


def test_rate_scale_time_scale_window_loop() -> None:
    f = {"file": "data/traces/azure2023_conv.csv"}
    n = 19366
    t1, *_ = replay_all({"trace": {**f, "rate_scale": 3.0}}, 1e5)
    assert len(t1) == 3 * n and np.all(np.diff(t1) >= 0) and t1.max() < 3600
    t2, *_ = replay_all({"trace": {**f, "rate_scale": 0.25}}, 1e5)
    assert abs(len(t2) - n / 4) < 5 * np.sqrt(n * 0.25 * 0.75)
    t3, *_ = replay_all({"trace": {**f, "rate_scale": 2.5}}, 1e5)
    assert abs(len(t3) - 2.5 * n) < 5 * np.sqrt(n * 0.25)
    t4, *_ = replay_all({"trace": {**f, "time_scale": 0.5}}, 1e5)
    t0, *_ = replay_all({"trace": f}, 1e5)
    assert np.allclose(t4, t0 / 2)
    t5, *_ = replay_all({"trace": {**f, "loop": True}}, 3 * 3600.0)
    assert len(t5) > 3 * n * 0.99 and np.all(np.diff(t5) >= 0) and t5.max() < 3 * 3600
    t6, *_ = replay_all({"trace": {**f, "window_s": [600, 1200]}}, 1e5)
    assert len(t6) == int(((t0 >= 600) & (t0 < 1200)).sum()) and t6.min() >= 0 and t6.max() < 600
    # rate_rps = target mean rate
    t7, *_ = replay_all({"rate_rps": 11.06, "trace": f}, 1e5)
    assert abs(len(t7) - 2 * n) < 10
    # duration cuts the replay
    t8, *_ = replay_all({"trace": f}, 600.0)
    assert len(t8) == int((t0 < 600).sum())


def test_trace_classes_by_share() -> None:
    classes = [{"name": "a", "share": 0.75}, {"name": "b", "share": 0.25, "prefix_tokens": 512, "prefix_hit_rate": 1.0}]
    _, p, _, c, k = replay_all({"trace": {"file": "data/traces/azure2023_code.csv"}, "classes": classes}, 1e5)
    assert k.mean() == pytest.approx(0.25, abs=0.02)
    assert np.all(c[k == 0] == 0) and np.all(c[(k == 1) & (p > 600)] == 512)


def test_other_formats(tmp_path: Path) -> None:
    b = tmp_path / "burst.csv"
    b.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,230,1317,Conversation log\n"
                 "118,GPT-4,417,276,693,Conversation log\n120,GPT-4,300,0,300,API log\n130,ChatGPT,10,5,15,x\n")
    tr = read_trace(b)
    assert tr.format == "burstgpt" and tr.rows == 4 and tr.dropped_rows == 1
    assert list(tr.time_s) == [0, 40, 113, 125]
    assert read_trace(b, "burstgpt", model="ChatGPT").rows == 3
    v = tmp_path / "vidur.csv"
    v.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,100,10\n1.5,200,20\n1.0,300,30\n")
    tv = read_trace(v)
    assert tv.format == "vidur" and list(tv.prompt_tokens) == [100, 300, 200] and list(tv.time_s) == [0, 0.5, 1.0]
    c = tmp_path / "mine.csv"
    c.write_text("t_ms,in,out\n1000,5,6\n3000,7,8\n")
    tc = read_trace(c, "csv", "t_ms", "in", "out", "ms")
    assert list(tc.time_s) == [0, 2.0] and tc.mean_rate_rps == 0.5
    with pytest.raises(ConfigError, match="cannot tell the trace format"):
        read_trace(c)
    bad = tmp_path / "bad.csv"
    bad.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,100,10\nx,200,20\n")
    with pytest.raises(ConfigError, match="non-numeric values"):
        read_trace(bad)
    j = tmp_path / "t.jsonl"
    j.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_trace(j)


def test_trace_scenario_errors_before_run() -> None:
    base = {"duration_s": 60, "fleet": {"nodes": 1}}
    s = validate_scenario({**base, "traffic": {"rate_rps": 1, "trace": {"file": "data/traces/nope.csv"}}})
    with pytest.raises(ConfigError, match="file not found"):
        arrival_chunks(s)
    with pytest.raises(ConfigError, match="not both"):
        validate_scenario({**base, "traffic": {"rate_rps": 1, "trace": {"file": "x.csv", "rate_scale": 2}}})
    with pytest.raises(ConfigError, match="window_s"):
        validate_scenario({**base, "traffic": {"rate_rps": 1, "trace": {"file": "x.csv", "window_s": [5, 1]}}})
