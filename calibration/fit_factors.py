"""Reproduce capsim's fitted software-stack factors from the published measurements in ``calibration/data``.

    .venv/bin/python calibration/fit_factors.py            # fit, print the validation table
    .venv/bin/python calibration/fit_factors.py --write    # also rewrite hardware_profiles/stacks/*.yaml
                                                           # and calibration/validation.json

Steps (each prints what it found):
1. Tensor-parallel all-reduce: fit latency + bus bandwidth to Vidur's NCCL all_reduce timings on a DGX H100
   (``network__h100_dgx__all_reduce.csv``); this fixes ``allreduce_latency_s`` and ``allreduce_efficiency``
   (bus bandwidth ÷ 450 GB/s per direction) for every NVIDIA stack.
2. ``nvidia-trtllm``: mfu, mbu, overhead_s fitted to TensorRT-LLM's trtllm-bench tables and MLPerf v4.1 Offline,
   simulated with the stack's ``scheduler: reserve_kv`` (GUARANTEED_NO_EVICT: whole KV reserved at admission,
   no preemption, no other concurrency cap). vLLM/SGLang points keep the preempting scheduler. A point's
   ``reserve_kv`` cell in ``published_points.csv`` overrides its stack's scheduler (empty = follow the stack).
3. ``nvidia-vllm``: mfu, mbu, overhead_s, overhead_s_per_token fitted to the SGLang/vLLM ShareGPT runs, the
   MLPerf v5.1 vLLM Llama-3.1-8B runs and vLLM CI's batch-8 latency runs on H100 and A100.
4. ``nvidia-splitwise``: the Splitwise profiling runtime (unnamed in the data), fitted to its prompt and token
   times (A100 and H100 at TP2/4/8), with its own all-reduce efficiency.
5. ``amd-vllm``: not fitted (every MI300X point is held out). vLLM's software efficiency is ``nvidia-vllm``'s
   (``mfu`` relative to the best GEMM the GPU's own library reaches, ``mbu`` relative to the GPU's measured memory
   bandwidth, ``overhead_s``), applied to AMD's measured hardware: all-reduce latency and efficiency fitted to
   RCCL's measured all-reduce on MI300X (:func:`amd_allreduce`). The GEMM ceilings are AMD's Max-Achievable FLOPs
   (``matmul_ceiling``) and the memory ceiling BabelStream's measured bandwidth (``hbm_read_ceiling``), both in
   ``hardware_profiles/gpus/MI300X.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.perf import validation  # noqa: E402
from sim.perf.calibration import CalPoint, fit_calibration, format_table  # noqa: E402
from sim.perf.catalog import Calibration  # noqa: E402

DATA = ROOT / "calibration" / "data"
NVLINK4_GB_S = 450.0


def fit_allreduce(path: Path = DATA / "network__h100_dgx__all_reduce.csv") -> tuple[float, float, pd.DataFrame]:
    """Fit t = latency + 2(G−1)/G · bytes / busbw to the median NCCL all_reduce times (ms, size in bytes)."""
    df = pd.read_csv(path)
    df = df[df.devices_per_node == df.num_workers]
    g = df.groupby(["num_workers", "size"])["time_stats.all_reduce.median"].median().reset_index()
    g["t_s"] = g["time_stats.all_reduce.median"] / 1e3
    g["ring"] = 2 * (g.num_workers - 1) / g.num_workers * g["size"]
    # least squares on relative error: minimise Σ ((lat + ring/bw − t)/t)²
    A = np.column_stack([np.ones(len(g)), g["ring"].to_numpy()]) / g["t_s"].to_numpy()[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones(len(g)), rcond=None)
    latency_s, inv_bw = float(coef[0]), float(coef[1])
    return latency_s, 1.0 / inv_bw / 1e9, g


def published_points() -> list[CalPoint]:
    """The rows of ``published_points.csv`` (loader in :mod:`sim.perf.validation`)."""
    return validation.published_points(DATA / "published_points.csv")


def splitwise_points() -> list[CalPoint]:
    """Splitwise's Llama-2-70B prompt and token times (loader in :mod:`sim.perf.validation`)."""
    return validation.splitwise_points(DATA / "splitwise_sim_perf_model_dgx_a100_h100.csv")


