"""One-line statements a planner reads first — load and headroom, overload, the SLO verdict — shared by the
terminal summary (``capsim run``) and ``report.html``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.metrics.summary import SloVerdict, Summary, Utilisation


def pct(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def load_line(u: Utilisation, overloaded: bool = False, duration_s: float | None = None) -> str:
    """``load 0.45 of capacity (…) · bottleneck none`` — the headroom line that leads the summary. The busiest
    10 minutes are named only in a run longer than that (``duration_s``): in a shorter one the "peak" window is
    the whole run, and it differs from the load factor only by how pools are combined (the busiest pool's)."""
    lf = u.load_factor
    if lf is None:
        return "no traffic"
    cap = u.capacity_per_node_requests_per_s
    head = f"load factor {lf:.2f} of what this fleet sustains for this mix"
    by_pool = {k: v for k, v in (u.load_factor_by_pool or {}).items() if v is not None}
    if by_pool:  # fleet.pools: nodes differ, so name the busiest pool instead of a per-node rate
        busiest = max(by_pool, key=by_pool.__getitem__)
        head += f" (busiest pool {busiest}: {by_pool[busiest]:.2f})"
    elif cap:
        head += f" ({cap:.1f} req/s per node)"
    peak = u.load_factor_peak
    if peak is not None and peak > 1.1 * lf:
        from sim.metrics.tables import PEAK_WINDOW_S

        if duration_s is None or duration_s > PEAK_WINDOW_S:
            head += f", {peak:.2f} in the busiest {PEAK_WINDOW_S / 60:g} minutes"
        lf = peak
    if lf >= 1:
        head += ", OVER capacity"
    elif overloaded:
        head += ", yet the queue builds up: no headroom left"
    elif lf > 0:
        head += f", headroom ×{1 / lf:.1f}"
    bn = u.bottleneck or "none"
    limit = u.limit_at_saturation
    tail = f"bottleneck {bn.replace('_', ' ')}" + (f" (at saturation: {limit.replace('_', ' ')})"
                                                    if bn == "none" and limit else "")
    return f"{head}; {tail}"


def overload_line(summary: Summary) -> str:
    """One line: is the queue growing, since when, peak queue, served vs offered."""
    o, thr = summary.overload, summary.throughput
    served, offered = thr.served_requests_per_s, thr.offered_requests_per_s
    if not o.overloaded:
        return f"none (peak queue {o.peak_queue:,})"
    what = "queue growing" if o.queue_growing else "queue built up"
    when = f" since {o.since_s:,.0f} s" if o.since_s is not None else ""
    at = o.peak_queue_at_s or 0
    return (f"OVERLOADED: {what}{when}, peak {o.peak_queue:,} queued at {at:,.0f} s; "
            f"served {served:.2f} of {offered:.2f} req/s offered")


def slo_line(slo: SloVerdict) -> str:
    """Attainment vs target, worst window, P95 targets, verdict."""
    parts = [f"attainment {pct(slo.attainment, 1)} (target {pct(slo.attainment_target, 0)})"]
    w = slo.worst_window
    if w is not None and len(slo.windows) > 1:
        ws = slo.window_s
        size = f"{ws / 3600:g}-h" if ws >= 3600 else f"{ws / 60:g}-min" if ws >= 60 else f"{ws:g}-s"
        parts.append(f"worst {size} window {pct(w.attainment, 1)} ({w.start_s:,.0f}–{w.end_s:,.0f} s)")
    parts.append("P95 targets " + ("met" if slo.percentile_targets_met else "MISSED"))
    verdict = " → SLO met" if slo.met else " → SLO MISSED"
    missed = ", ".join(f"{name} (attainment {pct(att, 1)})" for name, att in classes_missed(slo))
    if missed and slo.met:  # slo.every_class off: the fleet-wide verdict would hide a class that misses
        verdict += " overall, but MISSED for class " + missed
    elif missed:
        verdict += " for class " + missed
    return ", ".join(parts) + verdict


def arrived_after_warmup(summary: Summary) -> int:
    """Interactive arrivals after warm-up: what the SLO, class and model tables count."""
    return sum(c.arrived for c in summary.slo.by_class.values())


def warmup_counts(summary: Summary) -> str:
    """``" (13,690 after the 30-s warm-up)"`` for the requests line: the whole run's arrival count and the SLO,
    class and model tables' (interactive arrivals after warm-up) part ways there; empty without a warm-up."""
    if summary.warmup_s <= 0:
        return ""
    after = arrived_after_warmup(summary)
    what = "interactive " if summary.batch is not None else ""
    return f" ({after:,} {what}after the {summary.warmup_s:g}-s warm-up)"


def pool_usd_per_mtok_share(summary: Summary, pool: str) -> float | None:
    """A pool's part of its model's serving cost per M output tokens: its self-hosted cost ÷ the output tokens its
    model's classes were served (fleet or API, whole run). The pools' parts plus the API's add up to the model's
    ``usd_per_mtok_output``; unlike the pool's own ``cost.usd_per_mtok_output`` (÷ the tokens completed on its
    nodes), it means something for a prefill or decode pool, which serves half of each request's work."""
    p = (summary.pools or {})[pool]
    m = (summary.models or {}).get(p.model)
    if m is None or not m.served_output_tokens:
        return None
    return p.cost.self_host_usd / (m.served_output_tokens / 1e6)


def classes_missed(slo: SloVerdict) -> list[tuple[str, float | None]]:
    """The interactive classes whose own targets or attainment miss: ``(name, attainment)``."""
    return [(name, c.attainment) for name, c in slo.by_class.items() if not c.met]


#: the scenario-wide P95 targets' names in words (reports, sizing, compare)
TARGET_NAMES = {"ttft_p95_s": "P95 TTFT", "tpot_p95_s": "P95 TPOT", "e2e_p95_s": "P95 E2E"}


def slo_miss_items(slo: SloVerdict, require_worst_window: bool = False) -> list[tuple[str, str]]:
    """What fails the verdict as (reason, this run's figure) pairs: each missed P95 target, an attainment below its
    target, each class clearly below it (the rule of ``slo.met``), and with ``require_worst_window`` the worst
    window. Empty when met."""
    from sim.metrics.tables import class_clearly_misses

    out = [(TARGET_NAMES.get(k, k), "") for k, t in slo.targets.items() if not t.met]
    target = slo.attainment_target
    if slo.attainment is None or slo.attainment < target:
        out.append(("attainment", f" {pct(slo.attainment, 1)}"))
    out += [(f"class {name}", f" ({pct(c.attainment, 1)})") for name, c in slo.by_class.items()
            if class_clearly_misses({"arrived": c.arrived, "attainment": c.attainment}, target)]
    w = slo.worst_window
    if require_worst_window and w is not None and w.attainment < target:
        out.append(("worst window", f" {pct(w.attainment, 1)}"))
    return out


def slo_miss_reasons(slo: SloVerdict, require_worst_window: bool = False) -> list[str]:
    """:func:`slo_miss_items` in words, each reason with its figure."""
    return [reason + figure for reason, figure in slo_miss_items(slo, require_worst_window)]
