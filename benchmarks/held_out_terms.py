"""Why each held-out point misses: the step-time term its prediction depends on (sim.perf.diagnosis).

For every held-out point (``--all``: every point) prints the error under the shipped factors and the elasticity
of the predicted time to each step-model term (GEMM compute, weight read, attention compute, KV read, fixed
per-step costs), then a summary per GPU family and source. ``--write`` puts both into docs/validation.md between
the ``held_out_terms`` markers. Not a test: the figures describe the model, they are not asserted.

    .venv/bin/python benchmarks/held_out_terms.py [--all] [--only ID_SUBSTRING] [--write]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import write_block  # noqa: E402
from sim.perf import diagnosis, validation  # noqa: E402

SOURCES = {"trt": "TensorRT-LLM perf-overview", "azure": "Azure guide", "mlperf41": "MLPerf v4.1",
           "vllmci": "vLLM CI", "vllm": "SGLang comparison (vLLM 0.6)", "sgl": "SGLang comparison",
           "mlperf51": "MLPerf v5.1", "splitwise": "Splitwise"}


def source_of(point_id: str) -> str:
    """The published source a point id belongs to (its prefix)."""
    return SOURCES.get(point_id.split("-")[0], point_id.split("-")[0])


def _fmt(x: float) -> str:
    return f"{x:+.2f}" if math.isfinite(x) else "–"


def per_point_table(rows: list[dict]) -> str:
    terms = list(diagnosis.TERMS)
    lines = ["| point | GPU | metric | error | " + " | ".join(terms) + " | binds |",
             "|---|---|---|---|" + "---|" * len(terms) + "---|"]
    for r in rows:
        es = " | ".join(_fmt(r[f"e_{t}"]) for t in terms)
        lines.append(f"| {r['id']} | {r['gpu']} | {r['metric']} | {r['error_pct']:+.1f} % | {es} | "
                     f"{diagnosis.regime(r)} |")
    return "\n".join(lines)


def summary_table(rows: list[dict]) -> str:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        key = (validation.gpu_family(r["gpu"]), source_of(r["id"]), r["metric"].split("_")[0])
        groups.setdefault(key, []).append(r)
    terms = list(diagnosis.TERMS)
    lines = ["| GPU family | source | metric | n | mean error | MAPE | " + " | ".join(terms) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(terms)]
    for (fam, src, metric), rs in sorted(groups.items()):
        errs = np.array([r["error_pct"] for r in rs])
        means = [float(np.nanmean([r[f"e_{t}"] for r in rs])) for t in terms]
        lines.append(f"| {fam} | {src} | {metric} | {len(rs)} | {errs.mean():+.1f} % | {np.abs(errs).mean():.1f} % | "
                     + " | ".join(_fmt(m) for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every point, fitted ones too (default: held out only)")
    ap.add_argument("--only", default="", help="only points whose id contains this text")
    ap.add_argument("--write", action="store_true", help="rewrite the generated part of docs/validation.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pts = validation.all_points()
    split = validation.default_split(pts)
    chosen = [p for p in pts if (args.all or p.id in split.held_out) and args.only in p.id]
    rows = diagnosis.elasticities(chosen, validation.shipped_factors(pts))
    text = ("Mean elasticity of the predicted time (latency, or 1 / throughput) to each step-model term, per GPU "
            "family and source (`benchmarks/held_out_terms.py`; shipped factors):\n\n" + summary_table(rows)
            + "\n\n<details><summary>Every held-out point</summary>\n\n" + per_point_table(rows)
            + "\n\n</details>\n")
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.write:
        doc = ROOT / "docs" / "validation.md"
        write_block(doc, "held_out_terms.py", None, text)
        print(f"wrote {doc.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
