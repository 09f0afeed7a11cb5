"""Figures that README.md (`make run`), docs/moe.md, speculative.md, pools.md, fleet.md, disaggregation.md,
spillover.md and plan.md quote: reruns the commands each page shows and prints every block as markdown; ``--write``
puts them into the page between the ``<!-- generated: benchmarks/docs_outputs.py NAME -->`` and
``<!-- end generated -->`` markers (benchmarks/doc_blocks.py; figures written as benchmarks/doc_format.py says).
Some blocks are paragraphs: they check the claims their wording makes (:func:`claim`) and stop when new figures
contradict them. The prose around a block quotes its figures: reread it after a rewrite. Deterministic (fixed seeds)
except the wall times a console output prints; rerun after anything that moves simulated figures (a refit, a new
default).

    .venv/bin/python benchmarks/docs_outputs.py [--write] [--only DOC ...] [--block NAME ...] [--workers N]

DOC: readme, moe, speculative, pools, fleet, disaggregation, spillover, plan (default: all).

On two busy cores: readme ~10 min (its `capsim plan` block; `make-run` ~5 s), moe ~10 s, speculative ~40 s, pools
~10 min (its `capsim plan` block ~5), fleet ~10 min (two simulated days), disaggregation ~30 s, spillover ~10-30 min
(one `capsim compare` of a simulated day, 9 strategies), plan ~10 s.
sizing.md and README's what-ifs have their own scripts (sizing_docs.py, readme_whatifs.py), docs/prefix-cache.md
its benchmark (prefix_routing.py --write).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import MarkerError, replace_block, start_marker  # noqa: E402
from benchmarks.doc_format import pct, seconds  # noqa: E402
from sim.core.atomic_io import atomic_write, write_text  # noqa: E402
from sim.core.config import load_scenario  # noqa: E402
from sim.runner.pipeline import RunOutput, run_scenario  # noqa: E402

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


def prose(text: str) -> str:
    """A generated paragraph wrapped as the pages are (118 columns; words and `code` kept whole)."""
    return textwrap.fill(text, 118, break_long_words=False, break_on_hyphens=False)


def claim(holds: bool, what: str) -> None:
    """Stop when a generated paragraph's wording no longer fits its figures (the prose must be rewritten)."""
    if not holds:
        raise RuntimeError(what)


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


PLAN_EXAMPLE = "experiments/plan_example.yaml"


