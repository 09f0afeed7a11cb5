"""Console outputs and figures of docs/sizing.md: runs the ``capsim size`` commands the page shows and prints
each output as markdown; ``--write`` puts them into docs/sizing.md between the ``<!-- generated:
benchmarks/sizing_docs.py NAME -->`` markers and copies the plots to docs/sizing_{default,viral,gpus}.png.
The prose around the blocks quotes their figures: reread it after a rewrite. Each run's wall time depends on
the machine and its load; everything else is deterministic (fixed seeds).

    .venv/bin/python benchmarks/sizing_docs.py [--write] [--only default|viral|gpus ...] [--workers N]

About 5 minutes (default), 10 (viral) and 7 (gpus) on two busy cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import replace_block, start_marker  # noqa: E402
from sim.core.atomic_io import atomic_write, write_text  # noqa: E402

DOC = ROOT / "docs" / "sizing.md"
SCRIPT = "sizing_docs.py"

# name -> (capsim size arguments, {file in --out: figure in docs/})
CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": (["experiments/default.yaml"], {"sizing.png": "sizing_default.png"}),
    "viral": (["experiments/sizing_viral.yaml", "--seeds", "3"], {"sizing.png": "sizing_viral.png"}),
    "gpus": (["experiments/default.yaml", "--gpu", "H100-SXM", "--gpu", "H200-SXM", "--gpu", "A100-SXM-80GB",
              "--gpu", "L40S"], {"sizing_gpus.png": "sizing_gpus.png"}),
}


def run_case(name: str, out_dir: Path, workers: int | None) -> str:
    """Run one ``capsim size`` command into ``out_dir``; its console table as a fenced markdown block."""
    args, _ = CASES[name]
    extra = ["--workers", str(workers)] if workers else []
    cmd = [sys.executable, "-m", "sim", "size", *args, "--out", str(out_dir), *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # progress goes to stderr
    text = (out_dir / "sizing.txt").read_text().rstrip("\n")
    text = text[text.rfind("capsim size ·"):]  # several GPU types: the per-type reports, then the summary shown
    return "```\n$ capsim size " + " ".join(args) + "\n" + text + "\n```"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated blocks of docs/sizing.md and "
                                                         "its figures")
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="run only this case (repeatable)")
    ap.add_argument("--workers", type=int, default=None, help="processes per capsim size (default: all cores)")
    args = ap.parse_args(argv)
    names = args.only or list(CASES)
    doc = DOC.read_text()
    missing = [n for n in names if start_marker(SCRIPT, n) not in doc]
    if missing:
        print(f"docs/sizing.md: no marker {start_marker(SCRIPT, missing[0])!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sizing_docs_") as tmp:
        for name in names:
            out_dir = Path(tmp) / name
            block = run_case(name, out_dir, args.workers)
            print(f"### {name}\n\n{block}\n")
            if args.write:
                doc = replace_block(doc, SCRIPT, name, block)
                write_text(DOC, doc)
                for src, dst in CASES[name][1].items():
                    atomic_write(ROOT / "docs" / dst, lambda p, f=out_dir / src: shutil.copyfile(f, p))
                print(f"wrote docs/sizing.md ({name}), " + ", ".join(
                    f"docs/{d}" for d in CASES[name][1].values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
