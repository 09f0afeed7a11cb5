"""The experiment file: a base scenario, overrides for every point, axes (the grid) and seeds.

.. code-block:: yaml

    name: gpu-by-nodes
    base: default.yaml            # scenario file, relative to this file (default: the embedded default)
    set: [duration_s=300]         # applied to every point, like ``capsim run --set``
    axes:                         # grid = cartesian product, in the order written
      fleet.gpu: [H100-SXM, H200-SXM]
      fleet.nodes: [2, 3, 4]
      hw:                         # a *linked* axis: each value sets several fields together
        - {fleet.gpu: H100-SXM, fleet.gpus_per_node: 1}
        - {fleet.gpu: H200-SXM, fleet.gpus_per_node: 2}
    seeds: [1, 2, 3]              # or a count n: base seed, base seed + 1, ...
    metrics: exact                # exact | streaming (histogram percentiles, constant memory)
    save_requests: false          # write each point's per-request Parquet under OUT/requests/

An axis key is a dotted scenario field (as ``--set`` takes) with a list of values, or any name with a list of
mappings ``{dotted field: value}``. Each point × seed is a complete scenario, validated before anything runs;
its *key* is a hash of the resolved scenario (plus the GPU and model profiles it uses), so the same simulation
has the same key in any experiment, and a result on disk is reused whenever the key matches.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from sim import __version__
from sim.core.config import Scenario, Strict, apply_overrides, validate_scenario
from sim.core.errors import ConfigError
from sim.core.experiment_file import load_experiment_file, read_base_scenario
from sim.metrics.stats import replication_seeds

KEY_SCHEMA = 1  # bump when the meaning of a stored point result changes
KEY_CHARS = 20
# scenario fields that do not change what is simulated (left out of the key)
_COSMETIC = ("name", "description")

Metrics = Literal["exact", "streaming"]
AxisValues = list[Any]


class ExperimentFile(Strict):
    """Schema of an experiment YAML file (see the module docstring)."""

    name: str | None = None
    description: str = ""
    base: str | dict[str, Any] | None = None
    set: list[str] = Field(default_factory=list)
    axes: dict[str, AxisValues] = Field(default_factory=dict)
    seeds: int | list[int] | None = None
    metrics: Metrics = "exact"
    save_requests: bool = False

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, AxisValues]) -> dict[str, AxisValues]:
        for name, values in v.items():
            if len(values) == 0:
                raise ValueError(f"axis '{name}' has no values")
            linked = [isinstance(x, dict) for x in values]
            if any(linked) and not all(linked):
                raise ValueError(f"axis '{name}': either all values are mappings (a linked axis) or none")
            if all(linked):
                for x in values:
                    if not x:
                        raise ValueError(f"axis '{name}': a linked value needs at least one field")
            if name == "seed" or any("seed" in x for x in values if isinstance(x, dict)):
                raise ValueError("vary seeds with 'seeds:', not an axis")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("a seed count must be >= 1")
        if isinstance(v, list):
            if not v:
                raise ValueError("at least one seed")
            if any(s < 0 for s in v):
                raise ValueError("seeds must be >= 0")
            if len(set(v)) != len(v):
                raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("set")
    @classmethod
    def _set(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item:
                raise ValueError(f"'{item}': expected KEY=VALUE with a dotted key, e.g. fleet.nodes=4")
        return v


def yaml_value(value: Any) -> str:
    """``value`` written so that ``--set`` (which parses values as YAML) reads back exactly the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


