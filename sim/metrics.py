"""Turn a :class:`~sim.simulation.SimResult` into tidy tables and the ``summary.json`` dictionary.

Definitions (as in vLLM's ``benchmark_serving``):

* ``queue_wait_s`` = first scheduled − arrival (time in the waiting queue before the first prefill chunk).
* ``ttft_s`` = first output token − arrival (includes queueing and the whole prefill).
* ``tpot_s`` = (finish − first token) / (output tokens − 1): mean time per output token after the first;
  undefined (NaN) for one-token outputs and excluded from TPOT statistics.
* ``e2e_s`` = finish − arrival.
* Latency statistics use completed interactive requests that arrived at or after ``warmup_s``; classes marked
  ``deferrable`` (batch work) are reported separately under ``batch`` (deadline attainment).
* ``slo.attainment`` = share of finished requests (completed, rejected, failed or timed out, arrived after
  warm-up) whose own TTFT, TPOT and E2E are all within the targets (a rejected, failed or timed-out request
  misses). ``slo.met``: every
  P95 target holds.
* ``throughput.*`` = completed requests / tokens per second of the arrival window (``duration_s``).
* With a hosted API (``api``/``spill``), requests it served (status ``spilled``, ``served_by`` api) count as
  served in latency, SLO and cost per token (``throughput`` stays the fleet's); ``api.*`` and ``spill.*`` hold
  the API's counters (``calls`` = every attempt, ``rate_limited`` = 429s, ``retries``, ``failed`` = given up)
  and the spill share of requests and of tokens (input + output).
* One row per logical request: with client retries (``traffic.classes[].client``) the row is its last attempt,
  ``retries`` says how many attempts came before, and latencies count from the first attempt's arrival
  (what the user waited). ``requests.timed_out``: clients that gave up after their last retry;
  ``requests.retries``: retry attempts sent (offered attempts = arrived + retries).
* ``utilisation.busy_fraction`` = share of up-node time spent executing engine steps over ``duration_s``;
  ``kv_fraction_*`` = time-sampled KV blocks in use / capacity of the nodes up, over samples in the window.
* ``energy.*`` = kWh, average facility power, CO2 and energy cost of the nodes up over ``duration_s``, from the
  sampled busy share (``sim.energy``); owned cost charges this energy instead of full draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .cost import cost_breakdown
from .energy import energy_section
from .request import Status
from .simulation import SimResult

PCTS = (50, 90, 95, 99)
STATUS_CATEGORIES = ["completed", "rejected", "spilled", "failed", "in_flight", "timed_out"]
# Status value -> index into STATUS_CATEGORIES (waiting and running are both "in flight")
_STATUS_CODE = np.array(
    [STATUS_CATEGORIES.index(s.name.lower()) if s.name.lower() in STATUS_CATEGORIES
     else STATUS_CATEGORIES.index("in_flight") for s in Status]
)


def requests_table(result: SimResult) -> pd.DataFrame:
    """One row per arrived request, columns with units."""
    reqs = result.requests
    n = len(reqs)
    arrival = np.fromiter((r.arrival_s for r in reqs), float, n)
    sched = np.fromiter((r.first_scheduled_s for r in reqs), float, n)
    first = np.fromiter((r.first_token_s for r in reqs), float, n)
    finish = np.fromiter((r.finish_s for r in reqs), float, n)
    out = np.fromiter((r.output_tokens for r in reqs), np.int64, n)
    status = np.fromiter((int(r.status) for r in reqs), np.int64, n)
    completed = (status == int(Status.COMPLETED)) | (status == int(Status.SPILLED))  # served: fleet or API
    nan = np.nan
    ttft = np.where(first >= 0, first - arrival, nan)
    e2e = np.where(completed, finish - arrival, nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(completed & (out > 1), (finish - first) / np.maximum(out - 1, 1), nan)
    classes = pd.Categorical.from_codes(
        np.fromiter((r.class_idx for r in reqs), np.int64, n), categories=result.class_names
    )
    return pd.DataFrame(
        {
            "request_id": np.fromiter((r.rid for r in reqs), np.int64, n),
            "arrival_s": arrival,
            "class": classes,
            "node": np.fromiter((r.node for r in reqs), np.int64, n),
            "served_by": np.where(np.fromiter((r.via_api for r in reqs), bool, n), "api", "fleet"),
            "input_tokens": np.fromiter((r.prompt_tokens for r in reqs), np.int64, n),
            "output_tokens": out,
            "cached_tokens": np.fromiter((r.cached_tokens for r in reqs), np.int64, n),
            "status": pd.Categorical.from_codes(_STATUS_CODE[status], categories=STATUS_CATEGORIES),
            "queue_wait_s": np.where(sched >= 0, sched - arrival, nan),
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "preemptions": np.fromiter((r.preemptions for r in reqs), np.int64, n),
            "retries": np.fromiter((r.retries for r in reqs), np.int64, n),
            "spilled_at_s": np.fromiter((r.spill_s if r.spill_s >= 0 else nan for r in reqs), float, n),
            "api_attempts": np.fromiter((r.api_attempts for r in reqs), np.int64, n),
            "api_429s": np.fromiter((r.api_429s for r in reqs), np.int64, n),
            "api_errors": np.fromiter((r.api_errors for r in reqs), np.int64, n),
            "api_cost_usd": np.fromiter((r.api_cost_usd for r in reqs), float, n),
        }
    )


def timeseries_tables(result: SimResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fleet, per-node) time series; one row per sample (per node). Rates are per second of the interval."""
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
    nodes = waiting.shape[1]
    up = s.fleet("nodes_up").astype(np.int64)
    deferred = s.fleet("deferred").astype(np.int64)
    up_safe = np.maximum(up, 1)
    fleet = pd.DataFrame(
        {
            "time_s": t,
            "arrival_rate_rps": s.fleet("arrivals") / interval,
            "completion_rate_rps": s.fleet("completions") / interval,
            "queue_len": waiting.sum(axis=1),
            "running_seqs": running.sum(axis=1),
            "deferred": deferred,
            "in_system": waiting.sum(axis=1) + running.sum(axis=1) + deferred,
            "kv_used_blocks": kv.sum(axis=1),
            "kv_fraction": kv.sum(axis=1) / (cap * up_safe),
            "busy_fraction": np.clip(busy.sum(axis=1) / up_safe, 0.0, 1.0),
            "batch_fill": running.sum(axis=1) / (result.node_model.engine.max_num_seqs * up_safe),
            "nodes_up": up,
            "nodes_billed": s.fleet("nodes_billed").astype(np.int64),
        }
    )
    per_node = pd.DataFrame(
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
        }
    )
    return fleet, per_node


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
    """P95 target ``key`` per class name: the class's own ``slo`` if set, else the scenario's."""
    out: dict[str, float | None] = {}
    for c in sc.traffic.classes:
        own = getattr(c.slo, key) if getattr(c, "slo", None) is not None else None
        out[c.name] = own if own is not None else getattr(sc.slo, key)
    return out


