"""What a sizing found, as records and tables: the replications of one configuration, the goodput search,
the minimum fleet with its confidence, the rules' fleets, and the comparison across GPU types (``to_json`` is
``sizing.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sim.core.config import Scenario
from sim.metrics.access import metric
from sim.metrics.stats import mean_ci95
from sim.metrics.summary import Summary
from sim.sizing.rules import RATE_WINDOW_S, SizingRule, is_constant_rate, nodes_for_rate, rate_basis
from sim.sizing.variants import SLO_KEYS

_SLO_LATENCY = {"ttft_p95_s": "ttft_s", "tpot_p95_s": "tpot_s", "e2e_p95_s": "e2e_s"}


def fmt_s(v: float | None, unit: bool = True) -> str:
    """Seconds for a table: ``0.123 s`` / ``1.23 s``; without the unit two significant digits."""
    if v is None:
        return "–"
    if not unit:
        return f"{v:.2g}"
    return f"{v:.3g} s" if abs(v) < 1 else f"{v:.2f} s"


@dataclass
class Replicates:
    """The summaries of one configuration (a rate or a node count) over the seed set."""

    summaries: list[Summary]

    @property
    def n(self) -> int:
        return len(self.summaries)

    @property
    def n_met(self) -> int:
        return sum(s.slo.met for s in self.summaries)

    @property
    def all_met(self) -> bool:
        return self.n_met == self.n

    def mean(self, path: str) -> float | None:
        return mean_ci95([metric(s, path) for s in self.summaries])[0]

    def ci(self, path: str) -> tuple[float | None, float | None]:
        return mean_ci95([metric(s, path) for s in self.summaries])


@dataclass
class GoodputResult:
    """Per-node goodput: ``rate_rps`` passed in every seed, ``upper_rps`` (> rate_rps) failed in at least one."""

    rate_rps: float
    upper_rps: float
    rel_tol: float
    horizon_s: float
    seeds: list[int]
    evaluations: dict[float, Replicates] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per simulated rate: seeds met and mean P95 latencies."""
        rows = [{"rate_rps": r, "seeds_met": rep.n_met, "seeds": rep.n,
                 "slo_attainment": rep.mean("slo.attainment"),
                 "ttft_p95_s": rep.mean("latency.ttft_s.p95"), "tpot_p95_s": rep.mean("latency.tpot_s.p95")}
                for r, rep in sorted(self.evaluations.items())]
        return pd.DataFrame(rows)


@dataclass
class RuleResult:
    rule: SizingRule
    rate_rps: float
    nodes: int
    reps: Replicates


