"""Constant-memory metrics for long runs: per-request records streamed to Parquet in chunks, and latency
percentiles from mergeable log-spaced histograms.

:func:`run_streaming` simulates with ``keep_requests=False``: each finished request is buffered, and every
``chunk_rows`` requests the buffer is reduced (vectorised) into running counters and :class:`LogHistogram` s
and, if asked, appended to a Parquet file as one row group. Memory therefore does not grow with the number of
requests (the fleet time series, one sample per ``output.sample_interval_s``, still does).

The summary is the same :class:`~sim.metrics.summary.Summary` as :func:`sim.metrics.tables.summarize` gives
(built from ``summary_sections`` of the empty request table, with the request-derived parts replaced). Counts,
throughput, means, SLO attainment, utilisation and cost are exact; percentiles come from the histograms: with the
default 1000 bins per decade a reported percentile is within a relative error of :data:`DEFAULT_REL_ERROR`
(±0.12 %) of the exact (numpy ``linear``) value; values under 1 µs are reported as 0 (absolute error < 1 µs).

The streamed ``requests.parquet`` has the columns of :func:`sim.metrics.tables.requests_table`, in finishing order.
Requests still in flight when the run stops never finish and are not in it: they are counted in
``requests.in_flight`` (and ``spill.request_share`` divides by all arrivals), but their tokens are missing from
``spill.token_share`` and, for deferrable classes, they are missing from ``batch.arrived`` (after the default
drain there are normally none). They count as SLO misses and as offered requests in the whole-run figures
(``slo.attainment``, ``throughput.offered_requests_per_s``), but not per class or per window (their class and
arrival time are not seen); per-window P95s come from coarser histograms (100 bins per decade, ±1.2 %).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.core.config import Scenario
from sim.fleet.pools import PoolLayout, pool_layout
from sim.metrics.overload import overload_section
from sim.metrics.slo import meets_targets
from sim.metrics.summary import Summary
from sim.metrics.tables import (
    PCTS,
    _class_targets,
    _clean,
    class_met,
    fleet_offered,
    measurement_window,
    mix_from_sums,
    node_work,
    percentile_checks,
    prefix_cache_from_sums,
    request_columns,
    requests_table,
    routing_from_work,
    slo_section,
    summary_sections,
    throughput_from_counts,
    timeseries_tables,
    utilisation_section,
)
from sim.runner.simulation import ProgressFn, SimResult, simulate
from sim.traffic.request import Request

DEFAULT_BINS_PER_DECADE = 1000
DEFAULT_REL_ERROR = 10 ** (0.5 / DEFAULT_BINS_PER_DECADE) - 1  # half a bin in log space ≈ 0.115 %
DEFAULT_CHUNK_ROWS = 65_536
SUB_ROWS = 8_192  # finished requests held as objects before their attributes are tabulated


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
        self.n_bins = math.ceil(math.log10(max_value / min_value) * bins_per_decade)
        # [zero, bin 0 .. bin n-1, overflow]
        self.counts = np.zeros(self.n_bins + 2, dtype=np.int64)
        self.total = 0
        self.sum = 0.0

    @property
    def rel_error(self) -> float:
        """Largest relative error of a reported quantile (for values inside [min_value, max_value))."""
        return 10 ** (0.5 / self.bins_per_decade) - 1

    def _compatible(self, other: LogHistogram) -> bool:
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

    def merge(self, other: LogHistogram) -> LogHistogram:
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
    def from_dict(cls, d: dict[str, Any]) -> LogHistogram:
        h = cls(d["min_value"], d["max_value"], d["bins_per_decade"])
        h.counts[np.asarray(d["bins"], dtype=np.int64)] = np.asarray(d["counts"], dtype=np.int64)
        h.total, h.sum = int(d["total"]), float(d["sum"])
        return h


@dataclass(frozen=True)
class _Chunk:
    """Just enough of a :class:`SimResult` for :func:`sim.metrics.tables.requests_table` to tabulate a chunk."""

    scenario: Scenario
    class_names: list[str]
    requests: list[Request]
    layout: PoolLayout | None = None


class StreamingCollector:
    """``on_request_done`` callback that tabulates finished requests chunk by chunk (with
    :func:`sim.metrics.tables.requests_table`, so the columns are the in-memory table's), reduces each chunk into
    counters and histograms following :func:`sim.metrics.tables.summarize`'s rules, and optionally appends it to
    ``requests_path`` (Parquet, one row group per chunk; the file appears only when :meth:`close` succeeds)."""

    HIST_KEYS = ("latency.ttft_s", "latency.tpot_s", "latency.e2e_s", "latency.queue_wait_s",
                 "batch.queue_wait_s", "batch.e2e_s", "api.ttft_s", "api.e2e_s")
    COUNTER_KEYS = ("completed", "completed_input_tokens", "completed_output_tokens", "served_input_tokens",
                    "served_output_tokens", "slo_ok", "batch_rows", "batch_done",
                    "batch_deadline_met", "batch_finished", "api_rows", "api_tokens", "all_tokens",
                    "slo_window_rows", "seen_output_tokens", "served_in_window", "served_output_in_window",
                    "fleet_in_window", "fleet_input_in_window", "fleet_output_in_window", "mix_rows", "mix_input",
                    "mix_output", "mix_cached", "seen_in_window", "rejected_in_window",
                    "pc_rows", "pc_prompt", "pc_cached", "pc_hit_rows")
    #: per-window P95s use coarser histograms (±1.2 %) so a week of hourly windows stays small
    WINDOW_BINS_PER_DECADE = 100

    def __init__(self, scenario: Scenario, requests_path: Path | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, bins_per_decade: int = DEFAULT_BINS_PER_DECADE) -> None:
        self.scenario = scenario
        self.class_names = [c.name for c in scenario.traffic.classes]
        self._deadline_s = {c.name: c.deferrable.deadline_s for c in scenario.traffic.classes
                            if c.deferrable is not None}
        self.chunk_rows = max(1, chunk_rows)
        self.hist = {k: LogHistogram(bins_per_decade=bins_per_decade) for k in self.HIST_KEYS}
        self.n: dict[str, Any] = dict.fromkeys(self.COUNTER_KEYS, 0)  # ints, and the per-pool floats (mix, $)
        self._interactive = [c.name for c in scenario.traffic.classes if getattr(c, "deferrable", None) is None]
        for name in self._interactive:
            for col in ("ttft_s", "tpot_s", "e2e_s"):
                self.hist[f"class.{name}.{col}"] = LogHistogram(bins_per_decade=bins_per_decade)
            for k in ("completed", "arrived", "ok"):
                self.n[f"class.{name}.{k}"] = 0
        self._targets = {key: _class_targets(scenario, key) for key in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
        self.held_weighted_sum = 0.0  # Σ O·(I + O/2) over the offered mix (sim.perf.capacity)
        self.node_work = np.zeros(scenario.fleet.nodes)  # routing balance (sim.metrics.tables.node_work)
        self.windows: dict[int, dict[str, Any]] = {}  # window index -> arrived, ok, TTFT / TPOT histograms
        self.layout = pool_layout(scenario) if scenario.fleet.pooled else None  # per-pool and per-model figures
        if self.layout is not None:
            for p in range(len(self.layout.pools)):
                for k in ("completed", "input", "output", "mix_rows", "mix_input", "mix_output", "mix_cached",
                          "mix_held"):
                    self.n[f"pool.{p}.{k}"] = 0
                for c in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s"):
                    self.hist[f"pool.{p}.{c}"] = LogHistogram(bins_per_decade=bins_per_decade)
            for g in range(len(self.layout.group_models)):
                for k in ("arrived", "served", "ok", "api_usd", "output", "tokens"):
                    self.n[f"model.{g}.{k}"] = 0
                for c in ("ttft_s", "tpot_s", "e2e_s"):
                    self.hist[f"model.{g}.{c}"] = LogHistogram(bins_per_decade=bins_per_decade)
        self.rows_written = 0
        self._buf: list[Request] = []
        # finished requests are tabulated every SUB_ROWS (their attributes, ~100 B each, instead of the objects,
        # ~280 B) and reduced every chunk_rows, as before; not for disaggregated pools (their hand-off columns)
        self._cols: list[dict[str, np.ndarray]] = []
        self._rows = 0  # requests tabulated in self._cols
        self._early = self.layout is None or all(pl.role == "mixed" for pl in self.layout.pools)
        self._path = Path(requests_path) if requests_path is not None else None
        self._tmp: Path | None = None
        self._writer: Any = None  # a pyarrow ParquetWriter once the first rows arrive

    @property
    def completed(self) -> int:
        """Requests completed on the fleet so far."""
        return self.n["completed"]

    def __call__(self, req: Request) -> None:
        self._buf.append(req)
        if self._rows + len(self._buf) >= self.chunk_rows:
            self.flush()
        elif self._early and len(self._buf) >= SUB_ROWS:
            self._cols.append(request_columns(self._buf, self._path is None))
            self._rows += len(self._buf)
            self._buf = []

    def flush(self) -> None:
        """Reduce (and write) the buffered requests."""
        reqs, self._buf = self._buf, []
        parts, self._cols, self._rows = self._cols, [], 0
        if not (reqs or parts):
            return
        lean = self._path is None
        cols = None
        if parts:
            parts.append(request_columns(reqs, lean))
            cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            del parts
        chunk = _Chunk(self.scenario, self.class_names, reqs, self.layout)
        df = requests_table(chunk, lean=lean, columns=cols)  # type: ignore[arg-type]
        self._reduce(df)
        self._write(df)

    def _reduce(self, df: pd.DataFrame) -> None:
        sc, n, h = self.scenario, self.n, self.hist
        status = df["status"].astype(str).to_numpy()
        completed = status == "completed"
        served = completed | (status == "spilled")
        finished = status != "in_flight"  # every terminal status
        is_batch = df["class"].isin(list(self._deadline_s)).to_numpy() if self._deadline_s else np.zeros(len(df), bool)
        window = (df["arrival_s"].to_numpy() >= sc.warmup_s) & ~is_batch
        inp, outp = df["input_tokens"].to_numpy(), df["output_tokens"].to_numpy()
        col = {c: df[c].to_numpy(dtype=float) for c in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")}
        # throughput: fleet-completed; cost per token: served by the fleet or the API
        n["completed"] += int(completed.sum())
        n["completed_input_tokens"] += int(inp[completed].sum())
        n["completed_output_tokens"] += int(outp[completed].sum())
        n["served_input_tokens"] += int(inp[served].sum())
        n["served_output_tokens"] += int(outp[served].sum())
        done = window & served
        for c, values in col.items():
            h[f"latency.{c}"].add(values[done])
        pc = done & (df["served_by"] == "fleet").to_numpy()
        cached = df["cached_tokens"].to_numpy()[pc]
        n["pc_rows"] += int(pc.sum())
        n["pc_prompt"] += int(inp[pc].sum())
        n["pc_cached"] += int(cached.sum())
        n["pc_hit_rows"] += int((cached > 0).sum())
        nodes, work = node_work(df[done])
        per = np.bincount(nodes, weights=work, minlength=len(self.node_work))
        if len(per) > len(self.node_work):
            self.node_work = np.concatenate([self.node_work, np.zeros(len(per) - len(self.node_work))])
        self.node_work[: len(per)] += per
        classes = df["class"].astype(str).to_numpy()
        arrival = df["arrival_s"].to_numpy(dtype=float)
        ok = meets_targets(sc, classes[window], status[window],
                           {c: col[c][window] for c in ("ttft_s", "tpot_s", "e2e_s")})
        n["slo_window_rows"] += int(window.sum())
        n["slo_ok"] += int(ok.sum())
        win_cls = classes[window]
        for name in self._interactive:
            mine = done & (classes == name)  # served (fleet or API), as the fleet-wide latencies
            n[f"class.{name}.completed"] += int(mine.sum())
            for c in ("ttft_s", "tpot_s", "e2e_s"):
                h[f"class.{name}.{c}"].add(col[c][mine])
            in_win = win_cls == name
            n[f"class.{name}.arrived"] += int(in_win.sum())
            n[f"class.{name}.ok"] += int(ok[in_win].sum())
        self._reduce_windows(arrival[window], ok, served[window], col["ttft_s"][window], col["tpot_s"][window])
        # offered mix and throughput in the measurement window (see sim.metrics.tables.throughput_section)
        a, b = measurement_window(sc.warmup_s, sc.duration_s)
        finish = arrival + col["e2e_s"]
        with np.errstate(invalid="ignore"):
            in_dur = (finish >= a) & (finish <= b + 1e-9)
        srv, flt = served & in_dur, completed & in_dur
        arrived_in = arrival >= a
        n["seen_in_window"] += int(arrived_in.sum())
        n["rejected_in_window"] += int((arrived_in & (status == "rejected")).sum())
        n["seen_output_tokens"] += int(outp[arrived_in].sum())
        n["served_in_window"] += int(srv.sum())
        n["served_output_in_window"] += int(outp[srv].sum())
        n["fleet_in_window"] += int(flt.sum())
        n["fleet_input_in_window"] += int(inp[flt].sum())
        n["fleet_output_in_window"] += int(outp[flt].sum())
        fo = fleet_offered(df)
        n["mix_rows"] += int(fo.sum())
        n["mix_input"] += int(inp[fo].sum())
        n["mix_output"] += int(outp[fo].sum())
        n["mix_cached"] += int(df["cached_tokens"].to_numpy()[fo].sum())
        o = outp[fo].astype(float)
        self.held_weighted_sum += float((o * (inp[fo] + o / 2.0)).sum())
        if self._deadline_s:
            deadlines = df["class"].astype(str).map(self._deadline_s).astype(float).to_numpy()
            with np.errstate(invalid="ignore"):
                met = is_batch & served & (col["e2e_s"] <= deadlines)
            n["batch_rows"] += int(is_batch.sum())
            n["batch_done"] += int((is_batch & served).sum())
            n["batch_deadline_met"] += int(met.sum())
            n["batch_finished"] += int((is_batch & finished).sum())
            h["batch.queue_wait_s"].add(col["queue_wait_s"][is_batch])
            h["batch.e2e_s"].add(col["e2e_s"][is_batch])
        via = (df["served_by"] == "api").to_numpy()
        api_served = via & (status == "spilled")
        h["api.ttft_s"].add(col["ttft_s"][api_served])
        h["api.e2e_s"].add(col["e2e_s"][api_served])
        tokens = inp + outp
        n["api_rows"] += int(via.sum())
        n["api_tokens"] += int(tokens[via].sum())
        n["all_tokens"] += int(tokens.sum())
        if self.layout is not None:
            self._reduce_pools(df, completed, served, window, ok, col)

    def _reduce_pools(self, df: pd.DataFrame, completed: np.ndarray, served: np.ndarray, window: np.ndarray,
                      ok: np.ndarray, col: dict[str, np.ndarray]) -> None:
        """Per pool and per model, what :func:`sim.metrics.pools.pool_request_stats` and
        :func:`~sim.metrics.pools.model_request_stats` read from the whole table."""
        assert self.layout is not None
        n, h, layout = self.n, self.hist, self.layout
        inp, outp = df["input_tokens"].to_numpy(), df["output_tokens"].to_numpy()
        cached = df["cached_tokens"].to_numpy()
        pool = df["pool"].cat.codes.to_numpy()  # −1: the API or no node
        group = np.asarray(layout.class_group, dtype=np.int64)[df["class"].cat.codes.to_numpy()]
        not_api = (df["served_by"] != "api").to_numpy()
        for p, pl in enumerate(layout.pools):
            rows = pool == p
            done = rows & completed
            n[f"pool.{p}.completed"] += int(done.sum())
            n[f"pool.{p}.input"] += int(inp[done].sum())
            n[f"pool.{p}.output"] += int(outp[done].sum())
            for c in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s"):
                h[f"pool.{p}.{c}"].add(col[c][done])
            mix = (group == layout.pool_group[p]) & not_api if pl.role == "prefill" else rows
            i, o = inp[mix].astype(float), outp[mix].astype(float)
            n[f"pool.{p}.mix_rows"] += int(mix.sum())
            n[f"pool.{p}.mix_input"] += int(inp[mix].sum())
            n[f"pool.{p}.mix_output"] += int(outp[mix].sum())
            n[f"pool.{p}.mix_cached"] += int(cached[mix].sum())
            n[f"pool.{p}.mix_held"] += float((o * (i + o / 2.0)).sum())
        api_usd = df["api_cost_usd"].to_numpy(dtype=float)
        wgroup = group[window]
        for g in range(len(layout.group_models)):
            mine = group == g
            in_win = wgroup == g
            srv_w = window & served & mine
            n[f"model.{g}.arrived"] += int(in_win.sum())
            n[f"model.{g}.served"] += int(srv_w.sum())
            n[f"model.{g}.ok"] += int(ok[in_win].sum())
            for c in ("ttft_s", "tpot_s", "e2e_s"):
                h[f"model.{g}.{c}"].add(col[c][srv_w])
            n[f"model.{g}.api_usd"] += float(api_usd[mine].sum())
            srv = served & mine
            n[f"model.{g}.output"] += int(outp[srv].sum())
            n[f"model.{g}.tokens"] += int(inp[srv].sum() + outp[srv].sum())

    def pooled_stats(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """(per-pool, per-model) request figures of a pooled run, as :func:`sim.metrics.pools.pool_request_stats`
        and :func:`~sim.metrics.pools.model_request_stats` compute them from the whole table (None without pools)."""
        if self.layout is None:
            return None
        n, h = self.n, self.hist
        pools = [{
            "completed": n[f"pool.{p}.completed"],
            "input_tokens": float(n[f"pool.{p}.input"]),
            "output_tokens": float(n[f"pool.{p}.output"]),
            "latency": {c: h[f"pool.{p}.{c}"].stats() for c in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")},
            "mix": mix_from_sums(n[f"pool.{p}.mix_rows"], n[f"pool.{p}.mix_input"], n[f"pool.{p}.mix_output"],
                                 n[f"pool.{p}.mix_cached"], n[f"pool.{p}.mix_held"]),
        } for p in range(len(self.layout.pools))]
        models = [{
            "arrived": n[f"model.{g}.arrived"],
            "served": n[f"model.{g}.served"],
            "ok": n[f"model.{g}.ok"],
            **{c: h[f"model.{g}.{c}"].stats() for c in ("ttft_s", "tpot_s", "e2e_s")},
            "api_usd": float(n[f"model.{g}.api_usd"]),
            "output_tokens": float(n[f"model.{g}.output"]),
            "tokens": float(n[f"model.{g}.tokens"]),
        } for g in range(len(self.layout.group_models))]
        return pools, models

    def _reduce_windows(self, arrival: np.ndarray, ok: np.ndarray, served: np.ndarray, ttft: np.ndarray,
                        tpot: np.ndarray) -> None:
        if len(arrival) == 0:
            return
        k = np.floor(arrival / self.scenario.slo.window_s).astype(np.int64)
        for w in np.unique(k).tolist():
            m = k == w
            row = self.windows.get(w)
            if row is None:
                row = self.windows[w] = {"arrived": 0, "ok": 0,
                                         "ttft": LogHistogram(bins_per_decade=self.WINDOW_BINS_PER_DECADE),
                                         "tpot": LogHistogram(bins_per_decade=self.WINDOW_BINS_PER_DECADE)}
            row["arrived"] += int(m.sum())
            row["ok"] += int(ok[m].sum())
            row["ttft"].add(ttft[m & served])
            row["tpot"].add(tpot[m & served])

    def merge(self, other: StreamingCollector) -> StreamingCollector:
        """Add ``other``'s reduced requests (counters, histograms, windows) into this collector: the collector of
        both request sets together (a sharded run merges its cells'). Both must have flushed and not be writing
        a file; returns self."""
        if self._buf or other._buf or self._cols or other._cols or self._path is not None or other._path is not None:
            raise ValueError("merge needs flushed collectors that write no file")
        for k, v in other.n.items():
            self.n[k] = self.n.get(k, 0) + v
        for k, hist in other.hist.items():
            self.hist[k].merge(hist)
        self.held_weighted_sum += other.held_weighted_sum
        for w, row in other.windows.items():
            mine = self.windows.get(w)
            if mine is None:
                self.windows[w] = {"arrived": row["arrived"], "ok": row["ok"],
                                   "ttft": LogHistogram(bins_per_decade=self.WINDOW_BINS_PER_DECADE).merge(row["ttft"]),
                                   "tpot": LogHistogram(bins_per_decade=self.WINDOW_BINS_PER_DECADE).merge(row["tpot"])}
            else:
                mine["arrived"] += row["arrived"]
                mine["ok"] += row["ok"]
                mine["ttft"].merge(row["ttft"])
                mine["tpot"].merge(row["tpot"])
        return self

    def window_rows(self) -> list[dict[str, Any]]:
        """The per-window view of :func:`sim.metrics.slo.windows_table`, from the streamed counters."""
        w_s, end = self.scenario.slo.window_s, self.scenario.duration_s
        begin = self.scenario.warmup_s
        return [{"start_s": float(max(w * w_s, begin)), "end_s": float(min((w + 1) * w_s, end)),
                 "arrived": r["arrived"],
                 "attainment": r["ok"] / r["arrived"], "ttft_p95_s": r["ttft"].quantiles([95])[0],
                 "tpot_p95_s": r["tpot"].quantiles([95])[0]}
                for w, r in sorted(self.windows.items())]

    def _write(self, df: pd.DataFrame) -> None:
        if self._path is None:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._writer is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        else:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)
        self.rows_written += len(df)

    def close(self) -> Path | None:
        """Flush, finish the Parquet file and move it into place; returns its path (None if not writing)."""
        self.flush()
        if self._path is None:
            return None
        if self._writer is None:  # no request finished: an empty table with the right columns
            self._write(requests_table(_Chunk(self.scenario, self.class_names, [], self.layout)))  # type: ignore[arg-type]
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self._path)
        return self._path

    def abort(self) -> None:
        """Drop a partly written file (after an error)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def summary(self, result: SimResult, fleet_ts: pd.DataFrame | None = None) -> Summary:
        """The run's :class:`~sim.metrics.summary.Summary`, as :func:`sim.metrics.tables.summarize` (see the module
        docstring).

        Everything not derived from per-request records (counts, utilisation, fleet, GPU and API spend, API
        counters) comes from ``summary_sections``, run on the empty request table of a streamed run; the
        request-derived parts are replaced by the streamed values."""
        self.flush()
        sc, n, h = result.scenario, self.n, self.hist
        duration = sc.duration_s
        if fleet_ts is None:
            fleet_ts, _ = timeseries_tables(result)
        base = summary_sections(result, requests_table(result), fleet_ts, self.pooled_stats())
        lat = {k: h[f"latency.{k}"].stats() for k in ("ttft_s", "tpot_s", "e2e_s", "queue_wait_s")}
        base["latency"] = lat
        arrived = base["requests"]["arrived"]
        in_flight = base["requests"]["in_flight"]
        # in-flight requests never reach the collector: they count as offered in the measurement window (they
        # arrived late), but their output tokens are missing from the offered tokens
        a, b = measurement_window(sc.warmup_s, duration)
        base["throughput"] = throughput_from_counts(
            b - a, n["seen_in_window"] + in_flight, n["seen_output_tokens"], n["served_in_window"],
            n["served_output_in_window"], n["fleet_in_window"], n["fleet_input_in_window"], n["fleet_output_in_window"])
        thr = base["throughput"]
        ts = fleet_ts[fleet_ts["time_s"] <= duration + 1e-9] if len(fleet_ts) else fleet_ts
        mix = mix_from_sums(n["mix_rows"], n["mix_input"], n["mix_output"], n["mix_cached"], self.held_weighted_sum)
        # requests still in flight were offered to the fleet too (their tokens are not known here)
        not_rejected = 1.0 - base["requests"]["rejected"] / arrived if arrived else 1.0
        retries = int(base["requests"].get("retries", 0) or 0)  # client retries are offered work too
        base["utilisation"] = utilisation_section(ts, result, (n["mix_rows"] + in_flight + retries) / duration, mix,
                                                  not_rejected)
        if "pools" in base:  # the fleet's load factor and bottleneck from its pools' (sim.metrics.pools)
            from sim.metrics.pools import combine_utilisation

            base["utilisation"] = combine_utilisation(base["pools"], base["utilisation"])
        admissible = (n["seen_in_window"] - n["rejected_in_window"] + in_flight) / (b - a)
        base["overload"] = overload_section(fleet_ts, sc.warmup_s, duration, admissible,
                                            thr["served_requests_per_s"], base["utilisation"]["nodes_up_mean"])
        # SLO: requests still in flight at the end miss (their class and arrival time are not known here, so they
        # count in the overall attainment only, not per class or window)
        checks = percentile_checks(sc.slo, lat)
        denominator = n["slo_window_rows"] + in_flight
        attainment = n["slo_ok"] / denominator if denominator else None
        targets = {key: self._targets[key] for key in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
        by_class: dict[str, Any] = {}
        for name in self._interactive:
            arrived_c = n[f"class.{name}.arrived"]
            row: dict[str, Any] = {"arrived": arrived_c, "completed": n[f"class.{name}.completed"]}
            for c in ("ttft_s", "tpot_s", "e2e_s"):
                p50, p95 = h[f"class.{name}.{c}"].quantiles([50, 95])
                row[c] = {"p50": p50, "p95": p95}
            row["attainment"] = n[f"class.{name}.ok"] / arrived_c if arrived_c else None
            row["met"] = class_met(sc, name, row, targets)
            by_class[name] = row
        base["slo"] = slo_section(sc, checks, attainment, self.window_rows(), by_class)
        cost = base["cost"]
        total = cost["total_usd"]
        out_m = n["served_output_tokens"] / 1e6
        all_m = (n["served_input_tokens"] + n["served_output_tokens"]) / 1e6
        cost["usd_per_mtok_output"] = total / out_m if out_m > 0 else None
        cost["usd_per_mtok_total"] = total / all_m if all_m > 0 else None
        base["prefix_cache"] = prefix_cache_from_sums(sc, n["pc_rows"], n["pc_prompt"], n["pc_cached"],
                                                      n["pc_hit_rows"])
        base["routing"] = routing_from_work(sc, self.node_work)
        if "batch" in base:
            b = base["batch"]
            b.update({
                "arrived": n["batch_rows"], "completed": n["batch_done"], "deadline_met": n["batch_deadline_met"],
                "deadline_missed": n["batch_finished"] - n["batch_deadline_met"],
                "deadline_attainment": n["batch_deadline_met"] / n["batch_finished"] if n["batch_finished"] else None,
                "queue_wait_s": h["batch.queue_wait_s"].stats(), "e2e_s": h["batch.e2e_s"].stats(),
            })
        if "api" in base:
            base["api"]["ttft_s"] = h["api.ttft_s"].stats()
            base["api"]["e2e_s"] = h["api.e2e_s"].stats()
        if "spill" in base:
            base["spill"]["requests"] = n["api_rows"]
            base["spill"]["request_share"] = n["api_rows"] / arrived if arrived else None
            base["spill"]["token_share"] = n["api_tokens"] / n["all_tokens"] if n["all_tokens"] else None
        return Summary.from_json(_clean(base))


@dataclass
class StreamingOutput:
    """A streamed run: the summary, the latency histograms (mergeable), the fleet time series and the
    path of the streamed per-request Parquet file (None when not written)."""

    result: SimResult
    summary: Summary
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
