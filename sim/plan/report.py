"""What ``capsim plan`` writes: the ranked table (text, CSV, JSON), the winner as a scenario YAML, the rent /
own / API break-even, two plots and a self-contained HTML decision report.

Break-even (:func:`break_even`), for the winning fleet (``n`` nodes of ``g`` GPUs):

* the fleet's capacity is the load it was shown to carry within the SLO: the traffic's peak 10-minute rate ×
  mean output tokens per request; **utilisation** ``u`` is mean load ÷ that capacity (today: mean ÷ peak rate);
* self-hosted $/M output tokens at ``u`` = hourly cost ÷ output tokens per hour at ``u``; the hourly cost of
  rented options is fixed, owned adds energy whose busy share scales with ``u`` (``sim.metrics.energy``);
* the hosted API costs ``(input price × mean input + output price × mean output) ÷ mean output`` per M output
  tokens, whatever the load (the scenario's ``api`` if set, else the catalogue's cheapest API serving the model);
* an option beats the API above the ``u`` where the two are equal; owning pays back its capex after
  ``capex ÷ (monthly API bill − monthly owned running cost)`` months at today's load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from sim.core.config import DEMAND_KEYS
from sim.metrics.cost import HOURS_PER_YEAR
from sim.metrics.energy import facility_power_w, usd_per_kwh
from sim.perf.catalog import get_gpu
from sim.plan.pricing import HOURS_PER_MONTH, fixed_usd_per_gpu_hour, pricing_label, rental_usd_per_gpu_hour
from sim.plan.search import SEARCH_SPAN, PlanResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TABLE_COLUMNS = ["rank", "gpu", "gpus_per_node", "weights", "kv_cache", "max_num_seqs", "spill", "api_request_share",
                 "nodes", "spot_nodes", "reserved_nodes", "gpus", "pricing", "pricing_label",
                 "usd_per_month", "usd_per_mtok_output", "slo_attainment", "ttft_p95_s", "tpot_p95_s",
                 "headroom", "avg_power_kw", "energy_kwh_per_day", "co2_kg_per_day", "seeds_met", "seeds",
                 "nodes_lower_bound"]


# --- tables -------------------------------------------------------------------------------------------------
def ranked_table(res: PlanResult, top_n: int | None = None) -> pd.DataFrame:
    """The top ``top_n`` (default ``plan.top_n``) rows meeting the SLO, cheapest first."""
    rows = [r for r in res.ranked() if r["meets_slo"]][: top_n or res.spec.top_n]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df[[c for c in TABLE_COLUMNS if c in df.columns]]


def why_not(res: PlanResult) -> list[dict[str, Any]]:
    """Why each candidate other than the winner lost: dearer (by how much), no fleet met the SLO, excluded by the
    hardware or lone-request latency, or skipped because its cost bound could not win."""
    win = res.winner
    best_by_cand: dict[str, dict[str, Any]] = {}
    for r in res.ranked():
        if r["meets_slo"] and r["candidate"] not in best_by_cand:
            best_by_cand[r["candidate"]] = r
    out = []
    for ev in res.evaluated:
        label = ev.candidate.label
        if win is not None and label == win["candidate"]:
            continue
        best = best_by_cand.get(label)
        if best is None:
            reason = f"no fleet of up to {ev.sizing.max_nodes} node(s) met the SLO in every seed" + {
                "cost": " (larger fleets cost more than the ones found)",
                "span": f" (searched up to {SEARCH_SPAN}× the node count its capacity bound gives for the peak)",
            }.get(ev.search_limit, "")
        elif win is not None:
            d = best["usd_per_month"] - win["usd_per_month"]
            reason = (f"{best['nodes']} node(s) × {best['gpus_per_node']} GPU ({best['pricing_label']}): "
                      f"${best['usd_per_month']:,.0f}/month, ${d:,.0f} (+{100 * d / win['usd_per_month']:.0f} %) "
                      "more")
            if abs(d) < 0.005:
                reason = (f"{best['nodes']} node(s) × {best['gpus_per_node']} GPU ({best['pricing_label']}): same "
                          f"cost, lower SLO attainment ({100 * best['slo_attainment']:.2f} %)")
        else:
            reason = "simulated"
        out.append({"candidate": label, "stage": "simulated", "reason": reason,
                    "usd_per_month": None if best is None else best["usd_per_month"]})
    for var in res.spot_variants:
        if var.min_nodes is None:
            reps = var.sizing.points[var.sizing.max_nodes]
            out.append({"candidate": var.candidate.label, "stage": "spot variant",
                        "reason": f"{var.spot_nodes} of its {var.sizing.max_nodes} node(s) as spot: the SLO is met "
                                  f"in only {reps.n_met}/{reps.n} seed(s) (evictions)", "usd_per_month": None})
    for var in res.forecast_variants:
        if var.min_nodes is None:
            reps = var.sizing.points[var.sizing.max_nodes]
            out.append({"candidate": var.candidate.label, "stage": "forecast variant",
                        "reason": f"{var.scenario.fleet.nodes} reserved + forecast on-demand up to "
                                  f"{var.sizing.max_nodes} node(s): the SLO is met in only {reps.n_met}/{reps.n} "
                                  "seed(s) (start-up delay)", "usd_per_month": None})
    if res.autoscale_note:
        out.append({"candidate": "(all)", "stage": "forecast variant", "reason": res.autoscale_note,
                    "usd_per_month": None})
    for c, lb, thr in res.skipped_by_bound:
        n_lo = 1 if c.bounds is None or c.spill != "none" else c.bounds.min_nodes_lower(res.rate_stats["mean_rps"])
        out.append({"candidate": c.label, "stage": "cost bound",
                    "reason": f"at least ${lb:,.0f}/month (≥ {n_lo} node(s) even at full load) ≥ "
                              f"${thr:,.0f}/month already found",
                    "usd_per_month": lb})
    for c in res.candidates:
        if c.excluded is not None:
            out.append({"candidate": c.label, "stage": "excluded", "reason": c.excluded, "usd_per_month": None})
    return out


# --- the winner as a scenario ---------------------------------------------------------------------------------
def winner_scenario(res: PlanResult) -> dict[str, Any] | None:
    """The winning fleet as a raw scenario mapping: the planned scenario with the winner's fleet, nodes and way
    to pay (reserved rentals as their discounted hourly price), demand stated as the planner stated it."""
    win = res.winner
    if win is None:
        return None
    ev = res.evaluated_for(win)
    raw = ev.scenario.model_dump(mode="json", exclude={"plan"})
    raw["name"] = f"{res.scenario.name}-plan"
    raw["description"] = (f"capsim plan winner for {res.scenario.name}: {win['nodes']} × {win['gpus_per_node']}× "
                          f"{win['gpu']} ({win['weights']}/{win['kv_cache']}), {win['pricing_label']}")
    raw["fleet"]["nodes"] = int(win["nodes"]) - ev.spot_nodes  # the variant's spot nodes are in fleet.spot
    if ev.autoscale == "forecast":  # the reserved base; the rest are the autoscaler's on-demand nodes
        raw["fleet"]["nodes"] = ev.scenario.fleet.nodes
    gpu = get_gpu(win["gpu"])
    if win["pricing"] == "owned":
        raw["pricing"]["mode"] = "owned"
    else:
        raw["pricing"]["mode"] = "rented"
        rate = fixed_usd_per_gpu_hour(win["pricing"], ev.scenario, gpu, res.spec)
        raw["pricing"]["usd_per_gpu_hour"] = rate
        if ev.spot_nodes and rate > 0:  # spot is billed off the rental price: keep the plan's spot $/GPU-hour
            spot_rate = rental_usd_per_gpu_hour(ev.scenario, gpu) * (1.0 - ev.scenario.fleet.spot.discount)
            raw["fleet"]["spot"]["discount"] = max(0.0, 1.0 - spot_rate / rate)
        if ev.autoscale == "forecast" and rate > 0:  # on-demand nodes at the plan's on-demand $/GPU-hour
            od_rate = rental_usd_per_gpu_hour(ev.scenario, gpu) * ev.scenario.fleet.on_demand.price_multiplier
            raw["fleet"]["on_demand"]["price_multiplier"] = od_rate / rate
    state_demand(raw, res.scenario.demand)
    return raw


def state_demand(raw: dict[str, Any], demand: dict[str, Any] | None) -> None:
    """Write the planner's demand (tokens/day or requests/day) into a winner scenario's traffic in place of its rate
    fields, so the file states demand as the planner did (the same rate results)."""
    if demand is None:
        return
    for k in DEMAND_KEYS:
        raw["traffic"].pop(k, None)
    key = next(k for k in DEMAND_KEYS[1:] if k in demand)
    raw["traffic"][key] = demand[key]


def winner_yaml(res: PlanResult) -> str | None:
    raw = winner_scenario(res)
    if raw is None:
        return None
    head = (f"# Written by `capsim plan` ({res.scenario.source}): the cheapest fleet meeting the SLO.\n"
            "# `capsim run` on this file reproduces the plan's first-seed run of this fleet.\n")
    return head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


# --- break-even -----------------------------------------------------------------------------------------------
def api_usd_per_mtok_output(res: PlanResult) -> tuple[float, str] | None:
    """The hosted API's cost per M output tokens for this mix (input tokens included) and its name."""
    from sim.spill.api import catalogue, find_api_model

    sc = res.scenario
    if sc.api is not None:
        a = sc.api
        if a.provider is not None:
            e = find_api_model(a.provider, a.model, sc.source)
            pin = a.input_usd_per_mtok if a.input_usd_per_mtok is not None else e.input_usd_per_mtok
            pout = a.output_usd_per_mtok if a.output_usd_per_mtok is not None else e.output_usd_per_mtok
            name = f"{e.provider} {e.model}"
        else:
            pin, pout, name = a.input_usd_per_mtok or 0.0, a.output_usd_per_mtok or 0.0, "the scenario's api"
        mi, mo = res.mix.mean_prompt, res.mix.mean_output
        return (pin * mi + pout * mo) / mo, name
    else:
        entries = [e for e in catalogue() if sc.fleet.model in e.compatible_with]
    if not entries:
        return None
    mi, mo = res.mix.mean_prompt, res.mix.mean_output
    best = min(entries, key=lambda e: e.input_usd_per_mtok * mi + e.output_usd_per_mtok * mo)
    return (best.input_usd_per_mtok * mi + best.output_usd_per_mtok * mo) / mo, f"{best.provider} {best.model}"