@dataclass
class SizingResult:
    """Everything ``capsim size`` reports (see :meth:`to_json`)."""

    scenario: Scenario
    seeds: list[int]
    rate_stats: dict[str, float]
    goodput: GoodputResult
    min_nodes: int | None
    max_nodes: int
    points: dict[int, Replicates]
    rules: list[RuleResult]
    elapsed_s: float = 0.0

    # --- derived ------------------------------------------------------------------------------------------
    @property
    def peak_nodes(self) -> int:
        """⌈peak 10-min rate ÷ node goodput⌉: the direct calculation (equals ⌈rate ÷ goodput⌉ at constant rate)."""
        return nodes_for_rate(self.rate_stats["peak_rps"], self.goodput.rate_rps)

    def slo_targets(self) -> dict[str, float]:
        return {k: getattr(self.scenario.slo, k) for k in SLO_KEYS if getattr(self.scenario.slo, k) is not None}

    def confidence(self) -> dict[str, Any]:
        """How sure the minimum is: seeds met, a 95 % lower bound on the per-replication pass probability
        (Clopper–Pearson), and each P95 latency as mean ± 95 % t-interval half-width over seeds."""
        if self.min_nodes is None:
            return {"statement": f"no fleet of up to {self.max_nodes} nodes meets the SLO in every seed"}
        from scipy import stats

        from sim.metrics.headline import TARGET_NAMES

        rep = self.points[self.min_nodes]
        lower = float(stats.beta.ppf(0.05, rep.n_met, rep.n - rep.n_met + 1)) if rep.n_met else 0.0
        out: dict[str, Any] = {"seeds_met": rep.n_met, "seeds": rep.n, "pass_probability_lower95": lower}
        parts = [f"meets the SLO in {rep.n_met}/{rep.n} seeds"]
        for key in self.slo_targets():
            m, h = rep.ci(f"latency.{_SLO_LATENCY[key]}.p95")
            out[key] = {"target": getattr(self.scenario.slo, key), "mean": m, "ci95": h}
            if m is not None:
                name = TARGET_NAMES[key]
                parts.append(f"{name} {fmt_s(m)}" + ("" if h is None else f" ± {fmt_s(h, unit=False)}"))
        below = self.points.get(self.min_nodes - 1)
        if below is not None:
            out["below"] = {"nodes": self.min_nodes - 1, "seeds_met": below.n_met, "seeds": below.n}
        statement = "; ".join(parts)
        if below is not None:
            plural = "s" if self.min_nodes - 1 != 1 else ""
            statement += f"; {self.min_nodes - 1} node{plural} meet it in {below.n_met}/{below.n}"
        out["statement"] = statement
        return out

    def points_table(self) -> pd.DataFrame:
        """One row per simulated node count: seeds met, SLO attainment, P95 latencies and cost (means)."""
        rows = []
        for n, rep in sorted(self.points.items()):
            rows.append({
                "nodes": n, "seeds_met": rep.n_met, "seeds": rep.n, "meets_slo": rep.all_met,
                "slo_attainment": rep.mean("slo.attainment"),
                "ttft_p95_s": rep.mean("latency.ttft_s.p95"), "tpot_p95_s": rep.mean("latency.tpot_s.p95"),
                "e2e_p95_s": rep.mean("latency.e2e_s.p95"), "load_factor": rep.mean("utilisation.load_factor"),
                "busy_fraction": rep.mean("utilisation.busy_fraction"),
                "total_usd": rep.mean("cost.total_usd"),
                "usd_per_mtok_output": rep.mean("cost.usd_per_mtok_output"),
            })
        return pd.DataFrame(rows)

    def rules_table(self) -> pd.DataFrame:
        """One row per rule: its rate and node count, and that fleet's simulated attainment and cost, with the
        difference to the simulated minimum."""
        base_usd = self.points[self.min_nodes].mean("cost.total_usd") if self.min_nodes else None
        rows = []
        for rr in self.rules:
            usd = rr.reps.mean("cost.total_usd")
            rows.append({
                "rule": rr.rule.label, "workload": rr.rule.workload, "rate_rps": rr.rate_rps, "nodes": rr.nodes,
                "slo_attainment": rr.reps.mean("slo.attainment"), "total_usd": usd,
                "usd_per_mtok_output": rr.reps.mean("cost.usd_per_mtok_output"),
                "usd_per_hour": None if usd is None else usd / (self.scenario.duration_s / 3600.0),
                "seeds_met": rr.reps.n_met, "seeds": rr.reps.n, "meets_slo": rr.reps.all_met,
                "ttft_p95_s": rr.reps.mean("latency.ttft_s.p95"), "tpot_p95_s": rr.reps.mean("latency.tpot_s.p95"),
                "nodes_vs_min": None if self.min_nodes is None else rr.nodes - self.min_nodes,
                "usd_vs_min": None if base_usd is None or usd is None else usd - base_usd,
            })
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """The JSON report: ``node_goodput_rps``, ``min_nodes``, ``min_nodes_summary`` (the first seed's
        ``summary.json`` of the minimum fleet), ``rules`` and the supporting detail."""
        from sim.metrics.tables import _clean

        sc = self.scenario
        min_summary = self.points[self.min_nodes].summaries[0] if self.min_nodes else None
        return _clean({
            "scenario": sc.name,
            "source": sc.source,
            "duration_s": sc.duration_s,
            "seeds": self.seeds,
            "slo": self.slo_targets(),
            "traffic": {**self.rate_stats, "window_s": None if is_constant_rate(sc) else RATE_WINDOW_S,
                        "basis": rate_basis(sc)},
            "node_goodput_rps": self.goodput.rate_rps,
            "goodput": {
                "rate_rps": self.goodput.rate_rps, "upper_rps": self.goodput.upper_rps,
                "rel_tol": self.goodput.rel_tol, "horizon_s": self.goodput.horizon_s,
                "criterion": "slo.met (every P95 target and the attainment target, no class clearly below it, "
                             "rejections and unfinished requests counting as misses) in every seed, one node, "
                             "constant-rate arrivals",
                "evaluations": self.goodput.table().to_dict(orient="records"),
            },
            "peak_nodes": self.peak_nodes,
            "min_nodes": self.min_nodes,
            "max_nodes": self.max_nodes,
            "min_nodes_confidence": self.confidence(),
            "min_nodes_summary": None if min_summary is None else min_summary.to_json(),
            "rules": self.rules_table().to_dict(orient="records"),
            "points": self.points_table().to_dict(orient="records"),
            "elapsed_s": self.elapsed_s,
        })


