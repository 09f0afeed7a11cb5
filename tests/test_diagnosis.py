"""Per-term elasticities of a point's prediction (sim.perf.diagnosis)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sim.perf.calibration import CalPoint
from sim.perf.catalog import get_stack
from sim.perf.diagnosis import TERMS, elasticities, regime

CAL = {"nvidia-vllm": get_stack("nvidia-vllm", "test", "stack").calibration}


def _point(mode: str, **kw: Any) -> CalPoint:
    base: dict[str, Any] = {"id": f"t-{mode}", "gpu": "H100-SXM", "gpus": 1, "model": "Llama-3.1-8B",
                            "weights": "bf16", "kv": "bf16", "stack": "nvidia-vllm", "measured": 0.01}
    base.update(kw)
    return CalPoint(mode=mode, **base)


@pytest.mark.parametrize(
    "point, binds",
    [
        (_point("decode_step", metric="tpot_p50", batch=1, context=512), "weights"),
        (_point("prefill_step", metric="ttft_p50", input_mean=8192), "gemm"),
    ],
)
def test_one_step_shares_sum_to_one_and_name_the_binding_term(point: CalPoint, binds: str) -> None:
    (row,) = elasticities([point], CAL)
    shares = [row[f"e_{t}"] for t in TERMS]
    assert all(math.isfinite(s) and s >= -1e-9 for s in shares)
    assert sum(shares) == pytest.approx(1.0, abs=0.02)  # one step: each binding term's share of its time
    assert regime(row).split("+")[0] == binds


def test_throughput_elasticity_has_the_sign_of_time() -> None:
    """A slower GEMM lowers throughput: its elasticity (of time = 1 / throughput) is positive."""
    p = _point("offline", metric="throughput", measured=1000.0, input_mean=512, output_mean=16, requests=64)
    (row,) = elasticities([p], CAL)
    assert row["e_gemm"] > 0.3
