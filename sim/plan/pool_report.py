"""What ``capsim plan`` writes for a fleet with ``fleet.pools`` (:mod:`sim.plan.pools`): per model the ranked layouts
(each pool's GPU × nodes × GPUs per node × precision), why the winner won and why the others lost, the winning
fleet as a scenario, a cost-against-latency plot and a self-contained HTML report.

Files: ``plan_pools.json`` (everything), ``plan_pools.csv`` (every priced row), ``plan_pools.txt`` (the console
report), ``winner.yaml`` (every model's winning layout at its way to pay: ``capsim run`` reproduces the first seed),
``pool_plan.png`` and ``plan.html``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from sim.plan.pool_space import ModelDemand
from sim.plan.pools import PoolPlanResult, combined_scenario

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_LABELS = {"grow": "grow", "single": "one pool", "disaggregated": "prefill/decode"}


# --- labels ---------------------------------------------------------------------------------------------------
def pools_text(row: dict[str, Any]) -> str:
    """Each pool of a row: ``4× H100-SXM ×1 bf16 prefill + 2× A100-SXM-80GB ×1 bf16 decode`` (kept pools of a
    ``grow`` layout marked)."""
    parts = []
    for d in row["pools"]:
        prec = d["weights"] if d["weights"] == d["kv_cache"] else f"{d['weights']}/{d['kv_cache']}"
        role = "" if d["role"] == "mixed" else f" {d['role']}"
        parts.append(f"{d['nodes']}× {d['gpu']} ×{d['gpus_per_node']} {prec}{role}"
                     + ("" if d["sized"] else " (kept)"))
    return " + ".join(parts) or row["layout"]


def plot_label(row: dict[str, Any]) -> str:
    """A short label of a row's pools for the plot: ``4×H100 P + 5×A100 D`` (kept pools marked ``kept``)."""
    parts = []
    for d in row["pools"]:
        gpu = d["gpu"].split("-")[0]
        tp = f"x{d['gpus_per_node']}" if d["gpus_per_node"] > 1 else ""
        role = {"prefill": " P", "decode": " D"}.get(d["role"], "")
        parts.append(f"{d['nodes']}×{gpu}{tp} {d['weights']}{role}" + ("" if d["sized"] else " kept"))
    return " + ".join(parts)