STACK_FITS = validation.STACK_FITS

# RCCL AllReduce bus bandwidth (GB/s) by message size (bytes), 8x MI300X, same file (in-place)
MI300X_RCCL_BUSBW = {1024: 0.04, 4096: 0.15, 16384: 0.59, 65536: 2.22, 262144: 7.50, 1048576: 22.41,
                     4194304: 82.53, 16777216: 171.46, 67108864: 266.34, 268435456: 302.80, 1073741824: 313.92,
                     8589934592: 316.82}
MI300X_LINK_GB_S = 448.0  # hardware_profiles/gpus/MI300X.yaml interconnect_gb_s (per direction, aggregate)


# One-shot small-message all-reduce kernels on 8x H100 SXM (NVLink), latency in microseconds by message size (bytes)
# and TP 2/4/8, without CUDA graphs: sgl-project/sglang PR #2904 ("optimize custom allreduce kernel"), tables "vllm"
# (vLLM's custom all-reduce, used by vLLM and by SGLang v0.3) and "custom allreduce" (SGLang's port of TensorRT-LLM's
# AllReduce kernels)
SMALL_AR_SIZES = (512, 4096, 32768, 262144, 524288, 1048576)
SMALL_AR_US = {
    "vllm-custom": {2: (9.5, 8.8, 8.7, 12.9, 17.7, 26.6), 4: (9.1, 8.5, 9.2, 20.6, 26.9, 40.2),
                    8: (10.1, 9.3, 11.8, 24.1, 30.4, 45.0)},
    "trtllm": {2: (3.7, 3.9, 4.5, 7.9, 12.5, 19.9), 4: (4.8, 3.7, 4.8, 13.9, 20.2, 31.1),
               8: (5.9, 5.7, 7.8, 16.7, 22.1, 33.8)},
}
SMALL_AR_KERNEL = {"nvidia-trtllm": "trtllm", "nvidia-vllm": "vllm-custom"}  # nvidia-sglang shares nvidia-vllm's


def fit_small_allreduce(table: dict[int, tuple[float, ...]]) -> tuple[float, float]:
    """(latency_s, bus bandwidth GB/s) of ``t = latency + 2(G−1)/G · bytes / busbw`` fitted (least squares on relative
    error) to a one-shot kernel's measured latencies at every TP degree and message size."""
    rows, t = [], []
    for g, lat_us in table.items():
        for size, us in zip(SMALL_AR_SIZES, lat_us):
            rows.append((1.0, 2 * (g - 1) / g * size))
            t.append(us * 1e-6)
    tt = np.array(t)
    coef, *_ = np.linalg.lstsq(np.array(rows) / tt[:, None], np.ones(len(tt)), rcond=None)
    return float(coef[0]), 1.0 / float(coef[1]) / 1e9


def amd_allreduce(busbw: dict[int, float] = MI300X_RCCL_BUSBW, gpus: int = 8) -> tuple[float, float]:
    """(latency_s, bus bandwidth GB/s) of ``t = latency + 2(G−1)/G · bytes / busbw`` fitted to RCCL's measured
    all-reduce (time = 2(G−1)/G · bytes / measured bus bandwidth), least squares on relative error."""
    sizes = np.array(sorted(busbw), dtype=float)
    ring = 2 * (gpus - 1) / gpus * sizes
    t = ring / (np.array([busbw[int(s)] for s in sizes]) * 1e9)
    A = np.column_stack([np.ones(len(t)), ring]) / t[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones(len(t)), rcond=None)
    return float(coef[0]), 1.0 / float(coef[1]) / 1e9


