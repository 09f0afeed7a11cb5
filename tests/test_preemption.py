"""Preemption check (sim.perf.preemption): closed-loop runs under KV pressure and the published-points file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.perf import preemption
from sim.perf.benchmark import NodeSetup

HEADER = ("id,run,source,stack,gpu,gpus,model,weights,kv,max_num_seqs,max_num_batched_tokens,max_model_len,"
          "kv_cache_tokens,concurrency,requests,input_min,input_max,output_min,output_max,metric,measured\n")
ROW = ("{id},r,src,nvidia-vllm,H100-SXM,1,Llama-3.1-8B,bf16,bf16,64,2048,4096,{kv},8,{n},100,200,{omin},300,"
       "{metric},{measured}")


def _write(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "pre.csv"
    p.write_text(HEADER + "\n".join(rows) + "\n")
    return p


def _setup() -> NodeSetup:
    return NodeSetup.build("H100-SXM", "Llama-3.1-8B", 1, "bf16", "bf16",
                           Engine(max_num_seqs=64, max_num_batched_tokens=2048), stack="nvidia-vllm")


def test_kv_starved_closed_loop_preempts_and_still_answers_everything() -> None:
    """16 requests of ~600 tokens each in flight against 4,096 tokens of KV: the engine preempts (recompute), every
    request is still answered; with KV to spare it never preempts and finishes sooner."""
    prompts, outputs = [200] * 40, [400] * 40
    starved = preemption.simulate(_setup(), 4096 // 16, 16, prompts, outputs)
    ample = preemption.simulate(_setup(), 200_000 // 16, 16, prompts, outputs)
    assert starved.completed == ample.completed == 40
    assert starved.preemptions > 0 == ample.preemptions
    assert starved.duration_s > ample.duration_s
    assert starved.metric("throughput") == pytest.approx(40 * 400 / starved.duration_s)
    assert starved.metric("requests_per_s") == pytest.approx(40 / starved.duration_s)
    assert 0 < starved.metric("ttft_p50") <= starved.metric("ttft_p99") <= starved.metric("e2e_p50") * 10


def test_lengths_are_uniform_in_the_published_range_and_seeded() -> None:
    p = preemption.read_points(preemption.points_path())[0]
    a, b = preemption.draw_lengths(p)
    assert len(a) == len(b) == p.requests
    assert a.min() >= p.input_min and a.max() <= p.input_max and b.min() >= p.output_min and b.max() <= p.output_max
    a2, _ = preemption.draw_lengths(p)
    assert (a == a2).all() and not (a == preemption.draw_lengths(p, seed=1)[0]).all()


def test_bad_rows_name_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2: metric"):
        preemption.read_points(_write(tmp_path, [ROW.format(id="a", kv=4096, n=10, omin=100, metric="tpot",
                                                             measured=1)]))
    with pytest.raises(ConfigError, match="line 2: input_min/output_min"):
        preemption.read_points(_write(tmp_path, [ROW.format(id="a", kv=4096, n=10, omin=900, metric="preemptions",
                                                             measured=1)]))
    rows = [ROW.format(id="a", kv=4096, n=10, omin=100, metric="preemptions", measured=1),
            ROW.format(id="b", kv=8192, n=10, omin=100, metric="ttft_p50", measured=1)]
    with pytest.raises(ConfigError, match="other settings"):
        preemption.read_points(_write(tmp_path, rows))


def test_run_compares_every_point_of_a_run_from_one_simulation(tmp_path: Path) -> None:
    rows = [ROW.format(id="a", kv=2048, n=24, omin=100, metric="preemptions", measured=10),
            ROW.format(id="b", kv=2048, n=24, omin=100, metric="throughput", measured=1000)]
    rep = preemption.run(preemption.read_points(_write(tmp_path, rows)))
    assert [r["id"] for r in rep.rows] == ["a", "b"]
    assert rep.rows[0]["predicted"] > 0 and rep.rows[1]["predicted"] > 0
    assert "| a |" in preemption.markdown_report(rep) and "a " in preemption.format_report(rep)


def test_shipped_points_parse_and_publish_a_preemption_count() -> None:
    pts = preemption.read_points(preemption.points_path())
    assert any(p.metric == "preemptions" and p.measured > 0 for p in pts)