def readme_plan(workers: int) -> str:
    """``capsim plan experiments/plan_example.yaml`` (6-11 minutes: one simulated day per fleet it sizes), with a
    fresh cache, its folders shown as ``out/``."""
    with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
        out = subprocess.run([sys.executable, "-m", "sim", "plan", PLAN_EXAMPLE, "--out", f"{tmp}/plan", "--cache",
                              f"{tmp}/plan.cache", "--workers", str(workers)], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    return "```\n$ capsim plan " + PLAN_EXAMPLE + "\n" + out.rstrip("\n").replace(tmp, "out") + "\n```"


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


def spec_batch1(workers: int) -> str:
    """Why capsim over-predicts EAGLE on the 8B model at batch 1, in the step model's own terms (the published
    table's EAGLE-2 row: 1× H100-SXM, nvidia-sglang, BF16, 700 tokens of context, 5 drafts, 8 verified positions)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from spec_decoding_validation import POINTS

    from sim.core.config import Speculative
    from sim.perf.catalog import get_gpu, get_model, resolve_calibration
    from sim.perf.model import KERNELS_PER_LAYER, StepTimeModel

    p = next(x for x in POINTS if "EAGLE-2" in x.label)
    gpu, model = get_gpu(p.gpu), get_model(p.model)
    base = StepTimeModel.build(gpu, model, p.gpus, p.weights, "bf16", stack=p.stack)
    spec = StepTimeModel.build(gpu, model, p.gpus, p.weights, "bf16", stack=p.stack, speculative=Speculative(
        method=p.method, num_tokens=p.k, acceptance_rate=p.acceptance, verify_tokens=p.verify))
    assert spec.spec is not None
    step = base.decode_step_s(p.batch, p.context)
    weights = base.weights_s(base.gemm_tokens(p.batch, decode_only=True))
    stack_s = resolve_calibration(gpu, p.stack).overhead_s
    kernels_s = model.layers * KERNELS_PER_LAYER * gpu.kernel_launch_s
    tau = spec.spec.tokens_per_step
    verify = spec.decode_step_s(p.batch, p.context) * tau
    ctx = p.batch * (p.context + 1)
    draft = spec.spec.draft_s(p.batch) + spec.spec.draft_s_per_ctx_token * ctx
    needed = tau * step / p.measured_speedup  # the pass time at which capsim's speed-up equals the measured one
    def ms(value_s: float) -> str:  # sub-millisecond terms need two decimals
        return f"{value_s * 1e3:.2f} ms"

    claim(weights > 0.5 * step, "docs/speculative.md: weight reads no longer dominate a batch-1 step: rewrite")
    return prose(
        f"In capsim's model a batch-1 decode step of {model.name} on one {p.gpu} "
        f"({p.stack}, BF16, {p.context:,} tokens of context) takes {seconds(step)}, {seconds(weights)} "
        f"({weights / step * 100:.0f} %) of it reading the weights; the stack's fitted per-step overhead "
        f"({ms(stack_s)}) and the kernel boundaries ({model.layers} layers × {KERNELS_PER_LAYER} kernels × "
        f"{gpu.kernel_launch_s * 1e6:.1f} µs = {ms(kernels_s)}) are {(stack_s + kernels_s) / step * 100:.0f} %. "
        f"So what a verification pass spreads over τ tokens is mostly the weight read, and the pass itself costs about "
        f"one decode step plus the drafting: {seconds(verify)} for the EAGLE-2 row ({p.k} draft passes, "
        f"{p.verify} verified positions), {seconds(draft)} of it drafting, with `draft_overhead_s` "
        f"({ms(spec.spec.draft_overhead_s)} per pass) a guess, not a fit. The measured {p.measured_speedup:.2f}× "
        f"at τ = {tau:.2f} would need the pass to take {seconds(needed)}: real drafting and tree bookkeeping "
        f"({seconds(needed - verify + draft)} instead of {seconds(draft)}) cost more than capsim charges, or τ is "
        "lower than assumed — the two cannot be told apart from a throughput alone.")


def spec_shrink(workers: int) -> str:
    """tests/test_speculative.py's batch sweep: EAGLE k = 4, a = 0.7 on 1× H100, Llama-3.1-8B, the GPU's default
    stack, 1,000 tokens of context."""
    from sim.core.config import Speculative
    from sim.perf.catalog import get_gpu, get_model, resolve_stack
    from sim.perf.model import StepTimeModel

    gpu, model = get_gpu("H100-SXM"), get_model("llama-3.1-8b")
    base = StepTimeModel.build(gpu, model, 1, "bf16", "bf16")
    spec = StepTimeModel.build(gpu, model, 1, "bf16", "bf16",
                               speculative=Speculative(method="eagle", num_tokens=4, acceptance_rate=0.7))
    ratios = [base.decode_step_s(b, 1000) / spec.decode_step_s(b, 1000) for b in (1, 64, 256)]
    stack = resolve_stack(gpu, None)
    return prose(
        "Both effects the sources describe are reproduced: the gain shrinks with batch size (1× H100, Llama-3.1-8B, "
        f"EAGLE k = 4, a = 0.7, stack {stack.name if stack is not None else 'none'}, context 1,000: "
        f"{ratios[0]:.2f}× at batch 1, {ratios[1]:.2f}× at 64, {ratios[2]:.2f}× at 256 — "
        "`test_speedup_shrinks_with_batch...`), and with acceptance 0 speculation is pure overhead (slower than none, "
        "`test_acceptance_zero_is_pure_overhead...`).")


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


# ---- docs/spillover.md ---------------------------------------------------------------------------------------

SPILL = "experiments/hybrid_spill.yaml"
SPILL_FIGURES = ["cost_vs_p95_latency.png", "spill_over_time.png", "cost_breakdown.png"]
#: what each strategy of the experiment does, in a few words (its description is in the experiment file)
SPILL_NOTES = {"peak_fleet": "never spill", "daily_fleet": "never spill", "hybrid_queue": "≥ 8 waiting",
               "hybrid_budget": "4.5 req/s", "hybrid_class": "long ctx → API", "hybrid_tier1": "500 RPM account"}


@functools.cache
def spill_compare(workers: int) -> tuple[pd.DataFrame, Path]:
    """``capsim compare`` on the hybrid-spill day (~10 minutes): its compare.csv and the folder of its files (kept
    until the script exits)."""
    tmp = tempfile.TemporaryDirectory(prefix="docs_outputs_")
    _SPILL_DIRS.append(tmp)
    out = Path(tmp.name)
    subprocess.run([sys.executable, "-m", "sim", "compare", SPILL, "--out", str(out), "--workers", str(workers)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pd.read_csv(out / "compare.csv"), out


_SPILL_DIRS: list[tempfile.TemporaryDirectory[str]] = []  # the compare's folder lives as long as the cache above


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _share(v: float) -> str:
    return "0" if v == 0 else f"{v * 100:.1f} %"


def spill_table(workers: int) -> Block:
    """The compare table (as docs/spillover.md shows it) and, on --write, the figures and compare.csv."""
    t, out = spill_compare(workers)
    cheapest = t[t["slo_met"].astype(bool)].sort_values("total_usd")["strategy"].iloc[0]
    lines = ["| strategy | nodes | total $ | $/M out tok | $/M in+out tok | self-host $ | API $ | spill req / tok | "
             "P95 TTFT | P95 E2E | SLO attainment | SLO met | peak load | 429s | failed | timed out (client retries) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        name = str(r["strategy"])
        label = name + (f" ({SPILL_NOTES[name]})" if name in SPILL_NOTES else "")
        if name == cheapest:
            label = f"**{label}**"
        spill = "0" if r["spill_request_share"] == 0 else (f"{_share(r['spill_request_share'])} / "
                                                            f"{_share(r['spill_token_share'])}")
        timed = "0" if r["timed_out"] == 0 else f"{_count(r['timed_out'])} ({_count(r['client_retries'])})"
        peak = "–" if pd.isna(r["load_factor_peak"]) else f"{r['load_factor_peak']:.2f}"
        lines.append(
            f"| {label} | {r['fleet_nodes']} | {_count(r['total_usd'])} | {r['usd_per_mtok_output']:.2f} | "
            f"{r['usd_per_mtok']:#.3g} | {_count(r['self_host_usd'])} | {_count(r['api_usd'])} | {spill} | "
            f"{seconds(r['ttft_p95_s'])} | {seconds(r['e2e_p95_s'])} | {pct(r['slo_attainment'])} | "
            f"{'yes' if r['slo_met'] else 'no'} | {peak} | {_count(r['api_rate_limited'])} | {_count(r['failed'])} | "
            f"{timed} |")
    files = {f"docs/figures/spillover/{f}": out / f for f in SPILL_FIGURES}
    files["docs/figures/spillover/hybrid_spill_compare.csv"] = out / "compare.csv"
    return Block("\n".join(lines), files)


def spill_notes(workers: int) -> str:
    """The paragraph under the table: the Pareto front, the peak load, the two kinds of retry."""
    t, _ = spill_compare(workers)
    by = t.set_index("strategy")
    met = t[t["slo_met"].astype(bool)]
    missed = t[~t["slo_met"].astype(bool)]
    front = t[t["pareto_e2e"].astype(bool) | t["pareto_ttft"].astype(bool)]["strategy"].tolist()
    daily = by.loc["daily_fleet"]
    others = by.drop(index="hybrid_tier1")["api_retries"].max()
    cheaper_missed = missed[missed["total_usd"] < met["total_usd"].max()]["strategy"].tolist()
    return prose(
        f"SLO attainment counts every arrival after the warm-up; \"SLO met\" (P95 targets and 95 % attainment) decides "
        f"the Pareto front (`*` in the terminal table): {', '.join(front)}"
        + (f"; {', '.join(cheaper_missed)} cost less than a strategy on it but miss the SLO and are not on it"
           if cheaper_missed else "")
        + ". `$/M out tok` divides the whole bill by output tokens served: a strategy whose clients time out serves "
        "fewer tokens for the same bill. \"peak load\": `load_factor_peak`, the busiest 10 minutes of traffic, "
        "requests spilled to the API included, ÷ what the strategy's own nodes sustain — above 1 the nodes alone "
        f"cannot carry the incident; daily_fleet's *mean* load factor is {daily['load_factor']:.2f} over the day, "
        f"its peak {daily['load_factor_peak']:.1f}: the incident. The terminal table keeps the two kinds of "
        "retry apart: "
        "`API retries` are capsim's gateway retries to the API (`api.retries`: "
        f"{_count(by.loc['hybrid_tier1', 'api_retries'])} for hybrid_tier1, at most {_count(others)} elsewhere), "
        "`client retries` the end users' re-sent requests "
        "(`requests.retries`, in brackets here).")


def _k(v: float) -> str:
    """A large count as the prose writes it: 506k."""
    return f"{v / 1e3:,.0f}k" if v >= 10_000 else _count(v)


def spill_verdict(workers: int) -> str:
    """The paragraph that weighs the strategies: the hybrids against all-API and the peak fleet; the daily fleet."""
    t, _ = spill_compare(workers)
    by = t.set_index("strategy")
    hyb = by.loc[["hybrid_ttft@1", "hybrid_ttft@2"]]
    api, peak, daily = by.loc["all_api"], by.loc["peak_fleet"], by.loc["daily_fleet"]
    claim(bool(hyb["slo_met"].all() and api["slo_met"] and peak["slo_met"] and not daily["slo_met"]),
          "docs/spillover.md: the hybrids, all-API and the peak fleet no longer all meet the SLO (or the daily fleet "
          "does): rewrite the verdict")
    claim(bool((hyb["total_usd"] < api["total_usd"]).all()), "docs/spillover.md: a hybrid costs more than all-API")
    lo, hi = hyb["total_usd"].min(), hyb["total_usd"].max()
    served_mtok = t.set_index("strategy")["total_usd"] / t.set_index("strategy")["usd_per_mtok_output"]
    arrived = daily["arrived"]
    return prose(
        "**The guide's trade-off holds, with a smaller margin over all-API than the guide's framing suggests.** At "
        f"about equal SLO attainment ({pct(hyb['slo_attainment'].min())}–{pct(hyb['slo_attainment'].max())} against "
        f"{pct(api['slo_attainment'])}), a one- or two-node fleet with predicted-TTFT spill costs ${lo:,.0f}–{hi:,.0f} "
        f"for the day: {(1 - hi / api['total_usd']) * 100:.0f}–{(1 - lo / api['total_usd']) * 100:.0f} % less than "
        f"all-API (${api['total_usd']:,.0f}) and {peak['total_usd'] / hi:.1f}–{peak['total_usd'] / lo:.1f}× less "
        f"than a fleet sized for the viral peak (${peak['total_usd']:,.0f}, a mean load factor of "
        f"{peak['load_factor']:.2f} — idle most of the day — and paid for 24 hours). Sizing for the daily curve "
        "without spill is the cheapest bill and a catastrophe: from the incident on, clients wait 60 s, give up and "
        f"retry into the same queue — {_k(daily['client_retries'])} retry attempts on top of {_k(arrived)} requests, "
        f"{_k(daily['timed_out'])} requests ({daily['timed_out'] / arrived * 100:.0f} %) given up for good, "
        f"{pct(daily['slo_attainment'])} SLO attainment, and the $/M served output tokens "
        f"{served_mtok['all_api'] / served_mtok['daily_fleet']:.1f}× what the same bill would buy fully served, "
        "because the bill stays and the served tokens go.")


def spill_policies(workers: int) -> str:
    """The bullets on fleet size, policy and rate limits (markdown list items)."""
    t, _ = spill_compare(workers)
    by = t.set_index("strategy")
    one, two = by.loc["hybrid_ttft@1"], by.loc["hybrid_ttft@2"]
    q, b, c, tier = by.loc["hybrid_queue"], by.loc["hybrid_budget"], by.loc["hybrid_class"], by.loc["hybrid_tier1"]
    api = by.loc["all_api"]
    claim(bool(tier["api_rate_limited"] > 0 and tier["slo_attainment"] < two["slo_attainment"]),
          "docs/spillover.md: the 500-RPM account no longer hurts the hybrid: rewrite the rate-limit bullet")
    size = ("Two nodes cost more than one at the same SLO for that reason" if two["total_usd"] > one["total_usd"]
            else "Here two nodes cost less than one: the second node's hours are cheaper than the API tokens it saves")
    items = [
        "**Owned capacity is cheap only when it is busy.** A 2×H100 node costs $5/hour whether it serves or idles; "
        f"overnight at the 4× trough its cost per token rises toward the API price (hybrid_ttft@2's nodes run at "
        f"a mean "
        f"load factor of {two['load_factor']:.2f}, hybrid_ttft@1's at {one['load_factor']:.2f}). This is the guide's "
        f"\"at 30% utilisation self-hosting costs more than the hosted API\". {size} (${two['total_usd']:,.0f} against "
        f"${one['total_usd']:,.0f}).",
        "**Policy matters.** A static queue-length threshold (8 waiting) spills "
        f"{'too late' if not q['slo_met'] else 'enough here'} ({pct(q['slo_attainment'])}, P95 TTFT "
        f"{seconds(q['ttft_p95_s'])}); a rate budget {'meets the SLO but over-spills' if b['slo_met'] else 'misses'} "
        f"({_share(b['spill_request_share'])} of requests, ${b['total_usd']:,.0f} against all-API's "
        f"${api['total_usd']:,.0f}); class-based routing of long-context requests alone "
        f"{'does not protect' if not c['slo_met'] else 'protects'} the chat traffic from the incident "
        f"({pct(c['slo_attainment'])}, {_k(c['timed_out'])} requests timed out).",
        f"**Rate limits break the hybrid.** The same policy on a default-tier account (500 RPM, 1M TPM) gets "
        f"{_k(tier['api_rate_limited'])} 429s, {_k(tier['api_retries'])} retries and {_k(tier['failed'])} failed "
        f"requests (all counted, none lost): the bill looks cheaper (${tier['total_usd']:,.0f}) only because failed "
        f"requests are not served, and SLO attainment falls to {pct(tier['slo_attainment'])}. The guide: "
        "\"pre-negotiate enterprise tiers before launch\".",
    ]
    return "\n".join(textwrap.fill(i, 118, initial_indent="* ", subsequent_indent="  ", break_long_words=False,
                                    break_on_hyphens=False) for i in items)


# ---- docs/plan.md --------------------------------------------------------------------------------------------

def plan_launch(workers: int) -> str:
    """tests/test_plan_autoscale.py's 40-minute launch: the fixed fleet against its forecast variant."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_plan_autoscale import LAUNCH, _raw

    from sim.core.config import validate_scenario
    from sim.plan import plan

    raw = _raw()
    result = plan(validate_scenario(raw, "docs"), workers=1)
    rows = {(r["pricing"], r["autoscale"]): r for r in result.rows}
    fixed, var = rows[("on_demand", "fixed")], rows[("on_demand", "forecast")]
    fixed3, var3 = rows[("reserved_3y", "fixed")], rows[("reserved_3y", "forecast")]
    launch = LAUNCH["components"][0]
    claim(var["gpu_hours"] < fixed["gpu_hours"] and var3["usd_per_month"] < fixed3["usd_per_month"],
          "docs/plan.md: the launch's forecast variant no longer bills less than the fixed fleet: rewrite")
    return prose(
        f"In the tests' {raw['duration_s'] / 60:.0f}-minute launch ({raw['traffic']['rate_rps']:g} req/s, "
        f"{launch['multiplier']:g}× for {launch['duration_h'] * 60:.0f} minutes) {fixed['nodes']} "
        f"{fixed['gpu']} nodes (max {fixed['max_num_seqs']} sequences) carry the peak; the variant keeps "
        f"{var['reserved_nodes']} reserved and bills {var['gpu_hours']:.2f} GPU-hours instead of "
        f"{fixed['gpu_hours']:.2f}: ${var['usd_per_month']:,.0f} instead of ${fixed['usd_per_month']:,.0f}/month on "
        f"demand, ${var3['usd_per_month']:,.0f} instead of ${fixed3['usd_per_month']:,.0f} at 3-year reserved.")


POOL_PLAN = ["experiments/plan_pools.yaml", "--top", "3"]


@functools.cache
def pool_plan_run(workers: int) -> tuple[list[str], dict[str, Any]]:
    """``capsim plan`` on the pooled example (~5 minutes): its console lines and plan_pools.json."""
    with tempfile.TemporaryDirectory(prefix="docs_outputs_") as tmp:
        out = subprocess.run([sys.executable, "-m", "sim", "plan", *POOL_PLAN, "--out", f"{tmp}/plan", "--no-cache",
                              "--workers", str(workers)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        report = json.loads((Path(tmp) / "plan" / "plan_pools.json").read_text())
    return out.rstrip("\n").splitlines(), report


def pools_plan(workers: int) -> str:
    """``capsim plan`` on the pooled example (its console output without the files and cache lines)."""
    lines = [line for line in pool_plan_run(workers)[0] if not line.startswith(("  files", "  cache"))]
    return "```\n$ capsim plan " + " ".join(POOL_PLAN) + "\n" + "\n".join(lines) + "\n```"


def pools_plan_notes(workers: int) -> str:
    """The paragraph under the pooled plan: the fleet as configured, then each model's winner against its
    runner-up (from plan_pools.json, and one `capsim run` of the scenario as it is)."""
    from sim.plan.pool_report import KIND_LABELS, pools_text

    _, report = pool_plan_run(workers)
    s = summary(POOL_PLAN[0], [])
    tpot = s["slo"]["targets"]["tpot_p95_s"]["target"]
    models = []
    for m, rec in s["models"].items():
        pools = "; ".join(f"{n} {seconds(s['pools'][n]['latency']['tpot_s']['p95'])}" for n in rec["pools"])
        models.append(f"{m} {pct(rec['attainment'])} (P95 TPOT by pool: {pools})")
    text = [f"The fleet as configured misses (`capsim run {POOL_PLAN[0]}`): SLO attainment " + ", ".join(models)
            + f", against a P95 TPOT target of {seconds(tpot)}."]
    fp8 = True
    for rec in report["models"]:
        m, win = rec["model"], report["winners"][rec["model"]]
        claim(win is not None, f"docs/pools.md: no layout meets the SLO for {m}: rewrite the paragraph")
        fp8 = fp8 and all(d["weights"] == "fp8" for d in win["pools"])
        ranked = [r for r in report["rows"] if r["model"] == m and r["meets_slo"] and r["layout"] != win["layout"]]
        runner = min(ranked, key=lambda r: r["usd_per_month"]) if ranked else None
        part = (f"For {m} the plan buys {pools_text(win)} ({win['pricing_label']}, ${win['usd_per_month']:,.0f}/month, "
                f"SLO attainment {pct(win['slo_attainment'])})")
        if runner is not None:
            more = (runner["usd_per_month"] - win["usd_per_month"]) / win["usd_per_month"]
            part += (f"; the runner-up, {KIND_LABELS[runner['kind']]} {pools_text(runner)}, costs {more * 100:.0f} % "
                     f"more (${runner['usd_per_month']:,.0f})")
        if win["kind"] == "disaggregated":
            decode = sum(d["nodes"] for d in win["pools"] if d["role"] == "decode")
            part += (f"; split from the prefill, {decode} decode node{' holds' if decode == 1 else 's hold'} TPOT for "
                     "the whole model, as the long prompts no longer stretch its decode steps")
        if "grow" in rec["layouts"] and "no grow layout met" in rec["why_won"]:
            part += ("; keeping the pools it has (`grow`) never came below the cost of what was found (the owned "
                     "A100s' TCO is charged as in the run)")
        text.append(part + ".")
    if fp8:
        text.append("Every winner runs FP8 weights and KV.")
    return prose(" ".join(text))


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


@functools.cache
def autoscale_runs() -> list[RunOutput]:
    """The two simulated days of docs/fleet.md (each block reads them; run once)."""
    out = []
    for label, sets in FLEETS:
        out.append(run_scenario(load_scenario(ROOT / AUTOSCALE, sets)))
        print(f"{label}: done", file=sys.stderr, flush=True)
    return out


def fleet_autoscale(workers: int) -> str:
    lines = ["| fleet | GPU-hours | cost | P95 TTFT | P95 TPOT | SLO attainment | load factor (busiest 10 min) | "
             "one node sustains |", "|---|---|---|---|---|---|---|---|"]
    for (label, _), run in zip(FLEETS, autoscale_runs()):
        s = run.summary.to_json()
        u = s["utilisation"]
        lines.append(f"| {label} | {gpu_hours(s['cost'])} | ${s['cost']['total_usd']:,.2f} | "
                     f"{seconds(s['latency']['ttft_s']['p95'])} | {seconds(s['latency']['tpot_s']['p95'])} | "
                     f"{pct(s['slo']['attainment'])} | {u['load_factor']:.2f} ({u['load_factor_peak']:.2f}) | "
                     f"{u['capacity_per_node_requests_per_s']:.1f} req/s |")
    return "\n".join(lines)


def _nodes_by_hour(run: RunOutput) -> tuple[tuple[int, int], tuple[int, int]]:
    """((trough hour, nodes up then), (peak hour, nodes up then)): the times of day of the lowest and the highest
    rate of the scenario's traffic curve (its λ(t), to the nearest hour; not the noisy arrivals) and the most nodes up
    within half an hour of each."""
    from sim.traffic.arrivals import rate_curve

    sc = run.result.scenario
    t = np.arange(0.0, sc.duration_s, 60.0)
    rate = rate_curve(sc.traffic, ROOT).rate_rps(t)
    ts = run.timeseries
    out = []
    for at in (t[int(np.argmin(rate))], t[int(np.argmax(rate))]):
        near = ts[(ts["time_s"] - at).abs() <= 1800]
        out.append((round(at / 3600) % 24, int(near["nodes_up"].max())))
    return out[0], out[1]


def fleet_autoscale_prose(workers: int) -> str:
    """The paragraph under the table: the nodes the forecast autoscaler keeps up at the trough and the peak, the
    saving, and the load factors (from the same two days)."""
    fixed, auto = (r.summary.to_json() for r in autoscale_runs())
    (low_h, low_n), (high_h, high_n) = _nodes_by_hour(autoscale_runs()[1])
    saving = 1 - auto["cost"]["total_usd"] / fixed["cost"]["total_usd"]
    uf, ua = fixed["utilisation"], auto["utilisation"]
    claim(ua["capacity_per_node_requests_per_s"] > 1.5 * 6, "docs/fleet.md: `rps_per_node: 6` is no longer well "
          f"under what a node sustains ({ua['capacity_per_node_requests_per_s']:.1f} req/s): rewrite the paragraph")
    lat = (f"P95 TTFT {seconds(auto['latency']['ttft_s']['p95'])} against {seconds(fixed['latency']['ttft_s']['p95'])}"
           f", P95 TPOT {seconds(auto['latency']['tpot_s']['p95'])} against "
           f"{seconds(fixed['latency']['tpot_s']['p95'])}")
    return prose(
        f"The forecast autoscaler follows the curve ({low_n} node{'s' if low_n != 1 else ''} up at the "
        f"{low_h:02d}:00 trough, {high_n} at the "
        f"{high_h:02d}:00 peak) and costs {saving * 100:.0f} % less ({lat}; SLO attainment "
        f"{pct(auto['slo']['attainment'])} against {pct(fixed['slo']['attainment'])}). At these rates even the "
        f"autoscaled fleet is lightly loaded — load factor {ua['load_factor']:.2f} of what its nodes sustain, "
        f"{ua['load_factor_peak']:.2f} in the busiest 10 minutes ({uf['load_factor']:.2f} and "
        f"{uf['load_factor_peak']:.2f} for the 5 reserved nodes) — because `rps_per_node: 6` is well under the "
        f"{ua['capacity_per_node_requests_per_s']:.1f} req/s a node sustains for this mix at saturation (an upper "
        "bound: fleets usually miss a latency SLO at a load factor of 0.8–0.9); `capsim size` on this scenario gives "
        "the per-node goodput to use instead.")


# doc (docs/DOC.md; readme: README.md) -> [(block name, function(workers) -> markdown)]
CASES: dict[str, list[tuple[str, Callable[[int], str | Block]]]] = {
    "readme": [("make-run", readme_run), ("plan", readme_plan)],
    "moe": [("profile", moe_profile), ("layouts", moe_layouts)],
    "speculative": [("published", spec_published), ("batch1", spec_batch1), ("shrink", spec_shrink),
                    ("table", spec_table)],
    "pools": [("speeds", pools_speeds), ("routing", pools_routing), ("big-pool", pools_big), ("size", pools_size),
              ("big-a100", pools_big_a100), ("plan", pools_plan), ("plan-notes", pools_plan_notes)],
    "plan": [("launch", plan_launch)],
    "spillover": [("compare", spill_table), ("notes", spill_notes), ("verdict", spill_verdict),
                  ("policies", spill_policies)],
    "fleet": [("autoscale", fleet_autoscale), ("autoscale-prose", fleet_autoscale_prose)],
    "disaggregation": [("serving", disagg_serving), ("split", disagg_split)],
}


@dataclass(frozen=True)
class Block:
    """A generated block and the files that go with it (doc-relative path -> the file to copy there on --write)."""

    text: str
    files: dict[str, Path]


def doc_path(doc_name: str) -> Path:
    return ROOT / "README.md" if doc_name == "readme" else ROOT / "docs" / f"{doc_name}.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated blocks of the docs")
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="only this doc (repeatable)")
    ap.add_argument("--block", action="append", metavar="NAME",
                    help="only the block of this name (repeatable; with --only, e.g. --only fleet --block autoscale)")
    ap.add_argument("--workers", type=int, default=2, help="processes per capsim sweep (default 2)")
    args = ap.parse_args(argv)
    docs = args.only or list(CASES)
    if args.block:
        known = {name for d in docs for name, _ in CASES[d]}
        if unknown := sorted(set(args.block) - known):
            print(f"--block: no block {unknown[0]!r} in {', '.join(docs)} (blocks: {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 2
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
            if args.block and name not in args.block:
                continue
            made = make(args.workers)
            block, files = (made.text, made.files) if isinstance(made, Block) else (made, {})
            print(f"### {path.relative_to(ROOT)} {name}\n\n{block}\n", flush=True)
            if args.write:
                for dst, src in files.items():
                    atomic_write(ROOT / dst, lambda tmp, f=src: shutil.copyfile(f, tmp))
                    print(f"wrote {dst}", file=sys.stderr)
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
