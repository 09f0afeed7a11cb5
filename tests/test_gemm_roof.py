"""The smooth GEMM roof: its shape parameter comes from the kernel measurements, and the step model applies it."""

from __future__ import annotations

import importlib.util
import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest

from sim.perf.catalog import get_gpu, get_model
from sim.perf.model import GEMM_ROOF_P, StepTimeModel

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gemm_roof", ROOT / "calibration" / "gemm_roof.py")
assert _spec is not None and _spec.loader is not None
gemm_roof = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gemm_roof)


def test_exponent_is_the_kernel_fit() -> None:
    df = gemm_roof.load()
    used = df[df.k >= gemm_roof.MIN_K].reset_index(drop=True)
    smooth, hard = gemm_roof.fit(used, "pnorm"), gemm_roof.fit(used, "max")
    assert round(smooth["shape_param"], 1) == GEMM_ROOF_P
    assert smooth["mape"] < hard["mape"]  # the kernels do sit above the hard roofline near the ridge


def _h200_70b() -> StepTimeModel:
    return StepTimeModel.build(get_gpu("H200-SXM"), get_model("llama-3.1-70b"), 1, "fp8", "fp8",
                               stack="nvidia-trtllm")


def test_gemm_roof_is_smooth_near_the_ridge_only() -> None:
    perf = _h200_70b()
    assert perf.gemm_roof_p == GEMM_ROOF_P
    hard = replace(perf, gemm_roof_p=math.inf)
    ridge = perf.memory_s_const / perf.compute_s_per_token
    assert perf.gemm_s(ridge) == pytest.approx(2.0 ** (1.0 / GEMM_ROOF_P) * hard.gemm_s(ridge))
    for tokens in (1, ridge / 100, ridge * 100):
        assert perf.gemm_s(tokens) == pytest.approx(hard.gemm_s(tokens), rel=1e-3)
    times = [perf.gemm_s(t) for t in range(1, 4 * int(ridge))]
    assert all(b > a for a, b in itertools.pairwise(times))  # rises with M before the ridge, not flat until it
    assert all(perf.gemm_s(t) >= hard.gemm_s(t) for t in range(1, 4 * int(ridge), 7))


def test_decode_run_closed_form_stays_exact() -> None:
    perf = _h200_70b()
    for batch in (8, 120, 130, 300):  # below, at and above the ridge (~130 tokens here)
        steps = [perf.step_s(batch, batch * (500 + j), batch * (500 + j), decode_only=True) for j in range(1, 41)]
        ctx0 = batch * 500
        assert perf.decode_run_s(batch, ctx0, 40) == pytest.approx(sum(steps), rel=1e-12)