def break_even(res: PlanResult) -> dict[str, Any] | None:
    """Self-hosted $/M output tokens against utilisation for each way to pay, the API's, and where they cross
    (method in the module docstring)."""
    win = res.winner
    if win is None:
        return None
    ev = res.evaluated_for(win)
    sc, gpu = ev.scenario, get_gpu(win["gpu"])
    n, gpus = int(win["nodes"]), int(win["gpus"])
    spot_gpus = ev.spot_nodes * int(win["gpus_per_node"])  # rented at the spot price whatever the option
    spot_usd_h = spot_gpus * rental_usd_per_gpu_hour(sc, gpu) * (1.0 - sc.fleet.spot.discount)
    cap_tok_h = res.rate_stats["peak_rps"] * res.mix.mean_output * 3600.0
    u0 = res.rate_stats["mean_rps"] / res.rate_stats["peak_rps"]
    busy0 = float(win.get("busy_fraction") or 0.0)
    u = np.linspace(0.02, 1.0, 99)

    def hourly(option: str, util: np.ndarray) -> np.ndarray:
        fixed = (gpus - spot_gpus) * fixed_usd_per_gpu_hour(option, sc, gpu, res.spec) + spot_usd_h
        if option != "owned":
            return np.full_like(util, fixed)
        busy = np.minimum(1.0, busy0 * util / u0) if u0 > 0 else util
        return fixed + facility_power_w(sc, gpu, n - ev.spot_nodes, busy) / 1000.0 * usd_per_kwh(sc)

    options = res.spec.pricing[:1] if ev.spot_nodes == n else res.spec.pricing  # all spot: one way to pay
    curves = {p: hourly(p, u) / (cap_tok_h * u / 1e6) for p in options}
    api = api_usd_per_mtok_output(res)
    out: dict[str, Any] = {"utilisation": u.tolist(), "usd_per_mtok": {p: v.tolist() for p, v in curves.items()},
                           "utilisation_today": u0, "capacity_output_tokens_per_s": cap_tok_h / 3600.0,
                           "api": None, "api_usd_per_mtok_output": None, "break_even_utilisation": {},
                           "owned_payback_months": None, "spot_share": ev.spot_share}
    if api is None:
        return out
    api_price, api_name = api
    out["api"], out["api_usd_per_mtok_output"] = api_name, api_price
    for p, v in curves.items():
        below = np.flatnonzero(v <= api_price)
        out["break_even_utilisation"][p] = float(u[below[0]]) if len(below) else None
    if "owned" in options:
        owned = sc.pricing.owned
        per_gpu = owned.capex_usd_per_gpu if owned.capex_usd_per_gpu is not None else gpu.purchase_usd_per_gpu
        capex = (gpus - spot_gpus) * per_gpu  # spot GPUs are rented
        amort_h = capex / (owned.amortisation_years * HOURS_PER_YEAR)
        running_month = (float(hourly("owned", np.array([u0]))[0]) - amort_h) * HOURS_PER_MONTH
        api_month = api_price * cap_tok_h * u0 / 1e6 * HOURS_PER_MONTH
        rent_month = float(hourly("on_demand", np.array([u0]))[0]) * HOURS_PER_MONTH
        out.update({"owned_capex_usd": capex, "owned_running_usd_per_month": running_month,
                    "api_usd_per_month_today": api_month, "on_demand_usd_per_month": rent_month})
        out["owned_payback_months"] = capex / (api_month - running_month) if api_month > running_month else None
        out["owned_payback_months_vs_on_demand"] = (capex / (rent_month - running_month)
                                                    if rent_month > running_month else None)
    return out


