"""The scenario file: one YAML document, validated once at load time (pydantic).

``load_scenario(path, overrides)`` applies ``--set a.b=c`` overrides by dotted path before validation, so an
override is checked exactly like the file. Every error is a :class:`~sim.errors.ConfigError` naming the file,
the dotted field and the problem.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- token-length distributions ------------------------------------------------------------------------
class FixedTokens(Strict):
    """Every request has exactly ``value`` tokens."""

    dist: Literal["fixed"] = "fixed"
    value: int = Field(gt=0)


class LognormalTokens(Strict):
    """Lognormal with the given median and 95th percentile, rounded to integers and clipped to [min, max]."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    p95: float = Field(gt=0)
    min: int = Field(1, ge=1)
    max: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "LognormalTokens":
        if self.p95 < self.median:
            raise ValueError(f"p95 ({self.p95}) must be >= median ({self.median})")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class EmpiricalTokens(Strict):
    """Resample (with replacement) the values of one column of a CSV trace; ``file`` is relative to the
    scenario file (or to the capsim data folder, e.g. ``data/traces/azure2023_conv.csv``)."""

    dist: Literal["empirical"] = "empirical"
    file: str
    column: str
    min: int = Field(1, ge=1)
    max: int = Field(10_000_000, ge=1)


TokenDist = Annotated[Union[FixedTokens, LognormalTokens, EmpiricalTokens], Field(discriminator="dist")]


class RequestClass(Strict):
    """A class of requests: its share of arrivals, token lengths and optional shared prefix."""

    name: str
    share: float = Field(gt=0)
    input_tokens: TokenDist
    output_tokens: TokenDist
    prefix_tokens: int = Field(0, ge=0, description="shared system-prompt length")
    prefix_hit_rate: float = Field(0.0, ge=0, le=1, description="probability the prefix is already cached")
    priority: int = 0


class Traffic(Strict):
    """Arrivals: a Poisson process at ``rate_rps`` over a mix of request classes (shares are normalised)."""

    rate_rps: float = Field(gt=0)
    classes: list[RequestClass] = Field(min_length=1)

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[RequestClass]) -> list[RequestClass]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        return v


class Engine(Strict):
    """vLLM-style engine limits of one node."""

    max_num_seqs: int = Field(256, gt=0)
    max_num_batched_tokens: int = Field(8192, gt=0)
    block_size: int = Field(16, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    chunked_prefill: bool = True
    max_model_len: int | None = Field(None, gt=0)
    activation_reserve_gb_per_gpu: float = Field(1.0, ge=0)
    num_gpu_blocks_override: int | None = Field(
        None, gt=0, description="use this many KV blocks instead of the memory plan (as vLLM's flag)"
    )

    @model_validator(mode="after")
    def _check(self) -> "Engine":
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as in vLLM"
            )
        return self


Precision = Literal["bf16", "fp16", "fp8", "int8", "fp4", "int4"]


class Fleet(Strict):
    """``nodes`` identical serving replicas, each ``gpus_per_node`` GPUs with tensor parallelism."""

    nodes: int = Field(gt=0)
    gpu: str = "H100-SXM"
    gpus_per_node: int = Field(1, gt=0)
    model: str = "Llama-3.1-8B"
    weights: Precision = "bf16"
    kv_cache: Precision = "bf16"
    engine: Engine = Engine()
    engine_impl: Literal["fast", "reference"] = "fast"


class Router(Strict):
    """How arrivals are spread over nodes. ``least_work`` counts all outstanding tokens of a node
    (queued + running, prefill and decode still to do); ``power_of_two`` samples two nodes and takes the
    one with less outstanding work."""

    policy: Literal["round_robin", "least_work", "power_of_two"] = "least_work"


class Slo(Strict):
    """Latency objectives. Each is a P95 target and also the per-request threshold for attainment."""

    ttft_p95_s: float | None = Field(2.0, gt=0)
    tpot_p95_s: float | None = Field(0.1, gt=0)
    e2e_p95_s: float | None = Field(None, gt=0)


