"""README's "One-line what-ifs" table: runs each row's ``--set`` overrides on the embedded default scenario and
prints the table as markdown; ``--write`` puts it into README.md between the ``<!-- generated:
benchmarks/readme_whatifs.py -->`` marker and ``<!-- end generated -->``. Deterministic (the scenario's seed);
about a minute on two cores. Rerun it after anything that moves the default scenario's figures (a refit, a new
default), so the table stays what ``capsim run --set …`` prints.

    .venv/bin/python benchmarks/readme_whatifs.py [--write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import MarkerError, replace_block  # noqa: E402
from benchmarks.doc_format import seconds  # noqa: E402
from sim.core.atomic_io import write_text  # noqa: E402
from sim.core.config import load_scenario  # noqa: E402
from sim.core.paths import default_scenario_path  # noqa: E402
from sim.metrics.summary import Summary  # noqa: E402
from sim.runner.pipeline import run_scenario  # noqa: E402

README = ROOT / "README.md"

# (question, --set overrides); the command column is built from the overrides.
ROWS: list[tuple[str, list[str]]] = [
    ("as configured (4 × H100, rented)", []),
    ("what if we own the GPUs?", ["pricing.mode=owned"]),
    ("do 3 nodes do?", ["fleet.nodes=3"]),
    ("…and with FP8 weights and KV?", ["fleet.nodes=3", "fleet.weights=fp8", "fleet.kv_cache=fp8"]),
    ("…or on H200s?", ["fleet.nodes=3", "fleet.gpu=H200-SXM"]),
    ("2 nodes?", ["fleet.nodes=2"]),
    ("2 nodes on TensorRT-LLM?", ["fleet.nodes=2", "fleet.stack=nvidia-trtllm"]),
    ("40 nodes?", ["fleet.nodes=40"]),
]
HEADER = ("| question | command | load factor | P95 TTFT | P95 TPOT | SLO attainment | $ per M output tokens |\n"
          "|---|---|---|---|---|---|---|")


def row(question: str, sets: list[str], s: Summary) -> str:
    command = "`capsim run`" if not sets else "`" + " ".join(f"--set {x}" for x in sets) + "`"
    u = s.utilisation
    load = "n/a" if u.load_factor is None else f"{u.load_factor:.2f}"
    if u.bottleneck and u.bottleneck != "none":
        load += ", KV cache full" if u.bottleneck == "kv_cache" else f", {u.bottleneck.replace('_', ' ')} bound"
    attain = f"{s.slo.attainment * 100:.1f} %".replace(".0 %", " %") if s.slo.attainment is not None else "n/a"
    if s.overload.overloaded:
        attain += " (overloaded)"
    cost = s.cost.usd_per_mtok_output
    return (f"| {question} | {command} | {load} | {seconds(s.latency.ttft_s.p95)} | "
            f"{seconds(s.latency.tpot_s.p95)} | {attain} | {'n/a' if cost is None else f'{cost:.2f}'} |")


def table() -> str:
    lines = [HEADER]
    for question, sets in ROWS:
        summary = run_scenario(load_scenario(default_scenario_path(), sets)).summary
        lines.append(row(question, sets, summary))
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite README.md's generated table")
    args = ap.parse_args()
    text = table()
    print(text)
    if args.write:
        try:
            write_text(README, replace_block(README.read_text(), "readme_whatifs.py", None, text))
        except MarkerError as exc:
            sys.exit(f"README.md: {exc}")


if __name__ == "__main__":
    main()
