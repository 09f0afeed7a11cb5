"""Request traces: readers for the public LLM-serving trace formats, and replay.

A :class:`Trace` holds a whole trace in memory (a trace is bounded by its file) as arrays: arrival time in
seconds since the first request, prompt and output tokens, and — for Mooncake, whose ``hash_ids`` name the
512-token prefix blocks of each prompt — the prompt tokens an infinite prefix cache would already hold when
the request arrives (its longest prefix of blocks seen earlier in the trace, capped at prompt − 1).
Replay (:func:`replay`) streams (time, row) chunks for a run: window, rate scaling (thinning or superposed
circularly shifted copies), time compression and looping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from sim.core.config import TraceReplay
from sim.core.errors import ConfigError
from sim.traffic.sampling import CHUNK

FORMATS = ("azure", "mooncake", "burstgpt", "vidur", "csv")


@dataclass(frozen=True)
class Trace:
    """A request trace, ascending in time (``time_s[0] == 0`` unless a window starts earlier)."""

    time_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray | None
    source: str
    format: str
    start: pd.Timestamp | None = None  # wall-clock time of t = 0, when the trace has one
    dropped_rows: int = 0
    extra: dict = field(default_factory=dict)
    hashes: tuple[tuple[int, ...], ...] | None = None  # Mooncake: each row's hash_ids (prefix blocks), in row order

    @property
    def rows(self) -> int:
        return len(self.time_s)

    @property
    def span_s(self) -> float:
        return float(self.time_s[-1] - self.time_s[0]) if self.rows else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """1 / mean inter-arrival time = (rows − 1) / span; also rows / loop period (see :func:`replay_period_s`)."""
        return (self.rows - 1) / self.span_s if self.span_s > 0 else float("nan")


# --- readers -------------------------------------------------------------------------------------------------
def check_text(path: Path, sniff_bytes: int = 65536) -> None:
    """A trace is text (CSV or JSON lines; ``.gz`` compressed is fine): a binary or non-UTF-8 file is one
    ConfigError line, not a parser traceback."""
    import codecs
    import gzip

    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(sniff_bytes)
    except (OSError, EOFError) as exc:
        raise ConfigError(str(path), "", f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not head.strip():
        raise ConfigError(str(path), "", "file is empty")
    if b"\0" in head:
        raise ConfigError(str(path), "", "is a binary file, expected a trace (CSV or JSON lines)")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), "", f"is not UTF-8 text (byte 0x{head[exc.start]:02x} at line {line}); "
                          "expected a trace (CSV or JSON lines)") from None


def detect_format(path: Path) -> str:
    """Guess the format from the file name and header."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        return "mooncake"
    try:
        header = pd.read_csv(path, nrows=0).columns
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
        raise ConfigError(str(path), "", f"cannot read as CSV ({exc})") from None
    cols = {c.strip() for c in header}
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= cols:
        return "burstgpt"
    if {"arrived_at", "num_prefill_tokens", "num_decode_tokens"} <= cols:
        return "vidur"
    raise ConfigError(
        str(path), "format",
        f"cannot tell the trace format from columns {sorted(cols)}; set format: csv with time_column, "
        "input_column and output_column",
    )


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
        raise ConfigError(str(path), "", f"cannot read as CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(str(path), missing[0], f"no such column (columns: {', '.join(df.columns)})")
    return df


def _numeric(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    v = pd.to_numeric(df[col], errors="coerce")
    bad = int(v.isna().sum())
    if bad:
        row = int(np.flatnonzero(v.isna().to_numpy())[0]) + 2
        raise ConfigError(str(path), col, f"{bad} non-numeric values (first at line {row})")
    return v.to_numpy(dtype=float)


def _times(df: pd.DataFrame, col: str, unit: str, path: Path) -> tuple[np.ndarray, pd.Timestamp | None]:
    if unit == "datetime":
        try:
            ts = pd.to_datetime(df[col], format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(path), col, f"cannot parse timestamps ({exc})") from None
        if ts.isna().any():
            raise ConfigError(str(path), col, "missing timestamps")
        t0 = ts.min()
        return (ts - t0).dt.total_seconds().to_numpy(dtype=float), t0
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
    return _numeric(df, col, path) * scale, None


def _mooncake(path: Path, block_tokens: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[list[int]]]:
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    hashes: list[list[int]] = []
    try:
        opener = __import__("gzip").open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    ts.append(float(d["timestamp"]))
                    inp.append(int(d["input_length"]))
                    out.append(int(d["output_length"]))
                    hashes.append(list(d.get("hash_ids") or []))
                except (ValueError, KeyError, TypeError) as exc:
                    what = f"missing key {exc}" if isinstance(exc, KeyError) else "not a JSON record"
                    raise ConfigError(str(path), f"line {line_no}", what) from None
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    t = np.asarray(ts) * 1e-3  # ms → s
    prompt = np.asarray(inp, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    cached = None
    if any(hashes):
        cached = np.zeros(len(t), dtype=np.int64)
        seen: set[int] = set()
        for i in order:
            h = hashes[i]
            n = 0
            while n < len(h) and h[n] in seen:
                n += 1
            cached[i] = max(0, min(n * block_tokens, prompt[i] - 1))
            seen.update(h)
    return t, prompt, np.asarray(out, dtype=np.int64), cached, hashes


@lru_cache(maxsize=16)
def _load(path: str, mtime: float, fmt: str, time_col: str | None, in_col: str | None, out_col: str | None,
          unit: str, model: str | None, block_tokens: int) -> Trace:
    p = Path(path)
    start = None
    cached = None
    hashes: list[list[int]] | None = None
    if fmt == "mooncake":
        t, prompt, output, cached, hashes = _mooncake(p, block_tokens)
        if not any(hashes):
            hashes = None
    else:
        if fmt == "azure":
            cols, unit = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"], "datetime"
        elif fmt == "burstgpt":
            cols, unit = ["Timestamp", "Request tokens", "Response tokens"], "s"
        elif fmt == "vidur":
            cols, unit = ["arrived_at", "num_prefill_tokens", "num_decode_tokens"], "s"
        else:
            assert time_col and in_col and out_col
            cols = [time_col, in_col, out_col]
        df = _read_csv(p, cols + (["Model"] if fmt == "burstgpt" and model else []))
        if fmt == "burstgpt" and model:
            df = df[df["Model"].astype(str) == model]
            if df.empty:
                raise ConfigError(path, "model", f"no rows with Model == {model!r}")
        t, start = _times(df, cols[0], unit, p)
        prompt = np.rint(_numeric(df, cols[1], p)).astype(np.int64)
        output = np.rint(_numeric(df, cols[2], p)).astype(np.int64)
    keep = (prompt > 0) & (output > 0)
    dropped = int((~keep).sum())
    t, prompt, output = t[keep], prompt[keep], output[keep]
    if cached is not None:
        cached = cached[keep]
    if hashes is not None:
        hashes = [h for h, k in zip(hashes, keep.tolist()) if k]
    if len(t) < 2:
        raise ConfigError(path, "", f"trace has {len(t)} usable requests (need at least 2)")
    if not np.all(np.isfinite(t)):
        raise ConfigError(path, "", "non-finite timestamps")
    if float(np.max(t) - np.min(t)) <= 0.0:
        raise ConfigError(path, "", f"all {len(t)} requests have the same timestamp (zero time span): a trace "
                          "needs arrivals spread over time")
    order = np.argsort(t, kind="stable")
    t0 = float(t[order[0]])
    t = t[order] - t0
    for a in (t, prompt, output):
        a.setflags(write=False)
    prompt, output = prompt[order], output[order]
    if cached is not None:
        cached = cached[order]
        cached.setflags(write=False)
    chains = None if hashes is None else tuple(tuple(hashes[i]) for i in order.tolist())
    return Trace(t, prompt, output, cached, path, fmt, start, dropped, hashes=chains)


def read_trace(path: Path | str, fmt: str = "auto", time_column: str | None = None, input_column: str | None = None,
               output_column: str | None = None, time_unit: str = "s", model: str | None = None,
               hash_block_tokens: int = 512) -> Trace:
    """Read a trace file (cached by path and modification time)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "", "file not found")
    check_text(p)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "csv" and not (time_column and input_column and output_column):
        raise ConfigError(str(p), "format", "csv needs time_column, input_column and output_column")
    return _load(str(p), p.stat().st_mtime, fmt, time_column, input_column, output_column, time_unit, model,
                 hash_block_tokens)


def read_trace_spec(spec: TraceReplay, path: Path) -> Trace:
    return read_trace(path, spec.format, spec.time_column, spec.input_column, spec.output_column, spec.time_unit,
                      spec.model, spec.hash_block_tokens)


def window(trace: Trace, start_s: float, end_s: float) -> Trace:
    """Rows with start ≤ t < end on the trace's clock, re-timed so the window starts at 0."""
    sel = (trace.time_s >= start_s) & (trace.time_s < end_s)
    if sel.sum() < 2:
        raise ConfigError(trace.source, "window_s", f"window [{start_s}, {end_s}) holds {int(sel.sum())} requests")
    start = trace.start + pd.Timedelta(seconds=start_s) if trace.start is not None else None
    return Trace(
        trace.time_s[sel] - start_s, trace.prompt_tokens[sel], trace.output_tokens[sel],
        None if trace.cached_tokens is None else trace.cached_tokens[sel], trace.source, trace.format, start,
        trace.dropped_rows, hashes=None if trace.hashes is None else tuple(
            h for h, k in zip(trace.hashes, sel.tolist()) if k),
    )


# --- replay --------------------------------------------------------------------------------------------------
def replay_period_s(trace: Trace) -> float:
    """Loop period: the span plus one mean gap, so a looped trace keeps its mean rate rows / period."""
    return trace.span_s * trace.rows / (trace.rows - 1)


def replay(trace: Trace, rng: np.random.Generator, duration_s: float, rate_scale: float = 1.0,
           time_scale: float = 1.0, loop: bool = False, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(times, row indices) chunks of the replayed trace, ascending, all times < ``duration_s``.

    ``rate_scale`` k: ⌊k⌋ copies circularly shifted by j·P/⌈k⌉ over the loop period P, plus one more copy
    thinned to the fractional part (k < 1: the trace itself thinned to k). k = 1 replays the rows exactly."""
    period = replay_period_s(trace)
    n_copies = max(1, math.ceil(rate_scale - 1e-12))
    whole = math.floor(rate_scale + 1e-12)
    frac = rate_scale - whole
    it = 0
    while True:
        offset = it * period * time_scale
        if offset >= duration_s:
            return
        parts_t, parts_i = [], []
        rows = np.arange(trace.rows)
        for j in range(n_copies):
            t = trace.time_s
            idx = rows
            if j > 0:
                t = np.mod(t + j * period / n_copies, period)
            if j >= whole:  # the fractional copy
                keep = rng.random(trace.rows) < frac
                t, idx = t[keep], idx[keep]
            parts_t.append(t)
            parts_i.append(idx)
        t = np.concatenate(parts_t)
        idx = np.concatenate(parts_i)
        if n_copies > 1:
            order = np.argsort(t, kind="stable")
            t, idx = t[order], idx[order]
        t = t * time_scale + offset
        inside = t < duration_s
        t, idx = t[inside], idx[inside]
        for a in range(0, len(t), chunk):
            yield t[a : a + chunk], idx[a : a + chunk]
        if not loop:
            return
        it += 1
