"""Energy, power and carbon of a fleet, from its simulated utilisation.

Model (all inputs in the scenario's ``energy`` section and the GPU profile)::

    P_gpu(t)  = idle_w + (tdp_w − idle_w) × busy(t) × busy_power_fraction
    P_node(t) = gpus_per_node × (P_gpu(t) + node_overhead_w_per_gpu)
    P(t)      = PUE × Σ_up nodes P_node(t)

``busy(t)`` is the fleet's sampled busy share (engine executing steps) in each sampling interval; a node that is
not up draws nothing. ``avg_power_kw`` is the mean of ``P(t)`` over the samples in ``[0, duration_s]`` and
``kwh = avg_power_kw × duration_s / 3600``. ``co2_kg`` weights each sample's energy by the grid intensity at its
local clock hour (``grid_kg_co2_per_kwh_by_hour``) or by the constant ``grid_kg_co2_per_kwh``. ``usd`` prices
the energy at ``usd_per_kwh``: it is what the owner pays the utility (inside the owned TCO, ``sim.metrics.cost``); for
rented GPUs it is already inside the hourly price and is shown for information.

Assumptions: power is linear in the busy share (a busy GPU adds ``busy_power_fraction`` of its dynamic range;
1.0 — TDP whenever busy — is an upper bound: memory-bound decode draws less); ``idle_w`` defaults to
:data:`IDLE_FRACTION` × TDP where a profile gives none; the node overhead is flat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.core.config import Scenario
from sim.perf.catalog import GpuSpec

#: idle draw as a share of TDP where a GPU profile gives no ``idle_w`` (an HBM datacenter GPU with a model
#: loaded and clocks down draws roughly 10–20 % of TDP; an assumption, replace with nvidia-smi readings)
IDLE_FRACTION = 0.15


def idle_w(gpu: GpuSpec) -> float:
    """Idle draw of one GPU (W): the profile's ``idle_w``, else :data:`IDLE_FRACTION` × TDP."""
    return float(gpu.idle_w) if gpu.idle_w is not None else IDLE_FRACTION * gpu.tdp_w


def pue(scenario: Scenario) -> float:
    e = scenario.energy
    return e.pue if e.pue is not None else scenario.pricing.owned.pue


def usd_per_kwh(scenario: Scenario) -> float:
    e = scenario.energy
    return e.usd_per_kwh if e.usd_per_kwh is not None else scenario.pricing.owned.usd_per_kwh


def gpu_power_w(gpu: GpuSpec, busy: np.ndarray | float, busy_power_fraction: float = 1.0) -> np.ndarray:
    """Draw of one GPU (W) at busy share ``busy`` (0..1)."""
    lo = idle_w(gpu)
    return lo + (gpu.tdp_w - lo) * np.clip(np.asarray(busy, dtype=float), 0.0, 1.0) * busy_power_fraction


def facility_power_w(scenario: Scenario, gpu: GpuSpec, nodes_up: np.ndarray | float,
                     busy: np.ndarray | float) -> np.ndarray:
    """Facility draw (W, PUE included) of ``nodes_up`` nodes at mean busy share ``busy``."""
    e = scenario.energy
    per_gpu = gpu_power_w(gpu, busy, e.busy_power_fraction) + e.node_overhead_w_per_gpu
    return pue(scenario) * np.asarray(nodes_up, dtype=float) * scenario.fleet.gpus_per_node * per_gpu


def grid_intensity(scenario: Scenario, time_s: np.ndarray) -> np.ndarray:
    """kg CO2 per kWh at each simulated time (local clock hour of the traffic's start)."""
    e = scenario.energy
    t = np.asarray(time_s, dtype=float)
    if e.grid_kg_co2_per_kwh_by_hour is None:
        return np.full(len(t), e.grid_kg_co2_per_kwh)
    hour = np.floor(np.mod(t / 3600.0 + scenario.traffic.start_hour, 24.0)).astype(int) % 24
    return np.asarray(e.grid_kg_co2_per_kwh_by_hour, dtype=float)[hour]


def energy_section(scenario: Scenario, gpu: GpuSpec, fleet_ts: pd.DataFrame) -> dict[str, Any]:
    """The ``energy`` section of ``summary.json``: kwh, avg_power_kw, co2_kg, usd and the inputs used."""
    hours = scenario.duration_s / 3600.0
    ts = fleet_ts[fleet_ts["time_s"] <= scenario.duration_s + 1e-9] if len(fleet_ts) else fleet_ts
    if len(ts):
        power_w = facility_power_w(scenario, gpu, ts["nodes_up"].to_numpy(), ts["busy_fraction"].to_numpy())
        intensity = grid_intensity(scenario, ts["time_s"].to_numpy())
    else:  # no samples: the reserved nodes, idle
        power_w = facility_power_w(scenario, gpu, np.array([scenario.fleet.nodes]), np.array([0.0]))
        intensity = grid_intensity(scenario, np.array([0.0]))
    avg_kw = float(power_w.mean()) / 1000.0
    kwh = avg_kw * hours
    co2 = float((power_w * intensity).mean()) / 1000.0 * hours
    return {
        "kwh": kwh,
        "avg_power_kw": avg_kw,
        "co2_kg": co2,
        "usd": kwh * usd_per_kwh(scenario),
        "usd_per_kwh": usd_per_kwh(scenario),
        "pue": pue(scenario),
        "gpu_idle_w": idle_w(gpu),
        "gpu_tdp_w": gpu.tdp_w,
        "kg_co2_per_kwh_mean": co2 / kwh if kwh > 0 else None,
        "paid_in": "owned TCO" if scenario.pricing.mode == "owned" else "rental price",
    }