def amd_vllm(nvidia_vllm: Calibration) -> Calibration:
    """``amd-vllm``'s factors: vLLM's software efficiency (``nvidia-vllm``'s ``mfu`` and overheads) on AMD's measured
    hardware (module docstring, step 5). No MI300X serving point is used."""
    lat, busbw = amd_allreduce()
    return nvidia_vllm.model_copy(update={
        "allreduce_latency_s": lat,
        "allreduce_efficiency": min(1.0, busbw / MI300X_LINK_GB_S),
        "allreduce_small_latency_s": None,  # no measured one-shot kernel on MI300X in the sources: RCCL only
    })


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the stack YAMLs and calibration/validation.json")
    ap.add_argument("--max-evaluations", type=int, default=60)
    ap.add_argument("--rewrite-only", action="store_true",
                    help="no fit: rewrite the stack YAMLs from calibration/validation.json (after editing schedulers, "
                         "engine defaults or CUDA-graph sizes here)")
    args = ap.parse_args(argv)
    if args.rewrite_only:
        results = json.loads((ROOT / "calibration" / "validation.json").read_text())
        fitted = {k: Calibration(**v["calibration"]) for k, v in results.items()}
        cal = fitted["nvidia-vllm"]
        fitted.update({"amd-vllm": amd_vllm(cal), "nvidia-sglang": cal})
        lat = cal.allreduce_latency_s
        _write_stacks(fitted, results, lat, cal.allreduce_efficiency * NVLINK4_GB_S)
        print("rewrote hardware_profiles/stacks/*.yaml")
        return 0

    lat, busbw, _ = fit_allreduce()
    eff = min(1.0, busbw / NVLINK4_GB_S)
    print(f"all-reduce (Vidur NCCL, DGX H100): latency {lat * 1e6:.1f} us, bus bandwidth {busbw:.0f} GB/s "
          f"-> allreduce_efficiency {eff:.3f} of {NVLINK4_GB_S:.0f} GB/s")

    points = published_points() + splitwise_points()
    split = validation.default_split(points)  # H100/A100 points only; every other GPU is held out, never fitted
    start = Calibration(mfu=0.6, mbu=0.75, overhead_s=0.004, overhead_s_per_token=1e-6,
                        allreduce_latency_s=lat, allreduce_efficiency=eff)
    fitted: dict[str, Calibration] = {}
    results = {}
    for stack, params in STACK_FITS.items():
        pts = [p for p in points if validation.factor_stack(p.stack) == stack]
        t0 = time.perf_counter()
        stack_start = start
        if stack in SMALL_AR_KERNEL:
            s_lat, s_bw = fit_small_allreduce(SMALL_AR_US[SMALL_AR_KERNEL[stack]])
            print(f"{stack}: small-message all-reduce ({SMALL_AR_KERNEL[stack]}) latency {s_lat * 1e6:.1f} us, "
                  f"bus bandwidth {s_bw:.0f} GB/s")
            stack_start = start.model_copy(update={"allreduce_small_latency_s": s_lat,
                                                   "allreduce_small_efficiency": min(1.0, s_bw / NVLINK4_GB_S)})
        res = fit_calibration(pts, stack_start, params, max_evaluations=args.max_evaluations, split=split)
        fitted[stack] = res.calibration
        m = res.mape()
        print(f"\n== {stack}: {len(pts)} points, {res.evaluations} evaluations, {time.perf_counter() - t0:.0f} s")
        print("   factors: " + ", ".join(f"{k}={getattr(res.calibration, k):.4g}" for k in params))
        print("   MAPE (fitted points): " + ", ".join(f"{k} {v:.1f}%" for k, v in m.items()))
        print(format_table(res.rows_after))
        results[stack] = {"params": list(params), "calibration": res.calibration.model_dump(), "mape": m,
                          "mape_all_points": res.mape(fitted_only=False), "rows": res.rows_after}
    fitted["amd-vllm"] = amd_vllm(fitted["nvidia-vllm"])
    print("\n== amd-vllm (derived, not fitted): " + ", ".join(
        f"{k}={v:.4g}" for k, v in fitted["amd-vllm"].model_dump().items() if v is not None))
    fitted["nvidia-sglang"] = fitted["nvidia-vllm"]  # fitted together (SGLang and vLLM points)

    if args.write:
        _write_stacks(fitted, results, lat, busbw)
        out = ROOT / "calibration" / "validation.json"
        out.write_text(json.dumps(results, indent=1, default=float) + "\n")
        print(f"\nwrote {out.relative_to(ROOT)} and hardware_profiles/stacks/*.yaml")
    return 0


