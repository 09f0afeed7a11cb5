"""Validation protocol: how close capsim comes to published measurements it was *not* fitted to.

Every published point lives in ``calibration/data/`` (with its source and exact benchmark settings). A
:class:`~sim.perf.calibration.Split` says which points a fit may use; the default split fits the software-stack
factors on H100 and A100 points only (:data:`FIT_FAMILIES`) and holds every other GPU family out (H200, GH200,
B200, GB200, MI300X, …), plus the points a stack cannot model (marked ``fit = 0`` with the reason). Protocols:

* ``shipped`` — every point under the shipped stack factors; errors split into fitted vs held out, per GPU
  family and metric.
* ``leave-one-gpu-out`` — for each fitted GPU family F, refit each stack without F's points and predict them.
* ``leave-one-stack-out`` — each stack's fitted points predicted with every *other* stack's factors (which were
  fitted to other points only): the error of using a stack profile for an engine it was not fitted to.

A fit never sees a held-out point: :func:`sim.perf.calibration.fit_calibration` takes the split and asserts it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.core.paths import find_data_file, project_root
from sim.perf.calibration import CalPoint, Predictor, Split, evaluate, fit_calibration
from sim.perf.catalog import Calibration, get_gpu, get_stack

FIT_FAMILIES = ("H100", "A100")
"""GPU families whose points the stack factors are fitted to; every other family is held out."""

TARGETS_PCT = {"throughput": 10.0, "tpot": 10.0, "ttft": 15.0}
"""Issue 12's held-out targets: offline throughput MAPE, ITL/TPOT under load, TTFT under load."""

STACK_FITS: dict[str, tuple[str, ...]] = {
    "nvidia-trtllm": ("mfu", "mbu", "overhead_s"),
    "nvidia-vllm": ("mfu", "mbu", "overhead_s", "overhead_s_per_token"),
    "nvidia-splitwise": ("mfu", "mbu", "overhead_s", "allreduce_efficiency"),
}
"""Factors fitted per stack (``calibration/fit_factors.py`` uses the same)."""

PROTOCOLS = ("shipped", "leave-one-gpu-out", "leave-one-stack-out")

SHARED_FACTORS = {"nvidia-sglang": "nvidia-vllm", "amd-vllm": "nvidia-vllm"}
"""Stacks whose kernel factors are another's (fitted together, or copied): their points belong to that fit."""


def factor_stack(stack: str | None) -> str:
    """The stack whose fitted factors ``stack`` uses (itself unless listed in :data:`SHARED_FACTORS`)."""
    return SHARED_FACTORS.get(stack or "", stack or "")


def calibration_data_dir() -> Path:
    """``calibration/data`` (the published measurements): the first data root that has it (a checkout, or
    ``$CAPSIM_HOME``); wheels do not ship it."""
    return find_data_file("calibration/data") or project_root() / "calibration" / "data"


def gpu_family(gpu: str) -> str:
    """Family of a catalogue GPU: its name up to the first dash (``H100-SXM`` → ``H100``, ``GH200-96GB`` →
    ``GH200``, ``MI300X`` → ``MI300X``)."""
    return get_gpu(gpu, "validate", "gpu").name.split("-")[0]


