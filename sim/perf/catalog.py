"""Hardware and model catalogue: one YAML file per GPU in ``hardware_profiles/gpus/``, per model in
``hardware_profiles/models/`` and per software stack in ``hardware_profiles/stacks/``. A user adds a GPU,
model or stack by dropping in one file; ``capsim catalog`` lists what is there.

Units are in the field names: GB means 10^9 bytes, TFLOPS dense (no sparsity), bandwidths in GB/s.

Where the efficiency factors come from (see ``docs/performance-model.md``): a GPU profile states datasheet facts
(peaks, memory, bandwidth) and the *measured* best-GEMM ceiling as a fraction of peak
(``matmul_ceiling``); the factors that turn those into serving speed (``Calibration``) belong to the software
stack (``nvidia-trtllm``, ``nvidia-vllm``, ``amd-vllm`` …) and are fitted once, to published measurements, by
``calibration/fit_factors.py``. A GPU profile may carry its own ``calibration`` block (``capsim calibrate``
writes one), which then wins over its stack's.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, model_validator

from sim.core.config import Engine, Strict, read_yaml, validate_mapping
from sim.core.errors import ConfigError
from sim.core.paths import data_dirs

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4"]

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "int4": 0.5,
}

# narrowest first: a precision without its own peak runs at the next wider one (FP4 weights on Hopper
# are de-quantised and multiplied in FP8)
_PRECISION_ORDER = ["fp4", "int4", "fp8", "int8", "bf16", "fp16", "fp32"]
_SAME = {"bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16")}  # same tensor-core rate



class Calibration(Strict):
    """Efficiency factors of the roofline step-time model (see ``sim.perf.model``).

    ``mfu``: achieved fraction of the GPU's *achievable* matmul rate (datasheet peak × ``matmul_ceiling``);
    ``mbu``: achieved fraction of the GPU's *measured* memory bandwidth (datasheet × ``hbm_read_ceiling``);
    ``overhead_s``: fixed per-iteration cost (scheduling, sampling; kernel boundaries are the GPU's
    ``kernel_launch_s`` per kernel, added by the step model); ``overhead_s_per_token``: per-token host cost of each
    scheduled token (sampling, detokenisation, bookkeeping); ``allreduce_latency_s``: fixed latency of one
    tensor-parallel all-reduce; ``allreduce_efficiency``: achieved fraction of the per-direction link bandwidth
    (NCCL/RCCL ring).
    ``allreduce_small_latency_s`` / ``allreduce_small_efficiency``: the stack's own one-shot all-reduce kernel for
    small messages over a GPU fabric (vLLM's custom all-reduce, TensorRT-LLM's AllReduce); each all-reduce takes the
    faster of the two (the stacks dispatch by message size). None: NCCL only.
    """

    mfu: float = Field(0.5, gt=0, le=1)
    mbu: float = Field(0.75, gt=0, le=1)
    overhead_s: float = Field(0.003, ge=0)
    overhead_s_per_token: float = Field(0.0, ge=0)
    allreduce_latency_s: float = Field(8e-6, ge=0)
    allreduce_efficiency: float = Field(0.7, gt=0, le=1)
    allreduce_small_latency_s: float | None = Field(None, ge=0)
    allreduce_small_efficiency: float = Field(0.1, gt=0, le=1)


class StackSpec(Strict):
    """A serving software stack on one vendor's hardware: its fitted factors, its scheduler and engine defaults.

    ``scheduler``: how the stack admits requests. ``preempt`` (vLLM v1; TensorRT-LLM MAX_UTILIZATION): KV blocks
    are allocated as tokens are computed and the newest request is preempted (recomputed) when they run out.
    ``reserve_kv`` (TensorRT-LLM's default GUARANTEED_NO_EVICT): a request's whole KV (prompt + output) is reserved
    at admission and never evicted. ``sglang``: admission reserves ``new_token_ratio`` × the future decode tokens of
    every running request (the ratio decays, and rises on a retraction), see :class:`sim.core.config.SglangAdmission`.
    ``engine_defaults``: the engine's own limits (``max_num_seqs``, ``max_num_batched_tokens``, …), used for every
    ``fleet.engine`` field the scenario leaves unset (:meth:`engine_for`).
    """

    name: str
    aliases: list[str] = Field(default_factory=list)
    vendor: str
    description: str = ""
    scheduler: Literal["preempt", "reserve_kv", "sglang"] = "preempt"
    calibration: Calibration
    engine_defaults: dict[str, Any] = Field(
        {}, description="the engine's own defaults (fleet.engine fields: max_num_seqs, max_num_batched_tokens, …); "
                        "a scenario's explicit engine values win")
    cuda_graph_sizes: list[int] = Field(
        [], description="batch sizes the stack captures CUDA graphs for; a step's GEMM tokens are padded up to the "
                        "next one (none above the largest); empty = no padding")
    cuda_graph_steps: Literal["decode_only", "all"] = Field(
        "decode_only", description="which steps replay a graph (and are padded): 'decode_only' (TensorRT-LLM's "
                                   "generation-only graphs, SGLang's decode batches) or 'all' (vLLM v1's piecewise "
                                   "graphs: mixed prefill+decode steps of up to the largest size too)")
    fitted_to: list[str] = Field([], description="measurement sets the factors were fitted to")
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_defaults(self) -> StackSpec:
        unknown = set(self.engine_defaults) - set(Engine.model_fields)
        if unknown:
            raise ValueError(f"engine_defaults: unknown engine field(s) {sorted(unknown)}")
        Engine.model_validate(self.engine_defaults)
        return self

    def engine_for(self, engine: Engine, source: str = "scenario", field: str = "fleet.engine") -> Engine:
        """``engine`` with this stack's defaults for every field it leaves unset, and its scheduler resolved:
        an explicit ``scheduler`` wins, then an explicit ``reserve_kv`` (True → ``reserve_kv``; False → the stack's
        scheduler unless that reserves, then ``preempt``), then the stack's."""
        explicit = engine.model_fields_set
        data = {k: v for k, v in self.engine_defaults.items() if k not in explicit}
        data.update({k: getattr(engine, k) for k in explicit})
        sched = engine.scheduler
        if sched is None:
            if engine.reserve_kv is None:
                sched = self.scheduler
            elif engine.reserve_kv:
                sched = "reserve_kv"
            else:
                sched = self.scheduler if self.scheduler != "reserve_kv" else "preempt"
        data["scheduler"] = sched
        data["reserve_kv"] = sched == "reserve_kv"
        data = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in data.items()}
        try:
            return validate_mapping(Engine, data, source)
        except ConfigError as exc:
            raise ConfigError(source, f"{field}.{exc.field}" if exc.field else field,
                              f"{exc.problem} (with {self.name}'s engine defaults)") from None