_DESCRIPTIONS = {
    "nvidia-trtllm": ("TensorRT-LLM (trtllm-bench, MLPerf submissions) on NVIDIA GPUs.", ["trtllm", "tensorrt-llm"],
                      "TensorRT-LLM perf-overview tables (H100, Llama-3.1-8B/3.3-70B/3.1-405B FP8) and MLPerf v4.1 "
                      "Offline llama2-70b on 8x H100-SXM"),
    "nvidia-vllm": ("vLLM (v1 scheduler: token budget, running first, recompute preemption of the newest) on NVIDIA "
                    "GPUs (CUDA graphs, FlashAttention/FlashInfer, cuBLAS GEMMs).",
                    ["vllm", "nvidia"],
                    "SGLang v0.3.0 / vLLM v0.6.0 ShareGPT runs (A100 8B, H100 TP4 70B), MLPerf v5.1 vLLM "
                    "Llama-3.1-8B on 1x H100 and vLLM CI batch-8 latency (H100, A100; 8B TP1, 70B TP4), fitted "
                    "together with nvidia-sglang"),
    "nvidia-sglang": ("SGLang on NVIDIA GPUs: its own scheduler (new-token-ratio admission that reserves future decode "
                      "tokens and decays, retraction on OOM) and defaults (chunked prefill 8192, mem_fraction_static "
                      "0.88); kernel factors shared with nvidia-vllm (fitted together).", ["sglang"],
                      "SGLang v0.3.0 ShareGPT runs together with the nvidia-vllm points"),
    "nvidia-splitwise": ("The runtime behind Splitwise's profiles (Llama-2-70B FP16, DGX-A100/H100); an older, "
                         "host-bound stack kept to check A100-vs-H100 scaling.", ["splitwise"],
                         "Splitwise perf_model.csv prompt and token times"),
    "amd-vllm": ("vLLM on ROCm (AMD Instinct). Not fitted (every MI300X point is held out): vLLM's software "
                 "efficiency (nvidia-vllm's mfu, mbu and overheads) on AMD's measured hardware: the GPU's "
                 "matmul_ceiling is AMD's Max-Achievable FLOPs (hipBLASLt), its hbm_read_ceiling BabelStream's "
                 "measured bandwidth, "
                 "all-reduce latency and efficiency are RCCL's measured all-reduce on MI300X.",
                 ["rocm", "amd", "rocm-vllm"],
                 "none: derived from nvidia-vllm's factors and AMD kernel measurements (calibration/fit_factors.py "
                 "amd_vllm)"),
}