def break_even_sentence(be: dict[str, Any] | None) -> str:
    """One line: where owning (and renting) beats the API, and the payback."""
    if be is None or be.get("api") is None:
        return "no hosted API in the catalogue serves this model: no break-even against an API"
    parts = []
    bu = be["break_even_utilisation"]
    api = f"{be['api']} at ${be['api_usd_per_mtok_output']:.2f}/M output tokens, input included"
    if "owned" in bu:
        if bu["owned"] is None:
            parts.append(f"owning never beats the API ({api}) with this fleet, even at 100 % utilisation")
        else:
            pay = be.get("owned_payback_months")
            when = (f", after {pay:.0f} months at today's load" if pay is not None
                    else "; at today's load it does not pay back")
            parts.append(f"owning pays back above {100 * bu['owned']:.0f} % utilisation (vs {api}){when}")
    rented = {p: v for p, v in bu.items() if p != "owned"}
    if rented:
        best = min(rented, key=lambda p: (rented[p] is None, rented[p] or 0))
        if rented[best] is not None:
            how = pricing_label(best, be.get("spot_share") or 0.0)
            parts.append(f"renting ({how}) beats the API above {100 * rented[best]:.0f} %")
    parts.append(f"today's utilisation is {100 * be['utilisation_today']:.0f} % (mean ÷ peak load)")
    return "; ".join(parts)


