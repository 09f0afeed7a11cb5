"""Figures that README.md (`make run`), docs/moe.md, speculative.md, pools.md, fleet.md and disaggregation.md quote:
reruns the commands each page shows and prints every block as markdown; ``--write`` puts them into the page
between the ``<!-- generated: benchmarks/docs_outputs.py NAME -->`` and ``<!-- end generated -->`` markers
(benchmarks/doc_blocks.py). The prose around a block quotes its figures: reread it after a rewrite. Deterministic
(fixed seeds); rerun after anything that moves simulated figures (a refit, a new default).

    .venv/bin/python benchmarks/docs_outputs.py [--write] [--only DOC ...] [--workers N]

DOC: readme, moe, speculative, pools, fleet, disaggregation (default: all).

On two busy cores: readme ~5 s, moe ~10 s, speculative ~40 s, pools ~4 min, fleet ~10 min (two simulated days),
disaggregation ~30 s.
sizing.md and README's what-ifs have their own scripts (sizing_docs.py, readme_whatifs.py). Not generated (expensive,
quoted from their own benchmarks): docs/spillover.md's compare table (~10 min), docs/prefix-cache.md's figures
(benchmarks/prefix_routing.py, ~20 min), docs/pools.md's `capsim plan` output (~5 min).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import MarkerError, replace_block, start_marker  # noqa: E402
from benchmarks.doc_format import pct, seconds  # noqa: E402
from sim.core.atomic_io import write_text  # noqa: E402
from sim.core.config import load_scenario  # noqa: E402
from sim.runner.pipeline import run_scenario  # noqa: E402

SCRIPT = "docs_outputs.py"


def summary(path: str, sets: list[str]) -> dict[str, Any]:
    """``summary.json`` of ``capsim run path --set …`` (in process)."""
    return run_scenario(load_scenario(ROOT / path, sets)).summary.to_json()


def sweep(path: str, workers: int) -> pd.DataFrame:
    """``capsim sweep path``'s results table, one row per point (numeric columns averaged over seeds)."""
    with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
        subprocess.run([sys.executable, "-m", "sim", "sweep", path, "--out", tmp, "--workers", str(workers)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        table = pd.read_csv(Path(tmp) / "results.csv")
    if (table["status"] != "ok").any():
        raise RuntimeError(f"{path}: failed points {sorted(table.loc[table['status'] != 'ok', 'point'])}")
    axes = list(table.columns[2:table.columns.get_loc("seed")])
    first = table.groupby("point", sort=True)[axes].first()
    means = table.groupby("point", sort=True).mean(numeric_only=True).drop(columns=axes, errors="ignore")
    return first.join(means)


def setting(value: Any) -> dict[str, Any] | None:
    """A sweep axis value as the results table holds it (JSON text, or empty for ``null``)."""
    return None if not isinstance(value, str) else json.loads(value)


# ---- README.md ------------------------------------------------------------------------------------------------

def readme_run(workers: int) -> str:
    """What ``make run`` (``capsim run --out out``) prints on the embedded default scenario."""
    with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
        out = subprocess.run([sys.executable, "-m", "sim", "run", "--out", tmp], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    return "```\n" + out.rstrip("\n").replace(tmp, "out") + "\n```"


# ---- docs/moe.md ----------------------------------------------------------------------------------------------

MOE_PROFILE = ["--gpu", "H200-SXM", "--gpus", "8", "--model", "deepseek-v3", "--weights", "fp8", "--input", "2000",
               "--output", "500"]


def moe_profile(workers: int) -> str:
    out = subprocess.run([sys.executable, "-m", "sim", "profile", *MOE_PROFILE], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.rstrip("\n").splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("  layouts"))
    return "```\n$ capsim profile " + " ".join(MOE_PROFILE) + "\n" + "\n".join(out[start:]) + "\n```"


def moe_layout(par: dict[str, Any] | None, gpus: int = 8) -> str:
    if not par or par.get("expert", 1) == 1:
        return f"TP{gpus}"
    tensor = par.get("tensor", gpus)
    attention = f"TP{tensor} attention" if tensor == gpus else f"DP{gpus // tensor} attention"
    return f"{attention} + EP{par['expert']}, imbalance {par.get('expert_imbalance', 1.25)}"


def moe_layouts(workers: int) -> str:
    t = sweep("experiments/moe_layouts.yaml", workers)
    lines = ["| rate | layout | TTFT P95 | TPOT P95 |", "|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r['traffic.rate_rps']:g} req/s | {moe_layout(setting(r['fleet.parallelism']))} | "
                     f"{seconds(r['latency.ttft_s.p95'])} | {seconds(r['latency.tpot_s.p95'])} |")
    return "\n".join(lines)


# ---- docs/speculative.md --------------------------------------------------------------------------------------

def spec_published(workers: int) -> str:
    """benchmarks/spec_decoding_validation.py's table: capsim against published speculative speed-ups."""
    return subprocess.run([sys.executable, "benchmarks/spec_decoding_validation.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip("\n")


def spec_label(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "none"
    return f"{spec['method']} k={spec['num_tokens']}, a={spec['acceptance_rate']:g}"


def spec_table(workers: int) -> str:
    t = sweep("experiments/spec_decoding.yaml", workers)
    lines = ["| rate | speculative | TTFT P95 | TPOT P95 | SLO attainment |", "|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r['traffic.rate_rps']:g} req/s | {spec_label(setting(r['fleet.speculative']))} | "
                     f"{seconds(r['latency.ttft_s.p95'])} | {seconds(r['latency.tpot_s.p95'])} | "
                     f"{pct(r['slo.attainment'])} |")
    return "\n".join(lines)


# ---- docs/pools.md --------------------------------------------------------------------------------------------

POOLS = "experiments/mixed_pools.yaml"
SMALL, BIG = "Llama-3.1-8B", "Llama-3.1-70B"
ROUTINGS: list[tuple[str, list[str]]] = [
    ("`weighted_least_work` (as shipped)", []),
    ("`least_work`", ["router.policy=least_work"]),
    ("`weighted_round_robin`", ["router.policy=weighted_round_robin"]),
    ("`round_robin`", ["router.policy=round_robin"]),
    ("`pool_mode: overflow` (wait ≥ 4)", ["router.pool_mode=overflow"]),
    ("`pool_mode: overflow`, `overflow_max_waiting: 1`", ["router.pool_mode=overflow",
                                                          "router.overflow_max_waiting=1"]),
]


def pools_routing(workers: int) -> str:
    lines = ["| routing | 8B completions: H100 / A100 pool (their load factors) | 8B P95 TTFT | 8B SLO attainment | "
             "70B SLO attainment | fleet attainment | cost |", "|---|---|---|---|---|---|---|"]
    for label, sets in ROUTINGS:
        s = summary(POOLS, sets)
        h100, a100, small = s["pools"]["h100"], s["pools"]["a100"], s["models"][SMALL]
        lines.append(
            f"| {label} | {h100['requests']['completed']:,} / {a100['requests']['completed']:,} "
            f"({h100['utilisation']['load_factor']:.2f} / {a100['utilisation']['load_factor']:.2f}) | "
            f"{seconds(small['ttft_s']['p95'])} | {pct(small['attainment'])} | "
            f"{pct(s['models'][BIG]['attainment'])} | {pct(s['slo']['attainment'])} | ${s['cost']['total_usd']:.2f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def pools_big(workers: int) -> str:
    lines = ["| command | 70B pool load factor | 70B P95 TTFT | 70B SLO attainment | 70B $/M output tokens | "
             "fleet attainment |", "|---|---|---|---|---|---|"]
    for sets in ([], ["fleet.pools.2.nodes=2"]):
        s = summary(POOLS, sets)
        big = s["models"][BIG]
        command = "`capsim run " + POOLS + "".join(f" --set {x}" for x in sets) + "`"
        lines.append(f"| {command} | {s['pools']['big']['utilisation']['load_factor']:.2f} | "
                     f"{seconds(big['ttft_s']['p95'])} | {pct(big['attainment'])} | "
                     f"{big['usd_per_mtok_output']:.2f} | {pct(s['slo']['attainment'])} |")
    return "\n".join(lines)


# ---- docs/disaggregation.md ----------------------------------------------------------------------------------

DISAGG = "experiments/disaggregated.yaml"


def disagg_serving(workers: int) -> str:
    """The example served disaggregated (4 + 4) and mixed on the same 8 GPUs."""
    lines = ["| command | P95 TTFT | P95 TPOT | SLO attainment |", "|---|---|---|---|"]
    for sets in ([], ["fleet.pools=null", "fleet.nodes=8"]):
        s = summary(DISAGG, sets)
        command = "`capsim run " + DISAGG + "".join(f" --set {x}" for x in sets) + "`"
        lines.append(f"| {command} | {seconds(s['latency']['ttft_s']['p95'])} | "
                     f"{seconds(s['latency']['tpot_s']['p95'])} | {pct(s['slo']['attainment'])} |")
    return "\n".join(lines)


SPLIT = ["experiments/disaggregated.yaml", "--prefill-nodes", "2-5", "--set", "duration_s=120", "--seeds", "1"]


def disagg_split(workers: int) -> str:
    """``capsim size --prefill-nodes`` on the disaggregated example (its console table, without the files line)."""
    with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
        out = subprocess.run([sys.executable, "-m", "sim", "size", *SPLIT, "--out", tmp, "--workers", str(workers)],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
    lines = [line for line in out.rstrip("\n").splitlines() if not line.startswith("  files")]
    return "```\n$ capsim size " + " ".join(SPLIT) + "\n" + "\n".join(lines) + "\n```"


def pools_speeds(workers: int) -> str:
    """tests/test_pools.py's two-pool fleet (one H100 and one A100 node, Llama-3.1-8B, 600 + 150 fixed tokens, 30
    req/s for 120 s): the H100's share of the pair's speed and of the requests under each node-level router."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_pools import _pool_shares, two_gpu_pools

    lines = ["| router | H100's share of the requests |", "|---|---|"]
    speed = None
    for policy in ("weighted_round_robin", "weighted_least_work", "least_work", "round_robin"):
        got, speed = _pool_shares(two_gpu_pools(30.0, policy, 120))
        lines.append(f"| `{policy}` | {pct(got)} |")
    assert speed is not None
    return "\n".join([lines[0], lines[1], f"| (the speed model: H100's share of the pair's speed) | {pct(speed)} |",
                      *lines[2:]])


SIZES = [[POOLS, "--set", "duration_s=300", "--seeds", "1"],
         [POOLS, "--set", "duration_s=300", "--seeds", "1", "--pool", "a100", "--gpu", "A100-SXM-80GB", "--gpu",
          "L40S"]]


def pools_size(workers: int) -> str:
    """The two ``capsim size`` commands of docs/pools.md's sizing example (console tables, without the files line)."""
    blocks = []
    for args in SIZES:
        with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
            out = subprocess.run([sys.executable, "-m", "sim", "size", *args, "--out", tmp, "--workers", str(workers)],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
        lines = [line for line in out.rstrip("\n").splitlines() if not line.startswith("  files")]
        blocks.append("$ capsim size " + " ".join(args) + "\n" + "\n".join(lines))
    return "```\n" + "\n\n".join(blocks) + "\n```"


def pools_big_a100(workers: int) -> str:
    """The 70B pool on 8 four-GPU A100 nodes (300 s): why no A100 count meets its SLO."""
    sets = ["duration_s=300", "fleet.pools.2.gpu=A100-SXM-80GB", "fleet.pools.2.nodes=8"]
    s = summary(POOLS, sets)
    big, pool = s["models"][BIG], s["pools"]["big"]
    return ("| command | 70B pool load factor | 70B P95 TTFT | 70B P95 TPOT | 70B SLO attainment |\n"
            "|---|---|---|---|---|\n"
            f"| `capsim run {POOLS}" + "".join(f" --set {x}" for x in sets) + f"` | "
            f"{pool['utilisation']['load_factor']:.2f} | {seconds(big['ttft_s']['p95'])} | "
            f"{seconds(big['tpot_s']['p95'])} | {pct(big['attainment'])} |")


# ---- docs/fleet.md --------------------------------------------------------------------------------------------

AUTOSCALE = "experiments/autoscale_forecast.yaml"
FLEETS: list[tuple[str, list[str]]] = [
    ("5 reserved nodes (sized for the evening peak)", ["fleet.nodes=5", "fleet.autoscaler.policy=none"]),
    ("1 reserved + forecast autoscaler (`rps_per_node: 6`)", []),
]


def gpu_hours(cost: dict[str, Any]) -> str:
    by_kind = cost["gpu_hours_by_kind"]
    parts = [f"{by_kind['reserved']:.3g}"]
    parts += [f"{by_kind[k]:.3g} {k.replace('_', '-')}" for k in ("on_demand", "spot") if by_kind.get(k)]
    return " + ".join(parts)


def fleet_autoscale(workers: int) -> str:
    lines = ["| fleet | GPU-hours | cost | P95 TTFT | P95 TPOT | SLO attainment | load factor (busiest 10 min) | "
             "one node sustains |", "|---|---|---|---|---|---|---|---|"]
    for label, sets in FLEETS:
        s = summary(AUTOSCALE, sets)
        u = s["utilisation"]
        lines.append(f"| {label} | {gpu_hours(s['cost'])} | ${s['cost']['total_usd']:,.2f} | "
                     f"{seconds(s['latency']['ttft_s']['p95'])} | {seconds(s['latency']['tpot_s']['p95'])} | "
                     f"{pct(s['slo']['attainment'])} | {u['load_factor']:.2f} ({u['load_factor_peak']:.2f}) | "
                     f"{u['capacity_per_node_requests_per_s']:.1f} req/s |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


# doc (docs/DOC.md; readme: README.md) -> [(block name, function(workers) -> markdown)]
CASES: dict[str, list[tuple[str, Callable[[int], str]]]] = {
    "readme": [("make-run", readme_run)],
    "moe": [("profile", moe_profile), ("layouts", moe_layouts)],
    "speculative": [("published", spec_published), ("table", spec_table)],
    "pools": [("speeds", pools_speeds), ("routing", pools_routing), ("big-pool", pools_big), ("size", pools_size),
              ("big-a100", pools_big_a100)],
    "fleet": [("autoscale", fleet_autoscale)],
    "disaggregation": [("serving", disagg_serving), ("split", disagg_split)],
}


def doc_path(doc_name: str) -> Path:
    return ROOT / "README.md" if doc_name == "readme" else ROOT / "docs" / f"{doc_name}.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated blocks of the docs")
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="only this doc (repeatable)")
    ap.add_argument("--workers", type=int, default=2, help="processes per capsim sweep (default 2)")
    args = ap.parse_args(argv)
    docs = args.only or list(CASES)
    for doc_name in docs:  # every marker before any run
        text = doc_path(doc_name).read_text()
        for name, _ in CASES[doc_name]:
            if start_marker(SCRIPT, name) not in text:
                where = doc_path(doc_name).relative_to(ROOT)
                print(f"{where}: no marker {start_marker(SCRIPT, name)!r}", file=sys.stderr)
                return 2
    for doc_name in docs:
        path = doc_path(doc_name)
        doc = path.read_text()
        for name, make in CASES[doc_name]:
            block = make(args.workers)
            print(f"### {path.relative_to(ROOT)} {name}\n\n{block}\n", flush=True)
            try:
                doc = replace_block(doc, SCRIPT, name, block)
            except MarkerError as exc:
                print(f"{path.relative_to(ROOT)}: {exc}", file=sys.stderr)
                return 2
        if args.write:
            write_text(path, doc)
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