@dataclass
class GpuSizing:
    """``capsim size`` for one GPU type: its :class:`SizingResult`, or why it could not be sized (``error``,
    e.g. the model does not fit in ``gpus_per_node`` of these GPUs)."""

    gpu: str
    usd_per_gpu_hour: float | None
    result: SizingResult | None = None
    error: str | None = None

    @property
    def meets_slo(self) -> bool:
        return self.result is not None and self.result.min_nodes is not None

    @property
    def min_fleet_usd(self) -> float | None:
        """Mean cost (USD) of the simulated minimum fleet over the run; None when there is none."""
        r = self.result
        return None if r is None or r.min_nodes is None else r.points[r.min_nodes].mean("cost.total_usd")

    def record(self) -> dict[str, Any]:
        """One entry of ``by_gpu``: goodput, simulated minimum, that fleet's cost and SLO attainment."""
        r = self.result
        out: dict[str, Any] = {"gpu": self.gpu, "usd_per_gpu_hour": self.usd_per_gpu_hour, "error": self.error,
                               "node_goodput_rps": None, "min_nodes": None, "gpus": None, "total_usd": None,
                               "usd_per_hour": None, "usd_per_mtok_output": None, "slo_attainment": None,
                               "meets_slo": self.meets_slo}
        if r is None:
            return out
        sc = r.scenario
        out.update({"node_goodput_rps": r.goodput.rate_rps, "goodput_upper_rps": r.goodput.upper_rps,
                    "peak_nodes": r.peak_nodes, "min_nodes": r.min_nodes,
                    "gpus_per_node": sc.fleet.gpus_per_node})
        if r.min_nodes is not None:
            rep = r.points[r.min_nodes]
            usd = self.min_fleet_usd
            out.update({"gpus": r.min_nodes * sc.fleet.gpus_per_node, "total_usd": usd,
                        "usd_per_hour": None if usd is None else usd / (sc.duration_s / 3600.0),
                        "usd_per_mtok_output": rep.mean("cost.usd_per_mtok_output"),
                        "slo_attainment": rep.mean("slo.attainment"), "seeds_met": rep.n_met, "seeds": rep.n})
        out["min_nodes_confidence"] = r.confidence()
        out["rules"] = r.rules_table().to_dict(orient="records")
        return out


@dataclass
class MultiGpuSizing:
    """``capsim size`` over several GPU types (one :class:`GpuSizing` each, in the order asked)."""

    entries: list[GpuSizing]
    elapsed_s: float = 0.0

    @property
    def cheapest(self) -> GpuSizing | None:
        """The GPU type whose simulated minimum fleet costs least (ties: fewer GPUs, then the order asked)."""
        ok = [(e, e.result) for e in self.entries if e.meets_slo and e.min_fleet_usd is not None
              and e.result is not None]
        if not ok:
            return None
        return min(ok, key=lambda er: (round(er[0].min_fleet_usd or 0.0, 9),
                                       (er[1].min_nodes or 0) * er[1].scenario.fleet.gpus_per_node))[0]

    @property
    def primary(self) -> GpuSizing:
        """The entry the top-level report describes: the cheapest, else the first that could be sized."""
        return self.cheapest or next(e for e in self.entries if e.result is not None)

    def gpu_rows(self) -> list[dict[str, Any]]:
        """One record per GPU type: goodput, simulated minimum, that fleet's cost, and the cheapest marked."""
        best = self.cheapest
        rows = []
        for e in self.entries:
            rec = e.record()
            rows.append({k: rec.get(k) for k in ("gpu", "usd_per_gpu_hour", "node_goodput_rps", "min_nodes",
                                                 "gpus", "total_usd", "usd_per_hour", "usd_per_mtok_output",
                                                 "slo_attainment",
                                                 "meets_slo", "error")} | {"cheapest": e is best})
        return rows

    def gpu_table(self) -> pd.DataFrame:
        """:meth:`gpu_rows` as a DataFrame (node and GPU counts as nullable integers)."""
        return pd.DataFrame(self.gpu_rows()).astype({"min_nodes": "Int64", "gpus": "Int64"})

    def to_json(self) -> dict[str, Any]:
        """The primary GPU's report (the keys of :meth:`SizingResult.to_json`, unchanged for one GPU type)
        plus ``gpu``, ``cheapest_gpu`` (None when no type meets the SLO) and ``by_gpu`` (one entry per type:
        :meth:`GpuSizing.record`)."""
        from sim.metrics.tables import _clean

        prim = self.primary
        assert prim.result is not None
        best = self.cheapest
        out = prim.result.to_json()
        out["gpu"] = prim.gpu
        out["cheapest_gpu"] = None if best is None else best.gpu
        out["by_gpu"] = _clean([e.record() | {"cheapest": e is best} for e in self.entries])
        if len(self.entries) > 1:
            out["elapsed_s"] = self.elapsed_s
        return out
