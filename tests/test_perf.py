"""Performance model: memory plan, roofline regimes, MoE/MLA/precision/TP terms, closed-form decode runs."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.core.errors import ConfigError
from sim.perf.catalog import Calibration, get_gpu, get_model
from sim.perf.model import GEMM_ROOF_P, StepTimeModel, attention_pairs, plan_memory

CAL = Calibration(mfu=0.6, mbu=0.7, overhead_s=0.002, overhead_s_per_token=0.0, allreduce_latency_s=2e-5,
                  allreduce_efficiency=0.7)


def test_too_large_model_refused_with_missing_bytes() -> None:
    gpu, model = get_gpu("L40S"), get_model("llama-3.1-70b")
    with pytest.raises(ConfigError) as exc:
        plan_memory(gpu, model, 1, "bf16", "bf16", 0.9, 16)
    usable = 48e9 * 0.9 - 1e9
    expected = model.params_total * 2 + 327_680 * 16 - usable
    got = int(re.search(r"GB missing \(([\d,]+) bytes\)", str(exc.value)).group(1).replace(",", ""))
    assert got == math.ceil(expected)
    assert "98.9 GB" in str(exc.value)
    # and fits once there are enough GPUs
    assert plan_memory(gpu, model, 4, "bf16", "bf16", 0.9, 16).kv_capacity_tokens > 0


def test_worked_capacity_example_from_models_md() -> None:
    # 70B BF16 on 8x H100 TP8, 0.9 x 80 GB, no activation reserve: ≈ 1.32 M tokens
    mem = plan_memory(get_gpu("H100-SXM"), get_model("llama-3.1-70b"), 8, "bf16", "bf16", 0.9, 16, 0.0)
    assert mem.kv_capacity_tokens == pytest.approx(1.32e6, rel=0.01)


def test_decode_batch1_is_bandwidth_bound() -> None:
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    perf = StepTimeModel.build(gpu, model, 1, "bf16", "bf16", calibration=CAL)
    ctx = 1001
    assert perf.bound(1, ctx, ctx) == "memory"
    measured_bw = 3350e9 * 0.949  # H100 SXM: BabelStream's 3.18 TB/s of the datasheet's 3.35 (hbm_read_ceiling)
    weights_s = model.params_total * 2 / (measured_bw * CAL.mbu)
    kv_s = 131_072 * ctx / (measured_bw * CAL.mbu)
    fixed_s = CAL.overhead_s + model.layers * 6 * gpu.kernel_launch_s  # stack overhead + kernel boundaries
    p = GEMM_ROOF_P  # the smooth GEMM roof adds (1 + (t_c/t_m)^p)^(1/p) − 1 ≈ 3e-5 of the weight read at batch 1
    gemm_s = (weights_s ** p + perf.compute_s_per_token ** p) ** (1.0 / p)
    assert gemm_s / weights_s - 1.0 < 1e-4
    assert perf.decode_step_s(1, 1000) == pytest.approx(gemm_s + kv_s + fixed_s, rel=1e-9)
    # higher bandwidth, same FLOPs: H200 is faster at batch 1 by the ratio of the *measured* bandwidths (hard roof)
    h200 = StepTimeModel.build(get_gpu("H200-SXM"), model, 1, "bf16", "bf16", calibration=CAL)
    hard, h200 = replace(perf, gemm_roof_p=math.inf), replace(h200, gemm_roof_p=math.inf)
    ratio = (hard.decode_step_s(1, 1000) - fixed_s) / (h200.decode_step_s(1, 1000) - fixed_s)
    assert ratio == pytest.approx(4800 * 0.933 / (3350 * 0.949), rel=1e-9)


def test_unmeasured_gpu_reads_at_its_datasheet_bandwidth() -> None:
    """``hbm_read_ceiling`` scales every byte the step reads; a profile without one keeps the datasheet figure."""
    model = get_model("llama-3.1-8b")
    measured = get_gpu("H100-SXM")
    bare = measured.model_copy(update={"hbm_read_ceiling": None})
    assert bare.read_bw_bytes_s() == 3350e9
    assert measured.read_bw_bytes_s() == pytest.approx(3350e9 * 0.949)
    a = StepTimeModel.build(measured, model, 1, "bf16", "bf16", calibration=CAL)
    b = StepTimeModel.build(bare, model, 1, "bf16", "bf16", calibration=CAL)
    assert a.memory_s_const == pytest.approx(b.memory_s_const / 0.949)
    assert a.memory_s_per_ctx_token == pytest.approx(b.memory_s_per_ctx_token / 0.949)
    assert a.compute_s_per_token == b.compute_s_per_token


def test_large_batch_approaches_compute_roof() -> None:
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    perf = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", calibration=CAL)
    roof = 1.0 / perf.compute_s_per_token  # tokens/s if only the weight GEMMs counted
    rates = []
    for b in (1, 64, 512, 4096):
        ctx = b * 129
        rates.append(b / perf.step_s(b, ctx, ctx))
    assert rates == sorted(rates)
    assert perf.bound(4096, 4096 * 129, 4096 * 129) == "compute"
    # GEMMs and attention run one after the other: the roof includes every sequence's KV read
    kv_roof = 1.0 / (perf.compute_s_per_token + 129 * max(perf.compute_s_per_attn_pair, perf.memory_s_per_ctx_token))
    assert rates[-1] > 0.85 * kv_roof and rates[-1] < kv_roof < roof
    assert rates[0] < 0.01 * roof


def test_gemms_and_attention_do_not_overlap() -> None:
    """At a large FP4 decode batch the GEMMs are compute-bound and attention bandwidth-bound: the step is their sum
    (the single-roofline max hid the KV reads under GEMM compute and over-predicted FP4 throughput)."""
    gpu, model = get_gpu("B200"), get_model("llama-3.1-70b")
    smooth = StepTimeModel.build(gpu, model, 1, "fp4", "fp8", calibration=CAL)
    seq = replace(smooth, gemm_roof_p=math.inf)  # the hard GEMM roof, so each roof is one term of the sum
    b, ctx = 512, 512 * 1500
    assert smooth.step_s(b, ctx, ctx) > seq.step_s(b, ctx, ctx)  # the smooth roof only adds time
    gemm = seq.compute_s_per_token * seq.gemm_tokens(b)
    kv = seq.memory_s_per_ctx_token * ctx
    assert gemm > seq.memory_s_const and kv > seq.compute_s_per_attn_pair * ctx
    assert seq.step_s(b, ctx, ctx) == pytest.approx(gemm + kv + seq.overhead_s + seq.comm_s_per_token * b)
    old = replace(seq, sequential=False)
    attn_flops = seq.compute_s_per_attn_pair * ctx
    assert old.step_s(b, ctx, ctx) == pytest.approx(max(gemm + attn_flops, seq.memory_s_const + kv) + seq.overhead_s
                                                     + seq.comm_s_per_token * b)
    assert seq.step_s(b, ctx, ctx) > 1.3 * old.step_s(b, ctx, ctx)


def test_cuda_graph_padding() -> None:
    """A stack that captures CUDA graphs pads a decode-only step's GEMM tokens up to the next captured size."""
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    trt = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", stack="nvidia-trtllm")
    assert [trt.gemm_tokens(n, decode_only=True) for n in (1, 3, 257, 384, 385, 9000)] == [1, 4, 384, 384, 512, 9000]
    # batch 257 costs the GEMMs of 384 (compute-bound there), not of 257
    assert trt.step_s(257, 257, 257, decode_only=True) - trt.comm_s_per_token * 257 == pytest.approx(
        trt.step_s(384, 257, 257, decode_only=True) - trt.comm_s_per_token * 384)
    split = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", stack="nvidia-splitwise")
    assert split.graph_sizes == () and split.gemm_tokens(257, decode_only=True) == 257