class GpuSpec(Strict):
    """One accelerator, from its datasheet, plus its default software stack and prices."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    vendor: str = "nvidia"
    memory_gb: float = Field(gt=0)
    hbm_bw_gb_s: float = Field(gt=0)
    peak_tflops: dict[str, float] = Field(description="dense TFLOPS per precision (bf16, fp8, fp4)")
    matmul_ceiling: dict[str, float] = Field(
        {}, description="measured best-GEMM TFLOPS as a fraction of peak, per precision (1.0 where unknown)"
    )
    attention_ceiling: float | None = Field(
        None, gt=0, le=1, description="measured BF16 attention-kernel (FlashAttention) TFLOPS as a fraction of the "
                                      "BF16 peak (default: the BF16 matmul ceiling)")
    hbm_read_ceiling: float | None = Field(
        None, gt=0, le=1, description="measured sustained memory bandwidth as a fraction of hbm_bw_gb_s (the best "
                                      "of BabelStream's copy/mul/add/triad/dot kernels); the stack's mbu is a "
                                      "fraction of this (default 1.0: unmeasured, the datasheet figure)")
    kernel_launch_s: float = Field(
        1.3e-6, ge=0, description="GPU time lost at each kernel boundary (launch, setup, teardown) even when the "
                                  "step replays a CUDA graph; paid by every kernel of every layer, each step")
    interconnect_gb_s: float = Field(450.0, gt=0, description="per-GPU, per-direction GPU-to-GPU bandwidth")
    max_gpus_per_node: int = Field(8, gt=0, description="largest tensor-parallel group on the fast interconnect")
    scale_out_gb_s: float = Field(50.0, gt=0, description="per-GPU, per-direction bandwidth between NVLink domains "
                                  "(InfiniBand/RoCE NIC per GPU; 400 Gb/s = 50 GB/s); used by expert parallelism "
                                  "across them")
    tdp_w: float = Field(700.0, gt=0)
    idle_w: float | None = Field(None, ge=0, description="draw with a model loaded and no work (default: "
                                 "sim.metrics.energy.IDLE_FRACTION × tdp_w)")
    usd_per_gpu_hour: float = Field(2.5, ge=0, description="rental price")
    purchase_usd_per_gpu: float = Field(30000.0, ge=0)
    stack: str | None = Field(None, description="default software stack (default: '<vendor>-vllm')")
    calibration: Calibration | None = Field(None, description="overrides the stack's factors when given")
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> GpuSpec:
        unknown = set(self.peak_tflops) - set(_PRECISION_ORDER)
        if unknown:
            raise ValueError(f"peak_tflops: unknown precision(s) {sorted(unknown)}")
        if not any(p in self.peak_tflops for p in ("bf16", "fp16")):
            raise ValueError("peak_tflops needs at least bf16 (or fp16)")
        for p, v in self.matmul_ceiling.items():
            if p not in _PRECISION_ORDER or not 0 < v <= 1:
                raise ValueError(f"matmul_ceiling.{p} must be a known precision with 0 < value <= 1")
        return self

    def _lookup(self, table: dict[str, float], precision: str) -> tuple[str, float] | None:
        start = _PRECISION_ORDER.index(precision) if precision in _PRECISION_ORDER else _PRECISION_ORDER.index("bf16")
        for p in _PRECISION_ORDER[start:]:
            for q in _SAME.get(p, (p,)):
                if q in table:
                    return q, table[q]
        return None

    def peak_flops(self, precision: str) -> float:
        """Dense peak FLOP/s for matmuls in ``precision``; falls back to the next wider format."""
        hit = self._lookup(self.peak_tflops, precision)
        if hit is None:
            raise ConfigError(self.name, "peak_tflops", f"no peak for {precision} or any wider format")
        return hit[1] * 1e12

    def compute_precision(self, precision: str) -> str:
        """The precision matmuls on ``precision`` weights actually run in on this GPU."""
        hit = self._lookup(self.peak_tflops, precision)
        return hit[0] if hit else "bf16"

    def achievable_flops(self, precision: str) -> float:
        """Peak × measured GEMM ceiling for the precision the matmuls run in (ceiling 1.0 where unmeasured)."""
        p = self.compute_precision(precision)
        ceiling = self._lookup(self.matmul_ceiling, p)
        return self.peak_flops(precision) * (ceiling[1] if ceiling else 1.0)

    def attention_flops(self) -> float:
        """Achievable attention FLOP/s: BF16 peak × the measured attention ceiling (else the BF16 GEMM ceiling)."""
        if self.attention_ceiling is not None:
            return self.peak_flops("bf16") * self.attention_ceiling
        return self.achievable_flops("bf16")

    def read_bw_bytes_s(self) -> float:
        """Measured sustained memory bandwidth (bytes/s): datasheet × ``hbm_read_ceiling`` (1.0 where unmeasured).
        The stack's ``mbu`` is the fraction of it the engine's kernels reach."""
        return self.hbm_bw_gb_s * 1e9 * (self.hbm_read_ceiling if self.hbm_read_ceiling is not None else 1.0)

    @property
    def default_stack(self) -> str:
        return self.stack or f"{self.vendor}-vllm"


class MlaSpec(Strict):
    """Multi-head latent attention (DeepSeek-V3): a compressed KV latent per token and layer."""

    kv_lora_rank: int = Field(gt=0)
    rope_head_dim: int = Field(ge=0)
    q_lora_rank: int | None = Field(None, gt=0)
    nope_head_dim: int | None = Field(None, gt=0)
    v_head_dim: int | None = Field(None, gt=0)


class MoeSpec(Strict):
    """Mixture of experts: all experts' weights are held (and read), only ``experts_per_token`` compute."""

    experts: int = Field(gt=0)
    experts_per_token: int = Field(gt=0)
    shared_experts: int = Field(0, ge=0)
    expert_intermediate_size: int = Field(gt=0)
    moe_layers: int | None = Field(None, gt=0, description="layers with experts (default: all)")


