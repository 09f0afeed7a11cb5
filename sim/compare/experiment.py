"""Compare spill strategies side by side: one traffic shape and fleet, several strategies (and fleet sizes).

An experiment file holds a ``base`` scenario (or ``scenario: path``) and a list of ``strategies``; each one
replaces the base's ``spill`` section, sets ``fleet.nodes`` (one size or a list: one run per size, else the
experiment's ``fleet_sizes``, else the base's) and may override any other field by dotted path (``set``). A
strategy's ``pools`` replaces the fleet with those pools (``fleet.pools``, docs/pools.md: the base's fleet-level
fields stay as defaults the pools inherit; its nodes, spot, on-demand and autoscaler settings go); a fleet with
pools takes its node counts from them, so such a strategy gives no ``fleet_nodes``.
Every run uses the base's seed, so all strategies see the same arrivals (common random numbers: arrival,
token and class streams do not depend on the strategy, and the API's draws depend only on the request).

**Replications.** With ``seeds: N`` in the file (or ``--seeds N``) every run is simulated with the seeds
``seed, seed+1, …, seed+N−1`` — the same seeds for every strategy, so seed k of one strategy and seed k of
another see identical arrivals. The table then holds the mean over seeds of every metric and, for the headline
ones (:data:`HEADLINE`), the half-width of the two-sided 95 % Student-t interval of that mean
(``<column>_ci95``). With one seed (the default) the table and JSON are exactly those of a single run.

This module is the schema (:class:`Experiment`, :class:`Strategy`) and the loader that resolves every run's
scenario (:func:`load_experiment`); :mod:`sim.compare.runner` simulates the runs, :mod:`sim.compare.results`
tabulates them and :mod:`sim.compare.report` writes the files and plots.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.core.config import POOL_ONLY, Scenario, Strict, apply_overrides, set_dotted, validate_scenario
from sim.core.errors import ConfigError
from sim.core.experiment_file import load_experiment_file, read_base_scenario
from sim.metrics.stats import replication_seeds


class Strategy(Strict):
    """One strategy: a spill policy (the ``spill`` section), a fleet size or sizes, other overrides."""

    name: str = Field(min_length=1)
    description: str = ""
    spill: dict[str, Any] | None = None
    fleet_nodes: int | list[int] | None = None
    pools: list[dict[str, Any]] | None = Field(None, min_length=1, description="fleet.pools for this strategy")
    set: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Strategy:
        if self.pools is not None and self.fleet_nodes is not None:
            raise ValueError("give fleet_nodes or pools, not both (pools give their own node counts)")
        return self


class Experiment(Strict):
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
    exp = load_experiment_file(path, Experiment, "compare")
    if seeds is not None:
        replication_seeds(0, seeds)  # validates the count
        exp = exp.model_copy(update={"seeds": int(seeds)})
    # the Experiment model requires exactly one of the two
    base, base_dir, _ = read_base_scenario(exp.scenario if exp.scenario is not None else exp.base, path)
    base = apply_overrides(base, (overrides or []) + ([f"seed={seed}"] if seed is not None else []))
    runs: list[Run] = []
    for i, st in enumerate(exp.strategies):
        given = base.get("fleet")
        fleet_raw: dict[str, Any] = given if isinstance(given, dict) else {}
        pools = st.pools if st.pools is not None else fleet_raw.get("pools")
        sizes = st.fleet_nodes if st.fleet_nodes is not None else exp.fleet_sizes
        if pools is not None:  # node counts come from the pools
            if sizes is not None:
                raise ConfigError(str(path), f"strategies.{i}", "the fleet has pools: give node counts per pool "
                                  "(pools[].nodes), not fleet_nodes / fleet_sizes")
            sizes = [sum(int(p.get("nodes", 0)) for p in pools if isinstance(p, dict))]
        if sizes is None:
            sizes = [int(fleet_raw.get("nodes", 1))]
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        for n in sizes:
            label = st.name if len(sizes) == 1 else f"{st.name}@{n}"
            sc_raw = copy.deepcopy(base)
            sc_raw["name"] = f"{exp.name}/{label}"
            source = f"{path}: strategies.{i} ({label})"
            if pools is None:
                set_dotted(sc_raw, "fleet.nodes", n, source)
            elif st.pools is not None:
                fleet = dict(sc_raw.get("fleet") or {})
                for key in ("nodes", *POOL_ONLY):  # these belong to each pool now
                    fleet.pop(key, None)
                fleet["pools"] = copy.deepcopy(st.pools)
                sc_raw["fleet"] = fleet
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