def test_padding_rule_per_stack() -> None:
    """TensorRT-LLM and SGLang pad only decode-only steps (generation-only graphs; prefill runs eagerly); vLLM v1
    pads every step of up to 512 tokens (piecewise graphs), mixed ones too, and runs larger steps unpadded."""
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    trt = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", stack="nvidia-trtllm")
    sgl = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", stack="nvidia-sglang")
    vllm = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", stack="nvidia-vllm")
    assert not trt.graph_all_steps and not sgl.graph_all_steps and vllm.graph_all_steps
    # a mixed 600-token step: TensorRT-LLM runs it eagerly (before: padded to 1,024)
    assert trt.gemm_tokens(600) == 600 and trt.gemm_tokens(600, decode_only=True) == 1024
    assert trt.step_s(600, 6000, 6000) < trt.step_s(600, 6000, 6000, decode_only=True)
    # vLLM v1: a mixed step of up to 512 tokens is padded, a 600-token one runs eagerly
    assert vllm.graph_sizes[-1] == 512
    assert vllm.gemm_tokens(300) == 304 and vllm.gemm_tokens(600) == 600
    assert sgl.gemm_tokens(100) == 100 and sgl.gemm_tokens(100, decode_only=True) == 104
    assert sgl.gemm_tokens(161, decode_only=True) == 161  # above cuda_graph_max_bs 160: eager


