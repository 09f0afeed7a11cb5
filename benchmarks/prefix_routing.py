"""Routers on the Mooncake conversation trace (and a synthetic multi-turn chat): prefix-cache hit ratio, TTFT and
load balance, with and without stale node state. Writes docs/figures/prefix_cache/{routers,capacity}.csv and the
figures; ``--write`` also rewrites docs/prefix-cache.md's tables (the ``<!-- generated: benchmarks/prefix_routing.py
NAME -->`` blocks, benchmarks/doc_blocks.py) from those CSV files. The prose around the tables quotes them: reread it
after a rewrite.

    .venv/bin/python benchmarks/prefix_routing.py [--write] [--workers N]   # 58 one-hour runs: ~10 min on 2 idle
                                                                            # cores, ~30 on busy ones
    .venv/bin/python benchmarks/prefix_routing.py --replot [--write]        # figures (and tables) from the CSV files
    .venv/bin/python benchmarks/prefix_routing.py --quick    # 10 simulated minutes instead of the hour (quick/)

Setup (docs/prefix-cache.md): Llama-3.1-8B, BF16, one H100-SXM per node, vLLM-style engine with prefix caching
(256-token units), the trace replayed at its own timestamps (3.4 req/s, 12k-token prompts on average).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.doc_blocks import replace_block  # noqa: E402
from benchmarks.doc_format import pct, seconds  # noqa: E402
from sim.core.atomic_io import write_text  # noqa: E402
from sim.core.config import validate_scenario  # noqa: E402
from sim.metrics.access import metric  # noqa: E402
from sim.metrics.tables import summarize  # noqa: E402
from sim.runner.simulation import simulate  # noqa: E402

OUT = ROOT / "docs" / "figures" / "prefix_cache"
DOC = ROOT / "docs" / "prefix-cache.md"
SCRIPT = "prefix_routing.py"
INFINITE_CACHE_HIT = 0.374  # data/traces/README.md: the whole trace through one infinite cache
ROUTERS = ["round_robin", "power_of_two", "least_work", "session_affinity", "prefix_aware"]
STALENESS_S = [0.0, 2.0, 10.0, 30.0]


CAPACITY_MTOK = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]  # per-node prefix-cache what-if (HBM holds ~0.45 M tokens)


def mooncake(duration_s: float, nodes: int, caching: bool, router: dict[str, Any],
             capacity_mtok: float | None = None) -> dict[str, Any]:
    engine: dict[str, Any] = {"prefix_caching": caching}
    if capacity_mtok is not None:
        engine["num_gpu_blocks_override"] = int(capacity_mtok * 1e6) // 16
    return {
        "name": "mooncake-conversation", "duration_s": duration_s, "seed": 1, "warmup_s": 60, "max_drain_s": 600,
        "traffic": {"trace": {"file": str(ROOT / "data/traces/mooncake_conversation.jsonl"), "prefix_hits": "none"},
                    "classes": [{"name": "conversation", "share": 1.0}]},
        "fleet": {"nodes": nodes, "gpu": "H100-SXM", "model": "Llama-3.1-8B", "engine": engine},
        "router": router,
        "slo": {"ttft_p95_s": 2.0, "tpot_p95_s": 0.1},
    }


def synthetic(duration_s: float, nodes: int, caching: bool, router: dict[str, Any]) -> dict[str, Any]:
    """Multi-turn chat with 20 tenants' system prompts and Zipf-popular documents (sessions known to the router)."""
    return {
        "name": "synthetic-multiturn", "duration_s": duration_s, "seed": 1, "warmup_s": 60, "max_drain_s": 600,
        "traffic": {"rate_rps": 12.0, "classes": [{
            "name": "chat", "share": 1.0,
            "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1500, "max": 8000},
            "output_tokens": {"dist": "lognormal", "median": 250, "p95": 800, "max": 2000},
            "prefix": {"system_prompt": {"count": 20, "tokens": {"dist": "lognormal", "median": 1500, "p95": 4000},
                                         "zipf_s": 1.0},
                       "documents": {"count": 2000, "tokens": {"dist": "lognormal", "median": 3000, "p95": 8000},
                                     "zipf_s": 1.1},
                       "conversation": {"turns_mean": 6, "think_time_s": 20, "max_context_tokens": 60000}}}]},
        "fleet": {"nodes": nodes, "gpu": "H100-SXM", "model": "Llama-3.1-8B",
                  "engine": {"prefix_caching": caching}},
        "router": router,
        "slo": {"ttft_p95_s": 2.0, "tpot_p95_s": 0.1},
    }


