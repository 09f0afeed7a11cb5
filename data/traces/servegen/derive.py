"""Build the small ServeGen-derived files shipped here from the ServeGen snapshot (run once, by hand).

    python data/traces/servegen/derive.py /path/to/servegen_client_rate_traces_all_models.tar.gz \
        /path/to/aggregated_pmfs

* ``rate_<category>_<model>_600s.csv``: total request rate per 600-s window summed over all clients
  (``window_start_s, rate_rps``; t = 0 is 00:00 local on the first day).
* ``pmf_<category>_<model>_<field>.csv``: the aggregated token-length PMFs, rebinned for size: values up to
  256 kept exactly; above, log-spaced bins 1 % wide, each represented by its probability-weighted mean value
  (rounded), so the distribution's mean is preserved to < 0.01 % and quantiles to ~1 %.
capsim never reads the snapshot at run time; only these derived files.
"""

from __future__ import annotations

import io
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RATE_MODELS = ["language/m-large", "language/m-mid", "language/m-small", "reason/deepseek-r1", "multimodal/mm-image"]
PMFS = [
    ("language_m-large", "input_tokens"), ("language_m-large", "output_tokens"),
    ("language_m-mid", "input_tokens"), ("language_m-mid", "output_tokens"),
    ("language_m-small", "input_tokens"), ("language_m-small", "output_tokens"),
    ("reason_deepseek-r1", "input_tokens"), ("reason_deepseek-r1", "output_tokens"),
    ("multimodal_mm-image", "text_tokens"), ("multimodal_mm-image", "output_tokens"),
]


def rate_series(tar_path: Path) -> None:
    totals: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if not m.isfile() or len(parts) < 4 or "/".join(parts[1:3]) not in RATE_MODELS:
                continue
            df = pd.read_csv(io.BytesIO(tar.extractfile(m).read()), header=None, usecols=[0, 1])
            for w, r in zip(df[0].to_numpy(float), df[1].to_numpy(float)):
                totals["/".join(parts[1:3])][w] += r
    for model, series in totals.items():
        w = np.array(sorted(series))
        out = pd.DataFrame({"window_start_s": w.astype(int), "rate_rps": [round(series[x], 4) for x in w]})
        out.to_csv(HERE / f"rate_{model.replace('/', '_')}_600s.csv", index=False)


def rebin(values: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    small = values <= 256
    edges = np.exp(np.arange(np.log(256.5), np.log(values.max()) + 0.02, 0.01))
    big_v, big_p = values[~small], probs[~small]
    b = np.searchsorted(edges, big_v)
    pv = np.bincount(b, weights=big_p * big_v)
    pp = np.bincount(b, weights=big_p)
    nz = pp > 0
    v = np.concatenate([values[small], np.rint(pv[nz] / pp[nz])])
    p = np.concatenate([probs[small], pp[nz]])
    df = pd.DataFrame({"value": v.astype(int), "probability": p}).groupby("value", as_index=False).sum()
    df["probability"] = (df["probability"] / df["probability"].sum()).map(lambda x: float(f"{x:.6g}"))
    return df


def pmfs(pmf_dir: Path) -> None:
    for model, fld in PMFS:
        src = pd.read_csv(pmf_dir / f"{model}_{fld}_pmf.csv")
        df = rebin(src["value"].to_numpy(float), src["probability"].to_numpy(float))
        df.to_csv(HERE / f"pmf_{model}_{fld}.csv", index=False)


if __name__ == "__main__":
    rate_series(Path(sys.argv[1]))
    pmfs(Path(sys.argv[2]))
