"""The scenario's ``plan:`` section: which candidates ``capsim plan`` considers and how it prices them.

Defaults: every GPU in the catalogue, 1/2/4/8 GPUs per node, BF16 and FP8 (weights and KV cache alike), the
scenario's ``max_num_seqs``, and four ways to pay. Discounts are the guide's ("Reserved capacity vs
on-demand": 1-year H100 reserves are 30–50 % off on AWS p5 and 20–40 % off on Lambda → 35 %; the guide gives
no 3-year figure, 50 % is an assumption in line with hyperscaler 3-year commitments).

Spot shares (default none): a spot variant of a sized fleet replaces ``round(share × nodes)`` of its nodes by spot
nodes at the guide's "Spot-vs-on-demand market in 2026" figures: "AWS Spot for H100 (P5): 60–80% off on-demand.
Eviction risk: 5–20%/month" → 70 % off and 20 % per node-month (the cautious end: 0.2 / 730 per node-hour).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PricingOption = Literal["on_demand", "reserved_1y", "reserved_3y", "owned"]
PRICING_OPTIONS: tuple[str, ...] = ("on_demand", "reserved_1y", "reserved_3y", "owned")
_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "fp4", "int4")


class PlanSpec(BaseModel):
    """What ``capsim plan`` searches (every list narrows the space; None = the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    gpus: list[str] | None = Field(None, description="GPU types (default: every GPU in the catalogue)")
    gpus_per_node: list[int] = Field([1, 2, 4, 8], min_length=1, description="tensor-parallel sizes")
    precisions: list[str] = Field(["bf16", "fp8"], min_length=1,
                                  description="'P' (weights and KV cache) or 'W/KV', e.g. 'fp8/bf16'")
    max_num_seqs: list[int] | None = Field(None, description="engine batch limits (default: the scenario's)")
    pricing: list[PricingOption] = Field(["on_demand", "reserved_1y", "reserved_3y", "owned"], min_length=1)
    spill: list[Literal["none", "predicted_ttft"]] | None = Field(
        None, description="fleet alone, and/or spilling to the scenario's api when the predicted TTFT exceeds the "
        "target (default: both when the scenario has an api, else none)")
    reserved_1y_discount: float = Field(0.35, ge=0, lt=1)
    reserved_3y_discount: float = Field(0.50, ge=0, lt=1)
    spot_shares: list[float] = Field([0.0], min_length=1, description="shares of each minimum fleet's nodes "
                                     "to try as spot nodes (0, always included: none); each variant is simulated "
                                     "and kept only when it still meets the SLO in every seed")
    autoscale: list[Literal["fixed", "forecast"]] = Field(
        ["fixed"], min_length=1, description="fixed: the minimum fleet, always up (always included: the variants "
        "derive from it); forecast: a reserved base for the mean load plus on-demand nodes the forecast autoscaler "
        "starts up to the minimum fleet, kept only when it still meets the SLO in every seed")
    spot_discount: float = Field(0.7, ge=0, lt=1, description="spot price off on-demand (guide: AWS P5 60–80 %)")
    spot_evictions_per_node_hour: float = Field(
        0.2 / 730.0, ge=0, description="guide: AWS H100 spot eviction risk 5–20 % per month (the upper end)")
    seeds: int = Field(2, ge=1, description="replications per fleet size (common random numbers)")
    max_nodes: int = Field(64, ge=1)
    top_n: int = Field(10, ge=1)
    explore: int = Field(3, ge=1, description="simulate until this many candidates meet the SLO below every "
                         "remaining bound (1: stop at the cheapest; more: exact runners-up)")
    min_kv_requests: float = Field(8.0, gt=0, description="a candidate needs KV room for this many mean requests")
    pool_layouts: list[Literal["grow", "single", "disaggregated"]] | None = Field(
        None, description="fleet.pools: the layouts searched per model (grow: the pools as given plus a sized growth "
        "pool; single: one mixed pool; disaggregated: a prefill and a decode pool, ratio searched); default: grow and "
        "single for a model served mixed, disaggregated and single for one served disaggregated")

    @field_validator("gpus_per_node")
    @classmethod
    def _tp(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in (1, 2, 4, 8)]
        if bad:
            raise ValueError(f"tensor-parallel sizes must be 1, 2, 4 or 8 (got {bad})")
        return sorted(set(v))

    @field_validator("spot_shares")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"spot shares must be between 0 and 1 (got {bad})")
        return sorted(set(v) | {0.0})  # the fleet without spot is always ranked: the variants derive from it

    @field_validator("autoscale")
    @classmethod
    def _autoscale(cls, v: list[str]) -> list[str]:
        return ["fixed"] + (["forecast"] if "forecast" in v else [])

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, v: list[str]) -> list[str]:
        for item in v:
            parts = item.split("/")
            if len(parts) > 2 or any(p not in _PRECISIONS for p in parts):
                raise ValueError(f"'{item}': expected P or WEIGHTS/KV with P in {', '.join(_PRECISIONS)}")
        return list(dict.fromkeys(v))

    @field_validator("max_num_seqs")
    @classmethod
    def _seqs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("max_num_seqs: a non-empty list of positive integers")
        return v


def split_precision(item: str) -> tuple[str, str]:
    """'fp8' → ('fp8', 'fp8'); 'fp8/bf16' → ('fp8', 'bf16')."""
    w, _, kv = item.partition("/")
    return w, kv or w
