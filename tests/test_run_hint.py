"""The run's hint names the model and pool that miss, not "the fleet is saturated", when other pools have room."""

from __future__ import annotations

from types import SimpleNamespace as NS

from sim.cli.run import _overload_hint


def _summary(met_8b: bool) -> NS:
    util = NS(kv_fraction_p95=0.27, queue_len_mean=2.0, load_factor_by_pool={"h100": 0.74, "a100": 0.65, "big": 0.85})
    models = {"Llama-3.1-8B": NS(met=met_8b, pools=["h100", "a100"]), "Llama-3.1-70B": NS(met=False, pools=["big"])}
    return NS(utilisation=util, requests=NS(rejected=0), overload=NS(overloaded=False), pools={"h100": 1},
              models=models)


def test_hint_names_the_missing_model_and_its_busiest_pool():
    hint = _overload_hint(_summary(met_8b=True))  # type: ignore[arg-type]
    assert "saturated" not in hint
    assert "Llama-3.1-70B" in hint and "big (load factor 0.85)" in hint and "--pool big" in hint


def test_every_model_missing_keeps_the_fleet_wide_hint():
    """A standing queue of two with the KV cache a quarter full is near saturation, not saturated."""
    hint = _overload_hint(_summary(met_8b=False))  # type: ignore[arg-type]
    assert "the fleet is near saturation" in hint and "2 requests queued on average" in hint
    full = _summary(met_8b=False)
    full.utilisation.kv_fraction_p95 = 0.97
    assert "the fleet is saturated" in _overload_hint(full)  # type: ignore[arg-type]
