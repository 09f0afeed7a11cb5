"""The SLO verdict: which requests met every target, attainment over all arrivals, per-window view.

* A request *meets* the SLO when it was served (completed on the fleet, or by the hosted API: status
  ``spilled``, judged by the API latency it saw) and its own TTFT, TPOT and E2E are within its class's targets
  (a class's own ``slo`` overrides the scenario's; one-token outputs have no TPOT). Every other outcome —
  rejected, failed, timed out, or still unfinished (in flight) when the run stopped — is a miss.
* ``attainment`` = requests that met ÷ all interactive requests that arrived at or after ``warmup_s``.
* ``met`` = every P95 target holds (over served requests) **and** ``attainment ≥ attainment_target``
  (and, with ``require_worst_window``, the worst window's attainment too); classes with their own ``slo``
  must meet theirs (P95 targets and attainment).
* Windows: ``[k·window_s, (k+1)·window_s)`` by arrival time (after warm-up), each with its arrivals,
  attainment and P95 TTFT / TPOT of its served requests; ``worst_window`` is the one with the lowest
  attainment (ties: the earlier).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SERVED = ("completed", "spilled")
TARGET_COLUMNS = (("ttft_p95_s", "ttft_s"), ("tpot_p95_s", "tpot_s"), ("e2e_p95_s", "e2e_s"))


def class_targets(sc: Any, key: str) -> dict[str, float | None]:
    """P95 target ``key`` per class name: the class's own ``slo`` if set, else the scenario's."""
    out: dict[str, float | None] = {}
    for c in sc.traffic.classes:
        own = getattr(c.slo, key) if getattr(c, "slo", None) is not None else None
        out[c.name] = own if own is not None else getattr(sc.slo, key)
    return out


def meets_targets(sc: Any, classes: np.ndarray, status: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Per request: served and within every target of its class (see the module docstring)."""
    ok = np.isin(status, SERVED)
    for key, col in TARGET_COLUMNS:
        targets = class_targets(sc, key)
        if all(t is None for t in targets.values()):
            continue
        limit = np.full(len(classes), np.nan)  # a class without an entry: NaN, never within
        for c, t in targets.items():
            limit[classes == c] = np.inf if t is None else t
        vals = cols[col]
        with np.errstate(invalid="ignore"):
            within = vals <= limit
        if col == "tpot_s":
            within |= np.isnan(vals)  # one-token outputs have no TPOT
        ok &= within
    return ok


def _p95(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.percentile(x, 95)) if len(x) else None


def windows_table(arrival_s: np.ndarray, ok: np.ndarray, served: np.ndarray, ttft_s: np.ndarray,
                  tpot_s: np.ndarray, window_s: float, end_s: float | None = None,
                  begin_s: float = 0.0) -> list[dict[str, Any]]:
    """One row per window that had arrivals (clipped to ``[begin_s, end_s]``, i.e. warm-up and duration):
    start/end, arrived, attainment, and the P95 TTFT / TPOT of its served requests."""
    if len(arrival_s) == 0:
        return []
    k = np.floor(arrival_s / window_s).astype(np.int64)
    rows = []
    for w in np.unique(k):
        m = k == w
        s = m & served
        rows.append({
            "start_s": float(max(w * window_s, begin_s)),
            "end_s": float((w + 1) * window_s) if end_s is None else float(min((w + 1) * window_s, end_s)),
            "arrived": int(m.sum()),
            "attainment": float(ok[m].mean()), "ttft_p95_s": _p95(ttft_s[s]), "tpot_p95_s": _p95(tpot_s[s]),
        })
    return rows


def worst_window(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The window with the lowest attainment (the earliest on ties), or None without windows."""
    if not rows:
        return None
    return min(rows, key=lambda r: (r["attainment"], r["start_s"]))


def verdict(slo: Any, checks: dict[str, Any], attainment: float | None, worst: dict[str, Any] | None,
            classes_met: bool) -> bool:
    """``slo.met``: P95 targets, attainment target, (optionally) the worst window, classes with own SLOs."""
    target = slo.attainment_target
    met = all(c["met"] for c in checks.values()) and classes_met
    met = met and attainment is not None and attainment >= target
    if slo.require_worst_window:
        met = met and worst is not None and worst["attainment"] >= target
    return bool(met)
