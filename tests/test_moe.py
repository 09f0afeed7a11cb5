"""MoE: expected experts hit per step, TP vs EP layouts, all-to-all traffic, MLA KV, sliding-window KV."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import make_scenario

from sim.core.config import Parallelism
from sim.core.errors import ConfigError
from sim.perf.catalog import get_gpu, get_model
from sim.perf.model import StepTimeModel, plan_memory
from sim.perf.moe import (
    Layout,
    all_to_all_bytes,
    expected_distinct_experts,
    layout_kv_bytes_per_token,
    resolve_layout,
    routed_params,
)
from sim.runner.simulation import build_node_model

H200, DS = get_gpu("H200-SXM"), get_model("deepseek-v3")


@settings(max_examples=8, deadline=None)
@given(experts=st.sampled_from([8, 64, 128, 256]), top_k=st.sampled_from([1, 2, 4, 8]),
       tokens=st.integers(1, 300), seed=st.integers(0, 100))
def test_expected_distinct_experts_matches_monte_carlo(experts, top_k, tokens, seed):
    rng = np.random.default_rng(seed)
    trials = 400
    hit = np.zeros(trials)
    for t in range(trials):
        chosen = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k]  # k distinct experts per token
        hit[t] = len(np.unique(chosen))
    mc, se = hit.mean(), hit.std(ddof=1) / np.sqrt(trials) + 1e-9
    assert abs(mc - expected_distinct_experts(experts, top_k, tokens)) < 5 * se + 0.05


def test_distinct_experts_limits():
    assert expected_distinct_experts(256, 8, 1) == pytest.approx(8)
    assert expected_distinct_experts(256, 8, 0) == 0
    assert expected_distinct_experts(256, 8, 10_000) == pytest.approx(256)


def test_all_to_all_bytes_and_ep_comm_term():
    # tokens × hidden × top-k × dtype
    assert all_to_all_bytes(128, 7168, 8, 1.0) == 128 * 7168 * 8
    cal_stack = "nvidia-sglang"
    lay = resolve_layout(Parallelism(tensor=8, expert=8, all_to_all_latency_s=0.0), DS, H200, 8)
    tp = StepTimeModel.build(H200, DS, 8, "fp8", "bf16", stack=cal_stack)
    ep = StepTimeModel.build(H200, DS, 8, "fp8", "bf16", stack=cal_stack, layout=lay)
    from sim.perf.catalog import get_stack
    cal = get_stack(cal_stack).calibration
    link = H200.interconnect_gb_s * 1e9 * cal.allreduce_efficiency
    a2a = 2 * 58 * all_to_all_bytes(1, 7168, 8, 2.0) * 7 / 8 / 8 / link  # dispatch + combine, per token
    allreduce = (61 + 3) * 2 * 7 / 8 * 7168 * 2 / link  # attention and dense-FFN all-reduces stay
    assert ep.comm_s_per_token - cal.overhead_s_per_token == pytest.approx(a2a + allreduce)
    assert tp.comm_s_per_token > allreduce  # TP all-reduces every MoE layer too


def test_mla_kv_bytes_per_token_deepseek_v3():
    assert DS.kv_elements_per_token() == 61 * (512 + 64)
    tp8 = Layout(8, 8, 1)
    dp8 = resolve_layout(Parallelism(tensor=1, expert=8), DS, H200, 8)
    assert layout_kv_bytes_per_token(DS, "bf16", tp8) == 8 * 70_272  # the latent on every TP rank
    assert layout_kv_bytes_per_token(DS, "bf16", dp8) == 70_272  # attention DP: one copy
    mem_tp = plan_memory(H200, DS, 8, "fp8", "bf16", 0.9, 64, layout=tp8)
    mem_dp = plan_memory(H200, DS, 8, "fp8", "bf16", 0.9, 64, layout=dp8)
    assert mem_dp.weight_bytes > mem_tp.weight_bytes  # dense weights once per replica
    assert mem_dp.kv_capacity_tokens > 4 * mem_tp.kv_capacity_tokens


def test_sliding_window_layers_do_not_count_in_kv():
    oss = get_model("gpt-oss-120b")
    assert oss.kv_elements_per_token() * 2 == 2 * 18 * 8 * 64 * 2
    assert routed_params(oss) == 36 * 128 * 3 * 2880 * 2880


def test_ep_beats_tp_at_large_batch_and_loses_at_batch_one():
    tp = StepTimeModel.build(H200, DS, 8, "fp8", "bf16")
    ep = StepTimeModel.build(H200, DS, 8, "fp8", "bf16",
                             layout=resolve_layout(Parallelism(tensor=1, expert=8), DS, H200, 8))
    assert ep.decode_step_s(1, 2000) > tp.decode_step_s(1, 2000)
    assert ep.decode_step_s(256, 2000) < tp.decode_step_s(256, 2000)


def test_imbalance_slows_expert_parallel_steps():
    def step(u: float) -> float:
        lay = resolve_layout(Parallelism(tensor=8, expert=8, expert_imbalance=u), DS, H200, 8)
        return StepTimeModel.build(H200, DS, 8, "fp8", "bf16", layout=lay).decode_step_s(8, 2000)  # below the cap

    assert step(1.0) < step(1.5) < step(2.0)


def test_layout_validation_names_the_field():
    qwen = get_model("qwen3-235b")
    with pytest.raises(ConfigError, match="divide"):
        resolve_layout(Parallelism(expert=3), qwen, H200, 8)
    with pytest.raises(ConfigError, match="no experts"):
        resolve_layout(Parallelism(expert=8), get_model("llama-3.1-70b"), H200, 8)
    with pytest.raises(ConfigError, match="needs expert parallelism"):
        resolve_layout(Parallelism(tensor=4), qwen, H200, 8)
    with pytest.raises(ConfigError, match="NVLink domains"):
        resolve_layout(Parallelism(tensor=8, expert=8), DS, H200, 16)
    sc = make_scenario(**{"fleet.model": "deepseek-v3", "fleet.gpu": "H200-SXM", "fleet.gpus_per_node": 8,
                          "fleet.weights": "fp8", "fleet.parallelism": {"tensor": 8, "expert": 5}})
    with pytest.raises(ConfigError, match=r"fleet\.parallelism\.expert"):
        build_node_model(sc)


def test_multi_node_expert_parallelism_uses_scale_out():
    lay16 = resolve_layout(Parallelism(tensor=8, expert=16), DS, H200, 16)
    lay8 = resolve_layout(Parallelism(tensor=8, expert=8), DS, H200, 8)
    p16 = StepTimeModel.build(H200, DS, 16, "fp8", "bf16", layout=lay16)
    p8 = StepTimeModel.build(H200, DS, 8, "fp8", "bf16", layout=lay8)
    # all-to-all over InfiniBand (50 GB/s) costs more per token than over NVLink (450 GB/s)
    assert p16.comm_s_per_token > p8.comm_s_per_token
    sc = make_scenario(**{"fleet.model": "deepseek-v3", "fleet.gpu": "H200-SXM", "fleet.gpus_per_node": 16,
                          "fleet.weights": "fp8", "fleet.parallelism": {"tensor": 8, "expert": 16}})
    nm = build_node_model(sc)
    assert nm.memory.kv_capacity_tokens > 0
