"""Cost of serving: self-hosted GPUs (rented or owned) plus hosted-API spend, and cost per million tokens.

Rented: ``GPU-hours × usd_per_gpu_hour`` (the scenario's price, else the GPU profile's).

Owned, per GPU-hour (guide's TCO table; all inputs in ``pricing.owned``)::

    capex / (amortisation_years × 8760)
  + power_kw × PUE × usd_per_kwh
  + power_kw × colo_usd_per_kw_month × 12 / 8760
  + (maintenance_usd_per_gpu_year + ops_usd_per_gpu_year) / 8760

GPUs are paid for the whole period (``duration_s``) whether busy or idle, which is why cost per token falls
as utilisation rises. Cost per million tokens divides all cost in the period by the tokens of completed
requests (``usd_per_mtok_output``: output tokens only; ``usd_per_mtok_total``: input + output).
"""

from __future__ import annotations

from typing import Any

from .catalog import GpuSpec
from .config import Owned, Scenario

HOURS_PER_YEAR = 8760.0


def owned_usd_per_gpu_hour(owned: Owned, gpu: GpuSpec) -> float:
    """Fully loaded hourly cost of one owned GPU (formula in the module docstring)."""
    capex = owned.capex_usd_per_gpu if owned.capex_usd_per_gpu is not None else gpu.purchase_usd_per_gpu
    hardware = capex / (owned.amortisation_years * HOURS_PER_YEAR)
    power = owned.power_kw_per_gpu * owned.pue * owned.usd_per_kwh
    colo = owned.power_kw_per_gpu * owned.colo_usd_per_kw_month * 12.0 / HOURS_PER_YEAR
    people = (owned.maintenance_usd_per_gpu_year + owned.ops_usd_per_gpu_year) / HOURS_PER_YEAR
    return hardware + power + colo + people


def usd_per_gpu_hour(scenario: Scenario, gpu: GpuSpec) -> float:
    """The hourly price of one GPU under the scenario's pricing mode."""
    p = scenario.pricing
    if p.mode == "owned":
        return owned_usd_per_gpu_hour(p.owned, gpu)
    return p.usd_per_gpu_hour if p.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour


def cost_breakdown(
    scenario: Scenario,
    gpu: GpuSpec,
    input_tokens: float,
    output_tokens: float,
    api_usd: float = 0.0,
    gpu_hours: float | None = None,
) -> dict[str, Any]:
    """Totals and per-token costs. ``gpu_hours`` defaults to all nodes up for the whole period."""
    if gpu_hours is None:
        gpu_hours = scenario.fleet.nodes * scenario.fleet.gpus_per_node * scenario.duration_s / 3600.0
    rate = usd_per_gpu_hour(scenario, gpu)
    self_host = gpu_hours * rate
    total = self_host + api_usd
    out_m = output_tokens / 1e6
    all_m = (input_tokens + output_tokens) / 1e6
    return {
        "total_usd": total,
        "self_host_usd": self_host,
        "api_usd": api_usd,
        "gpu_hours": gpu_hours,
        "usd_per_gpu_hour": rate,
        "pricing_mode": scenario.pricing.mode,
        "usd_per_mtok_output": total / out_m if out_m > 0 else None,
        "usd_per_mtok_total": total / all_m if all_m > 0 else None,
    }
