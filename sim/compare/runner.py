"""Compare spill strategies side by side: one traffic shape and fleet, several strategies (and fleet sizes).

An experiment file holds a ``base`` scenario (or ``scenario: path``) and a list of ``strategies``; each one
replaces the base's ``spill`` section, sets ``fleet.nodes`` (one size or a list: one run per size, else the
experiment's ``fleet_sizes``, else the base's) and may override any other field by dotted path (``set``).
Every run uses the base's seed, so all strategies see the same arrivals (common random numbers: arrival,
token and class streams do not depend on the strategy, and the API's draws depend only on the request).

**Replications.** With ``seeds: N`` in the file (or ``--seeds N``) every run is simulated with the seeds
``seed, seed+1, …, seed+N−1`` — the same seeds for every strategy, so seed k of one strategy and seed k of
another see identical arrivals. The table then holds the mean over seeds of every metric and, for the headline
ones (:data:`HEADLINE`), the half-width of the two-sided 95 % Student-t interval of that mean
(``<column>_ci95``). With one seed (the default) the table and JSON are exactly those of a single run.

Runs fan out through :func:`sim.runner.executor.iter_outcomes`. :func:`comparison_table` turns the summaries into one
row per run; the plots are built from that table and the per-run spill timelines by small functions that
return a Figure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.core.config import (
    Scenario,
    apply_overrides,
    read_experiment,
    read_yaml,
    set_dotted,
    validate_mapping,
    validate_scenario,
)
from sim.core.errors import ConfigError
from sim.metrics.access import metric
from sim.metrics.stats import replication_seeds
from sim.metrics.summary import Summary

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Strategy(_Strict):
    """One strategy: a spill policy (the ``spill`` section), a fleet size or sizes, other overrides."""

    name: str = Field(min_length=1)
    description: str = ""
    spill: dict[str, Any] | None = None
    fleet_nodes: int | list[int] | None = None
    set: dict[str, Any] = {}


class Experiment(_Strict):
    name: str = "compare"
    description: str = ""
    base: dict[str, Any] | None = None
    scenario: str | None = None
    strategies: list[Strategy] = Field(min_length=1)
    fleet_sizes: list[int] | None = None
    seeds: int = Field(1, ge=1, description="replications per run: seeds seed … seed+seeds−1")

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if (self.base is None) == (self.scenario is None):
            raise ValueError("give exactly one of base (an inline scenario) or scenario (a path)")
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        return self


class Run(BaseModel):
    """One point of the comparison."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    label: str
    strategy: str
    fleet_nodes: int
    scenario: Scenario  # the first seed's scenario
    replicas: tuple[Scenario, ...] = ()  # one scenario per seed (the first is ``scenario``); empty = just it

    @property
    def scenarios(self) -> list[Scenario]:
        """The scenario once per replication seed."""
        return list(self.replicas) or [self.scenario]

    @property
    def seeds(self) -> list[int]:
        return [sc.seed for sc in self.scenarios]