class Owned(Strict):
    """Owned hardware, per GPU. Defaults follow the guide's 3-year TCO of an 8x H100 box."""

    capex_usd_per_gpu: float | None = Field(None, ge=0, description="default: the GPU profile's purchase price")
    amortisation_years: float = Field(3.0, gt=0)
    power_kw_per_gpu: float = Field(1.25, ge=0, description="whole-box draw per GPU (10 kW per 8x H100)")
    pue: float = Field(1.4, ge=1)
    usd_per_kwh: float = Field(0.10, ge=0)
    colo_usd_per_kw_month: float = Field(500.0, ge=0)
    maintenance_usd_per_gpu_year: float = Field(3125.0, ge=0)
    ops_usd_per_gpu_year: float = Field(10000.0, ge=0)


class Pricing(Strict):
    """How self-hosted capacity is paid for: ``rented`` ($/GPU-hour) or ``owned`` (TCO)."""

    mode: Literal["rented", "owned"] = "rented"
    usd_per_gpu_hour: float | None = Field(None, ge=0, description="default: the GPU profile's rental price")
    owned: Owned = Owned()


class Output(Strict):
    sample_interval_s: float = Field(1.0, gt=0)


class Scenario(Strict):
    """A complete simulation: traffic into a fleet for ``duration_s`` seconds of simulated time."""

    name: str = "scenario"
    description: str = ""
    duration_s: float = Field(gt=0)
    seed: int = Field(0, ge=0)
    warmup_s: float = Field(0.0, ge=0, description="arrivals before this are excluded from latency statistics")
    max_drain_s: float = Field(3600.0, ge=0, description="after duration_s, keep serving this long at most")
    traffic: Traffic
    fleet: Fleet
    router: Router = Router()
    slo: Slo = Slo()
    pricing: Pricing = Pricing()
    output: Output = Output()

    _base_dir: Path | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="scenario")

    @property
    def base_dir(self) -> Path:
        """Folder that relative file paths in the scenario are resolved against."""
        return self._base_dir or Path.cwd()

    @property
    def source(self) -> str:
        """Where the scenario came from (for error messages)."""
        return self._source

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < duration_s ({self.duration_s})")
        return self


# --- loading ---------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    """A ``--set`` value is parsed as YAML: ``4`` is an int, ``fp8`` a string, ``[1, 2]`` a list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied; list items by index (``classes.0.share``)."""
    data = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("--set", item, "expected KEY=VALUE with a dotted key, e.g. fleet.nodes=4")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError("--set", key, f"'{part}' is not an index of {'.'.join(parts[:i])}")
                node = node[int(part)]
            else:
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError("--set", key, f"'{'.'.join(parts[: i + 1])}' is not a section")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError("--set", key, f"'{last}' is not an index")
            node[int(last)] = _parse_value(text)
        else:
            node[last] = _parse_value(text)
    return data


def _format_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # drop pydantic's discriminator tags (e.g. 'lognormal') from the path
    field = ".".join(p for p in loc if p not in {"fixed", "lognormal", "empirical"})
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and err["type"] not in {"extra_forbidden", "missing"}:
        value = err["input"]
        if not isinstance(value, (dict, list)):
            msg = f"{msg} (got {value!r})"
    return field, msg


def validate_scenario(raw: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a raw mapping; raise ConfigError(source, field, problem) on the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a YAML mapping at the top level")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_error(exc)
        raise ConfigError(source, field, msg) from None
    # numbers that validate but make no sense together
    for name in ("duration_s", "traffic.rate_rps"):
        value = scenario.duration_s if name == "duration_s" else scenario.traffic.rate_rps
        if not math.isfinite(value):
            raise ConfigError(source, name, f"must be finite (got {value})")
    return scenario


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), "", f"not valid YAML{where}") from None
    if data is None:
        raise ConfigError(str(path), "", "file is empty")
    return data


def load_scenario(path: Path | str, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file. Relative data paths are resolved against its folder."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides)
    scenario = validate_scenario(raw, str(path))
    scenario._base_dir = path.parent.resolve()
    scenario._source = str(path)
    return scenario
