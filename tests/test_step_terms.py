"""Physical terms of the step model that come from a cited measurement (docs/validation.md, "Why the held-out
points miss")."""

from __future__ import annotations

import pytest

from sim.perf.catalog import Calibration, get_gpu, get_model
from sim.perf.model import StepTimeModel, weight_bytes_total

CAL = Calibration(mfu=0.5, mbu=0.8, overhead_s=0.0, overhead_s_per_token=0.0)


@pytest.mark.parametrize("name", ["B200", "GB200"])
def test_blackwell_reads_hbm_at_its_7680_bit_bus(name: str) -> None:
    """B200's memory bus is 7,680 bits at 3,996 MHz DDR: 7.672 TB/s, not the datasheet's 8.0 (pytorch/ao PR
    #4002). A weight read takes weight bytes / (7.672 TB/s x measured fraction x mbu)."""
    gpu, model = get_gpu(name), get_model("Llama-3.1-70B")
    perf = StepTimeModel.build(gpu, model, 1, "fp8", "fp8", calibration=CAL)
    expected_s = weight_bytes_total(model, "fp8") / (7680 / 8 * 3.996e9 * 2 * gpu.hbm_read_ceiling * CAL.mbu)
    assert perf.memory_s_const == pytest.approx(expected_s, rel=1e-3)


def test_h100_pcie_prefill_is_slower_than_sxm_by_the_measured_gemm_ratio() -> None:
    """The PCIe card's BF16 GEMM ceiling is measured on the card (cuBLAS 627.3 TFLOPS of 756, 83.0 %), not borrowed
    from SXM (794.5 of 989): a compute-bound BF16 prefill step is 794.5 / 627.3 = 1.27x slower, not the datasheet's
    989 / 756 = 1.31x."""
    model = get_model("Llama-3.1-8B")
    steps = {}
    for name in ("H100-SXM", "H100-PCIe"):
        perf = StepTimeModel.build(get_gpu(name), model, 1, "bf16", "bf16", calibration=CAL)
        steps[name] = perf.compute_s_per_token
    assert steps["H100-PCIe"] / steps["H100-SXM"] == pytest.approx((989 * 0.803) / (756 * 0.830), rel=1e-3)
