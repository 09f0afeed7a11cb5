"""Constant-memory metrics for long runs: per-request records streamed to Parquet in chunks, and latency
percentiles from mergeable log-spaced histograms.

:func:`run_streaming` simulates with ``keep_requests=False``: each finished request is buffered, and every
``chunk_rows`` requests the buffer is reduced (vectorised) into running counters and :class:`LogHistogram` s
and, if asked, appended to a Parquet file as one row group. Memory therefore does not grow with the number of
requests (the fleet time series, one sample per ``output.sample_interval_s``, still does).

The summary has exactly the keys of :func:`sim.metrics.summarize` (it is ``summarize`` of the empty request
table, with the request-derived parts replaced). Counts, throughput, means, SLO attainment, utilisation and
cost are exact; percentiles come from the histograms: with the default 1000 bins per decade a
reported percentile is within a relative error of :data:`DEFAULT_REL_ERROR` (±0.12 %) of the exact
(numpy ``linear``) value; values under 1 µs are reported as 0 (absolute error < 1 µs).

The streamed ``requests.parquet`` has the columns of :func:`sim.metrics.requests_table`, in finishing order;
requests still in flight when the run stops never finish and are not in it (they are counted in
``requests.in_flight``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Scenario
from .metrics import PCTS, STATUS_CATEGORIES, _STATUS_CODE, _clean, requests_table, summarize, timeseries_tables
from .request import Request, Status
from .simulation import ProgressFn, SimResult, simulate

DEFAULT_BINS_PER_DECADE = 1000
DEFAULT_REL_ERROR = 10 ** (0.5 / DEFAULT_BINS_PER_DECADE) - 1  # half a bin in log space ≈ 0.115 %
DEFAULT_CHUNK_ROWS = 65_536
_COMPLETED = int(Status.COMPLETED)
_FINISHED = (int(Status.COMPLETED), int(Status.REJECTED), int(Status.FAILED))


class LogHistogram:
    """Counts of non-negative values in log-spaced bins ``[min_value·g^i, min_value·g^(i+1))``, with
    ``g = 10^(1/bins_per_decade)``, plus an exact count, sum (for the mean), a zero bin (values below
    ``min_value``) and an overflow bin (values at or above ``max_value``, reported as ``max_value``).

    Histograms with the same binning merge by adding counts (:meth:`merge`), so runs, chunks or workers can be
    combined. A quantile is the geometric bin centre of the order statistic(s) numpy would interpolate, so its
    relative error is at most ``sqrt(g) − 1`` (:attr:`rel_error`).
    """

    def __init__(self, min_value: float = 1e-6, max_value: float = 1e7,
                 bins_per_decade: int = DEFAULT_BINS_PER_DECADE) -> None:
        if not (0 < min_value < max_value) or bins_per_decade < 1:
            raise ValueError("need 0 < min_value < max_value and bins_per_decade >= 1")
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.bins_per_decade = int(bins_per_decade)
        self.n_bins = int(math.ceil(math.log10(max_value / min_value) * bins_per_decade))
        # [zero, bin 0 .. bin n-1, overflow]
        self.counts = np.zeros(self.n_bins + 2, dtype=np.int64)
        self.total = 0
        self.sum = 0.0

    @property
    def rel_error(self) -> float:
        """Largest relative error of a reported quantile (for values inside [min_value, max_value))."""
        return 10 ** (0.5 / self.bins_per_decade) - 1

    def _compatible(self, other: "LogHistogram") -> bool:
        return (self.min_value, self.max_value, self.bins_per_decade) == (
            other.min_value, other.max_value, other.bins_per_decade)

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (NaN ignored; negative values count as 0)."""
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        if len(v) == 0:
            return
        self.total += len(v)
        self.sum += float(v.sum())
        idx = np.empty(len(v), dtype=np.int64)
        small = v < self.min_value
        big = v >= self.max_value
        mid = ~(small | big)
        idx[small] = 0
        idx[big] = self.n_bins + 1
        b = np.floor(np.log10(v[mid] / self.min_value) * self.bins_per_decade).astype(np.int64)
        idx[mid] = np.clip(b, 0, self.n_bins - 1) + 1
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def merge(self, other: "LogHistogram") -> "LogHistogram":
        """Add ``other``'s counts into this histogram (same binning required); returns self."""
        if not self._compatible(other):
            raise ValueError("cannot merge histograms with different binning")
        self.counts += other.counts
        self.total += other.total
        self.sum += other.sum
        return self

    def _representative(self, idx: np.ndarray) -> np.ndarray:
        centre = self.min_value * 10 ** ((idx - 1 + 0.5) / self.bins_per_decade)
        return np.where(idx == 0, 0.0, np.where(idx == self.n_bins + 1, self.max_value, centre))

    def quantiles(self, pcts: tuple[float, ...] | list[float]) -> list[float | None]:
        """Percentiles (0–100) with numpy's default ``linear`` interpolation between order statistics."""
        if self.total == 0:
            return [None for _ in pcts]
        cum = np.cumsum(self.counts)
        out: list[float | None] = []
        for p in pcts:
            h = (self.total - 1) * p / 100.0
            lo, hi = math.floor(h), math.ceil(h)
            bins = np.searchsorted(cum, [lo, hi], side="right")  # bin holding the k-th order statistic
            v_lo, v_hi = self._representative(bins)
            out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
        return out

    def mean(self) -> float | None:
        return self.sum / self.total if self.total else None

    def stats(self) -> dict[str, float | None]:
        """``{"mean", "p50", "p90", "p95", "p99"}`` as in ``summary.json``."""
        q = self.quantiles(list(PCTS))
        return {"mean": self.mean(), **{f"p{p}": v for p, v in zip(PCTS, q)}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, sparse form (non-zero bins only)."""
        nz = np.nonzero(self.counts)[0]
        return {"min_value": self.min_value, "max_value": self.max_value, "bins_per_decade": self.bins_per_decade,
                "total": self.total, "sum": self.sum, "bins": nz.tolist(), "counts": self.counts[nz].tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LogHistogram":
        h = cls(d["min_value"], d["max_value"], d["bins_per_decade"])
        h.counts[np.asarray(d["bins"], dtype=np.int64)] = np.asarray(d["counts"], dtype=np.int64)
        h.total, h.sum = int(d["total"]), float(d["sum"])
        return h


def _requests_schema(class_names: list[str]):  # noqa: ANN202 - pyarrow schema
    import pyarrow as pa

    cat = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([
        ("request_id", pa.int64()), ("arrival_s", pa.float64()), ("class", cat), ("node", pa.int64()),
        ("served_by", pa.string()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
        ("cached_tokens", pa.int64()), ("status", cat), ("queue_wait_s", pa.float64()), ("ttft_s", pa.float64()),
        ("tpot_s", pa.float64()), ("e2e_s", pa.float64()), ("preemptions", pa.int64()),
    ])


class StreamingCollector:
    """``on_request_done`` callback that reduces finished requests chunk by chunk (and optionally writes them
    to ``requests_path`` as Parquet, atomically: the file appears only when :meth:`close` succeeds)."""

    LATENCY_KEYS = ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")

    def __init__(self, scenario: Scenario, requests_path: Path | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, bins_per_decade: int = DEFAULT_BINS_PER_DECADE) -> None:
        self.scenario = scenario
        self.class_names = [c.name for c in scenario.traffic.classes]
        self.chunk_rows = max(1, chunk_rows)
        self.hist = {k: LogHistogram(bins_per_decade=bins_per_decade) for k in self.LATENCY_KEYS}
        self.completed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.slo_finished = 0
        self.slo_ok = 0
        self.rows_written = 0
        self._buf: list[Request] = []
        self._path = Path(requests_path) if requests_path is not None else None
        self._tmp: Path | None = None
        self._writer = None
        if self._path is not None:
            import pyarrow.parquet as pq

            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
            self._writer = pq.ParquetWriter(self._tmp, _requests_schema(self.class_names), compression="zstd")

    def __call__(self, req: Request) -> None:
        self._buf.append(req)
        if len(self._buf) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Reduce (and write) the buffered requests."""
        reqs, self._buf = self._buf, []
        n = len(reqs)
        if n == 0:
            return
        arrival = np.fromiter((r.arrival_s for r in reqs), float, n)
        sched = np.fromiter((r.first_scheduled_s for r in reqs), float, n)
        first = np.fromiter((r.first_token_s for r in reqs), float, n)
        finish = np.fromiter((r.finish_s for r in reqs), float, n)
        prompt = np.fromiter((r.prompt_tokens for r in reqs), np.int64, n)
        out = np.fromiter((r.output_tokens for r in reqs), np.int64, n)
        status = np.fromiter((int(r.status) for r in reqs), np.int64, n)
        completed = status == _COMPLETED
        nan = np.nan
        ttft = np.where(first >= 0, first - arrival, nan)
        e2e = np.where(completed, finish - arrival, nan)
        qwait = np.where(sched >= 0, sched - arrival, nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(completed & (out > 1), (finish - first) / np.maximum(out - 1, 1), nan)
        # throughput: every completed request; latency and SLO: arrivals after warm-up (as metrics.summarize)
        self.completed += int(completed.sum())
        self.input_tokens += int(prompt[completed].sum())
        self.output_tokens += int(out[completed].sum())
        window = arrival >= self.scenario.warmup_s
        done = window & completed
        cols = {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "queue_wait_s": qwait}
        for key, values in cols.items():
            self.hist[key].add(values[done])
        finished = window & np.isin(status, _FINISHED)
        ok = completed[finished].copy()
        slo = self.scenario.slo
        for target, col in ((slo.ttft_p95_s, ttft), (slo.tpot_p95_s, tpot), (slo.e2e_p95_s, e2e)):
            if target is None:
                continue
            vals = col[finished]
            with np.errstate(invalid="ignore"):
                within = vals <= target
            if col is tpot:
                within |= np.isnan(vals)
            ok &= within
        self.slo_finished += int(finished.sum())
        self.slo_ok += int(ok.sum())
        if self._writer is not None:
            self._write(reqs, arrival, prompt, out, status, qwait, ttft, tpot, e2e)

    def _write(self, reqs: list[Request], arrival: np.ndarray, prompt: np.ndarray, out: np.ndarray,
               status: np.ndarray, qwait: np.ndarray, ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray) -> None:
        import pyarrow as pa

        n = len(reqs)
        classes = pa.DictionaryArray.from_arrays(
            pa.array(np.fromiter((r.class_idx for r in reqs), np.int32, n)), pa.array(self.class_names, pa.string()))
        stat = pa.DictionaryArray.from_arrays(
            pa.array(_STATUS_CODE[status].astype(np.int32)), pa.array(STATUS_CATEGORIES, pa.string()))
        table = pa.table({
            "request_id": np.fromiter((r.rid for r in reqs), np.int64, n),
            "arrival_s": arrival,
            "class": classes,
            "node": np.fromiter((r.node for r in reqs), np.int64, n),
            "served_by": np.where(status == int(Status.SPILLED), "api", "fleet"),
            "input_tokens": prompt,
            "output_tokens": out,
            "cached_tokens": np.fromiter((r.cached_tokens for r in reqs), np.int64, n),
            "status": stat,
            "queue_wait_s": qwait,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "preemptions": np.fromiter((r.preemptions for r in reqs), np.int64, n),
        }, schema=self._writer.schema)
        self._writer.write_table(table)
        self.rows_written += n

    def close(self) -> Path | None:
        """Flush, finish the Parquet file and move it into place; returns its path (None if not writing)."""
        self.flush()
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        assert self._tmp is not None and self._path is not None
        os.replace(self._tmp, self._path)
        return self._path

    def abort(self) -> None:
        """Drop a partly written file (after an error)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def summary(self, result: SimResult, fleet_ts: pd.DataFrame | None = None) -> dict[str, Any]:
        """``summary.json`` with the keys of :func:`sim.metrics.summarize` (see the module docstring).

        Everything not derived from per-request records (counts, utilisation, fleet, GPU cost) comes from
        ``summarize`` itself, run on the empty request table of a streamed run; the request-derived parts
        (latency, throughput, SLO, cost per token) are replaced by the streamed values."""
        self.flush()
        sc = result.scenario
        duration = sc.duration_s
        if fleet_ts is None:
            fleet_ts, _ = timeseries_tables(result)
        base = summarize(result, requests_table(result), fleet_ts)
        lat = {k: self.hist[k].stats() for k in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")}
        base["latency"] = lat
        base["throughput"] = {
            "requests_per_s": self.completed / duration,
            "input_tokens_per_s": self.input_tokens / duration,
            "output_tokens_per_s": self.output_tokens / duration,
        }
        slo = base["slo"]
        for key, col in (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s")):
            if key in slo["targets"]:
                check = slo["targets"][key]
                p95 = lat[col]["p95"]
                check["actual"] = p95
                check["met"] = p95 is not None and p95 <= check["target"]
        slo["attainment"] = self.slo_ok / self.slo_finished if self.slo_finished else None
        slo["met"] = all(c["met"] for c in slo["targets"].values()) if slo["targets"] else True
        cost = base["cost"]
        total = cost["total_usd"]
        out_m = self.output_tokens / 1e6
        all_m = (self.input_tokens + self.output_tokens) / 1e6
        cost["usd_per_mtok_output"] = total / out_m if out_m > 0 else None
        cost["usd_per_mtok_total"] = total / all_m if all_m > 0 else None
        return _clean(base)


@dataclass
class StreamingOutput:
    """A streamed run: the summary, the latency histograms (mergeable), the fleet time series and the
    path of the streamed per-request Parquet file (None when not written)."""

    result: SimResult
    summary: dict[str, Any]
    histograms: dict[str, LogHistogram]
    timeseries: pd.DataFrame
    timeseries_nodes: pd.DataFrame
    requests_path: Path | None
    requests_written: int


def run_streaming(scenario: Scenario, requests_path: Path | str | None = None, progress: ProgressFn | None = None,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  bins_per_decade: int = DEFAULT_BINS_PER_DECADE) -> StreamingOutput:
    """Simulate ``scenario`` without keeping per-request records in memory (see the module docstring)."""
    collector = StreamingCollector(scenario, Path(requests_path) if requests_path is not None else None,
                                   chunk_rows, bins_per_decade)
    try:
        result = simulate(scenario, progress, keep_requests=False, on_request_done=collector)
        fleet_ts, node_ts = timeseries_tables(result)
        summary = collector.summary(result, fleet_ts)
        path = collector.close()
    except BaseException:
        collector.abort()
        raise
    return StreamingOutput(result, summary, collector.hist, fleet_ts, node_ts, path, collector.rows_written)