def _by_class(sc: Any, window: pd.DataFrame, finished: pd.DataFrame, ok: np.ndarray) -> dict[str, Any]:
    """Per-class counts, P50/P95 latencies, attainment and whether each class's P95 targets hold."""
    out: dict[str, Any] = {}
    fin_cls = finished["class"].astype(str).to_numpy()
    done = window[window["status"] == "completed"]
    targets = {key: _class_targets(sc, key) for key in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
    for c in sc.traffic.classes:
        if getattr(c, "deferrable", None) is not None:
            continue
        d = done[done["class"] == c.name]
        row: dict[str, Any] = {"completed": int(len(d))}
        for col in ("ttft_s", "tpot_s", "e2e_s"):
            x = d[col].dropna().to_numpy()
            row[col] = {"p50": float(np.percentile(x, 50)) if len(x) else None,
                        "p95": float(np.percentile(x, 95)) if len(x) else None}
        mask = fin_cls == c.name
        row["attainment"] = float(ok[mask].mean()) if mask.any() else None
        met = True
        for key, col in (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s")):
            target = targets[key][c.name]
            if target is not None:
                p95 = row[col]["p95"]
                met = met and p95 is not None and p95 <= target
        row["met"] = met
        out[c.name] = row
    return out


def summarize(result: SimResult, req_df: pd.DataFrame | None = None, fleet_ts: pd.DataFrame | None = None) -> dict[str, Any]:
    """The ``summary.json`` dictionary (keys documented in the module docstring and README)."""
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
    completed_all = df[df["status"] == "completed"]
    in_tok = float(completed_all["input_tokens"].sum())
    out_tok = float(completed_all["output_tokens"].sum())
    thr = {
        "requests_per_s": len(completed_all) / duration,
        "input_tokens_per_s": in_tok / duration,
        "output_tokens_per_s": out_tok / duration,
    }
    # utilisation over the arrival window
    ts = fleet_ts[fleet_ts["time_s"] <= duration + 1e-9] if len(fleet_ts) else fleet_ts
    n_nodes = sc.fleet.nodes
    kv = ts["kv_fraction"].to_numpy() if len(ts) else np.array([])
    nm = result.node_model
    util = {
        "busy_fraction": float(ts["busy_fraction"].mean()) if len(ts) else None,
        "kv_fraction_mean": float(np.nanmean(kv)) if len(kv) else None,
        "kv_fraction_p95": float(np.nanpercentile(kv, 95)) if len(kv) else None,
        "queue_len_mean": float(ts["queue_len"].mean()) if len(ts) else None,
        "running_seqs_mean": float(ts["running_seqs"].mean()) if len(ts) else None,
        "nodes_up_mean": float(ts["nodes_up"].mean()) if len(ts) else None,
    }
    # SLO
    slo = sc.slo
    finished = window[window["status"].isin(["completed", "spilled", "rejected", "failed", "timed_out"])]
    ok = finished["status"].isin(["completed", "spilled"]).to_numpy().copy()  # rejected, failed, timed out: miss
    checks: dict[str, Any] = {}
    for key, col in (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s")):
        targets = _class_targets(sc, key)  # per class: its own target, else the scenario's
        if all(t is None for t in targets.values()):
            continue
        per_req = finished["class"].astype(str).map(
            {c: (t if t is not None else np.inf) for c, t in targets.items()}).to_numpy(dtype=float)
        vals = finished[col].to_numpy()
        within = vals <= per_req
        if col == "tpot_s":
            within |= np.isnan(vals)  # one-token outputs have no TPOT
        ok &= within
        target = getattr(slo, key)
        if target is not None:
            p95 = lat[col]["p95"]
            checks[key] = {"target": target, "actual": p95, "met": p95 is not None and p95 <= target}
    attainment = float(ok.mean()) if len(ok) else None
    by_class = _by_class(sc, window, finished, ok)
    own_slo = {c.name for c in sc.traffic.classes if getattr(c, "slo", None) is not None}
    slo_out = {
        "attainment": attainment,
        # every scenario-wide P95 target, and every class that has its own targets, meets them
        "met": all(c["met"] for c in checks.values()) and all(by_class[n]["met"] for n in own_slo if n in by_class),
        "targets": checks,
        "by_class": by_class,
    }
    batch: dict[str, Any] = {}
    if batch_names:
        b = df[is_batch]
        deadlines = b["class"].map({c.name: c.deferrable.deadline_s for c in sc.traffic.classes
                                    if c.deferrable is not None}).astype(float).to_numpy()
        done_b = b["status"].isin(["completed", "spilled"]).to_numpy()
        met = done_b & (b["e2e_s"].to_numpy() <= deadlines)
        finished_b = b["status"].isin(["completed", "spilled", "rejected", "failed", "timed_out"]).to_numpy()
        batch = {
            "classes": batch_names,
            "arrived": int(len(b)),
            "completed": int(done_b.sum()),
            "deadline_met": int(met.sum()),
            "deadline_missed": int((finished_b & ~met).sum()),
            "deadline_attainment": float(met.sum() / finished_b.sum()) if finished_b.sum() else None,
            "queue_wait_s": _stats(b["queue_wait_s"].to_numpy()),
            "e2e_s": _stats(b["e2e_s"].to_numpy()),
        }
    served_all = df[df["status"].isin(["completed", "spilled"])]  # tokens served by the fleet or the API
    api_stats = result.spill or {}
    energy = energy_section(sc, nm.gpu, fleet_ts)
    cost = cost_breakdown(sc, nm.gpu, float(served_all["input_tokens"].sum()), float(served_all["output_tokens"].sum()),
                          api_usd=float(api_stats.get("usd", 0.0)), gpu_hours=result.gpu_hours or None,
                          energy_usd=energy["usd"])
    return _clean(
        {
            "scenario": sc.name,
            "seed": sc.seed,
            "duration_s": duration,
            "simulated_end_s": result.end_s,
            "requests": counts,
            "latency": lat,
            "throughput": thr,
            "utilisation": util,
            "slo": slo_out,
            "cost": cost,
            "energy": energy,
            **({"batch": batch} if batch else {}),
            **({"api": _api_section(df, api_stats), "spill": _spill_section(df, api_stats)} if result.spill else {}),
            "fleet": {
                "nodes": n_nodes,
                "gpu": nm.gpu.name,
                "gpus_per_node": sc.fleet.gpus_per_node,
                "model": nm.model.name,
                "weights": sc.fleet.weights,
                "kv_cache": sc.fleet.kv_cache,
                "kv_capacity_tokens_per_node": nm.memory.kv_capacity_tokens,
                "weight_gb_per_node": nm.memory.weight_bytes / 1e9,
                "engine_steps": int(sum(result.node_steps)),
            },
        }
    )