def run(raw: dict[str, Any]) -> dict[str, Any]:
    sc = validate_scenario(raw, "prefix_routing")
    t0 = time.perf_counter()
    s = summarize(simulate(sc))
    names = ["prefix_cache.hit_token_ratio", "fleet.kv_capacity_tokens_per_node", "latency.ttft_s.p50",
             "latency.ttft_s.p95", "latency.e2e_s.p95", "routing.node_work_max_over_mean", "routing.node_work_cv",
             "slo.attainment", "requests.completed", "utilisation.load_factor"]
    row = {n: metric(s, n) for n in names}
    row["wall_s"] = time.perf_counter() - t0
    return row


def _job(job: tuple[str, float, int, bool, dict[str, Any], float | None]) -> dict[str, Any]:
    """One run of the grid (a top-level function: worker processes pickle it)."""
    workload, dur, nodes, caching, router, mtok = job
    raw = (mooncake(dur, nodes, caching, router, mtok) if workload == "mooncake"
           else synthetic(dur, nodes, caching, router))
    return run(raw)


def grid(dur: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs of the routers table and of the capacity table, as (job, labels) records."""
    routers, capacity = [], []
    for workload, nodes in (("mooncake", 6), ("synthetic", 6)):
        for caching in (False, True):
            for policy in ROUTERS:
                for stale in (STALENESS_S if caching else [0.0]):
                    if policy == "round_robin" and stale > 0:
                        continue  # reads no state
                    routers.append({"job": (workload, dur, nodes, caching, {"policy": policy, "staleness_s": stale},
                                            None),
                                    "labels": {"workload": workload, "nodes": nodes, "prefix_caching": caching,
                                               "router": policy, "staleness_s": stale}})
    for policy in ("least_work", "prefix_aware"):
        for mtok in CAPACITY_MTOK:
            capacity.append({"job": ("mooncake", dur, 6, True, {"policy": policy}, mtok),
                             "labels": {"router": policy, "capacity_mtok": mtok}})
    return routers, capacity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw the figures from the CSV files")
    ap.add_argument("--write", action="store_true", help="rewrite docs/prefix-cache.md's tables from the CSV files")
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel (default 1)")
    args = ap.parse_args()
    out = OUT if not args.quick else OUT / "quick"
    if not args.replot:
        routers, capacity = grid(600.0 if args.quick else 3600.0)
        todo = routers + capacity
        with ProcessPoolExecutor(args.workers) if args.workers > 1 else _Serial() as pool:
            results = list(pool.map(_job, [t["job"] for t in todo]))
        for t, row in zip(todo, results):
            row.update(t["labels"])
            print(" ".join(f"{k}={v}" for k, v in t["labels"].items()),
                  f"hit={row['prefix_cache.hit_token_ratio'] or 0:.3f} ttft p50={row['latency.ttft_s.p50']:.2f} "
                  f"p95={row['latency.ttft_s.p95']:.2f} imb={row['routing.node_work_max_over_mean']:.2f} "
                  f"({row['wall_s']:.1f}s)", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(results[:len(routers)]).to_csv(out / "routers.csv", index=False, float_format="%.4g")
        pd.DataFrame(results[len(routers):]).to_csv(out / "capacity.csv", index=False, float_format="%.4g")
    df, cap = pd.read_csv(out / "routers.csv"), pd.read_csv(out / "capacity.csv")
    plot(df, out)
    plot_capacity(cap, out, hbm_tokens(df))
    blocks = doc_tables(df, cap)
    for name, block in blocks.items():
        print(f"### {name}\n\n{block}\n")
    if args.write:
        doc = DOC.read_text()
        for name, block in blocks.items():
            doc = replace_block(doc, SCRIPT, name, block)
        write_text(DOC, doc)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


class _Serial:
    """``map`` in this process (one worker: no pool, plain tracebacks)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, items: list[Any]) -> Any:
        return map(fn, items)


def hbm_tokens(df: pd.DataFrame) -> float:
    """KV capacity per node of the runs without an override (the HBM's)."""
    return float(df["fleet.kv_capacity_tokens_per_node"].iloc[0])