# --- text -----------------------------------------------------------------------------------------------------
def format_text(res: PlanResult) -> str:
    """The console report: demand, the ranked table, the winner and the break-even."""
    sc, st = res.scenario, res.rate_stats
    slo = ", ".join(f"{k.replace('_p95_s', '').upper()} P95 ≤ {getattr(sc.slo, k):g} s"
                    for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s") if getattr(sc.slo, k) is not None)
    d = sc.demand
    demand = (f"{d[next(k for k in DEMAND_KEYS[1:] if k in d)] / 1e6:,.1f} M "
              f"{'output ' if 'output_tokens_per_day' in d else ''}tokens/day = " if d else "")
    lines = [f"capsim plan · {sc.name} · {sc.fleet.model} · SLO {slo}",
             f"  demand     {demand}{st['mean_rps']:.2f} req/s mean, {st['peak_rps']:.2f} peak (10-min), "
             f"{res.mix.mean_prompt:,.0f} in / {res.mix.mean_output:,.0f} out tokens per request",
             f"  searched   {len(res.candidates)} candidates: {sum(c.excluded is not None for c in res.candidates)}"
             f" excluded, {len(res.skipped_by_bound)} skipped by the cost bound, {len(res.evaluated)} simulated "
             f"({res.runs_computed} runs, {res.runs_reused} cached; {len(res.seeds)} seed(s); "
             f"{res.elapsed_s:,.0f} s wall)"]
    if res.autoscale_note:
        lines.append(f"  autoscale  {res.autoscale_note}")
    elif res.forecast_variants:
        kept = sum(v.min_nodes is not None for v in res.forecast_variants)
        lines.append(f"  autoscale  {len(res.forecast_variants)} forecast variant(s) simulated, {kept} meet the SLO "
                     "(reserved base for the mean load + on-demand nodes up to the minimum fleet)")
    lines.append("")
    df = ranked_table(res)
    width = max([24] + [len(r["pricing_label"]) + 1 for r in df.to_dict(orient="records")])
    header = (f"  {'#':>2} {'GPU':<14}{'TP':>3} {'prec':<13}{'nodes':>6}{'GPUs':>5}  {'pricing':<{width}}"
              f"{'$/month':>10}{'$/M out':>9}{'SLO att.':>9}{'TTFT95':>8}{'TPOT95':>8}{'spare@mean':>11}{'kW':>6}"
              f"{'kgCO2/d':>9}")
    lines += [header, "  " + "─" * (len(header) - 2)]
    for r in df.to_dict(orient="records"):
        prec = r["weights"] if r["weights"] == r["kv_cache"] else f"{r['weights']}/{r['kv_cache']}"
        if r.get("spill", "none") != "none":
            prec += f" +API {100 * (r.get('api_request_share') or 0):.0f}%"
        lines.append(
            f"  {r['rank']:>2} {r['gpu']:<14}{r['gpus_per_node']:>3} {prec:<13}{r['nodes']:>6}{r['gpus']:>5}  "
            f"{r['pricing_label']:<{width}}{r['usd_per_month']:>10,.0f}{r['usd_per_mtok_output']:>9.2f}"
            f"{100 * r['slo_attainment']:>8.2f}%{1000 * r['ttft_p95_s']:>6.0f}ms{1000 * r['tpot_p95_s']:>6.1f}ms"
            f"{100 * r['headroom']:>10.0f}%{r['avg_power_kw']:>6.1f}{r['co2_kg_per_day']:>9.0f}")
    lines.append("  spare@mean: 1 − mean rate ÷ the fleet's capacity bound, spare capacity at the mean load (an upper "
                 "bound); each fleet is sized for the peak")
    lines.append("")
    win = res.winner
    if win is None:
        lines.append("  no candidate meets the SLO")
    else:
        nodes = (f"{win['reserved_nodes']} + up to {win['nodes'] - win['reserved_nodes']}"
                 if win.get("autoscale") == "forecast" else f"{win['nodes']}")
        lines.append(f"  buy        {nodes} node(s) × {win['gpus_per_node']}× {win['gpu']} "
                     f"({win['weights']} weights, {win['kv_cache']} KV), {win['pricing_label']}: "
                     f"${win['usd_per_month']:,.0f}/month, ${win['usd_per_mtok_output']:.2f}/M output tokens")
        lines.append(f"  break-even {break_even_sentence(break_even(res))}")
    return "\n".join(lines)


def to_json(res: PlanResult) -> dict[str, Any]:
    """The JSON report: demand, spec, ranked rows, every simulated row, why the others lost, break-even."""
    from sim.metrics.tables import _clean

    return _clean({
        "scenario": res.scenario.name, "source": res.scenario.source, "demand": res.scenario.demand,
        "traffic": res.rate_stats, "slo": res.scenario.slo.model_dump(), "plan": res.spec.model_dump(),
        "seeds": res.seeds, "mean_input_tokens": res.mix.mean_prompt, "mean_output_tokens": res.mix.mean_output,
        "winner": res.winner, "ranked": ranked_table(res).to_dict(orient="records"), "rows": res.ranked(),
        "why_not": why_not(res), "break_even": break_even(res),
        "runs_computed": res.runs_computed, "runs_cached": res.runs_reused, "elapsed_s": res.elapsed_s,
    })


# --- plots ----------------------------------------------------------------------------------------------------
def _cheapest_rows(res: PlanResult) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in res.ranked():
        if r["meets_slo"]:
            seen.setdefault(r["candidate"], r)
    return list(seen.values())


def plot_cost_vs_latency(res: PlanResult) -> Figure:
    """$/month (cheapest way to pay) of each simulated minimum fleet against its P95 TTFT and TPOT, with the SLO
    targets as vertical lines and the winner highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _cheapest_rows(res)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True, sharey=True)
    win = res.winner
    for ax, key, target, name in ((axes[0], "ttft_p95_s", res.scenario.slo.ttft_p95_s, "P95 TTFT"),
                                  (axes[1], "tpot_p95_s", res.scenario.slo.tpot_p95_s, "P95 TPOT")):
        same_cost: dict[float, int] = {}  # labels of points at the same cost are stacked, not overlapped
        for r in sorted(rows, key=lambda r: r[key]):
            is_win = win is not None and r["candidate"] == win["candidate"]
            ax.scatter(1000 * r[key], r["usd_per_month"], s=80 if is_win else 40, color="C2" if is_win else "C0",
                       edgecolor="k" if is_win else "none", zorder=3)
            k = same_cost.get(round(r["usd_per_month"]), 0)
            same_cost[round(r["usd_per_month"])] = k + 1
            spill = (" +API" if r.get("spill", "none") != "none" else "") + \
                (f" +{r['spot_nodes']} spot" if r.get("spot_nodes") else "") + \
                (f" ({r['reserved_nodes']} + forecast)" if r.get("autoscale") == "forecast" else "")
            ax.annotate(f"{r['nodes']}×{r['gpus_per_node']} {r['gpu']} {r['weights']}{spill}",
                        (1000 * r[key], r["usd_per_month"]), textcoords="offset points",
                        xytext=(6, 4 + 11 * k), fontsize=7,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if k else None)
        if target is not None:
            ax.axvline(1000 * target, color="C3", ls="--", lw=1.2, label=f"SLO: {name} ≤ {1000 * target:g} ms")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel(f"{name} of the minimum fleet (ms, mean over seeds)")
        ax.set_xlim(left=0, right=max([1000 * r[key] for r in rows] + [1000 * (target or 0)]) * 1.25 or 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost (USD per month, cheapest way to pay)")
    axes[0].set_ylim(0, max([r["usd_per_month"] for r in rows] + [1.0]) * 1.15)
    fig.suptitle("Simulated minimum fleets meeting the SLO: cost against latency (green: the winner)")
    return fig


def plot_break_even(res: PlanResult, be: dict[str, Any]) -> Figure:
    """$/M output tokens against utilisation for each way to pay for the winning fleet, the API's flat price,
    today's utilisation and the break-even points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    u = 100 * np.asarray(be["utilisation"])
    top = 0.0
    for i, (p, v) in enumerate(be["usd_per_mtok"].items()):
        v = np.asarray(v)
        ax.plot(u, v, color=f"C{i}", lw=1.8, label=pricing_label(p, be.get("spot_share") or 0.0))
        top = max(top, float(np.interp(20.0, u, v)))
        x = be["break_even_utilisation"].get(p)
        if x is not None:
            ax.scatter([100 * x], [be["api_usd_per_mtok_output"]], color=f"C{i}", zorder=4)
    if be.get("api_usd_per_mtok_output") is not None:
        ax.axhline(be["api_usd_per_mtok_output"], color="k", ls="--", lw=1.2,
                   label=f"hosted API ({be['api']}): ${be['api_usd_per_mtok_output']:.2f}/M output tokens "
                         "(input included)")
        top = max(top, 3 * be["api_usd_per_mtok_output"])
    ax.axvline(100 * be["utilisation_today"], color="0.4", ls=":", lw=1.2, label="today's utilisation")
    ax.set_ylim(0, top)
    ax.set_xlim(0, 100)
    ax.set_xlabel("utilisation of the winning fleet (% of the peak load it was sized for)")
    ax.set_ylabel("USD per million output tokens")
    ax.set_title("Rent, own or call an API: cost per output token against load (dots: break-even with the API)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


# --- HTML -----------------------------------------------------------------------------------------------------
def html_report(res: PlanResult, figures: dict[str, Any]) -> str:
    """One self-contained HTML page (:mod:`sim.report.htmldoc`: inline CSS, plots as data URIs)."""
    from sim.report import htmldoc

    esc = htmldoc.esc
    table = ranked_table(res)
    if len(table) and (table["spill"] == "none").all():
        table = table.drop(columns=["spill", "api_request_share"])
    if len(table) and (table["spot_nodes"] == 0).all():
        table = table.drop(columns=["spot_nodes"])
    if len(table) and (table["reserved_nodes"] == table["nodes"]).all():
        table = table.drop(columns=["reserved_nodes"])
    table = table.drop(columns=["pricing"])
    fmt = {"api_request_share": lambda v: f"{100 * v:.1f} %", "usd_per_month": "{:,.0f}".format,
           "usd_per_mtok_output": "{:.2f}".format,
           "slo_attainment": lambda v: f"{100 * v:.2f} %", "ttft_p95_s": lambda v: f"{1000 * v:.0f} ms",
           "tpot_p95_s": lambda v: f"{1000 * v:.1f} ms", "headroom": lambda v: f"{100 * v:.0f} %",
           "avg_power_kw": "{:.1f}".format, "energy_kwh_per_day": "{:,.0f}".format,
           "co2_kg_per_day": "{:,.0f}".format}
    heads = {"gpus_per_node": "GPUs/node", "max_num_seqs": "max seqs", "kv_cache": "KV", "usd_per_month": "$/month",
             "usd_per_mtok_output": "$/M out", "slo_attainment": "SLO attain.", "ttft_p95_s": "P95 TTFT",
             "tpot_p95_s": "P95 TPOT", "avg_power_kw": "kW", "energy_kwh_per_day": "kWh/day",
             "co2_kg_per_day": "kg CO2/day", "nodes_lower_bound": "nodes ≥ (bound)",
             "api_request_share": "to API", "spot_nodes": "spot nodes", "reserved_nodes": "reserved",
             "pricing_label": "pricing", "headroom": "spare at mean load", "gpus": "GPUs",
             "seeds_met": "seeds met"}
    why = pd.DataFrame(why_not(res))
    why_html = (htmldoc.table(why, {"usd_per_month": _usd_or_blank}, {"usd_per_month": "$/month"}, classes="t why")
                if len(why) else "")
    be = break_even(res)
    body = (f"<h2>Ranked: cheapest first, every row meets the SLO</h2>{htmldoc.table(table, fmt, heads)}"
            f"<h2>Cost, latency and break-even</h2>{htmldoc.figures(figures)}"
            f"<h2>Why the others lost</h2>{why_html}"
            f"<h2>Console report</h2><pre>{esc(format_text(res))}</pre>"
            '<p class="note">SLO attainment: share of requests meeting every target (rejected, failed and timed-out '
            "requests count as misses). Headroom: 1 − mean rate ÷ the fleet's closed-form capacity bound. Energy: "
            "idle to TDP with the busy share, node overhead and PUE (sim/metrics/energy.py). Prices: docs/plan.md.</p>")
    return htmldoc.page(f"What should we buy? · {res.scenario.name}",
                        f"{esc(_verdict(res))}<br>{esc(break_even_sentence(be))}", body, res.winner is not None)


def _usd_or_blank(v: Any) -> str:
    return "" if v is None or math.isnan(v) else f"{v:,.0f}"


def _verdict(res: PlanResult) -> str:
    win = res.winner
    if win is None:
        return "No candidate meets the SLO."
    return (f"Buy {win['nodes']} node(s) × {win['gpus_per_node']}× {win['gpu']} ({win['weights']} weights, "
            f"{win['kv_cache']} KV cache), {win['pricing_label']}: ${win['usd_per_month']:,.0f} per month, "
            f"${win['usd_per_mtok_output']:.2f} per M output tokens, SLO attainment "
            f"{100 * win['slo_attainment']:.2f} %.")


def write_outputs(res: PlanResult, out_dir: Path | str) -> list[str]:
    """plan.json, plan.csv (ranked), plan_rows.csv (all), winner.yaml, plan.txt, the two PNGs and plan.html."""
    from sim.core.atomic_io import atomic_write, write_csv, write_json, write_text
    from sim.report import htmldoc

    out = Path(out_dir)
    write_json(out / "plan.json", to_json(res))
    write_csv(out / "plan.csv", ranked_table(res))
    write_csv(out / "plan_rows.csv", pd.DataFrame(res.ranked()))
    write_text(out / "plan.txt", format_text(res) + "\n")
    files = ["plan.json", "plan.csv", "plan_rows.csv", "plan.txt"]
    y = winner_yaml(res)
    if y is not None:
        write_text(out / "winner.yaml", y)
        files.append("winner.yaml")
    figures: dict[str, Any] = {}
    if res.winner is not None:
        figs = {"cost_vs_latency.png": plot_cost_vs_latency(res)}
        be = break_even(res)
        if be is not None and be.get("api") is not None:
            figs["break_even.png"] = plot_break_even(res, be)
        import matplotlib.pyplot as plt

        for name, fig in figs.items():
            png = htmldoc.fig_png(fig)
            plt.close(fig)
            def write_png(p: Path, png: bytes = png) -> None:
                p.write_bytes(png)

            atomic_write(out / name, write_png)
            figures[name] = png
            files.append(name)
    write_text(out / "plan.html", html_report(res, figures))
    files.append("plan.html")
    return files
