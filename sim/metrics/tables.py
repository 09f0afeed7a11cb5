"""Turn a :class:`~sim.runner.simulation.SimResult` into tidy tables and the ``summary.json`` dictionary.

Definitions (as in vLLM's ``benchmark_serving``):

* ``queue_wait_s`` = first scheduled − arrival (time in the waiting queue before the first prefill chunk).
* ``ttft_s`` = first output token − arrival (includes queueing and the whole prefill).
* ``tpot_s`` = (finish − first token) / (output tokens − 1): mean time per output token after the first;
  undefined (NaN) for one-token outputs and excluded from TPOT statistics.
* ``e2e_s`` = finish − arrival.
* Latency statistics use completed interactive requests that arrived at or after ``warmup_s``; classes marked
  ``deferrable`` (batch work) are reported separately under ``batch`` (deadline attainment).
* ``slo.*``: the verdict of :mod:`sim.metrics.slo` — ``attainment`` over every interactive arrival after warm-up
  (rejected, failed, timed-out and unfinished requests miss), ``met`` = P95 targets and the attainment target,
  per-window view and ``worst_window``, ``by_class``.
* ``throughput.*`` over ``[warmup_s, duration_s]``: ``offered_*`` = arrivals, ``served_*`` = completions in the
  window (fleet or API); ``requests_per_s`` / ``*_tokens_per_s`` = the fleet's completions in the window.
* ``overload.*``: :mod:`sim.metrics.overload`.
* With a hosted API (``api``/``spill``), requests it served (status ``spilled``, ``served_by`` api) count as
  served in latency, SLO and cost per token; ``api.*`` and ``spill.*`` hold the API's counters (``calls`` =
  every attempt, ``rate_limited`` = 429s, ``retries``, ``failed`` = given up) and the spill share of requests and
  of tokens (input + output).
* ``utilisation.*``: ``load_factor`` / ``load_factor_peak`` / ``bottleneck`` (:mod:`sim.perf.capacity`), ``mfu_*`` /
  ``mbu_*`` (model FLOPs and HBM bytes of the finished engine steps ÷ datasheet peak), ``busy_fraction`` = share
  of up-node time spent executing engine steps (not capacity), ``kv_fraction_*`` / ``batch_fill_*`` =
  time-sampled KV blocks in use / capacity and running / ``max_num_seqs``, over samples in the arrival window.
* One row per logical request: with client retries (``traffic.classes[].client``) the row is its last attempt,
  ``retries`` says how many attempts came before, and latencies count from the first attempt's arrival
  (what the user waited). ``requests.timed_out``: clients that gave up after their last retry;
  ``requests.retries``: retry attempts sent (offered attempts = arrived + retries).
* ``prefix_cache.*``: ``hit_token_ratio`` = prompt tokens served from the prefix cache ÷ prompt tokens, and the share
  of requests with a hit, over the fleet's completions after warm-up (``cached_tokens``: from the cache state with
  ``fleet.engine.prefix_caching``, else the configured-rate approximation). ``routing.*``: the router and the load
  balance (per-node uncached prompt + output tokens of those requests: busiest ÷ mean, and the CV).
* ``energy.*`` = kWh, average facility power, CO2 and energy cost of the nodes up over ``duration_s``, from the
  sampled busy share (``sim.metrics.energy``); owned cost charges this energy instead of full draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sim.core.config import Scenario
from sim.metrics.cost import cost_breakdown
from sim.metrics.energy import energy_section
from sim.metrics.labels import labels
from sim.metrics.overload import overload_section
from sim.metrics.slo import class_targets, meets_targets, verdict, windows_table, worst_window
from sim.metrics.summary import Summary
from sim.perf.capacity import load_section
from sim.runner.simulation import SimResult
from sim.traffic.request import FLOAT_COLUMNS, INT_COLUMNS, Handoff, Status, record_columns

PCTS = (50, 90, 95, 99)
STATUS_CATEGORIES = ["completed", "rejected", "spilled", "failed", "in_flight", "timed_out"]
# Status value -> index into STATUS_CATEGORIES (waiting and running are both "in flight")
_STATUS_CODE = np.array(
    [STATUS_CATEGORIES.index(s.name.lower()) if s.name.lower() in STATUS_CATEGORIES
     else STATUS_CATEGORIES.index("in_flight") for s in Status],
    dtype=np.int64,
)
_CHUNK_ROWS = 16384  # records read into Python lists at a time (the lists of every row would hold ~0.5 KB a row)


#: columns a streamed run's reduction never reads (:class:`sim.metrics.streaming.StreamingCollector`), and the
#: record attributes they come from
LEAN_SKIPPED = ("request_id", "preemptions", "retries", "spilled_at_s", "api_attempts", "api_429s", "api_errors")
_LEAN_SKIPPED_FIELDS = ("rid", "preemptions", "retries", "spill_s", "api_attempts", "api_429s", "api_errors")


def request_columns(reqs: list[Any], lean: bool = False) -> dict[str, np.ndarray]:
    """The records' :data:`~sim.traffic.request.FLOAT_COLUMNS` and :data:`~sim.traffic.request.INT_COLUMNS`, one
    array each, read in one pass (:func:`~sim.traffic.request.record_columns`, compiled by ``make native``), chunk by
    chunk; ``lean``: without those only :data:`LEAN_SKIPPED` columns need."""
    n = len(reqs)
    fcol = np.empty((len(FLOAT_COLUMNS), n), dtype=float)
    icol = np.empty((len(INT_COLUMNS), n), dtype=np.int64)
    for lo in range(0, n, _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        fl, il = record_columns(reqs, lo, hi)
        fcol[:, lo:hi] = np.array(fl, dtype=float).reshape(hi - lo, len(FLOAT_COLUMNS)).T
        icol[:, lo:hi] = np.array(il, dtype=np.int64).reshape(hi - lo, len(INT_COLUMNS)).T
    cols = {**dict(zip(FLOAT_COLUMNS, fcol)), **dict(zip(INT_COLUMNS, icol))}
    return {k: v for k, v in cols.items() if not (lean and k in _LEAN_SKIPPED_FIELDS)}


def requests_table(result: SimResult, lean: bool = False,
                   columns: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per arrived request, columns with units. ``lean``: without the :data:`LEAN_SKIPPED` columns (a
    streamed run reducing its requests without writing them). ``columns``: the requests' attributes, already
    tabulated (:func:`request_columns`; a streamed run's chunk; not for disaggregated pools, whose hand-off columns
    are read from ``result.requests``)."""
    reqs = result.requests
    col = columns if columns is not None else request_columns(reqs, lean)
    arrival, sched, first, finish = col["arrival_s"], col["first_scheduled_s"], col["first_token_s"], col["finish_s"]
    out = col["output_tokens"]
    status = col["status"]
    completed = (status == int(Status.COMPLETED)) | (status == int(Status.SPILLED))  # served: fleet or API
    nan = np.nan
    ttft = np.where(first >= 0, first - arrival, nan)
    e2e = np.where(completed, finish - arrival, nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(completed & (out > 1), (finish - first) / np.maximum(out - 1, 1), nan)
    classes = pd.Categorical.from_codes(col["class_idx"], categories=pd.Index(result.class_names))
    table: dict[str, Any] = {
        "request_id": col.get("rid"),
        "arrival_s": arrival,
        "class": classes,
        "node": col["node"],
        "served_by": np.where(col["via_api"] != 0, "api", "fleet"),
        "input_tokens": col["prompt_tokens"],
        "output_tokens": out,
        "cached_tokens": col["cached_tokens"],
        "status": pd.Categorical.from_codes(_STATUS_CODE[status], categories=pd.Index(STATUS_CATEGORIES)),
        "queue_wait_s": np.where(sched >= 0, sched - arrival, nan),
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_s": e2e,
        "preemptions": col.get("preemptions"),
        "retries": col.get("retries"),
        "spilled_at_s": np.where(col["spill_s"] >= 0, col["spill_s"], nan) if not lean else None,
        "api_attempts": col.get("api_attempts"),
        "api_429s": col.get("api_429s"),
        "api_errors": col.get("api_errors"),
        "api_cost_usd": col["api_cost_usd"],
    }
    frame = pd.DataFrame({k: v for k, v in table.items() if not (lean and k in LEAN_SKIPPED)})
    if result.scenario.fleet.pooled and result.layout is not None:  # the pool of the node that last had it
        names = [pl.name for pl in result.layout.pools]
        slot_pool = np.array(list(result.layout.slot_pool) + [-1], dtype=np.int64)
        node = frame["node"].to_numpy()
        code = np.where((node >= 0) & (frame["served_by"] == "fleet").to_numpy(), slot_pool[node], -1)
        frame.insert(4, "pool", pd.Series(pd.Categorical.from_codes(code, categories=pd.Index(names))))
        if any(pl.role != "mixed" for pl in result.layout.pools):
            _handoff_columns(frame, reqs, names, slot_pool)
    return frame


def _handoff_columns(frame: pd.DataFrame, reqs: list[Any], pool_names: list[str], slot_pool: np.ndarray) -> None:
    """A disaggregated run's columns (docs/disaggregation.md): ``prefill_node`` / ``prefill_pool`` (where its prompt
    was sent), ``decode_node`` / ``decode_pool`` (where its KV went; −1 and empty before a hand-off, and for models
    served mixed), ``kv_start_s`` / ``kv_end_s`` (the KV transfer on the wire and fully arrived), ``kv_transfer_s``
    (prefill end → KV arrived, queueing on the links included) and ``kv_bytes``. After a hand-off repeated (an
    evicted decode node's request prefilled again) the latest one."""
    n = len(reqs)
    none = Handoff(-1)
    h = [r.handoff if r.handoff is not None else none for r in reqs]
    pre = np.fromiter((x.prefill_node for x in h), np.int64, n)
    dec = np.fromiter((x.decode_node for x in h), np.int64, n)
    at = list(frame.columns).index("pool") + 1
    for i, (name, node) in enumerate((("prefill", pre), ("decode", dec))):
        pool = pd.Series(pd.Categorical.from_codes(slot_pool[node], categories=pd.Index(pool_names)))  # −1: empty
        frame.insert(at + 2 * i, f"{name}_node", node)
        frame.insert(at + 2 * i + 1, f"{name}_pool", pool)
    nan = np.nan
    frame["kv_start_s"] = np.fromiter((x.kv_start_s if x.kv_start_s >= 0 else nan for x in h), float, n)
    frame["kv_end_s"] = np.fromiter((x.kv_end_s if x.kv_end_s >= 0 else nan for x in h), float, n)
    frame["kv_transfer_s"] = np.fromiter((x.kv_transfer_s for x in h), float, n)
    frame["kv_bytes"] = np.fromiter((x.kv_bytes for x in h), float, n)



def fleet_frame(s: Any, waiting: np.ndarray, running: np.ndarray, kv: np.ndarray, *, kv_capacity_blocks: Any,
                busy_sum: np.ndarray, mfu_sum: np.ndarray, mbu_sum: np.ndarray, seq_capacity: Any,
                up_safe: np.ndarray) -> pd.DataFrame:
    """The fleet time series, one row per sample, from per-node arrays (samples × nodes) and the sample's
    capacities over the nodes up (KV blocks, sequences; ``up_safe``: nodes up, at least 1): shared by the single
    fleet and :func:`sim.metrics.pools.pooled_timeseries`."""
    interval = s.interval_s
    deferred = s.fleet("deferred").astype(np.int64)
    return pd.DataFrame(
        {
            "time_s": s.fleet("time_s"),
            "arrival_rate_rps": s.fleet("arrivals") / interval,
            "completion_rate_rps": s.fleet("completions") / interval,
            "queue_len": waiting.sum(axis=1),
            "running_seqs": running.sum(axis=1),
            "deferred": deferred,
            "in_system": waiting.sum(axis=1) + running.sum(axis=1) + deferred,
            "kv_used_blocks": kv.sum(axis=1),
            "kv_fraction": kv.sum(axis=1) / kv_capacity_blocks,
            "busy_fraction": np.clip(busy_sum / up_safe, 0.0, 1.0),
            "mfu": mfu_sum / up_safe,
            "mbu": mbu_sum / up_safe,
            "batch_fill": running.sum(axis=1) / seq_capacity,
            "nodes_up": s.fleet("nodes_up").astype(np.int64),
            "nodes_billed": s.fleet("nodes_billed").astype(np.int64),
        }
    )

def timeseries_tables(result: SimResult, per_node: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fleet, per-node) time series; one row per sample (per node). Rates are per second of the interval.
    ``per_node=False``: the per-node table is left empty (a summary-only run needs the fleet's alone)."""
    if result.scenario.fleet.pooled and result.layout is not None:  # several pools: sim.metrics.pools
        from sim.metrics.pools import pooled_timeseries

        return pooled_timeseries(result)
    s = result.series
    interval = s.interval_s
    cap = result.node_model.memory.kv_capacity_blocks
    t = s.fleet("time_s")
    if len(t) == 0:
        empty = pd.DataFrame(columns=["time_s"])
        return empty, empty
    waiting = s.per_node("waiting").astype(np.int64)
    running = s.per_node("running").astype(np.int64)
    kv = s.per_node("kv_used_blocks").astype(np.int64)
    busy_cum = s.per_node("busy_s")
    busy = np.diff(np.vstack([np.zeros((1, busy_cum.shape[1])), busy_cum]), axis=0) / interval
    busy = np.clip(busy, 0.0, 1.0)
    busy_sum = busy.sum(axis=1)
    if not per_node:
        del busy_cum, busy  # a long run's summary: only the sums over the nodes are kept
    mfu, mbu = _mfu_mbu(result, s)
    mfu_sum, mbu_sum = mfu.sum(axis=1), mbu.sum(axis=1)
    nodes = waiting.shape[1]
    up = s.fleet("nodes_up").astype(np.int64)
    up_safe = np.maximum(up, 1)
    fleet = fleet_frame(s, waiting, running, kv, kv_capacity_blocks=cap * up_safe, busy_sum=busy_sum,
                        mfu_sum=mfu_sum, mbu_sum=mbu_sum,
                        seq_capacity=result.node_model.engine.max_num_seqs * up_safe, up_safe=up_safe)
    if not per_node:
        return fleet, pd.DataFrame(columns=["time_s"])
    per_node_table = pd.DataFrame(
        {
            "time_s": np.repeat(t, nodes),
            "node": np.tile(np.arange(nodes), len(t)),
            "up": s.per_node("up").astype(bool).ravel(),
            "queue_len": waiting.ravel(),
            "running_seqs": running.ravel(),
            "batch_fill": running.ravel() / result.node_model.engine.max_num_seqs,
            "kv_used_blocks": kv.ravel(),
            "kv_fraction": kv.ravel() / cap,
            "busy_fraction": busy.ravel(),
            "mfu": mfu.ravel(),
            "mbu": mbu.ravel(),
        }
    )
    return fleet, per_node_table


def _mfu_mbu(result: SimResult, s: Any) -> tuple[np.ndarray, np.ndarray]:
    """[samples, nodes] model-FLOPs and memory-bandwidth utilisation per sample interval: model FLOPs
    (2·active params per token + attention) and HBM bytes (weights once per step + KV read) of the engine steps
    finished in the interval ÷ what the node's GPUs could do at datasheet peak (dense FLOPS at the weights'
    precision; HBM bandwidth) in the interval."""
    nm, sc = result.node_model, result.scenario
    gpus, interval = sc.fleet.gpus_per_node, s.interval_s
    peak_flops = gpus * nm.gpu.peak_flops(sc.fleet.weights) * interval
    peak_bytes = gpus * nm.gpu.hbm_bw_gb_s * 1e9 * interval
    out = []
    for name, peak in (("flops", peak_flops), ("hbm_bytes", peak_bytes)):
        cum = s.per_node(name)
        d = np.diff(np.vstack([np.zeros((1, cum.shape[1])), cum]), axis=0)
        out.append(np.clip(d / peak, 0.0, None))
    return out[0], out[1]


def _stats(x: np.ndarray) -> dict[str, float | None]:
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return {"mean": None, **{f"p{p}": None for p in PCTS}}
    q = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), **{f"p{p}": float(v) for p, v in zip(PCTS, q)}}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _api_section(df: pd.DataFrame, st: dict[str, Any]) -> dict[str, Any]:
    """``api.*``: calls (every attempt), 429s, 5xx/failures/timeouts, retries, requests given up on, spend."""
    served = df[(df["served_by"] == "api") & (df["status"] == "spilled")]
    keys = ("requests", "calls", "rate_limited", "server_errors", "transient_failures", "timeouts", "retries",
            "served", "failed", "returned_to_fleet", "usd", "wasted_usd", "billed_input_tokens",
            "billed_output_tokens", "peak_concurrency")
    return {
        "provider": st.get("provider"),
        **{k: st.get(k, 0) for k in keys},
        "ttft_s": _stats(served["ttft_s"].to_numpy()),
        "e2e_s": _stats(served["e2e_s"].to_numpy()),
    }