def test_moe_active_flops_and_the_experts_a_step_hits() -> None:
    gpu, mix = get_gpu("H100-SXM"), get_model("mixtral-8x7b")
    perf = StepTimeModel.build(gpu, mix, 1, "fp8", "fp8", calibration=CAL)
    flops = gpu.achievable_flops("fp8") * CAL.mfu
    bw = gpu.read_bw_bytes_s() * CAL.mbu
    assert perf.compute_s_per_token == pytest.approx(2 * 12_879_925_248 / flops)
    expert = 32 * 3 * 4096 * 14336  # one expert of every layer, FP8 bytes
    dense = 46_702_792_704 - 8 * expert
    assert perf.memory_s_const == pytest.approx(dense / bw)
    # one token reads 2 of 8 experts; a large batch reads (nearly) all of them
    assert perf.weights_s(1) == pytest.approx((dense + 2 * expert) / bw)
    assert perf.weights_s(4096) == pytest.approx(46_702_792_704 / bw)


def test_mla_attention_and_kv() -> None:
    gpu, ds = get_gpu("B200"), get_model("deepseek-v3")
    assert ds.attention_flops_per_pair() == 2 * 61 * 128 * (2 * 512 + 64)
    perf = StepTimeModel.build(gpu, ds, 8, "fp8", "fp8", calibration=CAL)
    assert perf.memory_s_per_ctx_token == pytest.approx(8 * 35_136 / (8 * gpu.read_bw_bytes_s() * CAL.mbu))
    # FP4 weights run at B200's measured FP4 GEMM rate (not twice FP8's) and halve the weight read
    fp4 = StepTimeModel.build(gpu, ds, 8, "fp4", "fp8", calibration=CAL)
    assert fp4.memory_s_const == pytest.approx(perf.memory_s_const / 2)
    ratio = gpu.achievable_flops("fp4") / gpu.achievable_flops("fp8")
    assert 1.0 < ratio < 1.2
    assert fp4.compute_s_per_token == pytest.approx(perf.compute_s_per_token / ratio)


def test_gqa_attention_flops() -> None:
    m = get_model("llama-3.1-70b")
    assert m.attention_flops_per_pair() == 4 * 80 * 64 * 128
    assert attention_pairs(4, 10) == 10 + 9 + 8 + 7


def test_tensor_parallel_comm() -> None:
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-70b")
    t1 = StepTimeModel.build(gpu, model, 1, "bf16", "bf16", calibration=CAL)
    assert t1.comm_s_const == 0 and t1.comm_s_per_token == 0
    t8 = StepTimeModel.build(gpu, model, 8, "bf16", "bf16", calibration=CAL)
    assert t8.comm_s_const == pytest.approx(160 * 2e-5)
    assert t8.comm_s_per_token == pytest.approx(160 * 2 * 7 / 8 * 8192 * 2 / (450e9 * 0.7))
    # sharding divides weight time by G
    assert t8.memory_s_const == pytest.approx(t1.memory_s_const / 8)
    # a slower link (PCIe) costs more per token
    pcie = StepTimeModel.build(get_gpu("H100-PCIe"), model, 8, "bf16", "bf16", calibration=CAL)
    assert pcie.comm_s_per_token > 5 * t8.comm_s_per_token


def test_stack_factors_used_by_default() -> None:
    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    a = StepTimeModel.build(gpu, model, 1, "bf16", "bf16")
    b = StepTimeModel.build(gpu, model, 1, "bf16", "bf16", stack="nvidia-vllm")
    c = StepTimeModel.build(gpu, model, 1, "bf16", "bf16", stack="nvidia-trtllm")
    assert a == b and c != a


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 512),
    ctx0=st.integers(0, 200_000),
    steps=st.integers(0, 3000),
    gpu=st.sampled_from(["H100-SXM", "L40S", "B200", "MI300X"]),
    tp=st.sampled_from([1, 2, 8]),
)
def test_decode_run_closed_form_matches_steps(batch: int, ctx0: int, steps: int, gpu: str, tp: int) -> None:
    perf = StepTimeModel.build(get_gpu(gpu), get_model("llama-3.1-70b"), tp, "fp8", "fp8")
    total = 0.0
    for j in range(1, steps + 1):
        c = ctx0 + batch * j
        total += perf.step_s(batch, c, c)
    assert perf.decode_run_s(batch, ctx0, steps) == pytest.approx(total, rel=1e-9, abs=1e-12)
    if steps:
        n = perf.decode_steps_within(batch, ctx0, total * 0.5, steps)
        assert perf.decode_run_s(batch, ctx0, n) <= total * 0.5 < perf.decode_run_s(batch, ctx0, n + 1) + 1e-15