def load_experiment(path: Path | str, overrides: list[str] | None = None, seed: int | None = None,
                    seeds: int | None = None) -> tuple[Experiment, list[Run]]:
    """Read an experiment file and build (and validate) every run's scenario, once per replication seed.
    ``overrides`` (``a.b=c``) and ``seed`` apply to the base scenario; ``seeds`` (replications) overrides the
    file's ``seeds``."""
    path = Path(path)
    exp = validate_mapping(Experiment, read_experiment(path, "compare"), str(path))
    if seeds is not None:
        replication_seeds(0, seeds)  # validates the count
        exp = exp.model_copy(update={"seeds": int(seeds)})
    base_dir = path.parent.resolve()
    if exp.scenario is not None:
        spath = Path(exp.scenario)
        spath = spath if spath.is_absolute() else base_dir / spath
        base = read_yaml(spath)
        base_dir = spath.parent.resolve()
    elif exp.base is not None:
        base = copy.deepcopy(exp.base)
    else:  # the Experiment model requires one of the two
        raise ConfigError(str(path), "base", "give a scenario file or a base scenario")
    base = apply_overrides(base, (overrides or []) + ([f"seed={seed}"] if seed is not None else []))
    runs: list[Run] = []
    for i, st in enumerate(exp.strategies):
        sizes = st.fleet_nodes if st.fleet_nodes is not None else exp.fleet_sizes
        if sizes is None:
            sizes = [int(base.get("fleet", {}).get("nodes", 1))]
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        for n in sizes:
            label = st.name if len(sizes) == 1 else f"{st.name}@{n}"
            sc_raw = copy.deepcopy(base)
            sc_raw["name"] = f"{exp.name}/{label}"
            source = f"{path}: strategies.{i} ({label})"
            set_dotted(sc_raw, "fleet.nodes", n, source)
            if st.spill is not None:
                sc_raw["spill"] = copy.deepcopy(st.spill)
            for key, value in st.set.items():
                set_dotted(sc_raw, key, copy.deepcopy(value), source)
            sc = validate_scenario(sc_raw, source, base_dir)
            if sc.api is not None:  # resolve the catalogue now: a typo fails before any run starts
                from sim.spill.api import resolve_api

                resolve_api(sc.api, sc.source)
            replicas: list[Scenario] = [sc]
            for seed in replication_seeds(sc.seed, exp.seeds)[1:]:  # the same for every strategy (CRN)
                replicas.append(validate_scenario({**sc_raw, "seed": seed}, source, base_dir))
            runs.append(Run(label=label, strategy=st.name, fleet_nodes=n, scenario=sc,
                            replicas=tuple(replicas) if exp.seeds > 1 else ()))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(str(path), "strategies", f"run labels must be unique, got {labels}")
    return exp, runs


def timeline(req: pd.DataFrame, duration_s: float, bins: int = 192) -> dict[str, list[float]]:
    """Arrival and spill rates (requests/s) in ``bins`` equal bins over [0, duration_s]."""
    edges = np.linspace(0.0, duration_s, bins + 1)
    width = edges[1] - edges[0]
    arr, _ = np.histogram(req["arrival_s"].to_numpy(), edges)
    sp = req["spilled_at_s"].to_numpy() if "spilled_at_s" in req else np.array([])
    spilled, _ = np.histogram(sp[~np.isnan(sp)], edges)
    failed_mask = (req["status"] == "failed").to_numpy() & (req["served_by"] == "api").to_numpy()
    failed, _ = np.histogram(req["arrival_s"].to_numpy()[failed_mask], edges)
    return {
        "time_s": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "arrival_rps": (arr / width).tolist(),
        "spill_rps": (spilled / width).tolist(),
        "api_failed_rps": (failed / width).tolist(),
    }


@dataclass(frozen=True)
class SeedRun:
    """One simulated run of a strategy (one seed): its summary and spill timeline."""

    summary: Summary
    timeline: dict[str, list[float]]


@dataclass(frozen=True)
class StrategyResult:
    """A strategy's runs, one per seed (in seed order), and their mean."""

    seeds: list[int]
    runs: list[SeedRun]

    @property
    def summaries(self) -> list[Summary]:
        return [r.summary for r in self.runs]

    @property
    def mean_summary_json(self) -> dict[str, Any]:
        """The one seed's ``summary.json``, or with several seeds their mean (:func:`mean_summary`)."""
        if len(self.runs) == 1:
            return self.runs[0].summary.to_json()
        return mean_summary([s.to_json() for s in self.summaries])

    @property
    def timeline(self) -> dict[str, list[float]]:
        """The one seed's timeline, or the bin-by-bin mean over seeds."""
        return self.runs[0].timeline if len(self.runs) == 1 else mean_timeline([r.timeline for r in self.runs])


def run_one(scenario: Scenario) -> SeedRun:
    """Simulate one run (in a worker process): its summary and spill timeline."""
    from sim.runner.pipeline import run_scenario

    out = run_scenario(scenario)
    return SeedRun(out.summary, timeline(out.requests, scenario.duration_s))


