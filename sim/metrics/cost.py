"""Cost of serving: self-hosted GPUs (rented or owned) plus hosted-API spend, and cost per million tokens.

Rented: ``GPU-hours × usd_per_gpu_hour`` (the scenario's price, else the GPU profile's).

Owned, per GPU-hour (guide's TCO table; all inputs in ``pricing.owned``)::

    capex / (amortisation_years × 8760)
  + power_kw × PUE × usd_per_kwh                          (energy: see below)
  + power_kw × colo_usd_per_kw_month × 12 / 8760          (colo is billed on provisioned kW)
  + (maintenance_usd_per_gpu_year + ops_usd_per_gpu_year) / 8760

Energy of owned GPUs is charged from the simulated draw when a run gives it (``energy_usd`` from
``sim.metrics.energy``: idle to TDP with the busy share, node overhead, PUE), so an idle owned fleet pays idle power;
without it (e.g. a price quote with no run) the full draw ``power_kw_per_gpu`` is assumed.

Reserved GPUs are paid for the whole period (``duration_s``) whether busy or idle, which is why cost per
token falls as utilisation rises; on-demand and spot nodes are paid per second from their start request to
their termination (clipped to the period). Cost per million tokens divides all cost in the period by the tokens
of completed requests (``usd_per_mtok_output``: output tokens only; ``usd_per_mtok_total``: input + output).
"""

from __future__ import annotations

from typing import Any

from sim.core.config import Owned, Scenario
from sim.perf.catalog import GpuSpec

HOURS_PER_YEAR = 8760.0


def owned_fixed_usd_per_gpu_hour(owned: Owned, gpu: GpuSpec) -> float:
    """Hourly cost of one owned GPU without its energy: amortised capex, colo, maintenance and ops."""
    capex = owned.capex_usd_per_gpu if owned.capex_usd_per_gpu is not None else gpu.purchase_usd_per_gpu
    hardware = capex / (owned.amortisation_years * HOURS_PER_YEAR)
    colo = owned.power_kw_per_gpu * owned.colo_usd_per_kw_month * 12.0 / HOURS_PER_YEAR
    people = (owned.maintenance_usd_per_gpu_year + owned.ops_usd_per_gpu_year) / HOURS_PER_YEAR
    return hardware + colo + people


def owned_usd_per_gpu_hour(owned: Owned, gpu: GpuSpec) -> float:
    """Fully loaded hourly cost of one owned GPU at full draw (formula in the module docstring)."""
    return owned_fixed_usd_per_gpu_hour(owned, gpu) + owned.power_kw_per_gpu * owned.pue * owned.usd_per_kwh


def usd_per_gpu_hour(scenario: Scenario, gpu: GpuSpec) -> float:
    """The hourly price of one GPU under the scenario's pricing mode."""
    p = scenario.pricing
    if p.mode == "owned":
        return owned_usd_per_gpu_hour(p.owned, gpu)
    return p.usd_per_gpu_hour if p.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour


def kind_usd_per_gpu_hour(scenario: Scenario, gpu: GpuSpec) -> dict[str, float]:
    """$/GPU-hour per node kind: reserved at the pricing mode's rate; on-demand and spot are always rented
    (on-demand at ``price_multiplier`` × the rental price, spot at ``1 − discount`` of it)."""
    p = scenario.pricing
    rental = p.usd_per_gpu_hour if p.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour
    return {
        "reserved": usd_per_gpu_hour(scenario, gpu),
        "on_demand": rental * scenario.fleet.on_demand.price_multiplier,
        "spot": rental * (1.0 - scenario.fleet.spot.discount),
    }


def cost_breakdown(
    scenario: Scenario,
    gpu: GpuSpec,
    input_tokens: float,
    output_tokens: float,
    api_usd: float = 0.0,
    gpu_hours: dict[str, float] | None = None,
    energy_usd: float | None = None,
) -> dict[str, Any]:
    """Totals and per-token costs. ``gpu_hours`` (billed GPU-hours by node kind) defaults to the reserved
    nodes for the whole period. ``energy_usd`` (the simulated energy bill of all up nodes, ``sim.metrics.energy``)
    replaces the full-draw power term of owned reserved GPUs (their share of the GPU-hours)."""
    if gpu_hours is None:
        gpu_hours = {"reserved": scenario.fleet.nodes * scenario.fleet.gpus_per_node * scenario.duration_s / 3600.0}
    rates = kind_usd_per_gpu_hour(scenario, gpu)
    by_kind = {k: h * rates[k] for k, h in gpu_hours.items()}
    owned_energy = None
    if scenario.pricing.mode == "owned" and energy_usd is not None and "reserved" in by_kind:
        hours_all = sum(gpu_hours.values())
        owned_energy = energy_usd * (gpu_hours["reserved"] / hours_all if hours_all > 0 else 1.0)
        by_kind["reserved"] = gpu_hours["reserved"] * owned_fixed_usd_per_gpu_hour(scenario.pricing.owned, gpu) \
            + owned_energy
    self_host = sum(by_kind.values())
    total_hours = sum(gpu_hours.values())
    rate = self_host / total_hours if total_hours > 0 else rates["reserved"]
    total = self_host + api_usd
    out_m = output_tokens / 1e6
    all_m = (input_tokens + output_tokens) / 1e6
    return {
        "total_usd": total,
        "self_host_usd": self_host,
        "api_usd": api_usd,
        "gpu_hours": total_hours,
        "usd_per_gpu_hour": rate,
        "self_host_usd_by_kind": by_kind,
        "gpu_hours_by_kind": dict(gpu_hours),
        "pricing_mode": scenario.pricing.mode,
        "owned_energy_usd": owned_energy,
        "usd_per_mtok_output": total / out_m if out_m > 0 else None,
        "usd_per_mtok_total": total / all_m if all_m > 0 else None,
    }