def test_step_jitter_desynchronises_a_closed_loop() -> None:
    """Fixed lengths in a closed loop: without jitter every request of a wave waits the same (P99 = P50); seeded
    step-time jitter spreads the waves (P99 > P50), keeps the mean step time (throughput within 2 %)."""
    from sim.core.config import Engine
    from sim.perf.benchmark import NodeSetup, run_closed_loop

    out = {}
    for cv in (0.0, 0.2):
        s = NodeSetup.build("H100-SXM", "llama-3.1-70b", 4, "bf16", "bf16", Engine(step_jitter={"cv": cv, "seed": 3}))
        out[cv] = run_closed_loop(s, 20, [4000] * 200, [200] * 200)
    still, jit = out[0.0].ttft_s, out[0.2].ttft_s
    assert still["p99"] == pytest.approx(still["p50"], rel=1e-3)
    assert jit["p99"] > 1.2 * jit["p50"]
    assert out[0.2].output_tokens_per_s == pytest.approx(out[0.0].output_tokens_per_s, rel=0.02)


def test_small_message_allreduce_takes_the_faster_kernel() -> None:
    """Each TP all-reduce takes the faster of the NCCL ring and the stack's one-shot kernel (vLLM custom all-reduce,
    TensorRT-LLM's AllReduce): the kernel wins small decode batches, the ring large prefill steps; PCIe-only GPUs
    (no fabric) and stacks without a kernel use the ring alone."""
    model = get_model("llama-3.1-70b")
    ring_only = Calibration(mfu=0.5, mbu=0.7, allreduce_latency_s=22e-6, allreduce_efficiency=0.7)
    both = ring_only.model_copy(update={"allreduce_small_latency_s": 9e-6, "allreduce_small_efficiency": 0.11})
    h100 = get_gpu("H100-SXM")
    ring = StepTimeModel.build(h100, model, 4, "bf16", "bf16", calibration=ring_only)
    fast = StepTimeModel.build(h100, model, 4, "bf16", "bf16", calibration=both)
    n = 2 * model.layers
    assert ring.fixed_s(1) - fast.fixed_s(1) == pytest.approx(n * 13e-6, rel=0.05)  # 160 × (22 − 9) µs at batch 1
    assert fast.fixed_s(8192) == pytest.approx(ring.fixed_s(8192))  # an 8,192-token step: the ring is faster
    assert fast.step_s(1, 1000, 1000, decode_only=True) < ring.step_s(1, 1000, 1000, decode_only=True)
    # a decode run's closed form uses the same per-step cost
    assert fast.decode_run_s(4, 4000, 10) == pytest.approx(
        sum(fast.step_s(4, 4000 + 4 * j, 4000 + 4 * j, decode_only=True) for j in range(1, 11)))
    pcie = StepTimeModel.build(get_gpu("L40S"), get_model("llama-3.1-8b"), 4, "bf16", "bf16", calibration=both)
    assert pcie.ar_fast_s_const == 0.0


def test_kernel_boundaries_cost_grows_with_depth_not_with_tensor_parallelism() -> None:
    """Every layer's ~6 kernels lose ``kernel_launch_s`` each per step, whatever the TP degree (each GPU runs every
    layer): a deeper model pays more fixed time per step; a GPU with free launches pays only the stack's overhead."""
    gpu = get_gpu("H100-SXM")
    for name, gpus in (("llama-3.1-8b", 1), ("llama-3.1-70b", 4), ("llama-3.1-70b", 8)):
        model = get_model(name)
        perf = StepTimeModel.build(gpu, model, gpus, "bf16", "bf16", calibration=CAL)
        assert perf.overhead_s == pytest.approx(CAL.overhead_s + model.layers * 6 * 1.3e-6)
    free = StepTimeModel.build(gpu.model_copy(update={"kernel_launch_s": 0.0}), get_model("llama-3.1-70b"), 4,
                               "bf16", "bf16", calibration=CAL)
    assert free.overhead_s == CAL.overhead_s