def run_experiment(runs: list[Run], workers: int | None = None, scheduler: str | None = None,
                   progress: Any = None) -> list[StrategyResult]:
    """Results of every run, in input order (the same experiment and seeds always give the same list).
    ``progress(done, total)`` is called as runs finish."""
    from sim.runner.executor import ExecutorSpec, iter_outcomes

    tasks = [(i, sc) for i, run in enumerate(runs) for sc in run.scenarios]
    spec = ExecutorSpec(workers=1 if len(tasks) <= 1 else workers, scheduler=scheduler)
    flat: list[SeedRun | None] = [None] * len(tasks)
    for done, oc in enumerate(iter_outcomes(run_one, [sc for _, sc in tasks], spec), start=1):
        if oc.error is not None:
            raise oc.error
        flat[oc.index] = oc.value
        if progress is not None:
            progress(done, len(tasks))  # e.g. sim.core.progress.Progress.update
    out: list[StrategyResult] = []
    for i, run in enumerate(runs):
        per_seed = [v for (j, _), v in zip(tasks, flat) if j == i and v is not None]
        out.append(StrategyResult(list(run.seeds), per_seed))
    return out


def mean_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summaries' mean, key by key: numbers → mean over the seeds that have one, booleans → share of
    seeds where true (``slo.met`` 0.6 = met in 3 of 5), other values → the common value (None if they differ);
    the top-level ``seed`` becomes the list of seeds."""

    def merge(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if all(isinstance(v, dict) for v in present):
            keys = list(dict.fromkeys(k for v in present for k in v))
            return {k: merge([v.get(k) for v in present]) for k in keys}
        if all(isinstance(v, bool) for v in present):
            return sum(present) / len(present)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            return float(np.mean(present))
        return present[0] if all(v == present[0] for v in present) else None

    out = merge(summaries)
    if "seed" in out:
        out["seed"] = [s.get("seed") for s in summaries]
    return out


def mean_timeline(timelines: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Bin-by-bin mean of per-seed timelines (same bins)."""
    return {k: np.mean([t[k] for t in timelines], axis=0).tolist() for k in timelines[0]}


COLUMNS: list[tuple[str, str]] = [
    ("total_usd", "cost.total_usd"),
    ("usd_per_mtok", "cost.usd_per_mtok_total"),
    ("usd_per_mtok_output", "cost.usd_per_mtok_output"),
    ("self_host_usd", "cost.self_host_usd"),
    ("api_usd", "cost.api_usd"),
    ("spill_request_share", "spill.request_share"),
    ("spill_token_share", "spill.token_share"),
    ("ttft_p50_s", "latency.ttft_s.p50"),
    ("ttft_p95_s", "latency.ttft_s.p95"),
    ("ttft_p99_s", "latency.ttft_s.p99"),
    ("e2e_p50_s", "latency.e2e_s.p50"),
    ("e2e_p95_s", "latency.e2e_s.p95"),
    ("e2e_p99_s", "latency.e2e_s.p99"),
    ("slo_attainment", "slo.attainment"),
    ("slo_met", "slo.met"),
    ("load_factor", "utilisation.load_factor"),
    ("load_factor_peak", "utilisation.load_factor_peak"),
    ("mfu", "utilisation.mfu_mean"),
    ("gpu_busy_fraction", "utilisation.busy_fraction"),
    ("arrived", "requests.arrived"),
    ("spilled", "requests.spilled"),
    ("failed", "requests.failed"),
    ("timed_out", "requests.timed_out"),
    ("client_retries", "requests.retries"),
    ("in_flight", "requests.in_flight"),
    ("api_calls", "api.calls"),
    ("api_rate_limited", "api.rate_limited"),
    ("api_retries", "api.retries"),
    ("api_failed", "api.failed"),
]


#: columns reported with a 95 % confidence interval when there are several seeds
HEADLINE: tuple[str, ...] = ("total_usd", "usd_per_mtok", "usd_per_mtok_output", "ttft_p95_s", "e2e_p95_s",
                             "slo_attainment", "spill_request_share", "spill_token_share")


