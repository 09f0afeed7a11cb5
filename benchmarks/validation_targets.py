"""Held-out errors of capsim's performance model per GPU family against issue 12's targets (offline throughput
≤ 10 % MAPE, TPOT ≤ 10 %, TTFT ≤ 15 %, held out). Prints markdown; ``--write`` puts it into docs/validation.md
between the ``<!-- generated -->`` markers. Not a test: the figures are reported, misses included.

    .venv/bin/python benchmarks/validation_targets.py [--write] [--max-evaluations 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import write_block  # noqa: E402
from sim.perf import validation  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated part of docs/validation.md")
    ap.add_argument("--max-evaluations", type=int, default=15, help="simulator evaluations per leave-one-out refit")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pts = validation.all_points()
    reports = validation.run(validation.PROTOCOLS, args.max_evaluations, pts)
    parts = []
    for rep in reports:
        parts.append(f"### Protocol `{rep.protocol}`\n")
        parts.append(validation.markdown_summary(rep))
        parts.append("")
        for note in rep.notes:
            parts.append(f"* {note}")
        if rep.protocol != "shipped":
            for fold, facs in rep.factors.items():
                for stack, cal in facs.items():
                    shown = ("mfu", "mbu", "overhead_s", "overhead_s_per_token")
                    parts.append(f"* {fold}, `{stack}` factors: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in cal.items() if k in shown))
        parts.append("")
    shipped = reports[0]
    parts.append("### Every point (shipped factors)\n")
    parts.append(validation.markdown_points(shipped, pts))
    text = "\n".join(parts) + "\n"
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.write:
        doc = ROOT / "docs" / "validation.md"
        write_block(doc, "validation_targets.py", None, text)
        print(f"wrote {doc.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
