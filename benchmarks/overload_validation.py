"""Load ladder and overload: capsim against published runs stepped through a node's knee (TTFT growth,
time-outs, completed throughput), and closed-loop runs that publish the engine's preemption count. Prints markdown;
``--write`` puts it into docs/validation.md between the ``<!-- generated: benchmarks/overload_validation.py -->``
markers. Not a test: the errors are reported, misses
included.

    .venv/bin/python benchmarks/overload_validation.py [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import write_block  # noqa: E402
from sim.perf import overload, preemption  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated part of docs/validation.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    text = overload.markdown_report(overload.run(overload.read_points(overload.ladder_path()))) + "\n"
    text += ("\nPreemptions under KV pressure (`sim/perf/preemption.py`, `calibration/data/preemption_points.csv`):\n\n"
             + preemption.markdown_report(preemption.run(preemption.read_points(preemption.points_path()))) + "\n")
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.write:
        doc = ROOT / "docs" / "validation.md"
        write_block(doc, "overload_validation.py", None, text)
        print(f"wrote {doc.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
