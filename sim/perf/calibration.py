"""Fitting a performance profile's efficiency factors to measurements.

A measurement is a :class:`CalPoint`: a setup (GPU, GPUs per node, model, precisions, engine limits), a workload
(one step, an offline batch, a Poisson stream or a closed loop) and one measured metric: output ``throughput``
(tokens/s), ``ttft_p50`` or ``tpot_p50`` (seconds). :func:`predict` runs the same workload through capsim's
performance model (one step) or engine (:mod:`sim.perf.benchmark`), and :func:`fit_calibration` finds the factors
that minimise Σ log²(predicted / measured) with ``scipy.optimize.least_squares`` in log-parameter space.

Readers turn a user's own benchmark results into points: ``vllm bench serve --save-result`` JSON files
(:func:`read_vllm_bench_json`) and a simple CSV (:func:`read_measurement_csv`).
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from sim.core.config import Engine, read_text_file
from sim.core.errors import ConfigError
from sim.perf.benchmark import NodeSetup, run_closed_loop, run_offline, run_poisson
from sim.perf.catalog import Calibration, GpuSpec, ModelSpec, get_gpu, get_model, resolve_calibration, stack_reserves_kv
from sim.perf.model import StepTimeModel, attention_pairs

METRICS = ("throughput", "ttft_p50", "tpot_p50")
MODES = ("prefill_step", "decode_step", "offline", "poisson", "closed_loop")
FITTABLE = ("mfu", "mbu", "overhead_s", "overhead_s_per_token", "allreduce_latency_s", "allreduce_efficiency")
_BOUNDS: dict[str, tuple[float, float]] = {
    "mfu": (0.02, 1.0),
    "mbu": (0.02, 1.0),  # a fraction of the GPU's measured (BabelStream) bandwidth: more is not physical
    "overhead_s": (1e-5, 0.5),
    "overhead_s_per_token": (1e-9, 1e-3),
    "allreduce_latency_s": (1e-7, 1e-2),
    "allreduce_efficiency": (0.01, 1.0),
}


@dataclass(frozen=True)
class CalPoint:
    """One measured number and the setup and workload that produced it.

    Lengths: ``input_mean``/``output_mean`` with log-sd ``*_sigma`` (0 = fixed length) clipped to ``*_max`` and
    ``total_max``. ``replicas`` identical nodes share the work (throughput adds up; a Poisson rate is split).
    ``reserve_kv``: the engine reserves each request's whole KV (prompt + output) at admission and never
    preempts (TensorRT-LLM's GUARANTEED_NO_EVICT, ``Engine.reserve_kv``); ``None`` = the scheduler of the point's
    ``stack`` (else of the GPU's default stack), see :func:`sim.perf.catalog.stack_reserves_kv`.
    ``engine``: further ``fleet.engine`` fields the benchmark ran with, as (field, value) pairs (e.g. vLLM 0.6's
    ``num_scheduler_steps`` 10), from ``calibration/data/point_engine_settings.csv``.
    """

    id: str
    gpu: str
    gpus: int
    model: str
    weights: str
    kv: str
    mode: str
    metric: str
    measured: float
    stack: str | None = None
    source: str = ""
    fit: bool = True
    replicas: int = 1
    input_mean: float = 0.0
    input_sigma: float = 0.0
    input_max: int | None = None
    output_mean: float = 1.0
    output_sigma: float = 0.0
    output_max: int | None = None
    total_max: int | None = None
    requests: int = 1000
    rate_rps: float | None = None
    concurrency: int | None = None
    batch: int = 1
    context: int = 0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    reserve_kv: bool | None = None
    note: str = ""
    engine: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(self.id, "mode", f"unknown mode '{self.mode}' (one of {', '.join(MODES)})")
        if self.metric not in METRICS:
            raise ConfigError(self.id, "metric", f"unknown metric '{self.metric}' (one of {', '.join(METRICS)})")
        if not (self.measured > 0 and math.isfinite(self.measured)):
            raise ConfigError(self.id, "measured", f"must be a positive number (got {self.measured})")

    @property
    def family(self) -> str:
        """``throughput``, ``ttft`` or ``tpot``: what the error statistics are grouped by."""
        return self.metric.split("_")[0]


def _lengths(mean: float, sigma: float, n: int, rng: np.random.Generator, hi: int | None) -> np.ndarray:
    if sigma <= 0:
        return np.full(n, max(1, round(mean)), dtype=np.int64)
    mu = math.log(mean) - sigma**2 / 2
    x = np.rint(rng.lognormal(mu, sigma, size=n)).astype(np.int64)
    return np.clip(x, 4, hi if hi else np.iinfo(np.int64).max)


def workload_lengths(p: CalPoint) -> tuple[np.ndarray, np.ndarray]:
    """The point's request lengths, drawn reproducibly (seeded by the point id)."""
    rng = np.random.default_rng(zlib.crc32(p.id.encode()))
    n = max(1, p.requests)
    inp = _lengths(p.input_mean, p.input_sigma, n, rng, p.input_max)
    out = _lengths(p.output_mean, p.output_sigma, n, rng, p.output_max)
    if p.total_max:
        keep = inp + out <= p.total_max
        if keep.sum() == 0:
            raise ConfigError(p.id, "total_max", "no request of the drawn lengths fits")
        # resample by cycling the kept ones so the count stays n
        idx = np.flatnonzero(keep)
        idx = np.resize(idx, n)
        inp, out = inp[idx], out[idx]
    return inp, out


class Predictor:
    """Predicts points under varying calibrations, reusing what does not depend on the factors.

    ``adjust`` (optional) rewrites each point's step-time model before it runs (e.g. scales one term:
    :mod:`sim.perf.diagnosis`); None runs the model as built."""

    def __init__(self, points: Sequence[CalPoint],
                 adjust: Callable[[StepTimeModel], StepTimeModel] | None = None) -> None:
        self.points = list(points)
        self.adjust = adjust
        self._specs: dict[str, tuple[GpuSpec, ModelSpec]] = {}
        self._lengths: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for p in self.points:
            self._specs[p.id] = (get_gpu(p.gpu, p.id, "gpu"), get_model(p.model, p.id, "model"))

    def lengths(self, p: CalPoint) -> tuple[np.ndarray, np.ndarray]:
        if p.id not in self._lengths:
            self._lengths[p.id] = workload_lengths(p)
        return self._lengths[p.id]

    def reserve_kv(self, p: CalPoint) -> bool:
        """Whether ``p`` runs with whole-KV reservation: its own flag, else its stack's scheduler."""
        if p.reserve_kv is not None:
            return p.reserve_kv
        return stack_reserves_kv(self._specs[p.id][0], p.stack)

    def predict(self, p: CalPoint, cal: Calibration) -> float:
        gpu, model = self._specs[p.id]
        if p.mode in ("prefill_step", "decode_step"):
            perf = StepTimeModel.build(gpu, model, p.gpus, p.weights, p.kv, calibration=cal, stack=p.stack)
            if self.adjust is not None:
                perf = self.adjust(perf)
            if p.mode == "decode_step":
                return perf.decode_step_s(p.batch, p.context)
            n = int(p.input_mean)
            return perf.step_s(n, attention_pairs(n, n), n)
        inp, out = self.lengths(p)
        seqs = p.max_num_seqs
        fields: dict[str, Any] = {"max_num_seqs": seqs, "max_num_batched_tokens": max(p.max_num_batched_tokens, seqs),
                                  "reserve_kv": self.reserve_kv(p)}
        fields.update(p.engine)  # the benchmark's own engine settings win
        engine = Engine(**fields)
        setup = NodeSetup.build(gpu, model, p.gpus, p.weights, p.kv, engine, calibration=cal, stack=p.stack,
                                source=p.id)
        if self.adjust is not None:
            setup = replace(setup, perf=self.adjust(setup.perf))
        r = max(1, p.replicas)
        share = slice(0, max(1, len(inp) // r))
        if p.mode == "offline":
            res = run_offline(setup, inp[share], out[share])
        elif p.mode == "poisson":
            if not p.rate_rps:
                raise ConfigError(p.id, "rate_rps", "a Poisson point needs a rate")
            rng = np.random.default_rng(zlib.crc32(p.id.encode()) + 1)
            res = run_poisson(setup, p.rate_rps / r, inp[share], out[share], rng)
        else:
            if not p.concurrency:
                raise ConfigError(p.id, "concurrency", "a closed-loop point needs a concurrency")
            res = run_closed_loop(setup, max(1, p.concurrency // r), inp[share], out[share])
        if p.metric == "throughput":
            return res.output_tokens_per_s * r
        stats = res.ttft_s if p.metric == "ttft_p50" else res.tpot_s
        return stats.get("p50", float("nan"))


@dataclass
class FitResult:
    """Fitted factors and the per-point errors before and after."""

    calibration: Calibration
    start: Calibration
    params: tuple[str, ...]
    rows_before: list[dict]
    rows_after: list[dict]
    cost: float
    evaluations: int
    at_bound: tuple[str, ...] = ()

    def bound_warnings(self) -> list[str]:
        """One line per fitted factor that ended on its bound (the data wanted it further: the model lacks a term,
        or the measurements disagree)."""
        out = []
        for n in self.at_bound:
            lo, hi = _BOUNDS[n]
            v = getattr(self.calibration, n)
            side = "lower" if abs(math.log(v / lo)) < abs(math.log(v / hi)) else "upper"
            out.append(f"warning: {n} = {v:.4g} hit its {side} bound ({lo:g}..{hi:g}); the fit wanted it beyond, "
                       "so the model cannot follow these measurements with this factor alone")
        return out

    def mape(self, after: bool = True, fitted_only: bool = True) -> dict[str, float]:
        return mape_by_family(self.rows_after if after else self.rows_before, fitted_only)


def evaluate(
    points: Sequence[CalPoint],
    cal: Calibration | dict[str, Calibration],
    predictor: Predictor | None = None,
    split: Split | None = None,
) -> list[dict]:
    """Rows of (point, predicted, measured, error %) under ``cal`` (one calibration, or one per stack name).

    ``fit`` in a row says whether the point was fitted: in ``split.fit`` when a split is given, else its flag."""
    pred = predictor or Predictor(points)
    rows = []
    for p in points:
        c = cal[p.stack or ""] if isinstance(cal, dict) else cal
        value = pred.predict(p, c)
        err = (value - p.measured) / p.measured * 100.0 if math.isfinite(value) else float("nan")
        rows.append(
            {
                "id": p.id,
                "stack": p.stack,
                "fit": (p.id in split.fit) if split is not None else p.fit,
                "gpu": p.gpu,
                "gpus": p.gpus,
                "model": p.model,
                "metric": p.metric,
                "family": p.family,
                "measured": p.measured,
                "predicted": value,
                "error_pct": err,
                "source": p.source,
                "note": p.note,
            }
        )
    return rows


def mape_by_family(rows: Iterable[dict], fitted_only: bool = True) -> dict[str, float]:
    """Mean absolute percentage error per metric family (``throughput``, ``ttft``, ``tpot``) and ``all``."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if fitted_only and not r["fit"]:
            continue
        e = abs(r["error_pct"]) if math.isfinite(r["error_pct"]) else 1000.0
        groups.setdefault(r["family"], []).append(e)
        groups.setdefault("all", []).append(e)
    return {k: float(np.mean(v)) for k, v in groups.items()}


@dataclass(frozen=True)
class Split:
    """Which points a fit may use (``fit``) and which it must never see (``held_out``), by point id.

    The two sets are disjoint by construction (``ValueError`` otherwise); :func:`fit_calibration` fits only to
    ``fit`` ids and asserts that none of the points it fitted is held out, so a validation table can report a
    held-out error knowing the factors never saw that point.
    """

    fit: frozenset[str]
    held_out: frozenset[str] = frozenset()
    name: str = "fit flags"

    def __post_init__(self) -> None:
        both = self.fit & self.held_out
        if both:
            raise ValueError(f"split '{self.name}': point(s) both fitted and held out: {sorted(both)[:5]}")

    @classmethod
    def from_flags(cls, points: Iterable[CalPoint]) -> Split:
        """The points' own ``fit`` flags: flagged points are fitted, the others held out."""
        pts = list(points)
        return cls(frozenset(p.id for p in pts if p.fit), frozenset(p.id for p in pts if not p.fit))

    def role(self, point_id: str) -> str:
        """``fitted``, ``held-out`` or ``unused`` (in neither set)."""
        if point_id in self.fit:
            return "fitted"
        return "held-out" if point_id in self.held_out else "unused"


def fit_calibration(
    points: Sequence[CalPoint],
    start: Calibration,
    params: Sequence[str] = ("mfu", "mbu", "overhead_s"),
    max_evaluations: int = 200,
    split: Split | None = None,
) -> FitResult:
    """Least-squares fit of ``params`` (log space, bounded) to the points of ``split.fit`` (default: the points
    marked ``fit``); the others are only reported. A point in ``split.held_out`` is never fitted.

    Residual of a point: ``ln(predicted / measured)`` (scale-free, so TTFT in seconds and throughput in tokens/s
    weigh alike). Finite differences use a 3 % step because simulated metrics are piecewise smooth.
    """
    unknown = [p for p in params if p not in FITTABLE]
    if unknown:
        raise ConfigError("calibrate", "--fit", f"unknown factor(s) {unknown} (fittable: {', '.join(FITTABLE)})")
    split = split if split is not None else Split.from_flags(points)
    fitted = [p for p in points if p.id in split.fit]
    leaked = {p.id for p in fitted} & split.held_out
    assert not leaked, f"held-out points would be fitted: {sorted(leaked)}"
    if not fitted:
        raise ConfigError("calibrate", "measurements", "no measurement to fit")
    pred = Predictor(points)
    names = list(params)
    lo = np.log([_BOUNDS[n][0] for n in names])
    hi = np.log([_BOUNDS[n][1] for n in names])
    x0 = np.clip(np.log([max(getattr(start, n), _BOUNDS[n][0]) for n in names]), lo, hi)
    evals = [0]

    def cal_of(x: np.ndarray) -> Calibration:
        return start.model_copy(update={n: float(np.exp(v)) for n, v in zip(names, x)})

    def residuals(x: np.ndarray) -> np.ndarray:
        evals[0] += 1
        c = cal_of(x)
        out = []
        for p in fitted:
            v = pred.predict(p, c)
            out.append(math.log(v / p.measured) if v > 0 and math.isfinite(v) else 5.0)
        return np.asarray(out)

    rows_before = evaluate(points, start, pred, split)
    sol = least_squares(residuals, x0, bounds=(lo, hi), diff_step=0.03, max_nfev=max_evaluations, method="trf")
    best = cal_of(sol.x)
    rows_after = evaluate(points, best, pred, split)
    at_bound = [
        n for n, v, a, b in zip(names, sol.x, lo, hi) if abs(v - a) < 1e-3 or abs(v - b) < 1e-3
    ]
    return FitResult(best, start, tuple(names), rows_before, rows_after, float(sol.cost), evals[0], tuple(at_bound))


# -- reading a user's measurements --------------------------------------------------------------------------
def _model_from_id(model_id: str, source: str) -> str:
    """Map a HF id such as ``meta-llama/Llama-3.1-8B-Instruct`` to a catalogue model (by its last part)."""
    tail = model_id.rstrip("/").split("/")[-1]
    for cand in (tail, tail.lower().replace("meta-", ""), tail.lower().removesuffix("-instruct")):
        try:
            return get_model(cand, source, "model_id").name
        except ConfigError:
            continue
    raise ConfigError(source, "model_id", f"cannot match '{model_id}' to a catalogue model; pass --model")


def read_vllm_bench_json(
    path: Path,
    gpu: str,
    gpus: int = 1,
    model: str | None = None,
    weights: str = "bf16",
    kv: str = "bf16",
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    max_requests: int = 2000,
) -> list[CalPoint]:
    """Points from one ``vllm bench serve --save-result`` JSON: output throughput, median TTFT and TPOT.

    The run's shape comes from ``request_rate`` (``inf`` = all at once), ``max_concurrency`` (closed loop),
    ``completed``/``num_prompts`` and the token totals (mean lengths; ``input_lens``/``output_lens`` arrays,
    when saved, give the spread as a lognormal log-sd).
    """
    src = str(path)
    text = read_text_file(Path(path), "a vllm bench serve JSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(src, "", f"not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(src, "", "expected a JSON object")
    n = int(data.get("completed") or data.get("num_prompts") or 0)
    if n <= 0:
        raise ConfigError(src, "completed", "no completed requests in this result")
    for k in ("total_input_tokens", "total_output_tokens"):
        if k not in data:
            raise ConfigError(src, k, "missing (needed for the request lengths)")
    model_name = model or _model_from_id(str(data.get("model_id", "")), src)
    in_mean = data["total_input_tokens"] / n
    out_mean = data["total_output_tokens"] / n

    def sigma(key: str) -> float:
        arr = np.asarray(data.get(key) or [], dtype=float)
        arr = arr[arr > 0]
        return float(np.std(np.log(arr))) if arr.size > 1 else 0.0

    rate = data.get("request_rate", "inf")
    rate_f = float("inf") if rate in (None, "inf", "Infinity") else float(rate)
    conc = data.get("max_concurrency")
    if conc:
        mode = "closed_loop"
    elif math.isinf(rate_f):
        mode = "offline"
    else:
        mode = "poisson"
    base = {
        "gpu": gpu,
        "gpus": gpus,
        "model": model_name,
        "weights": weights,
        "kv": kv,
        "mode": mode,
        "source": src,
        "input_mean": in_mean,
        "input_sigma": sigma("input_lens"),
        "output_mean": out_mean,
        "output_sigma": sigma("output_lens"),
        "requests": min(n, max_requests),
        "rate_rps": None if math.isinf(rate_f) else rate_f,
        "concurrency": int(conc) if conc else None,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
    }
    stem = Path(path).stem
    pts: list[CalPoint] = []
    if data.get("output_throughput"):
        pts.append(
            CalPoint(id=f"{stem}:throughput", metric="throughput", measured=float(data["output_throughput"]), **base)
        )
    if mode != "offline":  # latencies of an all-at-once run measure queueing, not the server
        if data.get("median_ttft_ms"):
            pts.append(
                CalPoint(id=f"{stem}:ttft", metric="ttft_p50", measured=float(data["median_ttft_ms"]) / 1e3, **base)
            )
        if data.get("median_tpot_ms"):
            pts.append(
                CalPoint(id=f"{stem}:tpot", metric="tpot_p50", measured=float(data["median_tpot_ms"]) / 1e3, **base)
            )
    if not pts:
        raise ConfigError(src, "", "no output_throughput, median_ttft_ms or median_tpot_ms to fit")
    return pts


CSV_COLUMNS = ("gpu", "gpus", "model", "input", "output")


def read_measurement_csv(
    path: Path,
    max_requests: int = 2000,
    weights: str = "bf16",
    kv: str = "bf16",
    max_num_seqs: int = 256,
) -> list[CalPoint]:
    """Points from a CSV with columns ``gpu, gpus, model, input, output`` and ``concurrency`` or ``rate``
    (empty both = offline), optional ``weights, kv, requests, max_num_seqs`` and at least one measured column of
    ``throughput`` (output tokens/s), ``ttft_ms``, ``tpot_ms`` (medians). A row that leaves ``weights``, ``kv`` or
    ``max_num_seqs`` empty (or a file without the column) gets the given defaults (``capsim calibrate --weights
    --kv --max-num-seqs``)."""
    src = str(path)
    text = read_text_file(Path(path), "a measurements CSV file")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ConfigError(src, "", "no data rows")
    missing = [c for c in CSV_COLUMNS if c not in rows[0]]
    if missing:
        raise ConfigError(src, "", f"missing column(s): {', '.join(missing)}")
    pts: list[CalPoint] = []
    for i, row in enumerate(rows, start=2):
        where = f"{src}:{i}"

        def num(key: str, cast=float, default=None, row=row, where=where):  # noqa: ANN001, ANN202
            v = (row.get(key) or "").strip()
            if v == "":
                return default
            try:
                return cast(float(v)) if cast is int else cast(v)
            except ValueError:
                raise ConfigError(where, key, f"not a number: {v!r}") from None

        conc, rate = num("concurrency", int), num("rate")
        mode = "closed_loop" if conc else ("poisson" if rate else "offline")
        base = {
            "gpu": row["gpu"].strip(),
            "gpus": num("gpus", int, 1),
            "model": row["model"].strip(),
            "weights": (row.get("weights") or "").strip() or weights,
            "kv": (row.get("kv") or "").strip() or kv,
            "mode": mode,
            "source": where,
            "input_mean": num("input"),
            "output_mean": num("output"),
            "requests": min(num("requests", int, 1000), max_requests),
            "rate_rps": rate,
            "concurrency": conc,
            "max_num_seqs": num("max_num_seqs", int, max_num_seqs),
        }
        if not base["input_mean"] or not base["output_mean"]:
            raise ConfigError(where, "input", "input and output lengths are required")
        found = False
        for col, metric, scale in (
            ("throughput", "throughput", 1.0),
            ("ttft_ms", "ttft_p50", 1e-3),
            ("tpot_ms", "tpot_p50", 1e-3),
        ):
            v = num(col)
            if v is not None:
                pts.append(CalPoint(id=f"row{i}:{metric}", metric=metric, measured=v * scale, **base))
                found = True
        if not found:
            raise ConfigError(where, "", "no measured throughput, ttft_ms or tpot_ms")
    return pts


def starting_calibration(points: Sequence[CalPoint], stack: str | None = None) -> Calibration:
    """The factors capsim uses today for the points' GPU (its own block, or its stack's)."""
    gpus = {p.gpu for p in points}
    if len(gpus) != 1:
        raise ConfigError(
            "calibrate", "gpu", f"measurements span several GPUs ({', '.join(sorted(gpus))}); fit one at a time"
        )
    return resolve_calibration(get_gpu(next(iter(gpus)), "calibrate", "gpu"), stack)


def format_table(rows: Sequence[dict], before: Sequence[dict] | None = None) -> str:
    """Plain-text error table (``before`` adds a column with the errors under the starting factors)."""
    head = f"{'point':44} {'metric':10} {'measured':>11} {'predicted':>11} {'error':>8}"
    if before is not None:
        head += f" {'before':>8}"
    lines = [head]
    for i, r in enumerate(rows):
        unit = 1e3 if r["metric"] != "throughput" else 1.0
        line = (
            f"{r['id'][:44]:44} {r['metric']:10} {r['measured'] * unit:11.1f} {r['predicted'] * unit:11.1f} "
            f"{r['error_pct']:+7.1f}%"
        )
        if before is not None:
            line += f" {before[i]['error_pct']:+7.1f}%"
        lines.append(line + ("" if r["fit"] else "  (not fitted)"))
    return "\n".join(lines)
