"""MLPerf points' length columns match the MLPerf datasets' token lengths (calibration/data/mlperf_dataset_lengths)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).resolve().parent.parent / "calibration" / "data"

# point-id prefix -> (per-sample token lengths file, model of the points it sets)
DATASETS = {
    "mlperf41-": ("llama2-70b_openorca_24576.csv", "Llama-2-70B"),
    "mlperf41-h100sxm-mixtral": ("mixtral-8x7b_15000.csv", "Mixtral-8x7B"),
    "mlperf51-h100-l31-8b": ("llama3.1-8b_cnn_eval_13368.csv", "Llama-3.1-8B"),
}


def _rows(prefix: str, model: str) -> pd.DataFrame:
    pts = pd.read_csv(DATA / "published_points.csv")
    rows = pts[pts["id"].str.startswith(prefix) & (pts["model"] == model)]
    assert len(rows) > 0
    return rows


@pytest.mark.parametrize("prefix", sorted(DATASETS))
def test_input_lengths_are_the_datasets(prefix: str) -> None:
    """Mean within 1 %, lognormal sigma (std of log length) within 0.02, cap at or above the dataset's longest."""
    fname, model = DATASETS[prefix]
    lengths = pd.read_csv(DATA / "mlperf_dataset_lengths" / fname)["input_length"].to_numpy()
    for _, row in _rows(prefix, model).iterrows():
        assert row["input_mean"] == pytest.approx(lengths.mean(), rel=0.01), row["id"]
        assert row["input_sigma"] == pytest.approx(np.log(lengths).std(), abs=0.02), row["id"]
        assert row["input_max"] >= lengths.max(), row["id"]


def test_mixtral_reference_output_is_mlperfs_tokens_per_sample() -> None:
    """The Mixtral file's outputs average 144.84 tokens: MLCommons' reference tokens_per_sample for that set."""
    out = pd.read_csv(DATA / "mlperf_dataset_lengths" / "mixtral-8x7b_15000.csv")["output_length"]
    assert out.mean() == pytest.approx(144.84, abs=0.01)
    row = _rows("mlperf41-h100sxm-mixtral", "Mixtral-8x7B").iloc[0]
    assert row["output_mean"] == pytest.approx(out.mean(), rel=0.01)
    assert row["output_sigma"] == pytest.approx(np.log(out[out > 0]).std(), abs=0.02)