def _slo_text(res: PoolPlanResult) -> str:
    slo = res.scenario.slo
    return ", ".join(f"{k.replace('_p95_s', '').upper()} P95 ≤ {getattr(slo, k):g} s"
                     for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s") if getattr(slo, k) is not None)


def _misses(row: dict[str, Any]) -> str:
    return f"{row['slo_misses']:,.0f} of {row['arrived']:,.0f}"


# --- why ------------------------------------------------------------------------------------------------------
def why_won(res: PoolPlanResult, model: str) -> str:
    """Why the model's winner won: the runner-up's and each other kind's best figure against it, or why no layout
    met the SLO."""
    win = res.winners()[model]
    ranked = [r for r in res.ranked(model) if r["meets_slo"]]
    if win is None:
        return "no layout meets the SLO (why: the table of the others below)"
    best_by_layout: dict[str, dict[str, Any]] = {}
    for r in ranked:
        best_by_layout.setdefault(r["layout"], r)
    parts = [f"cheapest of {len(best_by_layout)} layout(s) meeting the SLO in every seed"]
    others = [r for lbl, r in best_by_layout.items() if lbl != win["layout"]]
    if others:
        r = others[0]
        d = r["usd_per_month"] - win["usd_per_month"]
        parts.append(f"runner-up {KIND_LABELS[r['kind']]} {pools_text(r)} ({r['pricing_label']}) "
                     f"${r['usd_per_month']:,.0f}/month, +${d:,.0f} (+{100 * d / win['usd_per_month']:.0f} %)")
    for kind in res.kinds[model]:
        if kind == win["kind"]:
            continue
        best = next((r for r in ranked if r["kind"] == kind), None)
        if best is not None and (not others or best is not others[0]):
            d = best["usd_per_month"] - win["usd_per_month"]
            parts.append(f"best {KIND_LABELS[kind]}: {pools_text(best)} ${best['usd_per_month']:,.0f}/month "
                         f"(+{100 * d / win['usd_per_month']:.0f} %)")
        elif best is None:
            parts.append(f"no {KIND_LABELS[kind]} layout met the SLO below the cost of those found")
    return "; ".join(parts)


def why_not(res: PoolPlanResult) -> list[dict[str, Any]]:
    """Every layout that did not win, per model: dearer (by how much), infeasible or not met, skipped by the cost
    bound, left out of the short list, or excluded before simulation."""
    wins = res.winners()
    out: list[dict[str, Any]] = []
    for sz in res.sized:
        lay, win = sz.layout, wins[sz.layout.model]
        if win is not None and lay.label == win["layout"]:
            continue
        rows = [r for r in res.ranked(lay.model) if r["layout"] == lay.label and r["meets_slo"]]
        if rows and win is not None:
            r = rows[0]
            d = r["usd_per_month"] - win["usd_per_month"]
            reason = (f"{pools_text(r)} ({r['pricing_label']}): ${r['usd_per_month']:,.0f}/month, "
                      f"${d:,.0f} (+{100 * d / win['usd_per_month']:.0f} %) more")
            if abs(d) < 0.005:
                reason = f"{pools_text(r)}: same cost, lower SLO attainment ({100 * r['slo_attainment']:.2f} %)"
        else:
            reason = sz.why or "simulated"
        if sz.infeasible:
            reason += "; infeasible splits: " + " | ".join(sz.infeasible)
        out.append({"model": lay.model, "layout": lay.label, "stage": "simulated", "reason": reason,
                    "usd_per_month": rows[0]["usd_per_month"] if rows else None})
    for lay, bound, thr in res.skipped:
        out.append({"model": lay.model, "layout": lay.label, "stage": "cost bound",
                    "reason": f"at least ${bound:,.0f}/month ≥ ${thr:,.0f}/month already found",
                    "usd_per_month": bound})
    for lay, why in res.left_out:
        out.append({"model": lay.model, "layout": lay.label, "stage": "short list", "reason": why,
                    "usd_per_month": lay.lower_bound_usd_per_month})
    for model, lays in res.layouts.items():
        for lay in lays:
            if lay.excluded is not None:
                out.append({"model": model, "layout": lay.label, "stage": "excluded", "reason": lay.excluded,
                            "usd_per_month": None})
    return out


# --- text -----------------------------------------------------------------------------------------------------
def format_text(res: PoolPlanResult) -> str:
    """The console report: per model the searched space, the ranked rows (top ``plan.top_n``), the winner and why."""
    sc = res.scenario
    lines = [f"capsim plan · {sc.name} · pools: the cheapest layout per model (other models' pools as given) · "
             f"SLO {_slo_text(res)}"]
    for d in res.demands:
        lays = res.layouts[d.model]
        n_sized = sum(s.layout.model == d.model for s in res.sized)
        n_skip = sum(lay.model == d.model for lay, _, _ in res.skipped)
        n_out = sum(lay.model == d.model for lay, _ in res.left_out)
        lines.append(f"  {d.model}: classes {', '.join(d.classes)}; {d.mean_rps:.2f} req/s mean, {d.peak_rps:.2f} "
                     f"peak (10-min); {d.mix.mean_prompt:,.0f} in / {d.mix.mean_output:,.0f} out tokens")
        kinds = ", ".join(KIND_LABELS[k] for k in res.kinds[d.model])
        lines.append(f"  searched   {len(lays) + n_out} layout(s) ({kinds}): "
                     f"{sum(lay.excluded is not None for lay in lays)} excluded, {n_out} off the short list, "
                     f"{n_skip} skipped by the cost bound, {n_sized} simulated")
        rows = [r for r in res.ranked(d.model) if r["meets_slo"]][:res.spec.top_n]
        texts = [pools_text(r) for r in rows]
        w_pools = max([8] + [len(t) + 1 for t in texts])
        w_price = max([24] + [len(r["pricing_label"]) + 1 for r in rows])
        header = (f"   {'#':>2} {'layout':<15}{'pools':<{w_pools}}"
                  f"{'pricing':<{w_price}}{'$/month':>10}{'$/M out':>9}{'SLO att.':>9}{'misses':>16}"
                  f"{'TTFT95':>8}{'TPOT95':>8}")
        lines += [header, "  " + "─" * (len(header) - 2)]
        for i, (r, t) in enumerate(zip(rows, texts)):  # pools: nodes× GPU ×GPUs per node precision [role]
            lines.append(
                f"   {i + 1:>2} {KIND_LABELS[r['kind']]:<15}{t:<{w_pools}}{r['pricing_label']:<{w_price}}"
                f"{r['usd_per_month']:>10,.0f}{_num(r['usd_per_mtok_output'], 9, '.2f')}"
                f"{100 * r['slo_attainment']:>8.2f}%{_misses(r):>16}"
                f"{_ms(r['ttft_p95_s']):>8}{_ms(r['tpot_p95_s'], 1):>8}")
        win = res.winners()[d.model]
        if win is None:
            lines.append(f"  buy        {d.model}: no layout meets the SLO")
        else:
            lines.append(f"  buy        {d.model}: {pools_text(win)}, {win['pricing_label']}: "
                         f"${win['usd_per_month']:,.0f}/month, {_usd_mtok(win)}, SLO attainment "
                         f"{100 * win['slo_attainment']:.2f} % ({_misses(win)} arrivals missed)")
        lines.append(f"  why        {why_won(res, d.model)}")
        lines.append("")
    wins = res.winners()
    if all(w is not None for w in wins.values()):
        total = sum(w["usd_per_month"] for w in wins.values() if w is not None)
        lines.append(f"  fleet      ${total:,.0f}/month for every model's pools at the winners' ways to pay "
                     f"(winner.yaml)")
    if res.combined:
        ok = all(c["seeds_met"] == c["seeds"] for c in res.combined.values())
        lines.append("  check      the winners together, one fleet: " + "; ".join(
            f"{m} SLO met in {c['seeds_met']}/{c['seeds']} seed(s), attainment {100 * c['attainment']:.2f} %"
            for m, c in res.combined.items()) + ("" if ok else " — a model misses beside the others' new pools"))
    lines.append(f"  runs       {res.runs_computed} simulated, {res.runs_reused} cached; {len(res.seeds)} seed(s); "
                 f"{res.elapsed_s:,.0f} s wall")
    return "\n".join(lines)


def _num(v: float | None, width: int, fmt: str) -> str:
    return f"{'–':>{width}}" if v is None else f"{v:>{width}{fmt}}"


def _ms(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{1000 * v:.{digits}f}ms"


def _usd_mtok(r: dict[str, Any]) -> str:
    v = r["usd_per_mtok_output"]
    return "–" if v is None else f"${v:.2f}/M output tokens"


def to_json(res: PoolPlanResult) -> dict[str, Any]:
    """Everything: demand per model, the spec, every row ranked, the winners, why each won and why the others lost."""
    from sim.metrics.tables import _clean

    return _clean({
        "scenario": res.scenario.name, "source": res.scenario.source, "slo": res.scenario.slo.model_dump(),
        "plan": res.spec.model_dump(), "seeds": res.seeds,
        "models": [{"model": d.model, "classes": d.classes, "share": d.share, "mean_rps": d.mean_rps,
                    "peak_rps": d.peak_rps, "mean_input_tokens": d.mix.mean_prompt,
                    "mean_output_tokens": d.mix.mean_output, "layouts": res.kinds[d.model],
                    "why_won": why_won(res, d.model)} for d in res.demands],
        "winners": res.winners(), "combined_check": res.combined, "rows": res.ranked(), "why_not": why_not(res),
        "runs_computed": res.runs_computed, "runs_cached": res.runs_reused, "elapsed_s": res.elapsed_s,
    })


def rows_table(res: PoolPlanResult) -> pd.DataFrame:
    """Every priced row, one per layout and way to pay (the pools as one text column)."""
    rows = [{"rank": i + 1, **{k: v for k, v in r.items() if k != "pools"}, "pools": pools_text(r)}
            for i, r in enumerate(res.ranked())]
    return pd.DataFrame(rows)


# --- the winner as a scenario ---------------------------------------------------------------------------------
def winner_scenario(res: PoolPlanResult) -> dict[str, Any] | None:
    """The planned scenario with every model's winning layout at its node counts and way to pay (reserved rentals
    as their discounted hourly price), or None when a model has no winner."""
    sc = combined_scenario(res)
    if sc is None:
        return None
    wins = res.winners()
    raw = sc.model_dump(mode="json", exclude={"plan"})
    raw["name"] = f"{res.scenario.name}-plan"
    raw["description"] = "capsim plan winner for " + res.scenario.name + ": " + "; ".join(
        f"{m}: {pools_text(w)}, {w['pricing_label']}" for m, w in wins.items() if w is not None)
    from sim.plan.report import state_demand

    state_demand(raw, res.scenario.demand)
    return raw


def winner_yaml(res: PoolPlanResult) -> str | None:
    raw = winner_scenario(res)
    if raw is None:
        return None
    head = (f"# Written by `capsim plan` ({res.scenario.source}): every model's cheapest layout of pools meeting the "
            "SLO.\n# `capsim run` on this file reproduces the plan's first-seed run of the winning layouts together "
            "(the plan's\n# 'check' line); each model was sized beside the other models' pools as given.\n")
    return head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


# --- plot -----------------------------------------------------------------------------------------------------
def plot_layouts(res: PoolPlanResult) -> Figure:
    """Per model, $/month (cheapest way to pay) of each simulated layout meeting the SLO against its model's P95 TTFT
    and TPOT, by kind, the SLO targets as vertical lines and the winner ringed. Points carry their rank (1: the
    winner); the ranks are spelled out in a legend beside each model's panels, so no label covers a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = [d.model for d in res.demands]
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.8 * len(models) + 0.6), squeeze=False,
                             constrained_layout=True, gridspec_kw={"width_ratios": [1, 1, 0.62]})
    colors = {"grow": "C0", "single": "C1", "disaggregated": "C2"}
    wins = res.winners()
    for row_axes, model in zip(axes, models):
        best: dict[str, dict[str, Any]] = {}
        for r in res.ranked(model):
            if r["meets_slo"]:
                best.setdefault(r["layout"], r)
        rows = sorted(best.values(), key=lambda r: r["usd_per_month"])
        for ax, key, target, name in ((row_axes[0], "ttft_p95_s", res.scenario.slo.ttft_p95_s, "P95 TTFT"),
                                      (row_axes[1], "tpot_p95_s", res.scenario.slo.tpot_p95_s, "P95 TPOT")):
            stack: dict[int, int] = {}  # ranks of points at about the same place are stacked, not overlapped
            y_top = max([r["usd_per_month"] for r in rows] + [1.0]) * 1.3
            xs = [1000 * r[key] for r in rows if r[key] is not None] + [1000 * (target or 0)]
            x_top = max(xs) * 1.3 if max(xs) > 0 else 1.0
            for kind in colors:
                pts = [r for r in rows if r["kind"] == kind and r[key] is not None]
                if pts:
                    ax.scatter([1000 * r[key] for r in pts], [r["usd_per_month"] for r in pts], s=40,
                               color=colors[kind], label=KIND_LABELS[kind], zorder=3)
            w = wins[model]
            for i, r in enumerate(rows):
                if r[key] is None:
                    continue
                if w is not None and r["layout"] == w["layout"]:
                    ax.scatter([1000 * r[key]], [r["usd_per_month"]], s=160, facecolors="none", edgecolors="k",
                               linewidths=1.5, zorder=4, label="winner")
                cell = (round(1000 * r[key] / (0.05 * x_top)), round(r["usd_per_month"] / (0.06 * y_top)))
                k = stack.get(hash(cell), 0)
                stack[hash(cell)] = k + 1
                ax.annotate(str(i + 1), (1000 * r[key], r["usd_per_month"]), textcoords="offset points",
                            xytext=(7 + 9 * k, 4), fontsize=8, fontweight="bold" if i == 0 else "normal")
            if target is not None:
                ax.axvline(1000 * target, color="C3", ls="--", lw=1.2, label=f"SLO {name} ≤ {1000 * target:g} ms")
            ax.set_xlim(0, x_top)
            ax.set_ylim(0, y_top)
            ax.set_xlabel(f"{model}: {name} (ms, mean over seeds)")
            ax.set_ylabel("USD per month (cheapest way to pay)")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=7)
        keys = [Line2D([], [], ls="none", marker=f"${i + 1}$", color=colors[r["kind"]], markersize=7 + 2 * (i > 8))
                for i, r in enumerate(rows)]
        row_axes[2].axis("off")  # the ranks spelled out: pools and $/month at the cheapest way to pay
        row_axes[2].legend(keys, [f"{plot_label(r)}: ${r['usd_per_month']:,.0f}/month" for r in rows],
                           loc="center left", fontsize=7, title=f"{model}: rank, pools", title_fontsize=8,
                           frameon=False)
    fig.suptitle("Layouts meeting the SLO: cost against latency, per model (ringed and 1: the winner)")
    return fig


# --- HTML -----------------------------------------------------------------------------------------------------
def html_report(res: PoolPlanResult, figures: dict[str, bytes]) -> str:
    from sim.report import htmldoc

    esc = htmldoc.esc
    fmt = {"usd_per_month": "{:,.0f}".format, "usd_per_mtok_output": _fmt2,
           "ttft_p95_s": lambda v: f"{1000 * v:.0f} ms",
           "tpot_p95_s": lambda v: f"{1000 * v:.1f} ms"}
    heads = {"pools": "layout: pools (nodes× GPU ×GPUs per node, precision)", "pricing_label": "pricing",
             "usd_per_month": "$/month", "usd_per_mtok_output": "$/M out",
             "slo_attainment": "SLO att. (misses)", "seeds": "seeds met", "ttft_p95_s": "P95 TTFT",
             "tpot_p95_s": "P95 TPOT"}
    body = []
    if res.combined:
        body.append("<p><b>The winners together</b> (each model was sized beside the others' pools as given; one fleet "
                    "of every winning layout, the plan's seeds): " + esc("; ".join(
                        f"{m}: SLO met in {c['seeds_met']}/{c['seeds']} seed(s), attainment "
                        f"{100 * c['attainment']:.2f} %" for m, c in res.combined.items())) + "</p>")
    for d in res.demands:
        rows = [r for r in res.ranked(d.model) if r["meets_slo"]][:res.spec.top_n]
        df = pd.DataFrame([{"#": i + 1, "pools": f"{KIND_LABELS[r['kind']]}: {pools_text(r)}",
                            "pricing_label": r["pricing_label"], "usd_per_month": r["usd_per_month"],
                            "usd_per_mtok_output": r["usd_per_mtok_output"],
                            "slo_attainment": f"{100 * r['slo_attainment']:.2f} % ({_misses(r)})",
                            "seeds": f"{r['seeds_met']}/{r['seeds']}",
                            "ttft_p95_s": r["ttft_p95_s"], "tpot_p95_s": r["tpot_p95_s"]} for i, r in enumerate(rows)])
        body.append(f"<h2>{esc(d.model)}</h2><p class='note'>classes {esc(', '.join(d.classes))} · "
                    f"{d.mean_rps:.2f} req/s mean, {d.peak_rps:.2f} peak (10-min) · layouts searched: "
                    f"{esc(', '.join(KIND_LABELS[k] for k in res.kinds[d.model]))}</p>"
                    f"<p><b>Why this layout:</b> {esc(why_won(res, d.model))}</p>"
                    f"{htmldoc.table(df, fmt, heads, classes='t wrap')}")
    why = pd.DataFrame(why_not(res))
    why_html = (htmldoc.table(why, {"usd_per_month": _usd_or_blank}, {"usd_per_month": "$/month"}, classes="t why")
                if len(why) else "")
    body.append(f"<h2>Cost against latency</h2>{htmldoc.figures(figures)}"
                f"<h2>Why the others lost</h2>{why_html}"
                f"<h2>Console report</h2><pre>{esc(format_text(res))}</pre>"
                '<p class="note">SLO attainment: each model\'s share of its interactive arrivals after warm-up meeting '
                "every target; rejected, failed, timed-out and unfinished requests count as misses (the misses "
                "column). A layout meets the SLO when every seed does. Kept pools (a grow layout) cost what they "
                "cost in the run; the sized pools are priced under each way to pay. Method: docs/plan.md, "
                "docs/pools.md.</p>")
    wins = res.winners()
    good = all(w is not None for w in wins.values())
    verdict = " ".join(f"{m}: " + ("no layout meets the SLO." if w is None else
                                   f"buy {pools_text(w)}, {w['pricing_label']}: ${w['usd_per_month']:,.0f}/month, "
                                   f"{_usd_mtok(w)}, SLO attainment {100 * w['slo_attainment']:.2f} %.")
                       for m, w in wins.items())
    return htmldoc.page(f"What should we buy? · {res.scenario.name} (pools)", esc(verdict), "".join(body), good)


def _fmt2(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _usd_or_blank(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.0f}"


def write_outputs(res: PoolPlanResult, out_dir: Path | str) -> list[str]:
    """plan_pools.{json,csv,txt}, winner.yaml, pool_plan.png and plan.html into ``out_dir``."""
    from sim.core.atomic_io import atomic_write, write_csv, write_json, write_text
    from sim.report import htmldoc

    out = Path(out_dir)
    write_json(out / "plan_pools.json", to_json(res))
    write_csv(out / "plan_pools.csv", rows_table(res))
    write_text(out / "plan_pools.txt", format_text(res) + "\n")
    files = ["plan_pools.json", "plan_pools.csv", "plan_pools.txt"]
    y = winner_yaml(res)
    if y is not None:
        write_text(out / "winner.yaml", y)
        files.append("winner.yaml")
    figures: dict[str, bytes] = {}
    if any(r["meets_slo"] for r in res.rows):
        import matplotlib.pyplot as plt

        fig = plot_layouts(res)
        png = htmldoc.fig_png(fig)
        plt.close(fig)

        def write_png(p: Path) -> None:
            p.write_bytes(png)

        atomic_write(out / "pool_plan.png", write_png)
        figures["pool_plan.png"] = png
        files.append("pool_plan.png")
    write_text(out / "plan.html", html_report(res, figures))
    files.append("plan.html")
    return files


__all__ = ["ModelDemand", "format_text", "to_json", "why_not", "why_won", "winner_yaml", "write_outputs"]