class SlidingWindowSpec(Strict):
    """Layers whose attention sees only the last ``tokens`` tokens (gpt-oss alternates them with full layers): their
    KV stops growing at ``tokens`` per sequence, so per-token KV and attention count only the other layers."""

    layers: int = Field(gt=0)
    tokens: int = Field(gt=0)


class ModelSpec(Strict):
    """Architecture facts needed for memory, FLOPs and KV sizing."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    vocab_size: int | None = Field(None, gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    params_total: float = Field(gt=0)
    params_active: float = Field(gt=0)
    max_context: int = Field(gt=0)
    mla: MlaSpec | None = None
    moe: MoeSpec | None = None
    sliding_window: SlidingWindowSpec | None = None
    kv_bytes_per_token_bf16: int | None = Field(None, description="published figure, checked against the formula")
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.params_active > self.params_total:
            raise ValueError(f"params_active ({self.params_active:.3g}) > params_total ({self.params_total:.3g})")
        if self.kv_heads > self.attention_heads:
            raise ValueError("kv_heads must be <= attention_heads")
        if self.sliding_window is not None and self.sliding_window.layers >= self.layers:
            raise ValueError("sliding_window.layers must be < layers (some layers attend the full context)")
        declared = self.kv_bytes_per_token_bf16
        if declared is not None and declared != 2 * self.kv_elements_per_token():
            raise ValueError(
                f"kv_bytes_per_token_bf16 {self.kv_bytes_per_token_bf16} disagrees with the architecture "
                f"({2 * self.kv_elements_per_token()})"
            )
        return self

    @property
    def full_attention_layers(self) -> int:
        """Layers whose KV grows with the context (all but the sliding-window ones)."""
        return self.layers - (self.sliding_window.layers if self.sliding_window is not None else 0)

    def kv_elements_per_token(self) -> int:
        """Cached elements per token: ``2·layers·kv_heads·head_dim`` (GQA) or ``layers·(rank+rope)`` (MLA), over the
        full-attention layers (a sliding-window layer's fixed ``window`` tokens per sequence are not counted)."""
        layers = self.full_attention_layers
        if self.mla is not None:
            return layers * (self.mla.kv_lora_rank + self.mla.rope_head_dim)
        return 2 * layers * self.kv_heads * self.head_dim

    def attention_flops_per_pair(self) -> float:
        """FLOPs of one (query, key) pair summed over layers.

        GQA/MHA: ``4·L·heads·head_dim`` (QKᵀ and PV, 2 FLOPs per multiply-add). MLA with weight absorption
        (how vLLM/SGLang decode DeepSeek-V3): scores over the ``rank+rope`` latent and values over the
        ``rank`` latent for every head: ``2·L·heads·(2·rank + rope)``.
        """
        layers = self.full_attention_layers
        if self.mla is not None:
            return 2.0 * layers * self.attention_heads * (2 * self.mla.kv_lora_rank + self.mla.rope_head_dim)
        return 4.0 * layers * self.attention_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.moe is not None or self.params_active < self.params_total


SpecT = TypeVar("SpecT", GpuSpec, ModelSpec, StackSpec)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_spec_file(path: Path, cls: type[BaseModel]) -> BaseModel:
    """Read and validate one catalogue YAML file; errors name the file and field."""
    return validate_mapping(cls, read_yaml(path), str(path))


def _load_dir(folder: Path, cls: type[BaseModel]) -> dict[str, BaseModel]:
    out: dict[str, BaseModel] = {}
    owner: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_spec_file(path, cls)
        names = [spec.name] + list(getattr(spec, "aliases", []))  # type: ignore[attr-defined]
        for n in names:
            key = _norm(n)
            if key in owner and owner[key] != path:
                raise ConfigError(str(path), "name", f"'{n}' is already defined in {owner[key].name}")
            owner[key] = path
            out[key] = spec
    return out


@lru_cache(maxsize=8)
def _gpus(folder: str) -> dict[str, GpuSpec]:
    return _load_dir(Path(folder), GpuSpec)  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _models(folder: str) -> dict[str, ModelSpec]:
    return _load_dir(Path(folder), ModelSpec)  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _stacks(folder: str) -> dict[str, StackSpec]:
    return _load_dir(Path(folder), StackSpec)  # type: ignore[return-value]


def _overlay(load, sub: str) -> dict:  # noqa: ANN001
    """Shipped specs overlaid by the user's (cwd, ``$CAPSIM_HOME``): a user spec replaces every key of the
    shipped spec it shares a name or alias with."""
    out: dict = {}
    for folder in data_dirs(Path("hardware_profiles") / sub):
        layer = load(str(folder))
        replaced = {id(out[k]) for k in layer if k in out}
        out = {k: v for k, v in out.items() if id(v) not in replaced}
        out.update(layer)
    return out


def gpus(folder: Path | None = None) -> dict[str, GpuSpec]:
    """All GPU profiles by lower-case name and alias."""
    return _gpus(str(folder)) if folder else _overlay(_gpus, "gpus")


def models(folder: Path | None = None) -> dict[str, ModelSpec]:
    """All model specs by lower-case name and alias."""
    return _models(str(folder)) if folder else _overlay(_models, "models")


def stacks(folder: Path | None = None) -> dict[str, StackSpec]:
    """All software stacks by lower-case name and alias."""
    return _stacks(str(folder)) if folder else _overlay(_stacks, "stacks")


def unique(table: Mapping[str, SpecT]) -> list[SpecT]:
    """Distinct specs of a catalogue table (aliases folded), in name order."""
    seen: dict[str, SpecT] = {}
    for spec in table.values():
        seen.setdefault(spec.name, spec)
    return [seen[k] for k in sorted(seen)]


def _lookup(table: dict, name: str, what: str, source: str, field: str):  # noqa: ANN202
    spec = table.get(_norm(name))
    if spec is None:
        known = sorted({s.name for s in table.values()})
        raise ConfigError(source, field, f"unknown {what} '{name}' (known: {', '.join(known)})")
    return spec


def get_gpu(name: str, source: str = "scenario", field: str = "fleet.gpu") -> GpuSpec:
    return _lookup(gpus(), name, "GPU", source, field)


def get_model(name: str, source: str = "scenario", field: str = "fleet.model") -> ModelSpec:
    return _lookup(models(), name, "model", source, field)


def get_stack(name: str, source: str = "scenario", field: str = "stack") -> StackSpec:
    return _lookup(stacks(), name, "software stack", source, field)


def engine_for_stack(
    gpu: GpuSpec, stack: str | None, engine: Engine, source: str = "scenario", field: str = "fleet.engine"
) -> Engine:
    """``engine`` completed with the stack's defaults and scheduler (the named ``stack``, else the GPU's default
    stack; an unknown default stack leaves the engine's own values, with ``preempt`` unless ``reserve_kv``)."""
    spec = resolve_stack(gpu, stack)
    if spec is not None:
        return spec.engine_for(engine, source, field)
    sched = engine.scheduler or ("reserve_kv" if engine.reserve_kv else "preempt")
    return engine.model_copy(update={"scheduler": sched, "reserve_kv": sched == "reserve_kv"})


def stack_reserves_kv(gpu: GpuSpec, stack: str | None = None) -> bool:
    """Whether the stack serving ``gpu`` (the named ``stack``, else the GPU's default stack) reserves a request's
    whole KV at admission (``scheduler: reserve_kv``). An unknown default stack counts as ``preempt``."""
    if stack is not None:
        return get_stack(stack).scheduler == "reserve_kv"
    spec = stacks().get(_norm(gpu.default_stack))
    return spec is not None and spec.scheduler == "reserve_kv"


def resolve_stack(gpu: GpuSpec, stack: str | None = None) -> StackSpec | None:
    """The named ``stack``, else the GPU's default stack (None when that is not in the catalogue)."""
    if stack is not None:
        return get_stack(stack)
    return stacks().get(_norm(gpu.default_stack))


def resolve_calibration(gpu: GpuSpec, stack: str | None = None) -> Calibration:
    """Factors for ``gpu``: the named ``stack``'s if given, else the GPU's own block, else its default stack's."""
    if stack is not None:
        return get_stack(stack).calibration
    if gpu.calibration is not None:
        return gpu.calibration
    table = stacks()
    spec = table.get(_norm(gpu.default_stack))
    if spec is None:
        raise ConfigError(gpu.name, "stack", f"unknown software stack '{gpu.default_stack}' and no calibration block")
    return spec.calibration