# CUDA-graph batch sizes each stack pads a step's tokens up to (StackSpec.cuda_graph_sizes), and which steps replay
# a graph (StackSpec.cuda_graph_steps): every step of up to the largest size (vLLM v1's piecewise graphs) or
# decode-only steps (TensorRT-LLM's generation-only graphs, SGLang's decode batches)
# vLLM v1 vllm/config/vllm.py _set_cudagraph_sizes: max_graph_size = min(max_num_seqs * 2, 512) -> 512 at 256 seqs
VLLM_GRAPH_SIZES = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16))
# perf-overview llm_options.yml
TRTLLM_GRAPH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192]
SGLANG_GRAPH_SIZES = [1, 2, 4] + [8 * i for i in range(1, 21)]  # SGLang cuda_graph_runner.py capture_bs, max 160
GRAPH_SIZES = {
    "nvidia-trtllm": TRTLLM_GRAPH_SIZES,
    "nvidia-vllm": VLLM_GRAPH_SIZES,
    "nvidia-splitwise": [],
    "amd-vllm": VLLM_GRAPH_SIZES,
    "nvidia-sglang": SGLANG_GRAPH_SIZES,
}
GRAPH_STEPS = {
    "nvidia-trtllm": "decode_only",
    "nvidia-vllm": "all",
    "nvidia-splitwise": "decode_only",
    "amd-vllm": "all",
    "nvidia-sglang": "decode_only",
}
# the engines' own defaults (fleet.engine fields a scenario leaves unset)
ENGINE_DEFAULTS = {
    "nvidia-trtllm": {"max_num_seqs": 2048, "max_num_batched_tokens": 8192},
    "nvidia-vllm": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
    "amd-vllm": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
    "nvidia-sglang": {"max_num_seqs": 1024, "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.88},
    "nvidia-splitwise": {},
}
ENGINE_SOURCES = {
    "nvidia-trtllm": "engine_defaults: TensorRT-LLM LLM API / BuildConfig defaults max_batch_size 2048, max_num_tokens "
    "8192; capacity scheduler GUARANTEED_NO_EVICT (MAX_UTILIZATION = scheduler: preempt)",
    "nvidia-vllm": "engine_defaults: vLLM max_num_seqs 256, max_num_batched_tokens 8192 (capsim's long-standing "
    "defaults; vLLM v1 picks 256-1024 / 2048-16384 by usage context and GPU)",
    "amd-vllm": "engine_defaults: as nvidia-vllm",
    "nvidia-sglang": "engine_defaults: sglang server_args.py (chunked_prefill_size 8192 for 35-160 GB GPUs, "
    "mem_fraction_static 0.88 at TP1); max_running_requests is sized from the KV pool by SGLang, "
    "1024 here; new-token ratio 0.7 -> 0.098 over 600 steps (global_config)",
    "nvidia-splitwise": "engine_defaults: none",
}
GRAPH_SOURCES = {
    "nvidia-trtllm": "cuda_graph_sizes: TensorRT-LLM perf-overview @00f37686 llm_options.yml (cuda_graph_config "
    "enable_padding, batch_sizes 1..8192), the configuration of the trtllm-bench tables; cuda_graph_steps: "
    "decode_only, TensorRT-LLM docs features/torch_compile_and_piecewise_cuda_graph.md ('Piecewise CUDA Graph only "
    "handles context-only and mixed context+generation iterations, while the generation-only CUDA graph' handles "
    "the rest; piecewise graphs are off by default) and DecodeCudaGraphConfig ('CUDA graph configuration for decode "
    "requests', enable_padding rounds batches up to the nearest captured size)",
    "nvidia-vllm": "cuda_graph_sizes: vLLM v1 vllm/config/vllm.py _set_cudagraph_sizes: [1, 2, 4] + range(8, 256, 8) + "
    "range(256, max_graph_size + 1, 16), max_graph_size = min(max_num_seqs * 2, 512) = 512 at max_num_seqs 256; "
    "cuda_graph_steps: all, vLLM docs design/cuda_graphs.md (piecewise graphs serve mixed prefill-decode batches, "
    "full graphs uniform decode batches; a batch above the largest size runs eagerly)",
    "amd-vllm": "cuda_graph_sizes and cuda_graph_steps: vLLM v1's (HIP graphs on ROCm, same capture list and dispatch)",
    "nvidia-sglang": "cuda_graph_sizes: SGLang python/sglang/srt/model_executor/cuda_graph_runner.py capture_bs = "
    "[1, 2, 4] + [i * 8 for i in range(1, 21)] (cuda_graph_max_bs 160, the v0.3-era default of the fitted runs); "
    "cuda_graph_steps: decode_only (capture_forward_mode = ForwardMode.DECODE; SGLang runs prefill batches eagerly)",
    "nvidia-splitwise": "cuda_graph_sizes: none (the runtime is not recorded)",
}

SMALL_AR_SOURCE = ("allreduce_small_*: one-shot all-reduce latency on 8x H100 SXM at TP 2/4/8, 512 B-1 MB "
                   "(sgl-project/sglang PR #2904, table '{}'), latency + bandwidth fitted; each all-reduce takes the "
                   "faster of this kernel and the NCCL ring (allreduce_latency_s/efficiency)")
EXTRA_SOURCES = {
    "nvidia-trtllm": [SMALL_AR_SOURCE.format("custom allreduce', SGLang's port of TensorRT-LLM's AllReduce kernel")],
    "nvidia-vllm": [SMALL_AR_SOURCE.format("vllm', vLLM's custom all-reduce")],
    "nvidia-sglang": [SMALL_AR_SOURCE.format("vllm', vLLM's custom all-reduce, which SGLang v0.3 uses")],
    "amd-vllm": [
        "allreduce: RCCL AllReduce bus bandwidth 1 KB-8 GB on 8x MI300X (same ND_MI300X_v5_results.md), latency + "
        "bandwidth fitted as for NCCL; efficiency = bus bandwidth / 448 GB/s Infinity Fabric",
        "mfu, mbu, overhead_s, overhead_s_per_token: nvidia-vllm's (vLLM's software efficiency, relative to each "
        "GPU's measured GEMM and memory ceilings; no AMD serving point is fitted)",
    ],
}

# how each stack admits requests (StackSpec.scheduler); points with an empty reserve_kv cell follow it
SCHEDULERS = {
    "nvidia-trtllm": "reserve_kv",
    "nvidia-vllm": "preempt",
    "nvidia-splitwise": "preempt",
    "amd-vllm": "preempt",
    "nvidia-sglang": "sglang",
}


class _Flow(list):
    """A list written on one line (``[1, 2, 4, …]``) in the stack YAMLs."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _write_stacks(fitted: dict[str, Calibration], results: dict, lat: float, busbw: float) -> None:
    folder = ROOT / "hardware_profiles" / "stacks"
    for name, cal in fitted.items():
        desc, aliases, fitted_to = _DESCRIPTIONS[name]
        mape = results.get(validation.factor_stack(name), results["nvidia-vllm"])["mape"]
        if name == "amd-vllm":
            a_lat, a_bw = amd_allreduce()
            header = (
                f"# Software stack '{name}'. Written by calibration/fit_factors.py --write; do not edit by hand.\n"
                f"# All-reduce latency/efficiency from RCCL all-reduce on 8x MI300X ({a_lat * 1e6:.1f} us, "
                f"{a_bw:.0f} GB/s bus bandwidth). Not fitted: no MI300X point is fitted (all are held out).\n"
            )
        else:
            header = (
                f"# Software stack '{name}'. Written by calibration/fit_factors.py --write; do not edit by hand.\n"
                f"# All-reduce latency/efficiency from Vidur's NCCL timings on DGX H100 ({lat * 1e6:.1f} us, "
                f"{busbw:.0f} GB/s bus bandwidth).\n"
                f"# MAPE on the fitted points: " + ", ".join(f"{k} {v:.1f}%" for k, v in mape.items()) + "\n"
            )
        body = {
            "name": name,
            "aliases": aliases,
            "vendor": "amd" if name.startswith("amd") else "nvidia",
            "description": desc,
            "scheduler": SCHEDULERS[name],
            "calibration": {k: float(f"{v:.4g}") for k, v in cal.model_dump().items()
                            if v is not None and not (k == "allreduce_small_efficiency"
                                                      and cal.allreduce_small_latency_s is None)},
            "engine_defaults": ENGINE_DEFAULTS[name],
            "cuda_graph_sizes": _Flow(GRAPH_SIZES[name]),
            "cuda_graph_steps": GRAPH_STEPS[name],
            "fitted_to": [fitted_to],
            "sources": [
                "calibration/fit_factors.py",
                "calibration/data/README.md",
                GRAPH_SOURCES[name],
                ENGINE_SOURCES[name],
            ] + EXTRA_SOURCES.get(name, []),
        }
        (folder / f"{name}.yaml").write_text(header + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=120))


if __name__ == "__main__":
    raise SystemExit(main())