def _spill_section(df: pd.DataFrame, st: dict[str, Any]) -> dict[str, Any]:
    """``spill.*``: policy, requests sent to the API (at arrival / late) and their share of requests and tokens."""
    via = (df["served_by"] == "api").to_numpy()
    tokens = (df["input_tokens"] + df["output_tokens"]).to_numpy()
    total_tok = float(tokens.sum())
    return {
        "policy": st.get("policy"),
        "requests": int(via.sum()),
        "at_arrival": st.get("spilled_at_arrival", 0),
        "late": st.get("late_spilled", 0),
        "request_share": float(via.mean()) if len(df) else None,
        "token_share": float(tokens[via].sum()) / total_tok if total_tok > 0 else None,
    }


def _class_targets(sc: Any, key: str) -> dict[str, float | None]:
    """P95 target ``key`` per class name (see :func:`sim.metrics.slo.class_targets`)."""
    return class_targets(sc, key)


def _by_class(sc: Any, window: pd.DataFrame, ok: np.ndarray) -> dict[str, Any]:
    """Per class: counts, P50/P95 latencies, attainment over its arrivals, whether its targets hold (its P95
    targets and the attainment target)."""
    out: dict[str, Any] = {}
    cls = labels(window["class"])
    status = labels(window["status"])
    targets = {key: _class_targets(sc, key) for key in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
    for c in sc.traffic.classes:
        if getattr(c, "deferrable", None) is not None:
            continue
        mask = cls == c.name
        d = window[mask & np.isin(status, ["completed", "spilled"])]  # served: by the fleet or the API
        row: dict[str, Any] = {"arrived": int(mask.sum()), "completed": len(d)}
        for col in ("ttft_s", "tpot_s", "e2e_s"):
            x = d[col].dropna().to_numpy()
            row[col] = {"p50": float(np.percentile(x, 50)) if len(x) else None,
                        "p95": float(np.percentile(x, 95)) if len(x) else None}
        row["attainment"] = float(ok[mask].mean()) if mask.any() else None
        row["met"] = class_met(sc, c.name, row, targets)
        out[c.name] = row
    return out


def class_met(sc: Any, name: str, row: dict[str, Any], targets: dict[str, dict[str, float | None]]) -> bool:
    """A class meets its SLO: every P95 target it has holds and its attainment reaches the target."""
    met = True
    for key, col in (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s")):
        target = targets[key][name]
        if target is not None:
            p95 = row[col]["p95"]
            met = met and p95 is not None and p95 <= target
    att = row["attainment"]
    return bool(met and (att is None or att >= sc.slo.attainment_target))


def admissible_rps(df: pd.DataFrame, warmup_s: float, duration_s: float) -> float:
    """Requests per second arriving in the measurement window that the fleet could serve (not rejected)."""
    a, b = measurement_window(warmup_s, duration_s)
    return float(((df["arrival_s"] >= a) & (df["status"] != "rejected")).sum()) / (b - a)


def fleet_offered(df: pd.DataFrame) -> np.ndarray:
    """Rows that offered work to the fleet: not rejected as impossible, not served by the hosted API."""
    return ((df["status"] != "rejected") & (df["served_by"] != "api")).to_numpy()


def _mix_means(df: pd.DataFrame) -> tuple[float, float, float, float]:
    """The offered mix (all arrivals): mean input, output and cached tokens, and the output-weighted mean
    context a running sequence holds, Σ O·(I + O/2) / Σ O (see :mod:`sim.perf.capacity`)."""
    if len(df) == 0:
        return 0.0, 0.0, 0.0, 0.0
    i = df["input_tokens"].to_numpy(dtype=float)
    o = df["output_tokens"].to_numpy(dtype=float)
    return mix_from_sums(len(df), float(i.sum()), float(o.sum()), float(df["cached_tokens"].sum()),
                         float((o * (i + o / 2.0)).sum()))


def mix_from_sums(n: int, input_sum: float, output_sum: float, cached_sum: float,
                  held_weighted_sum: float) -> tuple[float, float, float, float]:
    """Mix means from running sums (shared with the streamed summary)."""
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0
    return input_sum / n, output_sum / n, cached_sum / n, held_weighted_sum / output_sum if output_sum else 0.0


def measurement_window(warmup_s: float, duration_s: float) -> tuple[float, float]:
    """``[warmup_s, duration_s]`` (the whole ``[0, duration_s]`` when the warm-up covers it): where throughput
    is measured. Starting after warm-up keeps the fill-up of an empty fleet out of the served rate."""
    return (warmup_s, duration_s) if warmup_s < duration_s else (0.0, duration_s)


def throughput_section(df: pd.DataFrame, warmup_s: float, duration_s: float) -> dict[str, float]:
    """``throughput.*`` over the measurement window ``[a, b]`` (:func:`measurement_window`): offered = requests
    arriving in it, served = requests completed in it (on the fleet or by the API), per second of ``b − a``.
    The unprefixed keys are the fleet's own completions in the window (what it actually sustained)."""
    a, b = measurement_window(warmup_s, duration_s)
    status = labels(df["status"])
    arrival = df["arrival_s"].to_numpy(dtype=float)
    finish = arrival + df["e2e_s"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        done_in = (finish >= a) & (finish <= b + 1e-9)
    arrived_in = arrival >= a
    served = np.isin(status, ("completed", "spilled")) & done_in
    fleet = (status == "completed") & done_in
    inp, outp = df["input_tokens"].to_numpy(), df["output_tokens"].to_numpy()
    return throughput_from_counts(b - a, int(arrived_in.sum()), int(outp[arrived_in].sum()), int(served.sum()),
                                  int(outp[served].sum()), int(fleet.sum()), int(inp[fleet].sum()),
                                  int(outp[fleet].sum()))


def throughput_from_counts(window_s: float, arrived: int, arrived_output: int, served: int, served_output: int,
                           fleet: int, fleet_input: int, fleet_output: int) -> dict[str, float]:
    """The ``throughput`` section from counts in the measurement window (shared with the streamed summary)."""
    return {
        "offered_requests_per_s": arrived / window_s,
        "offered_output_tokens_per_s": arrived_output / window_s,
        "served_requests_per_s": served / window_s,
        "served_output_tokens_per_s": served_output / window_s,
        "requests_per_s": fleet / window_s,
        "input_tokens_per_s": fleet_input / window_s,
        "output_tokens_per_s": fleet_output / window_s,
    }


def utilisation_section(ts: pd.DataFrame, result: SimResult, offered_rps: float,
                        mix: tuple[float, float, float, float], admissible_share: float = 1.0,
                        role: str = "mixed") -> dict[str, Any]:
    """``utilisation.*`` over the samples of the arrival window: load factor and bottleneck
    (:mod:`sim.perf.capacity`) for ``offered_rps`` (requests the fleet could serve and did not hand to the API) of
    ``mix``, MFU / MBU, KV and batch fill, and the step-busy fraction; ``role``: a disaggregated pool's
    (:func:`sim.perf.capacity.node_capacity`)."""
    def col(name: str) -> np.ndarray:
        return ts[name].to_numpy(dtype=float) if len(ts) and name in ts else np.array([])

    def mean(x: np.ndarray) -> float | None:
        return float(np.nanmean(x)) if len(x) else None

    def p95(x: np.ndarray) -> float | None:
        return float(np.nanpercentile(x, 95)) if len(x) else None

    kv, fill, mfu, mbu = col("kv_fraction"), col("batch_fill"), col("mfu"), col("mbu")
    nodes_up = mean(col("nodes_up"))
    load = load_section(result.node_model, offered_rps, nodes_up or 0.0, *mix, p95(kv), p95(fill), role)
    return {
        **load,
        "load_factor_peak": _peak_load(ts, admissible_share, load.get("capacity_per_node_requests_per_s")),
        "mfu_mean": mean(mfu), "mfu_p95": p95(mfu), "mbu_mean": mean(mbu), "mbu_p95": p95(mbu),
        "kv_fraction_mean": mean(kv), "kv_fraction_p95": p95(kv),
        "batch_fill_mean": mean(fill), "batch_fill_p95": p95(fill),
        "busy_fraction": mean(col("busy_fraction")),
        "queue_len_mean": mean(col("queue_len")),
        "running_seqs_mean": mean(col("running_seqs")),
        "nodes_up_mean": nodes_up,
    }


PEAK_WINDOW_S = 600.0


def _peak_load(ts: pd.DataFrame, admissible_share: float, cap_per_node: float | None) -> float | None:
    """Traffic of the busiest 10-minute window (arrivals then, less the share rejected as impossible) ÷ what
    the nodes up then sustain; the whole run when it is shorter. Requests a spill policy sends to the API are
    *included*: this is the peak the traffic puts on the fleet alone (above 1: the fleet cannot carry the peak
    without spilling or queueing)."""
    if not cap_per_node or len(ts) == 0 or "arrival_rate_rps" not in ts:
        return None
    arr = ts["arrival_rate_rps"].to_numpy(dtype=float)
    up = ts["nodes_up"].to_numpy(dtype=float)
    if arr.mean() <= 0:
        return None
    dt = float(np.median(np.diff(ts["time_s"].to_numpy()))) if len(ts) > 1 else 1.0
    win = int(min(len(arr), max(1, round(PEAK_WINDOW_S / dt))))
    kernel = np.ones(win) / win
    arr_w, up_w = np.convolve(arr, kernel, "valid"), np.convolve(up, kernel, "valid")
    share = admissible_share
    with np.errstate(divide="ignore", invalid="ignore"):
        lf = np.where(up_w > 0, arr_w * share / (cap_per_node * up_w), np.nan)
    return float(np.nanmax(lf)) if np.isfinite(lf).any() else None


def percentile_checks(slo: Any, lat: dict[str, Any]) -> dict[str, Any]:
    """``slo.targets``: each scenario-wide P95 target against the served requests' P95."""
    checks: dict[str, Any] = {}
    for key, col in (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s")):
        target = getattr(slo, key)
        if target is not None:
            p95 = lat[col]["p95"]
            checks[key] = {"target": target, "actual": p95, "met": p95 is not None and p95 <= target}
    return checks


def class_clearly_misses(row: dict[str, Any], attainment_target: float) -> bool:
    """A class fails the fleet-wide verdict when its attainment (every per-request target, every miss counted) is
    below the target beyond doubt: the one-sided 95 % Wilson upper bound on its ``arrived`` requests is below it.

    A class with a handful of arrivals (one node at a low rate sees ~15 of a 10 % class in a run) cannot swing the
    verdict on one unlucky request, while 58 % of thousands fails it; its own ``met`` is still the point estimate
    and the headline names it either way. P95 targets are covered: an attainment ≥ 0.95 implies each P95 holds."""
    from sim.metrics.stats import wilson_upper

    n, att = row["arrived"], row["attainment"]
    return bool(n and att is not None and wilson_upper(att, n) < attainment_target)


def slo_section(sc: Any, checks: dict[str, Any], attainment: float | None, windows: list[dict[str, Any]],
                by_class: dict[str, Any]) -> dict[str, Any]:
    """``summary.slo`` (definitions in :mod:`sim.metrics.slo`)."""
    deciding = ({c.name for c in sc.traffic.classes} if sc.slo.every_class
                else {c.name for c in sc.traffic.classes if getattr(c, "slo", None) is not None})
    worst = worst_window(windows)
    target = sc.slo.attainment_target
    classes_met = not any(class_clearly_misses(by_class[n], target) for n in deciding if n in by_class)
    return {
        "attainment": attainment,
        "attainment_target": sc.slo.attainment_target,
        "met": verdict(sc.slo, checks, attainment, worst, classes_met),
        "percentile_targets_met": all(c["met"] for c in checks.values()),
        "targets": checks,
        "window_s": sc.slo.window_s,
        "worst_window": worst,
        "windows": windows,
        "by_class": by_class,
    }


def prefix_cache_section(sc: Scenario, done: pd.DataFrame) -> dict[str, Any]:
    """Prefix-cache hits of the requests served by the fleet after warm-up: prompt tokens served from the cache
    (from the cache state with ``fleet.engine.prefix_caching``; else the configured ``prefix_hit_rate`` or a trace's
    infinite-cache approximation) over all prompt tokens, and the share of requests with any hit."""
    fleet = done[done["served_by"] == "fleet"]
    cached = fleet["cached_tokens"].to_numpy()
    return prefix_cache_from_sums(sc, len(fleet), int(fleet["input_tokens"].sum()), int(cached.sum()),
                                  int((cached > 0).sum()))


def prefix_cache_from_sums(sc: Scenario, rows: int, prompt: int, cached: int, hit_rows: int) -> dict[str, Any]:
    return {
        "enabled": sc.fleet.engine.prefix_caching,
        "hit_token_ratio": cached / prompt if prompt > 0 else None,
        "requests_with_hit": hit_rows / rows if rows else None,
    }


def node_work(done: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(node ids, uncached prompt + output tokens) of the fleet-served requests in ``done``."""
    fleet = done[done["served_by"] == "fleet"]
    work = (fleet["input_tokens"] - fleet["cached_tokens"] + fleet["output_tokens"]).to_numpy(dtype=float)
    return fleet["node"].to_numpy(), work


def routing_section(sc: Scenario, done: pd.DataFrame) -> dict[str, Any]:
    """Router settings and load balance: the work each node computed for the requests it served after warm-up
    (uncached prompt + output tokens), the busiest node's over the mean, and its coefficient of variation."""
    nodes, work = node_work(done)
    return routing_from_work(sc, np.bincount(nodes, weights=work, minlength=sc.fleet.nodes))


def routing_from_work(sc: Scenario, per_node: np.ndarray) -> dict[str, Any]:
    mean = float(per_node.mean()) if len(per_node) else 0.0
    return {
        "policy": sc.router.policy,
        "staleness_s": sc.router.staleness_s,
        "node_work_max_over_mean": float(per_node.max()) / mean if mean > 0 else None,
        "node_work_cv": float(per_node.std()) / mean if mean > 0 else None,
    }


def summarize(result: SimResult, req_df: pd.DataFrame | None = None,
              fleet_ts: pd.DataFrame | None = None) -> Summary:
    """The run's :class:`~sim.metrics.summary.Summary` (``summary.json``; keys documented in the module docstring
    and README)."""
    return Summary.from_json(summary_sections(result, req_df, fleet_ts))


def summary_sections(result: SimResult, req_df: pd.DataFrame | None = None,
                     fleet_ts: pd.DataFrame | None = None, pooled_stats: Any = None) -> dict[str, Any]:
    """The summary's sections as JSON-ready dicts (NaN → None), the shape :meth:`Summary.from_json` reads; the
    streamed summary (:mod:`sim.metrics.streaming`) replaces its request-derived parts before that, and gives the
    per-pool and per-model request figures of a pooled run as ``pooled_stats`` (pool stats, model stats: see
    :func:`sim.metrics.pools.pool_request_stats`)."""
    sc = result.scenario
    df = req_df if req_df is not None else requests_table(result)
    if fleet_ts is None:
        fleet_ts, _ = timeseries_tables(result)
    duration = sc.duration_s
    counts = result.counts()
    batch_names = [c.name for c in sc.traffic.classes if c.deferrable is not None]
    is_batch = df["class"].isin(batch_names).to_numpy() if batch_names else np.zeros(len(df), dtype=bool)
    window = df[(df["arrival_s"] >= sc.warmup_s).to_numpy() & ~is_batch]  # interactive requests only
    done = window[window["status"].isin(["completed", "spilled"])]  # served by the fleet or the API
    lat = {
        "ttft_s": _stats(done["ttft_s"].to_numpy()),
        "tpot_s": _stats(done["tpot_s"].to_numpy()),
        "e2e_s": _stats(done["e2e_s"].to_numpy()),
        "queue_wait_s": _stats(done["queue_wait_s"].to_numpy()),
    }
    thr = throughput_section(df, sc.warmup_s, duration)
    # utilisation over the arrival window
    ts = fleet_ts[fleet_ts["time_s"] <= duration + 1e-9] if len(fleet_ts) else fleet_ts
    n_nodes = sc.fleet.nodes
    nm = result.node_model
    # the fleet's load: requests it could serve (not rejected as impossible) and did not hand to the API
    to_fleet = fleet_offered(df)
    not_rejected = float((df["status"] != "rejected").mean()) if len(df) else 1.0
    retries = int(counts.get("retries", 0) or 0)  # client retries are offered work too (retry storms)
    util = utilisation_section(ts, result, (to_fleet.sum() + retries) / duration, _mix_means(df[to_fleet]),
                               not_rejected)
    overload = overload_section(fleet_ts, sc.warmup_s, duration, admissible_rps(df, sc.warmup_s, duration),
                                thr["served_requests_per_s"], util["nodes_up_mean"])
    # SLO: every arrived interactive request after warm-up counts; only served ones within targets meet it
    cls = labels(window["class"])
    status = labels(window["status"])
    cols = {c: window[c].to_numpy(dtype=float) for c in ("ttft_s", "tpot_s", "e2e_s")}
    ok = meets_targets(sc, cls, status, cols)
    checks = percentile_checks(sc.slo, lat)
    attainment = float(ok.mean()) if len(ok) else None
    by_class = _by_class(sc, window, ok)
    windows = windows_table(window["arrival_s"].to_numpy(), ok, np.isin(status, ("completed", "spilled")),
                            cols["ttft_s"], cols["tpot_s"], sc.slo.window_s, duration, sc.warmup_s)
    slo_out = slo_section(sc, checks, attainment, windows, by_class)
    batch: dict[str, Any] = {}
    if batch_names:
        b = df[is_batch]
        deadlines = b["class"].map({c.name: c.deferrable.deadline_s for c in sc.traffic.classes
                                    if c.deferrable is not None}).astype(float).to_numpy()
        done_b = b["status"].isin(["completed", "spilled"]).to_numpy()
        met = done_b & (b["e2e_s"].to_numpy() <= deadlines)
        finished_b = (b["status"] != "in_flight").to_numpy()  # every terminal status
        batch = {
            "classes": batch_names,
            "arrived": len(b),
            "completed": int(done_b.sum()),
            "deadline_met": int(met.sum()),
            "deadline_missed": int((finished_b & ~met).sum()),
            "deadline_attainment": float(met.sum() / finished_b.sum()) if finished_b.sum() else None,
            "queue_wait_s": _stats(b["queue_wait_s"].to_numpy()),
            "e2e_s": _stats(b["e2e_s"].to_numpy()),
        }
    served_all = df[df["status"].isin(["completed", "spilled"])]  # tokens served by the fleet or the API
    api_stats = result.spill or {}
    fleet_info = {
        "nodes": n_nodes,
        "gpu": nm.gpu.name,
        "gpus_per_node": sc.fleet.gpus_per_node,
        "model": nm.model.name,
        "weights": sc.fleet.weights,
        "kv_cache": sc.fleet.kv_cache,
        "kv_capacity_tokens_per_node": nm.memory.kv_capacity_tokens,
        "weight_gb_per_node": nm.memory.weight_bytes / 1e9,
        "engine_steps": int(sum(result.node_steps)),
    }
    pooled: dict[str, Any] = {}
    if sc.fleet.pooled and result.layout is not None:  # per pool and per model (sim.metrics.pools)
        from sim.metrics.pools import (
            combine_cost,
            combine_energy,
            combine_utilisation,
            fleet_labels,
            model_sections,
            pool_sections,
        )

        pool_stats, model_stats = pooled_stats if pooled_stats is not None else (None, None)
        pools = pool_sections(result, df, pool_stats)
        energy = combine_energy(pools)
        cost = combine_cost(pools, float(api_stats.get("usd", 0.0)), float(served_all["input_tokens"].sum()),
                            float(served_all["output_tokens"].sum()))
        util = combine_utilisation(pools, util)
        fleet_info = fleet_labels(result)
        pooled = {"pools": pools, "models": model_sections(result, df, window, ok, pools, model_stats)}
    else:
        energy = energy_section(sc, nm.gpu, fleet_ts)
        cost = cost_breakdown(sc, nm.gpu, float(served_all["input_tokens"].sum()),
                              float(served_all["output_tokens"].sum()), api_usd=float(api_stats.get("usd", 0.0)),
                              gpu_hours=result.gpu_hours or None, energy_usd=energy["usd"])
    return _clean(
        {
            "scenario": sc.name,
            "seed": sc.seed,
            "duration_s": duration,
            "warmup_s": sc.warmup_s,
            "simulated_end_s": result.end_s,
            "requests": counts,
            "latency": lat,
            "throughput": thr,
            "utilisation": util,
            "overload": overload,
            "slo": slo_out,
            "cost": cost,
            "energy": energy,
            "prefix_cache": prefix_cache_section(sc, done),
            "routing": routing_section(sc, done),
            **({"batch": batch} if batch else {}),
            **({"api": _api_section(df, api_stats), "spill": _spill_section(df, api_stats)} if result.spill else {}),
            **({"disaggregation": result.disagg} if result.disagg else {}),  # KV transfers (sim.fleet.disagg)
            "fleet": fleet_info,
            **pooled,
        }
    )
