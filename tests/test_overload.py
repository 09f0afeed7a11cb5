"""Load-ladder / overload check (sim.perf.overload): the harness model (constant arrivals, client time-out that
withdraws the request) and the published-points file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.perf import overload
from sim.perf.benchmark import NodeSetup

HEADER = ("id,run,stage,source,stack,gpu,gpus,model,weights,kv,max_num_seqs,max_num_batched_tokens,max_model_len,"
          "arrivals,timeout_s,rate_rps,duration_s,input_tokens,output_tokens,client_output_tokens,prompt_groups,"
          "prompts_per_group,system_prompt_tokens,prefix_caching,metric,measured\n")


def _setup() -> NodeSetup:
    return NodeSetup.build("H100-SXM", "Llama-3.1-8B", 1, "bf16", "bf16",
                           Engine(max_num_seqs=16, max_num_batched_tokens=2048), stack="nvidia-vllm")


def test_below_capacity_everything_completes_and_ttft_stays_a_prefill() -> None:
    out = overload.simulate(_setup(), [overload.Stage(2.0, 20.0, 256, 32)], timeout_s=60.0)
    s = out.stages[0]
    assert s.sent == 40 and s.completed == 40 and out.timed_out == 0
    assert s.ttft_p50_s < 0.1


def test_past_capacity_the_queue_grows_and_the_client_times_requests_out() -> None:
    """16 slots, 400-token answers, 40 req/s: far past the knee. Requests time out, none counts as completed
    after its time-out, and work spent on requests that then time out is lost: the completed throughput falls
    below what the same node gives a patient client, whose backlog shows up as TTFT instead."""
    setup = _setup()
    slow = overload.simulate(setup, [overload.Stage(40.0, 10.0, 256, 400)], timeout_s=5.0)
    s = slow.stages[0]
    assert slow.timed_out > 0 and s.completed + slow.timed_out == s.sent == 400
    assert s.completed / s.sent < 0.5
    assert s.e2e_p50_s <= 5.0
    # the same stage with a patient client: everything completes, the backlog shows up as TTFT
    patient = overload.simulate(setup, [overload.Stage(40.0, 10.0, 256, 400)], timeout_s=1e6)
    assert patient.timed_out == 0 and patient.stages[0].completed == 400
    assert patient.stages[0].ttft_p50_s > 5.0 > s.e2e_p50_s
    assert patient.stages[0].throughput_tok_s > 2 * s.throughput_tok_s


def test_prompt_set_is_the_generators_groups_shuffled() -> None:
    """10 × 10 prompts: the members of a group share their system prompt's whole units and nothing after; every
    prompt is distinct; the order is a seeded shuffle."""
    ps = overload.PromptSet(10, 10, 100)
    chains = ps.chains(575, 16)
    assert len(chains) == ps.prompts == 100 and len(set(chains)) == 100
    assert all(len(c) == 575 // 16 for c in chains)
    heads: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for c in chains:
        heads.setdefault(c[:6], []).append(c)
    assert len(heads) == 10 and all(len(v) == 10 for v in heads.values())
    assert all(len({c[6] for c in v}) == 10 for v in heads.values())  # the questions differ from the first unit
    assert chains == overload.PromptSet(10, 10, 100).chains(575, 16)
    assert chains != overload.PromptSet(10, 10, 100, order_seed=1).chains(575, 16)


def _cached_setup(prefix_caching: bool) -> NodeSetup:
    engine = Engine(max_num_seqs=16, max_num_batched_tokens=2048, prefix_caching=prefix_caching,
                    prefix_unit_tokens=16)
    return NodeSetup.build("H100-SXM", "Llama-3.1-8B", 1, "bf16", "bf16", engine, stack="nvidia-vllm")


def test_a_cycled_prompt_set_is_prefilled_once_with_prefix_caching() -> None:
    """The harness the published runs used sends 10 prompts over and over: with vLLM's prefix cache each is prefilled
    once and later requests compute only their last block, so 3,000-token prompts at 15 req/s (45,000 prompt tokens/s,
    past one H100's prefill rate for an 8B model) keep TTFT at a step; without the cache the queue grows."""
    stage = [overload.Stage(15.0, 6.0, 3000, 4)]
    prompts = overload.PromptSet(2, 5, 200)
    cached = overload.simulate(_cached_setup(True), stage, 300.0, prompts)
    cold = overload.simulate(_cached_setup(False), stage, 300.0, prompts)
    assert cached.cache_hit_ratio > 0.85 and cold.cache_hit_ratio == 0.0
    assert cached.stages[0].completed == cached.stages[0].sent == 90
    assert cached.stages[0].ttft_p50_s < 0.1 < cold.stages[0].ttft_p50_s


def test_fast_and_reference_engines_agree_on_a_cached_overloaded_ladder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cycled prompts hitting the prefix cache, a backlog and client time-outs withdrawing requests: the fast engine
    gives the reference engine's results."""
    from sim.engine.reference import ReferenceNode

    stage = [overload.Stage(20.0, 3.0, 700, 200)]
    prompts = overload.PromptSet(2, 4, 100)
    fast = overload.simulate(_cached_setup(True), stage, 4.0, prompts)
    monkeypatch.setattr(overload, "Node", ReferenceNode)
    ref = overload.simulate(_cached_setup(True), stage, 4.0, prompts)
    assert fast.timed_out == ref.timed_out > 0 and fast.cache_hit_ratio == ref.cache_hit_ratio > 0.5
    assert fast.stages[0].completed == ref.stages[0].completed > 0
    assert fast.stages[0].ttft_p50_s == pytest.approx(ref.stages[0].ttft_p50_s, rel=1e-9)
    assert fast.stages[0].e2e_p50_s == pytest.approx(ref.stages[0].e2e_p50_s, rel=1e-9)


def test_throughput_is_counted_in_the_clients_tokens() -> None:
    """The node generates ``output_tokens`` per answer; the published throughput counts what the client re-tokenises
    (fewer on random text): the same run, counted by a client that reads half, has half the throughput and
    nothing else changes."""
    node = overload.simulate(_setup(), [overload.Stage(2.0, 20.0, 256, 32)], timeout_s=60.0).stages[0]
    client = overload.simulate(_setup(), [overload.Stage(2.0, 20.0, 256, 32, 16.0)], timeout_s=60.0).stages[0]
    assert client.throughput_tok_s == pytest.approx(node.throughput_tok_s / 2)
    assert (client.completed, client.ttft_p50_s, client.e2e_p50_s) == (node.completed, node.ttft_p50_s, node.e2e_p50_s)


def test_stages_run_back_to_back() -> None:
    out = overload.simulate(_setup(), [overload.Stage(1.0, 5.0, 128, 8), overload.Stage(4.0, 5.0, 128, 8)], 60.0)
    assert (out.stages[0].sent, out.stages[1].sent) == (5, 20)


def _write(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "ladder.csv"
    p.write_text(HEADER + "\n".join(rows) + "\n")
    return p


ROW = ("a,r,0,src,nvidia-vllm,H100-SXM,1,Llama-3.1-8B,bf16,bf16,16,2048,4096,constant,{timeout},{rate},10,256,"
       "{out},{out},10,10,100,true,{metric},{measured}")


def test_bad_cell_names_line_and_field(tmp_path: Path) -> None:
    p = _write(tmp_path, [ROW.format(timeout=-1, rate=1, out=32, metric="ttft_p50", measured=0.05)])
    with pytest.raises(ConfigError, match="line 2: timeout_s"):
        overload.read_points(p)
    p = _write(tmp_path, [ROW.format(timeout=60, rate=1, out=32, metric="tpot", measured=0.05)])
    with pytest.raises(ConfigError, match="line 2: metric"):
        overload.read_points(p)


def test_one_stage_must_have_one_setting(tmp_path: Path) -> None:
    rows = [ROW.format(timeout=60, rate=1, out=32, metric="ttft_p50", measured=0.05),
            ROW.format(timeout=60, rate=2, out=32, metric="e2e_p50", measured=1.0).replace("a,", "b,", 1)]
    with pytest.raises(ConfigError, match="other settings"):
        overload.read_points(_write(tmp_path, rows))


def test_regime_comes_from_the_measurement_not_the_prediction(tmp_path: Path) -> None:
    """A stage is 'past knee' only where the published run timed requests out, whatever capsim predicts."""
    rows = [ROW.format(timeout=2, rate=40, out=400, metric="ttft_p50", measured=0.05),
            ROW.format(timeout=2, rate=40, out=400, metric="completed_fraction", measured=0.5).replace("a,", "c,", 1)]
    rep = overload.run(overload.read_points(_write(tmp_path, rows)))
    assert all(r["overloaded"] for r in rep.rows)
    rep = overload.run(overload.read_points(_write(tmp_path, rows[:1])))
    assert not rep.rows[0]["overloaded"] and rep.runs["r"]["timed_out"] > 0


def test_shipped_ladder_points_parse_with_contiguous_stages_and_both_regimes() -> None:
    pts = overload.read_points(overload.ladder_path())
    runs: dict[str, set[int]] = {}
    for p in pts:
        runs.setdefault(p.run, set()).add(p.stage)
    assert all(s == set(range(len(s))) for s in runs.values())
    assert any(p.metric == "completed_fraction" and p.measured < 1 for p in pts)
    assert any(p.metric == "ttft_p50" and p.measured < 0.1 for p in pts)


def test_cli_prints_the_load_ladder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, [ROW.format(timeout=60, rate=1, out=32, metric="ttft_p50", measured=0.05)])
    monkeypatch.setattr(overload, "ladder_path", lambda: p)
    from sim.perf import preemption, validation

    pre = tmp_path / "pre.csv"
    pre.write_text("id,run,source,stack,gpu,gpus,model,weights,kv,max_num_seqs,max_num_batched_tokens,max_model_len,"
                   "kv_cache_tokens,concurrency,requests,input_min,input_max,output_min,output_max,metric,measured\n"
                   "p,r,src,nvidia-vllm,H100-SXM,1,Llama-3.1-8B,bf16,bf16,16,2048,4096,2048,8,16,100,200,100,200,"
                   "preemptions,5\n")
    monkeypatch.setattr(preemption, "points_path", lambda: pre)

    monkeypatch.setattr(validation, "all_points", list)
    res = CliRunner().invoke(main, ["validate", "--overload"])
    assert res.exit_code == 0, res.output
    assert "load ladder" in res.output and "a " in res.output and "below knee" in res.output
    assert "preemptions under KV pressure" in res.output and "\np " in res.output


@settings(max_examples=8, deadline=None)
@given(rate=st.floats(0.5, 60.0), timeout=st.floats(0.5, 30.0), out_tokens=st.integers(1, 300),
       in_tokens=st.integers(1, 1500))
def test_every_request_is_answered_in_time_or_timed_out(rate: float, timeout: float, out_tokens: int,
                                                         in_tokens: int) -> None:
    """Conservation under any load: each sent request either completes within the time-out or is withdrawn
    (counted once); no completed request is slower than the time-out; completed throughput is zero exactly when
    nothing completed."""
    out = overload.simulate(_setup(), [overload.Stage(rate, 4.0, in_tokens, out_tokens)], timeout_s=timeout)
    s = out.stages[0]
    assert s.completed + out.timed_out == s.sent
    if s.completed:
        assert s.e2e_p50_s <= timeout and s.ttft_p50_s <= s.e2e_p50_s
    assert (s.throughput_tok_s > 0) == (s.completed > 0)