def plot_capacity(cap: pd.DataFrame, out: Path, hbm_tok: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in ("least_work", "prefix_aware"):
        g = cap[cap["router"] == r].sort_values("capacity_mtok")
        ax.plot(g["capacity_mtok"], g["prefix_cache.hit_token_ratio"], marker="o", label=LABEL[r])
    hbm = hbm_tok / 1e6
    ax.axhline(INFINITE_CACHE_HIT, color="black", ls="--", lw=1, label="one infinite cache (trace bound)")
    ax.axvline(hbm, color="gray", ls=":", lw=1, label=f"KV in one H100's HBM ({hbm:.2f} M tokens)")
    ax.set_xscale("log")
    ax.set_xlabel("prefix-cache capacity per node (M tokens, log scale)")
    ax.set_ylabel("prompt tokens served from the cache")
    ax.set_ylim(0, 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Mooncake conversation trace, 6 nodes: hit ratio vs cache size")
    fig.tight_layout()
    fig.savefig(out / "mooncake_capacity.png", dpi=110)
    plt.close(fig)


def ttft(value_s: float) -> str:
    """A TTFT with two decimals between 1 and 10 s (the routers differ by tenths there), else as the docs write it."""
    return f"{value_s:.2f} s" if 1 <= round(value_s, 2) < 10 else seconds(value_s)


def attain(share: float) -> str:
    """SLO attainment with two decimals (99.95 % is not 100 %)."""
    return f"{share * 100:.2f} %"


def _on_off(on: pd.Series, off: pd.Series | None, col: str, fmt: Any) -> str:
    """``on / off`` of one column for one router (caching on, caching off)."""
    a = fmt(float(on[col]))
    return a if off is None else f"{a} / {fmt(float(off[col]))}"


def _row(frame: pd.DataFrame, router: str, stale: float = 0.0) -> pd.Series | None:
    got = frame[(frame["router"] == router) & (frame["staleness_s"] == stale)]
    return None if got.empty else got.iloc[0]


def routers_table(df: pd.DataFrame, workload: str) -> str:
    """One workload's routers at exact state, prefix caching on / off."""
    d = df[df["workload"] == workload]
    on, off = d[d["prefix_caching"]], d[~d["prefix_caching"]]
    lines = ["| router | prompt tokens from the cache | P50 TTFT, caching on / off | P95 TTFT, on / off | "
             "SLO attainment, on / off | busiest node's work ÷ mean, on | load factor, on / off |",
             "|---|---|---|---|---|---|---|"]
    for r in ROUTERS:
        a, b = _row(on, r), _row(off, r)
        assert a is not None
        lines.append(f"| {LABEL[r]} | {pct(a['prefix_cache.hit_token_ratio'])} | "
                     f"{_on_off(a, b, 'latency.ttft_s.p50', ttft)} | "
                     f"{_on_off(a, b, 'latency.ttft_s.p95', ttft)} | {_on_off(a, b, 'slo.attainment', attain)} | "
                     f"{a['routing.node_work_max_over_mean']:.2f} | "
                     f"{_on_off(a, b, 'utilisation.load_factor', lambda v: f'{v:.2f}')} |")
    return "\n".join(lines)


def staleness_table(df: pd.DataFrame, workload: str) -> str:
    """One workload's state-reading routers (caching on) as node state gets older: hit ratio · P50 · P95 TTFT."""
    d = df[(df["workload"] == workload) & df["prefix_caching"]]
    readers = ROUTERS[1:]
    lines = ["| node state sampled every | " + " | ".join(LABEL[r] for r in readers) + " |",
             "|---|" + "---|" * len(readers)]
    for stale in STALENESS_S:
        cells = []
        for r in readers:
            x = _row(d, r, stale)
            cells.append("–" if x is None else f"{pct(x['prefix_cache.hit_token_ratio'])} · "
                         f"{ttft(x['latency.ttft_s.p50'])} · {ttft(x['latency.ttft_s.p95'])}")
        lines.append(f"| {'exact (0 s)' if stale == 0 else f'{stale:g} s'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def capacity_table(cap: pd.DataFrame, hbm_tok: float) -> str:
    """Hit ratio, P95 TTFT and SLO attainment against the per-node cache size (Mooncake, 6 nodes)."""
    routers = ["least_work", "prefix_aware"]
    lines = ["| prefix cache per node | " + " | ".join(f"{LABEL[r]}: hit ratio · P95 TTFT · SLO attainment"
                                                       for r in routers) + " |", "|---|---|---|"]
    for mtok in CAPACITY_MTOK:
        cells = []
        for r in routers:
            x = cap[(cap["router"] == r) & (cap["capacity_mtok"] == mtok)].iloc[0]
            cells.append(f"{pct(x['prefix_cache.hit_token_ratio'])} · {ttft(x['latency.ttft_s.p95'])} · "
                         f"{attain(x['slo.attainment'])}")
        lines.append(f"| {mtok:g} M tokens | " + " | ".join(cells) + " |")
    lines.append(f"| (one infinite cache: the trace's bound; one H100's HBM holds {hbm_tok / 1e6:.2f} M tokens) | "
                 f"{pct(INFINITE_CACHE_HIT)} | {pct(INFINITE_CACHE_HIT)} |")
    return "\n".join(lines)


def doc_tables(df: pd.DataFrame, cap: pd.DataFrame) -> dict[str, str]:
    """docs/prefix-cache.md's generated blocks, by name."""
    return {"mooncake-routers": routers_table(df, "mooncake"), "mooncake-staleness": staleness_table(df, "mooncake"),
            "mooncake-capacity": capacity_table(cap, hbm_tokens(df)),
            "synthetic-routers": routers_table(df, "synthetic"),
            "synthetic-staleness": staleness_table(df, "synthetic")}


LABEL = {"round_robin": "round robin", "power_of_two": "power of two", "least_work": "least work",
         "session_affinity": "session affinity", "prefix_aware": "prefix-aware"}


def plot(df: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for workload in df["workload"].unique():
        d = df[(df["workload"] == workload) & (df["staleness_s"] == 0.0)]
        on, off = d[d["prefix_caching"]], d[~d["prefix_caching"]]
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        x = range(len(ROUTERS))
        labels = [LABEL[r] for r in ROUTERS]
        get = lambda frame, col: [float(frame[frame["router"] == r][col].iloc[0]) for r in ROUTERS]
        axes[0].bar(x, get(on, "prefix_cache.hit_token_ratio"), color="tab:blue")
        axes[0].set_ylabel("prompt tokens served from the prefix cache")
        axes[0].set_title("prefix-cache hit ratio")
        w = 0.38
        axes[1].bar([i - w / 2 for i in x], get(off, "latency.ttft_s.p95"), w, label="prefix caching off",
                    color="tab:gray")
        axes[1].bar([i + w / 2 for i in x], get(on, "latency.ttft_s.p95"), w, label="prefix caching on",
                    color="tab:blue")
        axes[1].set_yscale("log")
        top = max(get(off, "latency.ttft_s.p95") + get(on, "latency.ttft_s.p95"))
        axes[1].set_ylim(top=top * 60)  # room for the legend above the bars
        axes[1].set_ylabel("P95 TTFT (s, log scale)")
        axes[1].set_title("P95 time to first token")
        axes[1].legend(loc="upper right", fontsize=8, ncol=2)
        axes[2].bar(x, get(on, "routing.node_work_max_over_mean"), color="tab:orange")
        axes[2].axhline(1.0, color="black", lw=0.8)
        axes[2].set_ylim(bottom=0.95)
        axes[2].set_ylabel("busiest node's work ÷ mean")
        axes[2].set_title("load balance (prefix caching on)")
        for ax in axes:
            ax.set_xticks(list(x))
            ax.set_xticklabels(labels, rotation=25, ha="right")
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{workload}: routers at exact node state ({int(d['nodes'].iloc[0])} × H100, Llama-3.1-8B)")
        fig.tight_layout()
        fig.savefig(out / f"{workload}_routers.png", dpi=110)
        plt.close(fig)

        s = df[(df["workload"] == workload) & df["prefix_caching"] & (df["router"] != "round_robin")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for r in ROUTERS[1:]:
            g = s[s["router"] == r].sort_values("staleness_s")
            axes[0].plot(g["staleness_s"], g["prefix_cache.hit_token_ratio"], marker="o", label=LABEL[r])
            axes[1].plot(g["staleness_s"], g["latency.ttft_s.p95"], marker="o", label=LABEL[r])
        axes[0].set_ylabel("prefix-cache hit ratio")
        axes[1].set_ylabel("P95 TTFT (s, log scale)")
        axes[1].set_yscale("log")
        lo, hi = float(s["latency.ttft_s.p95"].min()), float(s["latency.ttft_s.p95"].max())
        axes[1].set_ylim(lo / 1.5, hi * 40)  # room for the legend above the lines
        for ax in axes:
            ax.set_xlabel("router staleness: node state sampled every … s")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8, loc="upper center", ncol=2)
        fig.suptitle(f"{workload}: stale node state (routers add their own dispatches between samples)")
        fig.tight_layout()
        fig.savefig(out / f"{workload}_staleness.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
