"""Ways to pay for one simulated fleet, priced analytically (the fleet and its simulation do not change).

Per GPU-hour, with ``rental`` the scenario's ``pricing.usd_per_gpu_hour`` or the GPU profile's price (the guide's
on-demand working figures):

* ``on_demand``: ``rental``;
* ``reserved_1y`` / ``reserved_3y``: ``rental × (1 − discount)`` (``plan.reserved_1y_discount``, ``…_3y_…``);
* ``owned``: the guide's TCO without energy (``sim.metrics.cost.owned_fixed_usd_per_gpu_hour``: amortised capex, colo on
  provisioned kW, maintenance, ops) plus the simulated energy bill (``summary.energy.usd``: idle to TDP with the
  busy share, node overhead, PUE).

Spot nodes of a spot variant (``cost.gpu_hours_by_kind.spot``) are always rented, at ``rental × (1 −
fleet.spot.discount)`` (as ``capsim run`` bills them); on-demand nodes a forecast variant's autoscaler starts
(``cost.gpu_hours_by_kind.on_demand``) are always rented at ``rental × fleet.on_demand.price_multiplier``; the option
prices the other (reserved) GPU-hours, and owned energy is charged for their share (the power of a rented GPU is
inside its price).

Hosted-API spend of spilled requests (``cost.api_usd``) is added to every option.
"""

from __future__ import annotations

from sim.core.config import Scenario
from sim.metrics.cost import owned_fixed_usd_per_gpu_hour
from sim.metrics.summary import Summary
from sim.perf.catalog import GpuSpec
from sim.plan.spec import PlanSpec

HOURS_PER_MONTH = 730.0
LABELS = {"on_demand": "rented on-demand", "reserved_1y": "rented, 1-year reserved",
          "reserved_3y": "rented, 3-year reserved", "owned": "owned (TCO)"}


def pricing_label(option: str, spot_share: float = 0.0, autoscale: str = "fixed") -> str:
    """'rented on-demand', or with spot nodes 'rented on-demand + 50 % spot' (share of the nodes; all spot: the
    way to pay of the reserved nodes does not matter), or for a forecast variant 'rented, 3-year reserved base +
    forecast on-demand'."""
    if spot_share >= 1.0:
        return "rented spot (all nodes)"
    if autoscale == "forecast":
        return LABELS[option] + " base + forecast on-demand"
    return LABELS[option] + (f" + {100 * spot_share:.0f} % spot" if spot_share > 0 else "")


def rental_usd_per_gpu_hour(scenario: Scenario, gpu: GpuSpec) -> float:
    p = scenario.pricing
    return p.usd_per_gpu_hour if p.usd_per_gpu_hour is not None else gpu.usd_per_gpu_hour


def fixed_usd_per_gpu_hour(option: str, scenario: Scenario, gpu: GpuSpec, spec: PlanSpec) -> float:
    """The part of the hourly GPU price that does not depend on utilisation."""
    rental = rental_usd_per_gpu_hour(scenario, gpu)
    if option == "on_demand":
        return rental
    if option == "reserved_1y":
        return rental * (1.0 - spec.reserved_1y_discount)
    if option == "reserved_3y":
        return rental * (1.0 - spec.reserved_3y_discount)
    if option == "owned":
        return owned_fixed_usd_per_gpu_hour(scenario.pricing.owned, gpu)
    raise ValueError(option)


def price_summary(option: str, summary: Summary, scenario: Scenario, gpu: GpuSpec,
                  spec: PlanSpec) -> dict[str, float | None]:
    """Cost of one simulated run (its summary) under ``option``: run total, per month, per M output tokens."""
    cost = summary.cost
    gpu_hours = cost.gpu_hours
    spot_h = cost.gpu_hours_by_kind.get("spot", 0.0)
    od_h = cost.gpu_hours_by_kind.get("on_demand", 0.0)
    rental = rental_usd_per_gpu_hour(scenario, gpu)
    spot_rate = rental * (1.0 - scenario.fleet.spot.discount)
    od_rate = rental * scenario.fleet.on_demand.price_multiplier
    usd = ((gpu_hours - spot_h - od_h) * fixed_usd_per_gpu_hour(option, scenario, gpu, spec) + spot_h * spot_rate
           + od_h * od_rate + cost.api_usd)
    if option == "owned":
        share = (gpu_hours - spot_h - od_h) / gpu_hours if gpu_hours > 0 else 1.0
        usd += summary.energy.usd * share
    hours = scenario.duration_s / 3600.0
    per_mtok = cost.usd_per_mtok_output
    # tokens served (fleet + API), in millions
    out_mtok = cost.total_usd / per_mtok if per_mtok else None
    return {"usd_run": usd, "usd_per_month": usd / hours * HOURS_PER_MONTH,
            "usd_per_mtok_output": usd / out_mtok if out_mtok else None}


def spot_usd_per_hour(scenario: Scenario, gpu: GpuSpec, spec: PlanSpec, gpus: int) -> float:
    """Hourly cost of ``gpus`` spot GPUs at the plan's spot discount (busy or idle)."""
    return gpus * rental_usd_per_gpu_hour(scenario, gpu) * (1.0 - spec.spot_discount)


def usd_per_hour_idle(option: str, scenario: Scenario, gpu: GpuSpec, spec: PlanSpec, gpus: int) -> float:
    """Hourly cost of ``gpus`` GPUs doing nothing (owned: idle power): a lower bound on what they cost."""
    from sim.metrics.energy import facility_power_w, usd_per_kwh

    usd = gpus * fixed_usd_per_gpu_hour(option, scenario, gpu, spec)
    if option == "owned":
        per_node_w = float(facility_power_w(scenario, gpu, 1.0, 0.0)) / scenario.fleet.gpus_per_node
        usd += gpus * per_node_w / 1000.0 * usd_per_kwh(scenario)
    return usd