@dataclass(frozen=True)
class Point:
    """One simulation of the sweep: grid position ``index`` (over axes), ``seed`` and its scenario."""

    index: int
    seed: int
    axes: dict[str, Any]  # column name (dotted field) -> value, in axis order
    overrides: tuple[str, ...]
    scenario: Scenario = field(repr=False, compare=False)
    key: str = ""

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.axes.items()]
        return " ".join(parts + [f"seed={self.seed}"])


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment: its resolved points (grid order, then seeds) and options."""

    name: str
    description: str
    source: str
    axis_columns: list[str]
    points: list[Point]
    metrics: Metrics
    save_requests: bool
    spec: ExperimentFile

    @property
    def n_grid(self) -> int:
        return len({p.index for p in self.points})

    @property
    def seeds(self) -> list[int]:
        return sorted({p.seed for p in self.points}, key=[p.seed for p in self.points].index)


def point_key(scenario: Scenario, metrics: Metrics = "exact") -> str:
    """Hash of what determines a point's result: the resolved scenario (less its name and description), the
    GPU, model and stack profiles it resolves to, the metrics mode, the capsim version and its code
    (:mod:`sim.core.fingerprint`)."""
    from sim.core.fingerprint import result_key

    dump = scenario.model_dump(mode="json")
    for k in _COSMETIC:
        dump.pop(k, None)
    return result_key(dump, scenario, KEY_CHARS, schema=KEY_SCHEMA, capsim=__version__, metrics=metrics)


def _axis_settings(name: str, value: Any) -> dict[str, Any]:
    """Dotted field -> value for one axis value (a plain axis sets one field, a linked axis several)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {name: value}


def load_experiment(path: Path | str, overrides: list[str] | None = None,
                    metrics: Metrics | None = None, n_seeds: int | None = None) -> Experiment:
    """Read and validate an experiment file and resolve every point × seed to a validated scenario.

    ``overrides`` (``--set``) apply to every point after the file's own ``set`` and before the axes;
    ``n_seeds`` (``--seeds``) replaces the file's ``seeds`` by the base seed and the next ``n_seeds − 1``.
    Any invalid point raises :class:`~sim.core.errors.ConfigError` naming the point, before anything runs.
    """
    path = Path(path)
    spec = load_experiment_file(path, ExperimentFile, "sweep")
    if metrics is not None:
        spec = spec.model_copy(update={"metrics": metrics})
    base_raw, base_dir, base_src = read_base_scenario(spec.base, path)
    common = list(spec.set) + list(overrides or [])
    base = apply_overrides(base_raw, common)
    base_scenario = validate_scenario(base, base_src)
    if n_seeds is not None:
        seeds = replication_seeds(base_scenario.seed, n_seeds)
    elif spec.seeds is None:
        seeds = [base_scenario.seed]
    elif isinstance(spec.seeds, int):
        seeds = [base_scenario.seed + i for i in range(spec.seeds)]
    else:
        seeds = list(spec.seeds)

    columns: list[str] = []
    for name, values in spec.axes.items():
        for v in values:
            for col in _axis_settings(name, v):
                if col not in columns:
                    columns.append(col)
    name = spec.name or path.stem
    points: list[Point] = []
    grids = itertools.product(*[[(n, v) for v in vals] for n, vals in spec.axes.items()]) if spec.axes else [()]
    for index, combo in enumerate(grids):
        settings: dict[str, Any] = {}
        for axis_name, value in combo:
            for col, v in _axis_settings(axis_name, value).items():
                if col in settings and settings[col] != v:
                    raise ConfigError(str(path), f"axes.{axis_name}",
                                      f"sets {col} which another axis also sets (to {settings[col]!r})")
                settings[col] = v
        sets = tuple(f"{k}={yaml_value(v)}" for k, v in settings.items())
        for seed in seeds:
            point_sets = list(sets) + [f"seed={seed}"]
            where = " ".join(sets + (f"seed={seed}",))
            try:
                resolved = apply_overrides(base, point_sets)
                resolved["name"] = name
                sc = validate_scenario(resolved, f"{path} [point {where}]", base_dir)
            except ConfigError as exc:
                raise ConfigError(f"{path} [point {where}]", exc.field, exc.problem) from None
            axes = {c: settings.get(c) for c in columns}
            points.append(Point(index, seed, axes, tuple(point_sets), sc, point_key(sc, spec.metrics)))
    return Experiment(name, spec.description, str(path), columns, points, spec.metrics, spec.save_requests, spec)
