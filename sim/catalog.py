"""Hardware and model catalogue: one YAML file per GPU in ``hardware_profiles/gpus/`` and per model in
``hardware_profiles/models/``. A user adds a GPU or model by dropping in one file.

Units are in the field names: GB means 10^9 bytes, TFLOPS dense (no sparsity), bandwidths in GB/s.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .paths import hardware_dir

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Calibration(_Strict):
    """Efficiency factors of the roofline step-time model (see ``sim.perf``).

    ``mfu``: achieved fraction of dense peak FLOPS; ``mbu``: achieved fraction of peak memory bandwidth;
    ``overhead_s``: fixed per-iteration cost (scheduling, kernel launches, sampling);
    ``allreduce_latency_s``: fixed latency of one tensor-parallel all-reduce.
    """

    mfu: float = Field(0.5, gt=0, le=1)
    mbu: float = Field(0.75, gt=0, le=1)
    overhead_s: float = Field(0.003, ge=0)
    allreduce_latency_s: float = Field(8e-6, ge=0)
    allreduce_efficiency: float = Field(0.7, gt=0, le=1)


class GpuSpec(_Strict):
    """One accelerator, from its datasheet, plus calibration factors and prices."""

    name: str
    aliases: list[str] = []
    vendor: str = "nvidia"
    memory_gb: float = Field(gt=0)
    hbm_bw_gb_s: float = Field(gt=0)
    peak_tflops: dict[str, float] = Field(description="dense TFLOPS per precision (bf16, fp8, fp4)")
    interconnect_gb_s: float = Field(450.0, gt=0, description="per-GPU, per-direction GPU-to-GPU bandwidth")
    tdp_w: float = Field(700.0, gt=0)
    usd_per_gpu_hour: float = Field(2.5, ge=0, description="rental price")
    purchase_usd_per_gpu: float = Field(30000.0, ge=0)
    calibration: Calibration = Calibration()
    sources: list[str] = []

    def peak_flops(self, precision: str) -> float:
        """Dense peak FLOP/s for matmuls in ``precision``; falls back to the next wider format."""
        order = ["fp4", "int4", "fp8", "int8", "bf16", "fp16", "fp32"]
        start = order.index(precision) if precision in order else order.index("bf16")
        for p in order[start:]:
            if p in self.peak_tflops:
                return self.peak_tflops[p] * 1e12
        raise ConfigError(self.name, "peak_tflops", f"no peak for {precision} or any wider format")


class MlaSpec(_Strict):
    """Multi-head latent attention (DeepSeek-V3): a compressed KV latent per token and layer."""

    kv_lora_rank: int = Field(gt=0)
    rope_head_dim: int = Field(ge=0)


class ModelSpec(_Strict):
    """Architecture facts needed for memory, FLOPs and KV sizing."""

    name: str
    aliases: list[str] = []
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    params_total: float = Field(gt=0)
    params_active: float = Field(gt=0)
    max_context: int = Field(gt=0)
    mla: MlaSpec | None = None
    sources: list[str] = []

    def kv_elements_per_token(self) -> int:
        """Cached elements per token: ``2·layers·kv_heads·head_dim`` (GQA) or ``layers·(rank+rope)`` (MLA)."""
        if self.mla is not None:
            return self.layers * (self.mla.kv_lora_rank + self.mla.rope_head_dim)
        return 2 * self.layers * self.kv_heads * self.head_dim


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _load_dir(folder: Path, cls: type[BaseModel]) -> dict[str, BaseModel]:
    out: dict[str, BaseModel] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), "", f"not valid YAML ({exc.__class__.__name__})") from None
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ConfigError(str(path), field, err["msg"]) from None
        names = [spec.name] + list(getattr(spec, "aliases", []))  # type: ignore[attr-defined]
        for n in names:
            out[_norm(n)] = spec
    return out


@lru_cache(maxsize=8)
def _gpus(folder: str) -> dict[str, GpuSpec]:
    return _load_dir(Path(folder), GpuSpec)  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _models(folder: str) -> dict[str, ModelSpec]:
    return _load_dir(Path(folder), ModelSpec)  # type: ignore[return-value]


def gpus(folder: Path | None = None) -> dict[str, GpuSpec]:
    """All GPU profiles by lower-case name and alias."""
    return _gpus(str(folder or hardware_dir() / "gpus"))


def models(folder: Path | None = None) -> dict[str, ModelSpec]:
    """All model specs by lower-case name and alias."""
    return _models(str(folder or hardware_dir() / "models"))


def get_gpu(name: str, source: str = "scenario", field: str = "fleet.gpu") -> GpuSpec:
    table = gpus()
    spec = table.get(_norm(name))
    if spec is None:
        known = sorted({s.name for s in table.values()})
        raise ConfigError(source, field, f"unknown GPU '{name}' (known: {', '.join(known)})")
    return spec


def get_model(name: str, source: str = "scenario", field: str = "fleet.model") -> ModelSpec:
    table = models()
    spec = table.get(_norm(name))
    if spec is None:
        known = sorted({s.name for s in table.values()})
        raise ConfigError(source, field, f"unknown model '{name}' (known: {', '.join(known)})")
    return spec