# -- the published points -----------------------------------------------------------------------------------
def _setting_value(text: str) -> bool | int | float | str:
    """A settings cell: ``true``/``false``, an integer, a number, else the text."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def point_engine_settings(path: Path | None = None) -> dict[str, tuple[tuple[str, Any], ...]]:
    """``point_engine_settings.csv``: per point id (or shell-style id pattern, ``trt*``), the ``fleet.engine``
    fields its benchmark ran with beyond the columns of ``published_points.csv`` (each row: id, field, value,
    source). A missing file means none."""
    path = path or calibration_data_dir() / "point_engine_settings.csv"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, list[tuple[str, Any]]] = {}
    for i, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        name = row["field"].strip()
        if name not in Engine.model_fields:
            raise ConfigError(str(path), f"line {i}: field", f"'{name}' is not a fleet.engine field")
        out.setdefault(row["id"].strip(), []).append((name, _setting_value(row["value"])))
    return {k: tuple(v) for k, v in out.items()}


def published_points(path: Path | None = None) -> list[CalPoint]:
    """Rows of ``published_points.csv`` (one measured number each, with its settings and source), each with the
    engine settings ``point_engine_settings.csv`` (next to it) gives for its id."""
    path = path or calibration_data_dir() / "published_points.csv"
    settings = point_engine_settings(path.parent / "point_engine_settings.csv")
    try:
        text = path.read_text()
    except FileNotFoundError:
        problem = "file not found (capsim validate needs a checkout with calibration/data)"
        raise ConfigError(str(path), "", problem) from None
    out = []
    for row in csv.DictReader(text.splitlines()):
        def f(k: str, row: dict[str, str] = row) -> float | None:
            v = row[k].strip()
            return float(v) if v else None

        def i(k: str) -> int | None:
            v = f(k)
            return int(v) if v is not None else None

        out.append(
            CalPoint(
                id=row["id"], source=row["source"], stack=row["stack"], fit=row["fit"] == "1", gpu=row["gpu"],
                gpus=int(row["gpus"]), replicas=int(row["replicas"]), model=row["model"], weights=row["weights"],
                kv=row["kv"], mode=row["mode"], input_mean=f("input_mean") or 0.0, input_sigma=f("input_sigma") or 0.0,
                input_max=i("input_max"), output_mean=f("output_mean") or 1.0, output_sigma=f("output_sigma") or 0.0,
                output_max=i("output_max"), total_max=i("total_max"), requests=i("requests") or 1000,
                rate_rps=f("rate_rps"), max_num_seqs=i("max_num_seqs") or 256,
                max_num_batched_tokens=i("max_num_batched_tokens") or 8192,
                reserve_kv=None if not row["reserve_kv"].strip() else row["reserve_kv"].strip() == "1",
                metric=row["metric"], measured=float(row["measured"]), note=row["note"],
                engine=tuple(kv for pattern, fields in settings.items() if fnmatchcase(row["id"], pattern)
                             for kv in fields),
            )
        )
    unknown = sorted(k for k in settings if not any(fnmatchcase(p.id, k) for p in out))
    if unknown:
        raise ConfigError(str(path.parent / "point_engine_settings.csv"), "id",
                          f"no published point with id {', '.join(unknown)}")
    return out


def splitwise_points(path: Path | None = None) -> list[CalPoint]:
    """Medians of Splitwise's Llama-2-70B prompt times (batch 1; 512/2048/8192 tokens) and token times
    (prompt 512; batch 1/16/64), A100 and H100 at TP2/4/8, FP16. TP2 batch-64 rows are excluded (inconsistent,
    see measurements.md §3.1); the ``h100-80gb-pcap`` rows are derived, not measured, and are not used."""
    import pandas as pd

    df = pd.read_csv(path or calibration_data_dir() / "splitwise_sim_perf_model_dgx_a100_h100.csv")
    df = df[(df.model == "llama2-70b") & df.hardware.isin(["a100-80gb", "h100-80gb"])]
    gpu = {"a100-80gb": "A100-SXM-80GB", "h100-80gb": "H100-SXM"}
    src = "Splitwise perf_model.csv @8f99e7dc (MIT)"
    pts: list[CalPoint] = []
    for key, d in df.groupby(["hardware", "tensor_parallel"]):
        hw, tp = str(key[0]), int(str(key[1]))
        for prompt in (512, 2048, 8192):
            t = d[(d.prompt_size == prompt) & (d.batch_size == 1)].prompt_time.median() / 1e3
            pts.append(CalPoint(
                id=f"splitwise-{hw}-tp{tp}-prompt{prompt}", source=src, stack="nvidia-splitwise", gpu=gpu[hw],
                gpus=int(tp), model="Llama-2-70B", weights="fp16", kv="fp16", mode="prefill_step", metric="ttft_p50",
                input_mean=prompt, measured=float(t), note="one prefill step, batch 1"))
        for batch in (1, 16, 64):
            if tp == 2 and batch == 64:
                continue
            sub = d[(d.prompt_size == 512) & (d.batch_size == batch)]
            ctx = 512 + int(sub.token_size.median() // 2)
            pts.append(CalPoint(
                id=f"splitwise-{hw}-tp{tp}-decode-b{batch}", source=src, stack="nvidia-splitwise", gpu=gpu[hw],
                gpus=int(tp), model="Llama-2-70B", weights="fp16", kv="fp16", mode="decode_step", metric="tpot_p50",
                batch=batch, context=ctx, measured=float(sub.token_time.median() / 1e3),
                note=f"decode step, prompt 512, mean context {ctx}"))
    return pts


def all_points() -> list[CalPoint]:
    """Every published point capsim knows (``published_points.csv`` + Splitwise's profiles)."""
    return published_points() + splitwise_points()


def default_split(points: Sequence[CalPoint], fit_families: Sequence[str] = FIT_FAMILIES) -> Split:
    """Fit: points flagged ``fit`` on a GPU of ``fit_families``; held out: everything else."""
    fit = frozenset(p.id for p in points if p.fit and gpu_family(p.gpu) in fit_families)
    return Split(fit, frozenset(p.id for p in points) - fit, name=f"fit on {'/'.join(fit_families)}")


# -- protocols ----------------------------------------------------------------------------------------------
NEUTRAL_START = Calibration(mfu=0.6, mbu=0.75, overhead_s=0.004, overhead_s_per_token=1e-6)
"""Where refits start (not the shipped factors, which saw every fitted point)."""


@dataclass
class ValidationReport:
    """Per-point rows (with ``role`` fitted / held-out, ``fold``, ``gpu_family``) and the factors used per fold."""

    protocol: str
    rows: list[dict]
    factors: dict[str, dict[str, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """MAPE per (GPU family, metric, role), with the held-out target and whether it is met."""
        return summarise(self.rows)


def _tag(rows: Iterable[dict], split: Split, fold: str) -> list[dict]:
    out = []
    for r in rows:
        r = dict(r)
        r["role"] = split.role(r["id"])
        r["fold"] = fold
        r["gpu_family"] = gpu_family(r["gpu"])
        out.append(r)
    return out


def shipped_factors(points: Sequence[CalPoint]) -> dict[str, Calibration]:
    """The catalogue's factors for every stack the points name."""
    return {s: get_stack(s, "validate", "stack").calibration for s in sorted({p.stack or "" for p in points})}


def run_shipped(points: Sequence[CalPoint], predictor: Predictor | None = None) -> ValidationReport:
    """Every point under the shipped stack factors, tagged fitted / held out by :func:`default_split`."""
    split = default_split(points)
    cal = shipped_factors(points)
    rows = evaluate(points, cal, predictor or Predictor(points), split)
    return ValidationReport("shipped", _tag(rows, split, "shipped"),
                            {"shipped": {k: v.model_dump() for k, v in cal.items()}})


def run_leave_one_gpu_out(
    points: Sequence[CalPoint], max_evaluations: int = 15, predictor: Predictor | None = None,
) -> ValidationReport:
    """For each fitted GPU family F: refit every stack that has F points on the other families' points only
    (from :data:`NEUTRAL_START`), then predict F's points. A stack fitted to F alone cannot be refitted and is
    reported in ``notes``."""
    pred = predictor or Predictor(points)
    base = default_split(points)
    rows: list[dict] = []
    factors: dict[str, dict[str, dict]] = {}
    notes: list[str] = []
    families = sorted({gpu_family(p.gpu) for p in points if p.id in base.fit})
    for fam in families:
        out_ids = frozenset(p.id for p in points if p.id in base.fit and gpu_family(p.gpu) == fam)
        split = Split(base.fit - out_ids, base.held_out | out_ids, name=f"without {fam}")
        fold = f"without {fam}"
        factors[fold] = {}
        for stack, params in STACK_FITS.items():
            target = [p for p in points if factor_stack(p.stack) == stack and p.id in out_ids]
            if not target:
                continue
            train = [p for p in points if factor_stack(p.stack) == stack and p.id in split.fit]
            if len(train) < len(params):
                notes.append(f"{fold}: {stack} has {len(train)} point(s) on other GPU families, fewer than its "
                             f"{len(params)} factors; its {len(target)} {fam} point(s) cannot be predicted this way")
                continue
            res = fit_calibration(train + target, NEUTRAL_START, params, max_evaluations, split=split)
            factors[fold][stack] = res.calibration.model_dump()
            rows += _tag(evaluate(target, res.calibration, pred, split), split, fold)
    return ValidationReport("leave-one-gpu-out", rows, factors, notes)


def run_leave_one_stack_out(points: Sequence[CalPoint], predictor: Predictor | None = None) -> ValidationReport:
    """Each fitted stack's fitted points predicted with each other fitted stack's shipped factors. Those were fitted
    to that other stack's points only, so the predicted points are held out for them."""
    pred = predictor or Predictor(points)
    base = default_split(points)
    rows: list[dict] = []
    factors: dict[str, dict[str, dict]] = {}
    stacks = [s for s in STACK_FITS if any(factor_stack(p.stack) == s and p.id in base.fit for p in points)]
    for s in stacks:
        target = [p for p in points if factor_stack(p.stack) == s and p.id in base.fit]
        for other in stacks:
            if other == s:
                continue
            # the other stack's factors were fitted to its own points: none of ``target`` is among them
            seen = frozenset(p.id for p in points if factor_stack(p.stack) == other and p.id in base.fit)
            split = Split(seen, frozenset(p.id for p in target), name=f"{s} with {other}'s factors")
            cal = get_stack(other, "validate", "stack").calibration
            fold = f"{s} with {other}"
            factors[fold] = {other: cal.model_dump()}
            rows += _tag(evaluate(target, cal, pred, split), split, fold)
    return ValidationReport("leave-one-stack-out", rows, factors)


def summarise(rows: Iterable[dict]) -> list[dict]:
    """MAPE, median and worst absolute error per (fold, GPU family, metric family, role)."""
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for r in rows:
        e = abs(r["error_pct"]) if math.isfinite(r["error_pct"]) else 1000.0
        groups.setdefault((r.get("fold", ""), r["gpu_family"], r["family"], r["role"]), []).append(e)
    out = []
    for (fold, fam, metric, role), errs in sorted(groups.items()):
        mape = float(np.mean(errs))
        target = TARGETS_PCT.get(metric)
        out.append({
            "fold": fold, "gpu_family": fam, "metric": metric, "role": role, "n": len(errs), "mape_pct": mape,
            "median_ape_pct": float(np.median(errs)), "max_ape_pct": float(np.max(errs)), "target_pct": target,
            "meets_target": (mape <= target) if (target is not None and role == "held-out") else None,
        })
    return out


def run(
    protocols: Sequence[str], max_evaluations: int = 15, points: Sequence[CalPoint] | None = None,
) -> list[ValidationReport]:
    """Run the named protocols (see module docstring) on ``points`` (default: every published point)."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError("validate", "--protocol", f"unknown protocol(s) {unknown} (one of {', '.join(PROTOCOLS)})")
    pts = list(points) if points is not None else all_points()
    pred = Predictor(pts)
    out = []
    for name in protocols:
        if name == "shipped":
            out.append(run_shipped(pts, pred))
        elif name == "leave-one-gpu-out":
            out.append(run_leave_one_gpu_out(pts, max_evaluations, pred))
        else:
            out.append(run_leave_one_stack_out(pts, pred))
    return out


# -- formatting ---------------------------------------------------------------------------------------------
def format_summary(report: ValidationReport) -> str:
    """Plain-text table: one line per (fold, GPU family, metric), fitted and held-out MAPE side by side."""
    table: dict[tuple[str, str, str], dict[str, dict]] = {}
    for s in report.summary():
        table.setdefault((s["fold"], s["gpu_family"], s["metric"]), {})[s["role"]] = s
    lines = [f"{'fold':40} {'GPU':7} {'metric':10} {'fitted':>14} {'held out':>14} {'worst':>8} {'target':>7}"]
    for (fold, fam, metric), d in table.items():
        fit = d.get("fitted")
        held = d.get("held-out")
        f_txt = f"{fit['mape_pct']:5.1f}% (n={fit['n']})" if fit else "–"
        h_txt = f"{held['mape_pct']:5.1f}% (n={held['n']})" if held else "–"
        worst = max((x["max_ape_pct"] for x in d.values()), default=0.0)
        target = TARGETS_PCT.get(metric)
        mark = ""
        if held and target is not None:
            mark = f"≤{target:.0f}% " + ("ok" if held["mape_pct"] <= target else "MISS")
        lines.append(f"{fold[:40]:40} {fam:7} {metric:10} {f_txt:>14} {h_txt:>14} {worst:7.1f}% {mark:>7}")
    return "\n".join(lines)


def format_points(report: ValidationReport) -> str:
    """Plain-text per-point table."""
    lines = [f"{'fold':22} {'point':40} {'role':8} {'metric':10} {'measured':>10} {'predicted':>10} {'error':>8}"]
    for r in report.rows:
        unit = 1e3 if r["metric"] != "throughput" else 1.0
        lines.append(f"{r['fold'][:22]:22} {r['id'][:40]:40} {r['role']:8} {r['metric']:10} "
                     f"{r['measured'] * unit:10.1f} "
                     f"{r['predicted'] * unit:10.1f} {r['error_pct']:+7.1f}%")
    return "\n".join(lines)


def markdown_summary(report: ValidationReport) -> str:
    """Markdown table of :meth:`ValidationReport.summary`: fitted and held-out MAPE per fold, GPU family, metric."""
    table: dict[tuple[str, str, str], dict[str, dict]] = {}
    for s in report.summary():
        table.setdefault((s["fold"], s["gpu_family"], s["metric"]), {})[s["role"]] = s
    lines = ["| fold | GPU family | metric | fitted MAPE (n) | held-out MAPE (n) | held-out worst | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for (fold, fam, metric), d in table.items():
        fit, held = d.get("fitted"), d.get("held-out")
        target = TARGETS_PCT.get(metric)
        met = "–" if not held or target is None else ("yes" if held["mape_pct"] <= target else "**no**")
        fit_txt = f"{fit['mape_pct']:.1f} % ({fit['n']})" if fit else "–"
        held_txt = f"{held['mape_pct']:.1f} % ({held['n']})" if held else "–"
        worst_txt = f"{held['max_ape_pct']:.1f} %" if held else "–"
        target_txt = f"≤ {target:.0f} %" if target else "–"
        lines.append(f"| {fold} | {fam} | {metric} | {fit_txt} | {held_txt} | {worst_txt} | {target_txt} | {met} |")
    return "\n".join(lines)


def markdown_points(report: ValidationReport, points: Sequence[CalPoint]) -> str:
    """Markdown table of every point of a report with its setup and source."""
    by_id = {p.id: p for p in points}
    lines = ["| point | role | hardware | model | precision | workload | metric | measured | predicted | error "
             "| source |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        p = by_id[r["id"]]
        unit, fmt = (1.0, "{:,.0f}") if r["metric"] == "throughput" else (1e3, "{:,.1f} ms")
        if p.mode in ("offline", "poisson", "closed_loop"):
            spread = " (lognormal)" if p.input_sigma or p.output_sigma else ""
            lengths = f"{p.input_mean:g}/{p.output_mean:g}{spread}"
            if p.mode == "offline":
                load = "offline"
            elif p.mode == "poisson":
                load = f"Poisson {p.rate_rps or 0:g} req/s"
            else:
                load = f"{p.concurrency} concurrent"
            work = f"{load}, {lengths}, max_num_seqs {p.max_num_seqs}"
        elif p.mode == "prefill_step":
            work = f"prefill step {p.input_mean:g} tok"
        else:
            work = f"decode step batch {p.batch}, ctx {p.context}"
        hw = f"{p.replicas}×{p.gpus}× {p.gpu}" if p.replicas > 1 else f"{p.gpus}× {p.gpu}"
        lines.append(
            f"| {p.id} | {r['role']} | {hw} | {p.model} | {p.weights}/{p.kv} | {work} | {r['metric']} | "
            f"{fmt.format(r['measured'] * unit)} | {fmt.format(r['predicted'] * unit)} | {r['error_pct']:+.1f} % | "
            f"{p.source} |"
        )
    return "\n".join(lines)