def _row_values(summary: Summary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, path in COLUMNS:
        v = metric(summary, path)
        out[col] = 0 if v is None and col.startswith(("api_", "spill_")) else v
    if isinstance(out.get("slo_met"), bool):
        out["slo_met"] = float(out["slo_met"])  # share of seeds meeting the SLO once averaged
    return out


def _run_info(run: Run) -> dict[str, Any]:
    return {"strategy": run.label, "policy": run.scenario.spill.policy if run.scenario.spill else "never",
            "fleet_nodes": run.fleet_nodes}


def seed_table(runs: list[Run], results: list[StrategyResult]) -> pd.DataFrame:
    """One row per run × seed (the table's columns, unaveraged)."""
    rows = []
    for run, res in zip(runs, results):
        for seed, s in zip(run.seeds, res.summaries):
            rows.append({**_run_info(run), "seed": seed, **_row_values(s)})
    return pd.DataFrame(rows)


def comparison_table(runs: list[Run], results: list[StrategyResult]) -> pd.DataFrame:
    """One row per run: cost, spill share, latency percentiles, SLO attainment, utilisation, API errors.

    With several seeds every metric is the mean over seeds, ``seeds`` counts them, and each :data:`HEADLINE`
    column has ``<column>_ci95``: the half-width of the 95 % Student-t interval of the mean."""
    from sim.metrics.stats import mean_ci95

    multi = any(len(r.scenarios) > 1 for r in runs)
    rows = []
    for run, res in zip(runs, results):
        row: dict[str, Any] = _run_info(run)
        if not multi:
            row.update(_row_values(res.summaries[0]))
        else:
            per_seed = [_row_values(s) for s in res.summaries]
            row["seeds"] = len(per_seed)
            for col, _ in COLUMNS:
                row[col] = mean_ci95([p[col] for p in per_seed])[0]
            for col in HEADLINE:
                row[f"{col}_ci95"] = mean_ci95([p[col] for p in per_seed])[1]
        rows.append(row)
    df = pd.DataFrame(rows)
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9  # every seed meets the SLO
    df["pareto_e2e"] = pareto_mask(df["e2e_p95_s"].to_numpy(float), df["total_usd"].to_numpy(float), meets)
    df["pareto_ttft"] = pareto_mask(df["ttft_p95_s"].to_numpy(float), df["total_usd"].to_numpy(float), meets)
    return df


def pareto_mask(latency: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """True for ``eligible`` points (default all; ``comparison_table`` passes "meets the SLO in every seed")
    that no other eligible point beats on both latency and cost (ties: neither dominates). A strategy that
    misses the SLO is never on the front, however cheap."""
    n = len(latency)
    ok = ~(np.isnan(latency) | np.isnan(cost))
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    for i in range(n):
        if not ok[i]:
            continue
        dominated = ok & (latency <= latency[i]) & (cost <= cost[i]) & ((latency < latency[i]) | (cost < cost[i]))
        mask[i] = not dominated.any()
    return mask


# --- plots -----------------------------------------------------------------------------------------------
def _plt() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (imported on first use: keeps CLI start-up fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err_bars(values: np.ndarray, half: pd.Series) -> np.ndarray:
    """Asymmetric (2, n) error bars for ± ``half``, the lower arm kept above zero (log axes); NaN → none."""
    h = np.nan_to_num(half.to_numpy(float), nan=0.0)
    lower = np.minimum(h, np.where(values > 0, values * (1 - 1e-3), 0.0))
    return np.vstack([lower, h])


def place_labels(ax: Axes, xs: np.ndarray, ys: np.ndarray, texts: list[str], fontsize: int = 8) -> list:
    """Annotate each point with its text at the first of a ring of offsets (growing radius) where the label
    stays inside the axes and overlaps neither an earlier label nor any marker (greedy, in display space);
    returns the annotations."""
    ax.figure.canvas.draw()  # lay out once; extents below use the figure's renderer (any backend)
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    frame = ax.get_window_extent()  # labels stay inside the axes
    r_px = 5.0 * ax.figure.dpi / 72.0  # a marker's reach (half its Pareto ring), in display pixels
    taken: list = []
    out = []
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (x, y), text in zip(zip(xs, ys), texts):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        chosen = None
        for radius in (6, 14, 24, 36, 50, 70):
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6} if radius > 6 else None
            for dx, dy in dirs:
                ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx * radius, dy * radius),
                                  fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                  va="bottom" if dy > 0 else "top" if dy < 0 else "center", arrowprops=leader)
                bb = ann.get_window_extent().expanded(1.05, 1.15)
                inside = (bb.x0 >= frame.x0 and bb.x1 <= frame.x1 and bb.y0 >= frame.y0 and bb.y1 <= frame.y1)
                on_marker = any(bb.x0 - r_px <= qx <= bb.x1 + r_px and bb.y0 - r_px <= qy <= bb.y1 + r_px
                                for qx, qy in pts)
                if inside and not (any(bb.overlaps(t) for t in taken) or on_marker):
                    chosen = ann
                    break
                ann.remove()
            if chosen is not None:
                break
        if chosen is None:  # very crowded: far out, with a leader line
            chosen = ax.annotate(text, (x, y), textcoords="offset points", xytext=(60, 60), fontsize=fontsize,
                                 arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
        taken.append(chosen.get_window_extent().expanded(1.05, 1.15))
        out.append(chosen)
    return out


def plot_cost_vs_latency(df: pd.DataFrame, slo: dict[str, float | None] | None = None,
                         attainment_target: float = 0.95) -> Any:
    """Total cost vs P95 TTFT and P95 E2E, one point per run coloured by SLO attainment (0–100 %, centred on
    the target), hollow when the run misses the SLO; the Pareto front among the runs that meet it; the SLO
    targets as vertical lines; labels placed so they do not overlap. With several seeds the points are means
    with 95 % confidence-interval error bars on both axes."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    slo = slo or {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True, sharey=True)
    goal = 100 * attainment_target
    norm = TwoSlopeNorm(vmin=0.0, vcenter=min(max(goal, 1.0), 99.0), vmax=100.0)
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9 if "slo_met" in df else np.ones(len(df), bool)
    sc = None
    for ax, col, pcol, title, key in ((axes[0], "ttft_p95_s", "pareto_ttft", "P95 time to first token", "ttft_p95_s"),
                                      (axes[1], "e2e_p95_s", "pareto_e2e", "P95 end-to-end latency", "e2e_p95_s")):
        if f"{col}_ci95" in df:  # several seeds: 95 % intervals of the means
            x, y = df[col].to_numpy(float), df["total_usd"].to_numpy(float)
            ax.errorbar(x, y, xerr=_err_bars(x, df[f"{col}_ci95"]), yerr=_err_bars(y, df["total_usd_ci95"]),
                        fmt="none", ecolor="0.35", elinewidth=1, capsize=3, zorder=2.5, label="95 % CI (seeds)")
        att = df["slo_attainment"].to_numpy(float) * 100
        sc = ax.scatter(df[col][meets], df["total_usd"][meets], c=att[meets], cmap="RdYlGn", norm=norm, s=60,
                        zorder=3, edgecolors="k", label="meets the SLO")
        if (~meets).any():
            ax.scatter(df[col][~meets], df["total_usd"][~meets], c=att[~meets], cmap="RdYlGn", norm=norm, s=80,
                       zorder=3, edgecolors="k", marker="X", label="misses the SLO")
        front = df[df[pcol]].sort_values(col)
        if len(front):
            ax.step(front[col], front["total_usd"], where="post", color="tab:blue", lw=1.5, zorder=2,
                    label="Pareto front (runs meeting the SLO)")
            ax.scatter(front[col], front["total_usd"], s=220, facecolors="none", edgecolors="tab:blue", zorder=4)
        target = slo.get(key)
        if target is not None:
            ax.axvline(target, color="C3", ls="--", lw=1.2, label=f"SLO: P95 ≤ {target:g} s")
            ax.axvspan(target, max(float(np.nanmax(df[col])) * 10, target * 10), color="C3", alpha=0.06)
        ax.set_xscale("log")
        ax.set_yscale("log")

        ax.set_xlabel(f"{title} (s, log scale)")
        if ax is axes[0]:
            ax.set_ylabel("total cost for the period (USD, log scale)")
        ax.set_title(f"Cost vs {title}")
        ax.grid(True, alpha=0.3, which="both")
        xs = df[col].to_numpy(float)
        if np.isfinite(xs).any():
            lo, hi = np.nanmin(xs), np.nanmax(xs)
            if target is not None:
                lo, hi = min(lo, target), max(hi, target)
            ax.set_xlim(lo / 2, hi * 2)
        ys = df["total_usd"].to_numpy(float)
        if np.isfinite(ys).any():
            ax.set_ylim(np.nanmin(ys) / 1.6, np.nanmax(ys) * 1.6)
        for axis, (lo_v, hi_v) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            decades = np.log10(max(hi_v, 1e-12) / max(lo_v, 1e-12))
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=8, ncol=2, frameon=False)
    cb = fig.colorbar(sc, ax=axes, label="SLO attainment (% of all requests)",
                      shrink=0.8)
    ticks = sorted({0.0, 25.0, 50.0, 75.0, goal, 100.0})
    cb.set_ticks(ticks, labels=[f"{t:g} (target)" if t == goal else f"{t:g}" for t in ticks])
    cb.ax.axhline(goal, color="k", lw=1.5)
    fig.canvas.draw()  # settle the layout (colorbar, legends) before placing labels in display space
    fig.set_layout_engine("none")
    for ax, col in ((axes[0], "ttft_p95_s"), (axes[1], "e2e_p95_s")):
        place_labels(ax, df[col].to_numpy(float), df["total_usd"].to_numpy(float), [str(v) for v in df["strategy"]])
    return fig


def plot_spill_timeline(runs: list[Run], results: list[StrategyResult]) -> Figure:
    """Arrival rate (same for every run: common random numbers) and each run's spill rate over time."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    tl0 = results[0].timeline
    hours = np.asarray(tl0["time_s"]) / 3600.0
    ax.fill_between(hours, tl0["arrival_rps"], color="0.85", label="arrivals (traffic curve)", step="mid")
    for run, res in zip(runs, results):
        tl = res.timeline
        sp = np.asarray(tl["spill_rps"])
        if sp.sum() == 0 or (sp == np.asarray(tl["arrival_rps"])).all():
            continue  # never spills, or spills everything (= the traffic curve)
        ax.plot(hours, sp, lw=1.3, label=f"{run.label}: spilled to API")
    ax.set_yscale("symlog", linthresh=1.0)  # the daily curve stays visible under a 50x spike
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("requests per second (linear below 1, log above)")
    ax.set_title("Spill rate over time against the traffic curve")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_cost_breakdown(df: pd.DataFrame) -> Figure:
    """Stacked bars: self-hosted GPU cost and hosted-API spend per run, with $/M output tokens on top; runs
    that miss the SLO are hatched and say so (a cheap run that misses it is not a saving)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(df) + 2), 5.5), constrained_layout=True)
    x = np.arange(len(df))
    meets = df["slo_met"].to_numpy(float) >= 1.0 - 1e-9 if "slo_met" in df else np.ones(len(df), bool)
    hatch = ["" if m else "//" for m in meets]
    ax.bar(x, df["self_host_usd"], label="self-hosted GPUs", color="tab:blue", hatch=hatch, edgecolor="white")
    ax.bar(x, df["api_usd"], bottom=df["self_host_usd"], label="hosted API", color="tab:orange", hatch=hatch,
           edgecolor="white")
    per_col = "usd_per_mtok_output" if "usd_per_mtok_output" in df else "usd_per_mtok"
    unit = "/M out tok" if per_col == "usd_per_mtok_output" else "/M tok"
    for i, (_, r) in enumerate(df.iterrows()):
        per = r[per_col]
        txt = f"\\${r['total_usd']:,.0f}" + (f"\n\\${per:.2f}{unit}" if per is not None and not np.isnan(per) else "")
        txt += "" if meets[i] else "\nmisses SLO"
        ax.annotate(txt, (i, r["total_usd"]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
                    color="black" if meets[i] else "C3")
    ax.set_xticks(x, df["strategy"], rotation=30, ha="right")
    ax.set_ylabel("cost for the period (USD)")
    ax.set_title("Cost breakdown per strategy (hatched: misses the SLO)")
    top = float(np.nanmax(df["total_usd"].to_numpy(float))) if len(df) else 1.0
    ax.set_ylim(0, max(top, 1e-9) * 1.3)  # room for the labels above the tallest bar
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="tab:blue"), Patch(facecolor="tab:orange")]
    labels = ["self-hosted GPUs", "hosted API"]
    if not meets.all():
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="//"))
        labels.append("misses the SLO")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def write_outputs(out_dir: Path, exp: Experiment, runs: list[Run], results: list[StrategyResult],
                  df: pd.DataFrame) -> dict[str, Path]:
    """compare.csv, compare.json (full summaries), timelines.csv and the three plots; with several seeds also
    compare_seeds.csv (one row per run × seed), and timelines.csv has a ``seed`` column."""
    from sim.core.atomic_io import atomic_write, write_csv, write_json, write_text

    multi = any(len(r.scenarios) > 1 for r in runs)
    paths = {
        "table": out_dir / "compare.csv",
        "json": out_dir / "compare.json",
        "timelines": out_dir / "timelines.csv",
        "cost_vs_latency": out_dir / "cost_vs_p95_latency.png",
        "spill_timeline": out_dir / "spill_over_time.png",
        "cost_breakdown": out_dir / "cost_breakdown.png",
    }
    write_csv(paths["table"], df, float_format="%.6g")
    write_json(paths["json"], json_records(runs, results, per_seed=True))
    if multi:
        paths["seeds_table"] = out_dir / "compare_seeds.csv"
        write_csv(paths["seeds_table"], seed_table(runs, results), float_format="%.6g")
    tl = []
    for run, res in zip(runs, results):
        for seed, one in zip(run.seeds, res.runs):
            t = pd.DataFrame(one.timeline)
            if multi:
                t.insert(0, "seed", seed)
            t.insert(0, "strategy", run.label)
            tl.append(t)
    write_csv(paths["timelines"], pd.concat(tl), float_format="%.6g")
    plt = _plt()
    base_slo = runs[0].scenario.slo
    targets = {k: getattr(base_slo, k) for k in ("ttft_p95_s", "tpot_p95_s", "e2e_p95_s")}
    for key, fig in (("cost_vs_latency", plot_cost_vs_latency(df, targets, base_slo.attainment_target)),
                     ("spill_timeline", plot_spill_timeline(runs, results)),
                     ("cost_breakdown", plot_cost_breakdown(df))):
        def save(p: Path, fig: Figure = fig) -> None:
            fig.savefig(p, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})

        atomic_write(paths[key], save)
        plt.close(fig)
    paths["html"] = out_dir / "compare.html"
    write_text(paths["html"], _html(exp, runs, df, {paths[k].name: paths[k].read_bytes() for k in
                                                    ("cost_vs_latency", "spill_timeline", "cost_breakdown")}))
    return paths


def _html(exp: Experiment, runs: list[Run], df: pd.DataFrame, images: dict[str, bytes]) -> str:
    """compare.html (:func:`sim.report.experiment_pages.compare_html`): experiment, SLO, seeds, table, plots."""
    from sim.report.experiment_pages import _slo_text, compare_html

    sc = runs[0].scenario
    seeds = runs[0].seeds
    asked = {"experiment": f"{exp.name} ({sc.source.split(':')[0]})",
             "question": "which strategy serves this traffic within the SLO at the lowest cost",
             "strategies": ", ".join(r.label for r in runs), "SLO": _slo_text(sc.slo.model_dump()),
             "fleet": f"{sc.fleet.gpus_per_node}× {sc.fleet.gpu} per node, {sc.fleet.model}",
             "seeds": ", ".join(str(s) for s in seeds) + (" (the same for every strategy)" if len(seeds) > 1 else "")}
    return compare_html(exp.name, asked, df, images)


def json_records(runs: list[Run], results: list[StrategyResult], per_seed: bool = False) -> list[dict[str, Any]]:
    """``--json``: one object per run, ``strategy`` (and ``fleet_nodes``) plus the keys of summary.json.

    With several seeds the summary keys hold the means over seeds (:func:`mean_summary`; ``seed`` is the list
    of seeds), ``seeds`` counts them and ``ci95`` gives, for each headline column of the table, ``{mean,
    half_width, low, high}`` (95 % Student t); ``per_seed=True`` adds every seed's own summary."""
    out = []
    multi = any(len(r.scenarios) > 1 for r in runs)
    df = comparison_table(runs, results) if multi else None
    for i, (r, res) in enumerate(zip(runs, results)):
        rec: dict[str, Any] = {"strategy": r.label, "fleet_nodes": r.fleet_nodes, **res.mean_summary_json}
        if df is not None:
            row = df.iloc[i]
            rec["seeds"] = len(r.scenarios)
            rec["ci95"] = {}
            for col in HEADLINE:
                m, h = _num(row[col]), _num(row[f"{col}_ci95"])
                rec["ci95"][col] = {"mean": m, "half_width": h, "low": None if m is None or h is None else m - h,
                                    "high": None if m is None or h is None else m + h}
            if per_seed:
                rec["per_seed"] = [s.to_json() for s in res.summaries]
        out.append(rec)
    return out


def _num(v: Any) -> float | None:
    """A finite float, or None (NaN, None)."""
    if v is None:
        return None
    f = float(v)
    return f if f == f else None
