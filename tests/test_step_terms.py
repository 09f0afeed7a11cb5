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
