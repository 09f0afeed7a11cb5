"""Catalogue: every profile loads, model facts match models.md, lookups and precedence rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.core.errors import ConfigError
from sim.perf.catalog import (
    GpuSpec,
    get_gpu,
    get_model,
    get_stack,
    gpus,
    models,
    resolve_calibration,
    stack_reserves_kv,
    stacks,
    unique,
)
from sim.perf.model import kv_bytes_per_token

# models.md §1 (KV bytes per token BF16 / FP8, params total / active) — copied, not read at test time
MODELS_MD = {
    "Llama-3.1-8B": (131_072, 65_536, 8_030_261_248, 8_030_261_248),
    "Llama-3.1-70B": (327_680, 163_840, 70_553_706_496, 70_553_706_496),
    "Llama-3.1-405B": (516_096, 258_048, 405_853_388_800, 405_853_388_800),
    "Mixtral-8x7B": (131_072, 65_536, 46_702_792_704, 12_879_925_248),
    "Qwen2.5-72B": (327_680, 163_840, 72_706_203_648, 72_706_203_648),
    "DeepSeek-V3": (70_272, 35_136, 671_026_419_200, 37_552_297_472),
    "Llama-2-70B": (327_680, 163_840, None, None),
    # added with the MoE work (issue 17): values computed from each model's config.json (see the profile's header)
    "Qwen3-235B-A22B": (192_512, 96_256, 235_093_610_496, 22_190_739_456),
    "Qwen3-30B-A3B": (98_304, 49_152, 30_532_110_336, 3_353_020_416),
    "gpt-oss-120b": (36_864, 18_432, 116_789_048_640, 5_710_443_840),
    # added with the load-ladder check (issue 12): computed from each model's config.json (see the profile's header)
    "Llama-2-7B": (524_288, 262_144, 6_738_415_616, 6_738_415_616),
    "CodeLlama-34B": (196_608, 98_304, 33_743_970_304, 33_743_970_304),
    # added with the preemption check (issue 12): config.json; the KV size matches vLLM PR #44594's 16 GiB -> 299,584
    "Qwen2.5-7B": (57_344, 28_672, 7_615_616_512, 7_615_616_512),
}

ISSUE_GPUS = ["A100-SXM-80GB", "H100-SXM", "H100-PCIe", "H100-NVL", "H200-SXM", "GH200-96GB", "GH200-144GB", "B200",
              "GB200", "MI300X", "MI325X", "L40S"]


@pytest.mark.parametrize("name", sorted(MODELS_MD))
def test_kv_bytes_per_token_matches_models_md(name: str) -> None:
    m = get_model(name)
    bf16, fp8, total, active = MODELS_MD[name]
    assert kv_bytes_per_token(m, "bf16", 1) == bf16
    assert kv_bytes_per_token(m, "fp8", 1) == fp8
    if total is not None:
        assert m.params_total == total and m.params_active == active


def test_every_catalogue_model_is_covered() -> None:
    assert {m.name for m in unique(models())} == set(MODELS_MD)


def test_issue_gpus_present_with_prices_and_peaks() -> None:
    names = {g.name for g in unique(gpus())}
    assert set(ISSUE_GPUS) <= names
    for g in unique(gpus()):
        assert g.usd_per_gpu_hour > 0 and g.purchase_usd_per_gpu > 0 and g.sources
        assert "bf16" in g.peak_tflops
        resolve_calibration(g)  # every GPU resolves to a stack's factors
    assert get_gpu("B200").peak_tflops["fp4"] == 9000
    assert get_gpu("mi300x").vendor == "amd" and get_gpu("mi300x").default_stack == "amd-vllm"


def test_moe_and_mla_fields() -> None:
    mix, ds = get_model("mixtral"), get_model("deepseek-v3")
    assert mix.is_moe and mix.moe.experts_per_token == 2
    assert ds.mla.kv_lora_rank == 512 and ds.moe.experts == 256
    # MLA latent is held in full by every TP rank; GQA with TP > kv_heads replicates heads
    assert kv_bytes_per_token(ds, "bf16", 8) == 8 * 70_272
    l70 = get_model("llama-3.1-70b")
    assert kv_bytes_per_token(l70, "bf16", 8) == 327_680
    assert kv_bytes_per_token(l70, "bf16", 16) == 2 * 327_680


def test_aliases_and_unknown_names() -> None:
    assert get_gpu("h100").name == "H100-SXM"
    assert get_model("Llama_3.3_70B").name == "Llama-3.1-70B"
    with pytest.raises(ConfigError, match=r"unknown GPU 'H300'.*H100-SXM"):
        get_gpu("H300")
    with pytest.raises(ConfigError, match="unknown software stack"):
        get_stack("cuda-magic")


def test_peak_fallbacks() -> None:
    h100, a100, b200 = get_gpu("H100-SXM"), get_gpu("A100-SXM-80GB"), get_gpu("B200")
    assert h100.peak_flops("fp4") == 1979e12  # no FP4 on Hopper: FP8 tensor cores
    assert a100.peak_flops("fp8") == 312e12  # no FP8 on Ampere: BF16
    assert a100.peak_flops("fp16") == 312e12
    assert b200.peak_flops("fp4") == 9000e12
    assert h100.achievable_flops("bf16") == pytest.approx(989e12 * 0.803)


def test_drop_in_gpu_file(tmp_path: Path) -> None:
    (tmp_path / "X1.yaml").write_text(
        "name: X1\naliases: [x-one]\nmemory_gb: 64\nhbm_bw_gb_s: 2000\npeak_tflops: {bf16: 500}\n"
        "calibration: {mfu: 0.5, mbu: 0.7, overhead_s: 0.002}\n"
    )
    table = gpus(tmp_path)
    g = table["x-one"]
    assert isinstance(g, GpuSpec) and g.memory_gb == 64
    # the GPU's own block wins over its stack; an explicit stack wins over both
    assert resolve_calibration(g).mfu == 0.5
    assert resolve_calibration(g, "nvidia-trtllm") == get_stack("trtllm").calibration


def test_bad_profile_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: Bad\nmemory_gb: -1\nhbm_bw_gb_s: 10\npeak_tflops: {bf16: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: memory_gb"):
        gpus(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: Bad\nmemory_gb: 1\nhbm_bw_gb_s: 10\npeak_tflops: {fp8: 1}\n")
    with pytest.raises(ConfigError, match="needs at least bf16"):
        gpus(tmp_path / ".")  # distinct cache key


def test_model_kv_figure_is_checked(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: M\nlayers: 2\nhidden_size: 64\nattention_heads: 4\nkv_heads: 2\nhead_dim: 16\nparams_total: 1e6\n"
        "params_active: 1e6\nmax_context: 1024\nkv_bytes_per_token_bf16: 999\n"
    )
    with pytest.raises(ConfigError, match="disagrees with the architecture"):
        models(tmp_path)


def test_stacks_present() -> None:
    names = {s.name for s in unique(stacks())}
    assert {"nvidia-vllm", "nvidia-trtllm", "amd-vllm", "nvidia-splitwise"} <= names


def test_amd_stack_has_its_own_factors() -> None:
    """amd-vllm is not a copy of nvidia-vllm: vLLM's software efficiency (mfu, mbu, overheads) on AMD's measured
    hardware and RCCL all-reduce (calibration/fit_factors.py amd_vllm); MI300X GEMMs at AMD's Max-Achievable FLOPs,
    its memory at BabelStream's measured bandwidth (mbu is relative to it, so it is not rescaled)."""
    amd, nv = get_stack("amd-vllm").calibration, get_stack("nvidia-vllm").calibration
    assert amd != nv
    assert (amd.mfu, amd.mbu, amd.overhead_s) == (nv.mfu, nv.mbu, nv.overhead_s)
    assert get_gpu("MI300X").read_bw_bytes_s() == pytest.approx(4.26e12, rel=2e-3)  # BabelStream mul, ND MI300X v5
    assert amd.allreduce_latency_s > 2 * nv.allreduce_latency_s  # RCCL's small-message latency (~52 us vs ~23 us)
    assert get_gpu("MI300X").achievable_flops("fp8") == pytest.approx(1273e12, rel=2e-3)  # AMD MAF
    assert get_gpu("MI300X").default_stack == "amd-vllm"


def test_stack_scheduler() -> None:
    """TensorRT-LLM reserves a request's whole KV at admission; vLLM-class stacks allocate as they go."""
    assert get_stack("trtllm").scheduler == "reserve_kv"
    assert {get_stack(n).scheduler for n in ("nvidia-vllm", "amd-vllm", "nvidia-splitwise")} == {"preempt"}
    h100 = get_gpu("H100-SXM")
    assert stack_reserves_kv(h100, "nvidia-trtllm") and not stack_reserves_kv(h100, "vllm")
    assert not stack_reserves_kv(h100)  # H100's default stack is nvidia-vllm
    with pytest.raises(ConfigError, match="unknown software stack"):
        stack_reserves_kv(h100, "cuda-magic")
