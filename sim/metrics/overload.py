"""Is the fleet overloaded? From the sampled queue length and served vs offered throughput.

Over the arrival window (after warm-up), with ``threshold = max(10, 2 × mean nodes up)`` queued requests:

* ``queue_growing``: the queue holds more than ``threshold`` requests at the end of the arrival window and a
  least-squares line through the last quarter of the window rises.
* ``since_s``: the start of the stretch above ``threshold`` that reaches the end of the window (when growing),
  else of the first stretch above it lasting at least ``min(300 s, 10 % of the window)``; None if none.
* ``overloaded``: the queue is growing, or the fleet served less than 90 % of the offered requests in the
  measurement window (of the arrivals it could serve: rejected ones are not counted as offered), or the queue
  stayed above ``threshold`` for a stretch as above (e.g. a peak hour).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SERVED_SHARE_MIN = 0.9


def _stretches(above: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where ``above`` is true."""
    if not above.any():
        return []
    d = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def overload_section(fleet_ts: pd.DataFrame, warmup_s: float, duration_s: float, offered_rps: float,
                     served_rps: float, nodes_up_mean: float | None) -> dict[str, Any]:
    """``summary.overload`` (keys in the module docstring, plus ``peak_queue``, ``peak_queue_at_s``,
    ``queue_at_end``, ``time_above_threshold_s``, ``threshold_queue``, ``served_share``)."""
    threshold = max(10.0, 2.0 * (nodes_up_mean or 0.0))
    served_share = served_rps / offered_rps if offered_rps > 0 else None
    ts = fleet_ts
    if len(ts):
        t_all = ts["time_s"].to_numpy()
        keep = (t_all > warmup_s) & (t_all <= duration_s + 1e-9)
        if not keep.any():
            keep = t_all <= duration_s + 1e-9
        t, q = t_all[keep], ts["queue_len"].to_numpy()[keep].astype(float)
    else:
        t = q = np.array([])
    out: dict[str, Any] = {"overloaded": False, "queue_growing": False, "since_s": None, "peak_queue": 0,
                           "peak_queue_at_s": None, "queue_at_end": 0, "time_above_threshold_s": 0.0,
                           "threshold_queue": threshold, "served_share": served_share}
    if len(t) == 0:
        out["overloaded"] = served_share is not None and served_share < SERVED_SHARE_MIN
        return out
    interval = float(np.median(np.diff(t))) if len(t) > 1 else float(t[0])
    i_peak = int(np.argmax(q))
    above = q > threshold
    out.update(peak_queue=int(q[i_peak]), peak_queue_at_s=float(t[i_peak]), queue_at_end=int(q[-1]),
               time_above_threshold_s=float(above.sum() * interval))
    tail = t >= t[0] + 0.75 * (t[-1] - t[0])
    slope = float(np.polyfit(t[tail], q[tail], 1)[0]) if tail.sum() >= 3 else 0.0
    growing = bool(above[-1] and slope > 0)
    span = max(t[-1] - t[0] + interval, interval)
    min_len = min(300.0, 0.1 * span)
    runs = _stretches(above)
    since = None
    if growing:
        since = float(t[runs[-1][0]] - interval)
    else:
        for a, b in runs:
            if (b - a) * interval >= min_len:
                since = float(t[a] - interval)
                break
    out["queue_growing"] = growing
    out["since_s"] = max(since, 0.0) if since is not None else None
    out["overloaded"] = bool(growing or since is not None
                             or (served_share is not None and served_share < SERVED_SHARE_MIN))
    return out
