"""Energy and carbon (sim/metrics/energy.py) and owned cost from simulated utilisation (sim/metrics/cost.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scenarios import make_scenario

from sim.metrics.cost import cost_breakdown, owned_usd_per_gpu_hour
from sim.metrics.energy import energy_section, idle_w
from sim.perf.catalog import get_gpu
from sim.runner.pipeline import run_scenario


def _ts(busy: float, nodes: int = 2, n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"time_s": [float(i + 1) for i in range(n)], "nodes_up": [nodes] * n,
                         "busy_fraction": [busy] * n})


def test_idle_fleet_draws_idle_power():
    sc = make_scenario(**{"duration_s": 10, "fleet.nodes": 2})
    gpu = get_gpu("H100-SXM")
    e = energy_section(sc, gpu, _ts(0.0))
    per_gpu_w = idle_w(gpu) + sc.energy.node_overhead_w_per_gpu
    assert e["avg_power_kw"] == pytest.approx(2 * per_gpu_w * sc.pricing.owned.pue / 1000)
    busy = energy_section(sc, gpu, _ts(1.0))
    assert busy["avg_power_kw"] == pytest.approx(2 * (gpu.tdp_w + 550.0) * 1.4 / 1000)


def test_kwh_is_average_power_times_hours_and_co2_follows_the_grid_profile():
    sc = make_scenario(duration_s=7200, energy={"grid_kg_co2_per_kwh_by_hour": [0.1] * 12 + [0.5] * 12})
    gpu = get_gpu("H100-SXM")
    ts = pd.DataFrame({"time_s": [1800.0, 5400.0], "nodes_up": [2, 2], "busy_fraction": [0.2, 0.8]})
    e = energy_section(sc, gpu, ts)
    assert e["kwh"] == pytest.approx(e["avg_power_kw"] * 2.0)
    assert e["co2_kg"] == pytest.approx(0.1 * e["kwh"])  # both samples fall in hours 0 and 1
    late = energy_section(make_scenario(**{"duration_s": 7200, "traffic.start_hour": 13,
                                           "energy": {"grid_kg_co2_per_kwh_by_hour": [0.1] * 12 + [0.5] * 12}}),
                          gpu, ts)
    assert late["co2_kg"] == pytest.approx(0.5 * late["kwh"])


def test_owned_cost_depends_on_utilisation():
    sc = make_scenario(**{"pricing.mode": "owned", "duration_s": 3600})
    gpu = get_gpu("H100-SXM")
    idle = cost_breakdown(sc, gpu, 1e6, 1e6, energy_usd=energy_section(sc, gpu, _ts(0.0))["usd"])
    busy = cost_breakdown(sc, gpu, 1e6, 1e6, energy_usd=energy_section(sc, gpu, _ts(1.0))["usd"])
    assert busy["total_usd"] > idle["total_usd"]
    # at full draw with the guide's 1.25 kW per GPU the old full-draw formula is recovered
    full = cost_breakdown(sc, gpu, 1e6, 1e6)
    assert full["total_usd"] == pytest.approx(2 * owned_usd_per_gpu_hour(sc.pricing.owned, gpu))
    assert busy["total_usd"] == pytest.approx(full["total_usd"])  # 700 W + 550 W overhead = 1.25 kW


def test_run_summary_has_an_energy_section():
    s = run_scenario(make_scenario(duration_s=30)).summary
    e = s.energy
    assert e.kwh > 0 and e.co2_kg > 0 and math.isclose(e.kwh, e.avg_power_kw * 30 / 3600)
    lo = 2 * (idle_w(get_gpu("H100-SXM")) + 550) * 1.4 / 1000
    assert lo <= e.avg_power_kw <= 2 * 1250 * 1.4 / 1000 + 1e-9
