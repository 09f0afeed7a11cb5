"""The scenario file: one YAML document, validated once at load time (pydantic).

``load_scenario(path, overrides)`` applies ``--set a.b=c`` overrides by dotted path before validation, so an
override is checked exactly like the file. Every error is a :class:`~sim.core.errors.ConfigError` naming the file,
the dotted field and the problem.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from sim.core.errors import ConfigError
from sim.plan.spec import PlanSpec

SHARE_SUM_TOL = 1e-6  # class shares must sum to 1 within this


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    def _check(self) -> LognormalTokens:
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


class PmfTokens(Strict):
    """Draw from a probability mass function stored as a CSV with ``value`` and ``probability`` columns
    (e.g. the ServeGen aggregated PMFs in ``data/traces/servegen/``); probabilities are renormalised and
    values clipped to [min, max]."""

    dist: Literal["pmf"] = "pmf"
    file: str
    value_column: str = "value"
    probability_column: str = "probability"
    min: int = Field(1, ge=1)
    max: int = Field(10_000_000, ge=1)


TokenDist = Annotated[
    FixedTokens | LognormalTokens | EmpiricalTokens | PmfTokens, Field(discriminator="dist")
]


class ClassSlo(Strict):
    """Per-class latency objectives (P95 targets); unset fields fall back to the scenario's ``slo``."""

    ttft_p95_s: float | None = Field(None, gt=0)
    tpot_p95_s: float | None = Field(None, gt=0)
    e2e_p95_s: float | None = Field(None, gt=0)


class Deferrable(Strict):
    """Batch work (the guide's "batch queue"): requests of this class wait in a fleet-level queue and are
    released to the nodes only while there is spare capacity — every ``check_interval_s``, up to
    ``release_per_node`` per up node, while the nodes' mean KV-cache use is below ``release_below_kv`` and
    no interactive request is queued — or unconditionally once less than ``slack_s`` remains before
    ``deadline_s`` (measured from arrival). They are left out of the interactive latency/SLO statistics and
    reported under ``batch`` (deadline met or missed)."""

    deadline_s: float = Field(gt=0)
    release_below_kv: float = Field(0.5, gt=0, le=1)
    check_interval_s: float = Field(10.0, gt=0)
    release_per_node: int = Field(8, ge=1)
    slack_s: float = Field(600.0, ge=0)


class Client(Strict):
    """How the class's clients react to a slow service (an OpenAI-style SDK: give up, back off, retry).

    ``timeout_s`` measures one attempt from the moment it is sent: a streaming client (``stream: true``, the
    default) gives up when no first token has arrived within ``timeout_s`` (httpx's read timeout on a streamed
    response; later inter-token gaps are not timed); a non-streaming client gives up when the whole response
    has not arrived within ``timeout_s``. ``null`` (the default): never gives up. A client that gives up
    withdraws its request (queued: taken off the queue; running: cancelled at the end of the engine step in
    progress, its KV blocks freed). It then retries up to ``retries`` times, retry k being sent
    ``min(max_backoff_s, backoff_s × 2^(k−1)) × (1 − jitter × u)`` seconds after giving up, u uniform in [0, 1)
    (the OpenAI Python SDK: ``max_retries`` 2, backoff 0.5 s doubling up to 8 s, jitter 0.25, timeout 600 s).
    A retry is a new attempt of the same logical request: it is routed (and may be spilled) afresh, and its
    latencies count from the first attempt's arrival. Requests handed to a hosted API follow ``api.retry``
    instead (the client timeout stops once a request is spilled)."""

    timeout_s: float | None = Field(None, gt=0)
    stream: bool = True
    retries: int = Field(0, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(8.0, ge=0)
    jitter: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> Client:
        if self.retries > 0 and self.timeout_s is None:
            raise ValueError("retries need a timeout_s (a client only retries after giving up)")
        return self


class SharedTexts(Strict):
    """A pool of texts shared between requests (system prompts, RAG documents): ``count`` texts whose lengths are
    drawn once from ``tokens``; a request takes ``per_request`` of them, each by Zipf popularity (P(rank r) ∝
    r^−zipf_s; 0 = uniform)."""

    count: int = Field(1, ge=1, le=10_000_000)
    tokens: TokenDist
    zipf_s: float = Field(0.0, ge=0, le=10)
    per_request: int = Field(1, ge=1, le=64)


class Conversation(Strict):
    """Multi-turn conversations (open loop): an arrival continues the conversation that has been ready longest (its
    previous turn arrived at least a think time ago, exponential with mean ``think_time_s``) or starts a new one;
    after each turn it continues with probability 1 − 1/``turns_mean``. A turn's prompt is the conversation so far
    (every earlier prompt and answer) plus the new message (``input_tokens``); a conversation that would exceed
    ``max_context_tokens`` ends and the arrival starts a new one."""

    turns_mean: float = Field(4.0, ge=1)
    think_time_s: float = Field(30.0, ge=0)
    max_context_tokens: int = Field(32768, gt=0)


class SharedPrefix(Strict):
    """What a class's prompts share (prompt = system prompt + documents + conversation so far + new message of
    ``input_tokens``), hashed into prefix-cache units (docs/prefix-cache.md). Hit rates then come from the cache
    (``fleet.engine.prefix_caching``) instead of ``prefix_hit_rate``."""

    system_prompt: SharedTexts | None = None
    documents: SharedTexts | None = Field(None, description="RAG documents (per conversation in a conversation)")
    conversation: Conversation | None = None


class RequestClass(Strict):
    """A class of requests: its share of arrivals, token lengths and optional shared prefix.

    ``share_by_hour`` (24 non-negative factors, hour 0 = 00:00–01:00 local) makes the share time-varying:
    at clock hour h the class is drawn with weight ``share × factor(h)`` (factors are linearly interpolated
    between hour centres). With a replayed ``trace`` the token distributions may be omitted (the trace's
    own lengths are used)."""

    name: str
    description: str = ""
    share: float = Field(gt=0)
    share_by_hour: list[Annotated[float, Field(ge=0)]] | None = Field(None, min_length=24, max_length=24)
    input_tokens: TokenDist | None = None
    output_tokens: TokenDist | None = None
    prefix_tokens: int = Field(0, ge=0, description="shared system-prompt length (with prefix_hit_rate: the "
                               "configured-rate approximation; 'prefix' makes hits come from the cache)")
    prefix_hit_rate: float = Field(0.0, ge=0, le=1, description="probability the prefix is already cached")
    prefix: SharedPrefix | None = None
    spec_acceptance_rate: float | None = Field(
        None, ge=0, le=1, description="this class's speculative-decoding acceptance rate (default: "
        "fleet.speculative.acceptance_rate); a batch's decode steps run at its sequences' mean tokens per step")
    priority: int = 0
    model: str | None = Field(None, description="the model this class asks for (a pool serving it must exist); "
                              "default: fleet.model")
    slo: ClassSlo | None = None
    deferrable: Deferrable | None = None
    client: Client | None = None

    @field_validator("share_by_hour")
    @classmethod
    def _some_hour(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and max(v) <= 0:
            raise ValueError("share_by_hour needs at least one positive factor")
        return v

    @model_validator(mode="after")
    def _one_prefix_model(self) -> RequestClass:
        if self.prefix is not None and (self.prefix_tokens > 0 or self.prefix_hit_rate > 0):
            raise ValueError("prefix (hits from the cache) and prefix_tokens/prefix_hit_rate (a configured hit rate) "
                             "exclude each other")
        return self

    @model_validator(mode="after")
    def _client_not_deferrable(self) -> RequestClass:
        if self.client is not None and self.client.timeout_s is not None and self.deferrable is not None:
            raise ValueError("client.timeout_s: deferrable (batch) work has a deadline, not a client timeout")
        return self


# --- traffic shapes: rate multipliers, composed by multiplication ------------------------------------------
Combine = Literal["multiply", "add"]


class DailyCurve(Strict):
    """Smooth daily cycle: log-rate is a cosine peaking at ``peak_hour`` with max/min = ``peak_to_trough``;
    normalised to mean 1 over a day. ``sharpness`` > 1 narrows the peak (cosine raised to a power)."""

    type: Literal["daily"]
    peak_hour: float = Field(20.0, ge=0, lt=24)
    peak_to_trough: float = Field(4.0, ge=1)
    sharpness: float = Field(1.0, gt=0, le=8)


class OfficeHours(Strict):
    """Business-day curve: ``peak_to_trough``× between ``start_hour`` and ``end_hour`` with logistic edges
    of width ``ramp_h``, plus an optional lunch dip; normalised to mean 1 over a day."""

    type: Literal["office_hours"]
    start_hour: float = Field(9.0, ge=0, lt=24)
    end_hour: float = Field(18.0, gt=0, le=24)
    peak_to_trough: float = Field(8.0, ge=1)
    ramp_h: float = Field(1.0, gt=0, le=6)
    lunch_dip: float = Field(0.0, ge=0, lt=1, description="fractional dip around 12:30")

    @model_validator(mode="after")
    def _check(self) -> OfficeHours:
        if self.end_hour <= self.start_hour:
            raise ValueError(f"end_hour ({self.end_hour}) must be > start_hour ({self.start_hour})")
        return self


class HourlyProfile(Strict):
    """24 relative hourly rates (hour 0 = 00:00–01:00), linearly interpolated between hour centres and
    normalised to mean 1."""

    type: Literal["hourly"]
    values: list[Annotated[float, Field(ge=0)]] = Field(min_length=24, max_length=24)


class WeeklyCurve(Strict):
    """Weekday/weekend cycle: mean weekday rate / mean weekend-day rate = ``weekday_to_weekend`` (solved
    exactly including the smooth ``ramp_h`` transitions at midnight); normalised to mean 1 over a week."""

    type: Literal["weekly"]
    weekday_to_weekend: float = Field(2.5, gt=0)
    weekend_days: list[Annotated[int, Field(ge=0, le=6)]] = [5, 6]
    ramp_h: float = Field(2.0, gt=0, le=12)


class HarmonicTerm(Strict):
    k: int = Field(ge=1)
    cos: float
    sin: float


class Harmonic(Strict):
    """Periodic log-rate ``Σ cos·cos(2πk t/P) + sin·sin(2πk t/P)`` (as written by ``fit``), normalised to
    mean 1 over the period."""

    type: Literal["harmonic"]
    period_h: float = Field(gt=0)
    terms: list[HarmonicTerm] = Field(min_length=1)


class Launch(Strict):
    """Launch spike: ramps (linearly over ``ramp_h``) to ``multiplier``× at ``start_h`` (hours after the run
    starts), holds for ``duration_h``, ramps down to ``after``× (sustained uplift)."""

    type: Literal["launch"]
    start_h: float = Field(ge=0)
    multiplier: float = Field(15.0, ge=0)
    duration_h: float = Field(6.0, ge=0)
    ramp_h: float = Field(0.5, gt=0)
    after: float = Field(1.0, ge=0)
    combine: Combine = "multiply"


class Viral(Strict):
    """Viral incident: from ``start_h`` the factor rises (smoothly, over ``rise_h``) to ``peak``×, then decays
    back to 1 with half-life ``half_life_h``: f = 1 + (peak − 1)·rise(t)·2^(−(t−t_peak)/half_life)."""

    type: Literal["viral"]
    start_h: float = Field(ge=0)
    peak: float = Field(60.0, ge=1)
    rise_h: float = Field(2.0, gt=0)
    half_life_h: float = Field(18.0, gt=0)
    combine: Combine = "multiply"


class BatchWindow(Strict):
    """A scheduled window every day (or on ``days``, 0 = Monday): ``multiplier``× from ``start_hour`` for
    ``duration_h`` with ramps of ``ramp_h``. With ``combine: add`` the excess ``(multiplier − 1) × rate_rps``
    is added instead of multiplied (a batch job does not follow the diurnal curve)."""

    type: Literal["batch"]
    start_hour: float = Field(ge=0, lt=24)
    duration_h: float = Field(gt=0, le=24)
    multiplier: float = Field(ge=0)
    ramp_h: float = Field(0.25, gt=0)
    days: list[Annotated[int, Field(ge=0, le=6)]] = [0, 1, 2, 3, 4, 5, 6]
    combine: Combine = "add"


class Growth(Strict):
    """Exponential growth: factor (1 + per_day)^(t/1 day)."""

    type: Literal["growth"]
    per_day: float = Field(gt=-1)


class Piecewise(Strict):
    """Factor through ``points`` ([hour after start, factor], hours ascending), held flat outside them."""

    type: Literal["piecewise"]
    points: list[tuple[float, Annotated[float, Field(ge=0)]]] = Field(min_length=1)
    interp: Literal["linear", "step"] = "linear"
    combine: Combine = "multiply"

    @field_validator("points")
    @classmethod
    def _ascending(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        hours = [p[0] for p in v]
        if any(b <= a for a, b in itertools.pairwise(hours)):
            raise ValueError("points must have strictly ascending hours")
        return v


ShapeComponent = Annotated[
    DailyCurve | OfficeHours | HourlyProfile | WeeklyCurve | Harmonic | Launch | Viral | BatchWindow | Growth
    | Piecewise,
    Field(discriminator="type"),
]


class Shape(Strict):
    """A rate shape: dimensionless factors whose product (plus any ``combine: add`` excesses) multiplies
    ``traffic.rate_rps``. Periodic components are normalised to mean 1, so ``rate_rps`` is the mean rate
    outside events. ``include`` names other shapes (files in ``traffic_shapes/`` or paths) to multiply in."""

    name: str = ""
    description: str = ""
    include: list[str] = []
    components: list[ShapeComponent] = []


class Dispersion(Strict):
    """Burstiness beyond Poisson. ``gamma_renewal``: arrivals are a renewal process in operational time
    (∫λ) with gamma inter-arrivals of coefficient of variation ``cv``. ``modulated``: a Cox process whose
    rate is multiplied by an independent mean-1 gamma factor of CV ``cv`` redrawn every ``window_s``."""

    model: Literal["poisson", "gamma_renewal", "modulated"] = "poisson"
    cv: float = Field(1.0, gt=0, le=50)
    window_s: float = Field(60.0, gt=0)


class TraceReplay(Strict):
    """Replay a request trace with its own timestamps. Formats: ``azure`` (Azure LLM inference 2023 CSV),
    ``mooncake`` (JSONL; ``hash_ids`` give cached prefix tokens, infinite cache in trace order),
    ``burstgpt`` (CSV), ``vidur`` (Vidur/Splitwise ``arrived_at,num_prefill_tokens,num_decode_tokens``),
    ``csv`` (name the columns). Rows with 0 input or 0 output tokens are dropped (BurstGPT failures).
    ``window_s`` [start, end) is cut on the trace's own clock (seconds from its first request);
    ``time_scale`` multiplies timestamps (0.5 = twice as fast); ``rate_scale`` k thins (k < 1) or superposes
    ⌊k⌋ circularly shifted copies plus a thinned one (k > 1); ``loop`` repeats the trace until
    ``duration_s``."""

    file: str
    format: Literal["auto", "azure", "mooncake", "burstgpt", "vidur", "csv"] = "auto"
    time_column: str | None = None
    input_column: str | None = None
    output_column: str | None = None
    time_unit: Literal["s", "ms", "us", "datetime"] = "s"
    model: str | None = Field(None, description="BurstGPT: keep only rows of this Model")
    window_s: tuple[float, float] | None = None
    time_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    rate_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    loop: bool = False
    hash_block_tokens: int = Field(512, gt=0, description="Mooncake: tokens per hash_ids block")
    prefix_hits: Literal["infinite_cache", "none"] = Field(
        "infinite_cache", description="Mooncake, without fleet.engine.prefix_caching: each request's cached tokens "
        "are its longest prefix of blocks seen earlier in the trace (an infinite cache: the approximation), or none"
    )

    @model_validator(mode="after")
    def _check(self) -> TraceReplay:
        if self.window_s is not None and not (0 <= self.window_s[0] < self.window_s[1]):
            raise ValueError(f"window_s must be [start, end) with 0 <= start < end (got {list(self.window_s)})")
        if self.format == "csv" and (self.time_column is None or self.input_column is None
                                     or self.output_column is None):
            raise ValueError("format csv needs time_column, input_column and output_column")
        return self


_COMPONENT_TAGS = {"daily", "office_hours", "hourly", "weekly", "harmonic", "launch", "viral", "batch", "growth",
                   "piecewise"}


def _inline_shape(value: Any, where: str) -> Any:
    """Validate an inline shape mapping now, so its errors name the component field (not union tags)."""
    if isinstance(value, (str, Shape)):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}expected a shape name, a path or a mapping with components")
    try:
        return Shape.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if p not in _COMPONENT_TAGS)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where}{loc}: {msg}") from None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


DEMAND_KEYS = ("rate_rps", "output_tokens_per_day", "tokens_per_day")


class Traffic(Strict):
    """Arrivals. Either a (non-homogeneous) Poisson process at ``rate_rps × shape(t)`` — ``shape`` is a file
    name in ``traffic_shapes/``, a path, an inline shape, or a list of these multiplied together; with no
    shape the rate is constant — or a replayed ``trace`` (``rate_rps``, if given, rescales it to that mean
    rate). Demand may instead be stated as ``output_tokens_per_day`` or ``tokens_per_day`` (input + output):
    :func:`validate_scenario` converts it to ``rate_rps`` (see :mod:`sim.traffic.demand`). Simulated time 0 is
    ``start_weekday`` at ``start_hour`` (local clock of the shape's daily and weekly curves). Arrivals are
    split over ``classes`` by share (shares must sum to 1, within 1e-6)."""

    rate_rps: float | None = Field(None, gt=0, allow_inf_nan=False)
    output_tokens_per_day: float | None = Field(None, gt=0, description="demand as output tokens per day; "
                                                "converted to rate_rps by the class mix's mean output tokens")
    tokens_per_day: float | None = Field(None, gt=0, description="demand as input + output tokens per day; "
                                         "converted to rate_rps by the class mix's mean tokens per request")
    shape: str | Shape | list[str | Shape] | None = None
    dispersion: Dispersion = Dispersion()
    trace: TraceReplay | None = None
    start_weekday: Weekday = "mon"
    start_hour: float = Field(0.0, ge=0, lt=24)
    classes: list[RequestClass] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_trace_class(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("trace") is not None and not data.get("classes"):
            data = {**data, "classes": [{"name": "trace", "share": 1.0}]}
        return data

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_inline_shape(x, f"item {i}: ") for i, x in enumerate(v)]
        return v if v is None else _inline_shape(v, "")

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[RequestClass]) -> list[RequestClass]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _check(self) -> Traffic:
        demand = [k for k in DEMAND_KEYS if getattr(self, k) is not None]
        if len(demand) > 1:
            raise ValueError(f"give exactly one of {', '.join(DEMAND_KEYS)} (got {', '.join(demand)})")
        if self.trace is None:
            if not demand:
                raise ValueError(f"one of {', '.join(DEMAND_KEYS)} is required (unless a trace is replayed)")
            if not self.classes:
                raise ValueError("classes: at least one request class is required")
            for i, c in enumerate(self.classes):
                if c.input_tokens is None or c.output_tokens is None:
                    raise ValueError(f"classes.{i} ({c.name}): input_tokens and output_tokens are required")
        total = sum(c.share for c in self.classes)
        if self.classes and abs(total - 1.0) > SHARE_SUM_TOL:
            raise ValueError(f"classes: shares must sum to 1, they sum to {total:.6g} ("
                             + " + ".join(f"{c.share:g}" for c in self.classes) + ")")
        if self.trace is not None:
            if self.shape is not None:
                raise ValueError("shape and trace are exclusive (a trace keeps its own timestamps)")
            if self.dispersion.model != "poisson":
                raise ValueError("dispersion applies to shaped traffic, not to a replayed trace")
            if self.output_tokens_per_day is not None or self.tokens_per_day is not None:
                raise ValueError("output_tokens_per_day / tokens_per_day need request classes with token "
                                 "distributions, not a replayed trace (give rate_rps)")
            if self.rate_rps is not None and self.trace.rate_scale != 1.0:
                raise ValueError("give either rate_rps (target mean rate) or trace.rate_scale, not both")
        return self


Scheduler = Literal["preempt", "reserve_kv", "sglang"]


class SglangAdmission(Strict):
    """SGLang's admission control (``PrefillAdder``): a request is admitted only if the free KV, after its prefill,
    also holds ``new_token_ratio`` × the decode tokens still to come of every running request and of itself. The
    ratio starts at ``init_new_token_ratio``, decays linearly to ``min_new_token_ratio`` over ``decay_steps`` engine
    steps, and is raised again when a decode step runs out of KV and retracts requests (to the decoded share of the
    running requests' outputs plus ``retract_decode_steps`` tokens each, at most 1). Defaults: SGLang's
    ``global_config`` (0.7, 0.7 × 0.14, 600 steps, 20)."""

    init_new_token_ratio: float = Field(0.7, gt=0, le=1)
    min_new_token_ratio: float = Field(0.098, ge=0, le=1)
    decay_steps: int = Field(600, gt=0)
    retract_decode_steps: int = Field(20, ge=0)


class StepJitterSpec(Strict):
    """Seeded step-time variability (:mod:`sim.engine.jitter`): each engine step takes ``step_s × X``, ``X``
    lognormal with mean 1 and coefficient of variation ``cv``; 0 = off (the default). ``seed``: default the
    scenario's."""

    cv: float = Field(0.0, ge=0, le=2)
    seed: int | None = Field(None, ge=0)


class Engine(Strict):
    """vLLM-style engine limits of one node. Fields left unset take the software stack's defaults
    (``engine_defaults`` of ``hardware_profiles/stacks/*.yaml``), else the values below."""

    max_num_seqs: int = Field(256, gt=0)
    max_num_batched_tokens: int = Field(8192, gt=0)
    block_size: int = Field(16, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    chunked_prefill: bool = True
    max_model_len: int | None = Field(None, gt=0)
    activation_reserve_gb_per_gpu: float = Field(1.0, ge=0)
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs", description="waiting-queue order, as vLLM's --scheduling-policy: arrival order, or by the request "
        "class's priority (lower first) then arrival"
    )
    reserve_kv: bool | None = Field(
        None, description="reserve a request's whole KV (prompt + output) at admission, as TensorRT-LLM's "
        "GUARANTEED_NO_EVICT scheduler: never preempts, admits fewer requests; default: the software stack's "
        "scheduler (reserve_kv for nvidia-trtllm, vLLM-style preemption otherwise)"
    )
    num_gpu_blocks_override: int | None = Field(
        None, gt=0, description="use this many KV blocks instead of the memory plan (as vLLM's flag)"
    )
    scheduler: Scheduler | None = Field(
        None, description="admission and eviction: 'preempt' (vLLM v1: allocate as computed, recompute the newest "
        "when full; TensorRT-LLM MAX_UTILIZATION), 'reserve_kv' (TensorRT-LLM GUARANTEED_NO_EVICT), 'sglang' "
        "(new-token-ratio admission, retraction on OOM); default: the software stack's"
    )
    sglang: SglangAdmission = SglangAdmission()
    step_jitter: StepJitterSpec = StepJitterSpec()
    num_scheduler_steps: int = Field(
        1, ge=1, description="vLLM v0's multi-step scheduling (--num-scheduler-steps, vLLM 0.6-0.7): a decode-only "
        "step that starts a run commits the running batch to this many decode steps, and waiting requests are "
        "admitted only between runs (1 = schedule every step, vLLM v1 and the other stacks)"
    )
    prefix_caching: bool = Field(
        False, description="shared block-level prefix cache (vLLM's automatic prefix caching): requests whose "
        "traffic carries prefix hashes (a Mooncake trace's hash_ids, classes with a 'prefix' section) hit what is "
        "cached on their node; cached blocks are shared, unreferenced ones evicted LRU (docs/prefix-cache.md)"
    )
    prefix_unit_tokens: int = Field(
        256, gt=0, description="tokens per prefix-cache unit (a multiple of block_size): hits are whole units"
    )

    @model_validator(mode="after")
    def _check(self) -> Engine:
        if self.prefix_unit_tokens % self.block_size:
            raise ValueError(f"prefix_unit_tokens ({self.prefix_unit_tokens}) must be a multiple of block_size "
                             f"({self.block_size})")
        if (self.scheduler is not None and self.reserve_kv is not None
                and (self.scheduler == "reserve_kv") != self.reserve_kv):
            raise ValueError(f"reserve_kv={self.reserve_kv} contradicts scheduler '{self.scheduler}'")
        if self.sglang.min_new_token_ratio > self.sglang.init_new_token_ratio:
            raise ValueError("sglang.min_new_token_ratio must be <= sglang.init_new_token_ratio")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as in vLLM"
            )
        return self


Precision = Literal["bf16", "fp16", "fp8", "int8", "fp4", "int4"]


class OnDemand(Strict):
    """Nodes started by the autoscaler: paid from the start request until terminated.

    Start-up delay = ``provision_s`` (VM/instance start) + ``model_load_s`` (weights into GPU memory)."""

    max_nodes: int = Field(4, ge=0)
    provision_s: float = Field(120.0, ge=0)
    model_load_s: float = Field(45.0, ge=0)
    price_multiplier: float = Field(1.0, gt=0, description="× the reserved $/GPU-hour")


class Spot(Strict):
    """Discounted nodes that the provider evicts (a Poisson process per node) after ``notice_s`` warning.

    On notice the node takes no new requests; at eviction its unfinished requests are re-dispatched to the
    rest of the fleet (``on_eviction: requeue``, recomputed from scratch) or to the hosted API
    (``spill``, when one is configured). With ``replace``, a new spot node is requested at once and
    serves after the on-demand start-up delay."""

    nodes: int = Field(0, ge=0)
    discount: float = Field(0.7, ge=0, lt=1, description="fraction off the reserved $/GPU-hour")
    evictions_per_node_hour: float = Field(0.05, ge=0)
    notice_s: float = Field(120.0, ge=0)
    on_eviction: Literal["requeue", "spill"] = "requeue"
    replace: bool = True


class Autoscaler(Strict):
    """Scales on-demand nodes every ``interval_s``.

    * ``target_utilisation``: desired = ceil(up × signal / target), signal = mean KV-cache use of up nodes
      (``metric: kv``) or running sequences / max_num_seqs (``metric: running``) — the HPA rule.
    * ``queue``: +1 node while waiting requests per up node > ``scale_up_queue``; −1 below ``scale_down_queue``.
    * ``schedule``: desired total nodes by hour of day (``schedule``: list of [hour, nodes], step function),
      or, with ``rps_per_node``, from the traffic forecast: ceil(rate(t + lead_s) / rps_per_node).
    Scale-down drains a node (no new requests; billed until its last request finishes) and waits
    ``scale_down_cooldown_s`` after any scaling action."""

    policy: Literal["none", "target_utilisation", "queue", "schedule"] = "none"
    interval_s: float = Field(30.0, gt=0)
    metric: Literal["kv", "running"] = "kv"
    target_utilisation: float = Field(0.7, gt=0, le=1)
    scale_up_queue: float = Field(2.0, ge=0)
    scale_down_queue: float = Field(0.1, ge=0)
    scale_down_cooldown_s: float = Field(300.0, ge=0)
    schedule: list[tuple[float, int]] = []
    rps_per_node: float | None = Field(None, gt=0)
    lead_s: float | None = Field(None, ge=0, description="forecast lead; default: the start-up delay")

    @field_validator("schedule")
    @classmethod
    def _sorted_hours(cls, v: list[tuple[float, int]]) -> list[tuple[float, int]]:
        for hour, nodes in v:
            if not 0 <= hour < 24 or nodes < 0:
                raise ValueError(f"schedule entries are [hour in 0..24, nodes >= 0], got [{hour}, {nodes}]")
        return sorted(v)


class Parallelism(Strict):
    """How a node's GPUs split a model (:mod:`sim.perf.moe`). ``tensor``: tensor-parallel degree of attention and
    dense layers (default: every GPU of the node; fewer → ``gpus_per_node / tensor`` attention data-parallel
    replicas, each caching its own sequences' KV). ``expert``: expert-parallel degree of the MoE layers (1 = the
    experts are tensor-split over all GPUs; ``gpus_per_node`` = each GPU holds ``experts / expert`` whole experts and
    tokens travel by all-to-all)."""

    tensor: int | None = Field(None, gt=0,
                               description="attention/dense tensor-parallel degree (default: gpus_per_node)")
    expert: int = Field(1, gt=0, description="expert-parallel degree of the MoE layers (1: experts tensor-split)")
    expert_imbalance: float = Field(
        1.25, ge=1, description="tokens (and distinct experts) on the busiest expert-parallel rank ÷ the mean; applies "
        "only with expert > 1 (tensor-split experts balance by construction)")
    all_to_all_latency_s: float = Field(25e-6, ge=0, description="fixed latency of one all-to-all (dispatch or "
                                        "combine) per MoE layer")
    all_to_all_bytes_per_element: float = Field(2.0, gt=0, description="activation bytes sent per hidden element "
                                                "(2 = BF16; DeepEP dispatches FP8: 1)")


class Speculative(Strict):
    """Speculative decoding of a node (:mod:`sim.perf.speculative`): a drafter proposes ``num_tokens`` tokens per
    sequence and step, the target model verifies them all in one pass and keeps the accepted prefix plus one token of
    its own. ``acceptance_rate``: probability that a drafted token is accepted given its predecessors were (assumed
    i.i.d. per position), so a step emits ``(1 − a^(k+1)) / (1 − a)`` tokens per sequence on average."""

    method: Literal["draft", "eagle", "mtp", "ngram"]
    num_tokens: int = Field(gt=0, le=16, description="draft tokens proposed per sequence and step (k)")
    acceptance_rate: float = Field(ge=0, le=1, description="per-token acceptance probability (i.i.d. assumption)")
    draft_model: str | None = Field(None, description="catalogue model of the drafter (method: draft)")
    draft_params: float | None = Field(
        None, ge=0, description="drafter parameters read and multiplied per draft pass (default: from the method — "
        "eagle: one target layer + a 32k-vocabulary head; mtp: one target layer's active parameters + the LM head; "
        "draft: the draft model's; ngram: 0)")
    draft_overhead_s: float = Field(1.5e-4, ge=0, description="fixed cost of one draft pass (launches, sampling)")
    verify_tokens: int | None = Field(
        None, gt=1, description="positions the target verifies per sequence and step (default num_tokens + 1, a chain);"
        " a draft tree verifies more (SGLang's speculative_num_draft_tokens)")

    @model_validator(mode="after")
    def _check_draft(self) -> Speculative:
        if self.method == "draft" and self.draft_model is None and self.draft_params is None:
            raise ValueError("method 'draft' needs draft_model (a catalogue model) or draft_params")
        if self.method != "draft" and self.draft_model is not None:
            raise ValueError(f"draft_model is only for method 'draft' (got method '{self.method}')")
        if self.verify_tokens is not None and self.verify_tokens < self.num_tokens + 1:
            raise ValueError(f"verify_tokens ({self.verify_tokens}) must be >= num_tokens + 1 ({self.num_tokens + 1})")
        return self

PoolRole = Literal["mixed", "prefill", "decode"]
LinkKind = Literal["nvlink", "infiniband", "roce", "ethernet"]

#: per link kind: (bandwidth in GB/s per direction available to one node's KV transfer, one-way latency in s).
#: NVLink 4 (H100 NVSwitch): 450 GB/s per GPU per direction; InfiniBand NDR and RoCE 400 GbE: 50 GB/s per NIC
#: (one NIC per GPU is common, one is assumed here); Ethernet 100 GbE: 12.5 GB/s. Latencies are typical
#: small-message RDMA / TCP figures, not measurements.
LINK_DEFAULTS: dict[str, tuple[float, float]] = {
    "nvlink": (450.0, 2e-6),
    "infiniband": (50.0, 5e-6),
    "roce": (50.0, 10e-6),
    "ethernet": (12.5, 50e-6),
}


class Interconnect(Strict):
    """The link a pool's KV cache moves over (prefill → decode pools, :doc:`docs/pools.md`): ``kind`` sets
    defaults (:data:`LINK_DEFAULTS`), ``bandwidth_gb_per_s`` and ``latency_s`` override them; ``overlap``:
    the transfer overlaps with the prefill's compute layer by layer (as Splitwise / DistServe / Dynamo do)."""

    kind: LinkKind = "infiniband"
    bandwidth_gb_per_s: float | None = Field(None, gt=0)
    latency_s: float | None = Field(None, ge=0)
    overlap: bool = True

    @property
    def bandwidth_bytes_per_s(self) -> float:
        gb = self.bandwidth_gb_per_s if self.bandwidth_gb_per_s is not None else LINK_DEFAULTS[self.kind][0]
        return gb * 1e9

    @property
    def one_way_latency_s(self) -> float:
        return self.latency_s if self.latency_s is not None else LINK_DEFAULTS[self.kind][1]


def model_key(name: str) -> str:
    """How model names are compared (as the catalogue looks them up): case, spaces and ``_`` / ``-`` ignored."""
    return name.strip().lower().replace("_", "-")


class Pool(Strict):
    """One pool of identical nodes in ``fleet.pools`` (see docs/pools.md): its own GPU, GPUs per node (tensor
    parallelism), model, precision, stack and engine settings, reserved ``nodes`` plus optional ``spot`` and
    autoscaled ``on_demand`` nodes, ``pricing`` (default: the scenario's), and ``role``: ``mixed`` serves whole
    requests; ``prefill`` / ``decode`` split them (disaggregated serving; the KV moves over ``interconnect``).
    Fields left unset inherit the fleet-level value (``fleet.gpu``, ``fleet.model``, ``fleet.engine`` merged
    key by key, ...)."""

    name: str = Field(min_length=1)
    role: PoolRole = "mixed"
    nodes: int = Field(0, ge=0)
    gpu: str = "H100-SXM"
    gpus_per_node: int = Field(1, gt=0)
    model: str = "Llama-3.1-8B"
    weights: Precision = "bf16"
    kv_cache: Precision = "bf16"
    engine: Engine = Engine()
    stack: str | None = None
    parallelism: Parallelism | None = None
    speculative: Speculative | None = None
    on_demand: OnDemand = OnDemand(max_nodes=0)
    spot: Spot = Spot()
    autoscaler: Autoscaler = Autoscaler()
    pricing: Pricing | None = Field(None, description="default: the scenario's pricing (its $/GPU-hour default "
                                    "is this pool's GPU's)")
    interconnect: Interconnect | None = Field(None, description="KV transfer link (prefill/decode pools)")

    @model_validator(mode="after")
    def _check_pool(self) -> Pool:
        if self.autoscaler.policy != "none" and self.on_demand.max_nodes < 1:
            raise ValueError("an autoscaler needs on_demand.max_nodes >= 1")
        if self.autoscaler.policy == "schedule" and not self.autoscaler.schedule and not self.autoscaler.rps_per_node:
            raise ValueError("autoscaler policy 'schedule' needs a schedule or rps_per_node")
        return self

    @property
    def max_nodes(self) -> int:
        return self.nodes + self.spot.nodes + self.on_demand.max_nodes


#: fleet-level keys a pool inherits when it leaves them unset (``engine`` is merged key by key)
POOL_INHERITED = ("gpu", "gpus_per_node", "model", "weights", "kv_cache", "engine", "stack", "parallelism",
                  "speculative")
#: fleet-level keys that belong to each pool once ``fleet.pools`` is given
POOL_ONLY = ("spot", "on_demand", "autoscaler")


def _inherit_pools(data: Any) -> Any:
    """``fleet.pools`` given: each pool inherits the fleet-level keys it leaves unset; ``fleet.nodes`` becomes
    the pools' reserved total (given anyway, it must equal it); spot / on-demand / autoscaler are per pool."""
    if not isinstance(data, dict) or data.get("pools") is None:
        return data
    pools = data["pools"]
    if not isinstance(pools, list):
        return data  # pydantic reports the type
    data = dict(data)
    merged = []
    for pool in pools:
        if not isinstance(pool, dict):
            merged.append(pool)
            continue
        p = dict(pool)
        for key in POOL_INHERITED:
            if key not in data or data[key] is None:
                continue
            if key not in p:
                p[key] = data[key]
            elif key == "engine" and isinstance(p[key], dict) and isinstance(data[key], dict):
                p[key] = {**data[key], **p[key]}
        merged.append(p)
    data["pools"] = merged
    for key in POOL_ONLY:
        given = data.get(key)
        default = Fleet.model_fields[key].default.model_dump()
        if given not in (None, {}) and given != default:
            raise ValueError(f"{key}: with fleet.pools, give {key} per pool (fleet.pools[].{key})")
    counts = [p.get("nodes", 0) if isinstance(p, dict) else 0 for p in merged]
    if all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        total = sum(counts)
        if data.get("nodes") is not None and data["nodes"] != total:
            raise ValueError(f"nodes: with fleet.pools, nodes are given per pool (fleet.pools[].nodes); "
                             f"fleet.nodes, if given, must equal their sum ({total}), got {data['nodes']}")
        data["nodes"] = total
    if "model" not in data and merged and all(isinstance(p, dict) for p in merged):
        models = {model_key(str(p.get("model", Pool.model_fields["model"].default))) for p in merged}
        served = [str(p.get("model", Pool.model_fields["model"].default)) for p in merged]
        # one model: classes default to it; several: every class must name its model (checked by the scenario)
        data["model"] = served[0] if len(models) == 1 else ""
    return data


class Fleet(Strict):
    """``nodes`` reserved serving replicas (always up, always paid), each ``gpus_per_node`` GPUs with tensor
    parallelism, plus optional ``spot`` nodes and autoscaled ``on_demand`` nodes of the same kind.

    With ``pools`` the fleet is a list of pools instead (:class:`Pool`, docs/pools.md), each with its own GPU,
    model, nodes and pricing; the fleet-level fields are then defaults the pools inherit, ``nodes`` is the
    pools' reserved total, and ``model`` the model of classes that name none ("" when the pools serve several
    models: every class must name its own). Without ``pools`` the fleet is one ``mixed`` pool (``pool_list``)."""

    nodes: int = Field(ge=0)
    gpu: str = "H100-SXM"
    gpus_per_node: int = Field(1, gt=0)
    model: str = "Llama-3.1-8B"
    weights: Precision = "bf16"
    kv_cache: Precision = "bf16"
    engine: Engine = Engine()
    engine_impl: Literal["fast", "reference"] = "fast"
    stack: str | None = Field(None, description="software stack whose fitted factors to use (hardware_profiles/"
                              "stacks/); default: the GPU profile's calibration or default stack")
    parallelism: Parallelism | None = Field(None, description="tensor vs expert parallelism of the node's GPUs "
                                            "(MoE models); default: tensor parallelism over every GPU")
    speculative: Speculative | None = Field(None, description="speculative decoding (default: none)")
    on_demand: OnDemand = OnDemand(max_nodes=0)
    spot: Spot = Spot()
    autoscaler: Autoscaler = Autoscaler()
    pools: list[Pool] | None = Field(None, min_length=1, description="several pools (docs/pools.md); "
                                     "default: one mixed pool made of the fields above")

    @model_validator(mode="before")
    @classmethod
    def _pools_inherit(cls, data: Any) -> Any:
        return _inherit_pools(data)

    @model_validator(mode="after")
    def _check_fleet(self) -> Fleet:
        # at least one node unless every request goes to a hosted API: checked in Scenario._check_spill
        if self.autoscaler.policy != "none" and self.on_demand.max_nodes < 1:
            raise ValueError("an autoscaler needs on_demand.max_nodes >= 1")
        if self.autoscaler.policy == "schedule" and not self.autoscaler.schedule and not self.autoscaler.rps_per_node:
            raise ValueError("autoscaler policy 'schedule' needs a schedule or rps_per_node")
        if self.pools is not None:
            names = [p.name for p in self.pools]
            if len(set(names)) != len(names):
                raise ValueError(f"pools: pool names must be unique, got {names}")
            for p in self.pools:  # the traffic's prefix hashes follow the fleet-level engine
                if (p.engine.prefix_caching, p.engine.prefix_unit_tokens) != (
                        self.engine.prefix_caching, self.engine.prefix_unit_tokens):
                    raise ValueError(f"pools.{p.name}.engine: prefix_caching and prefix_unit_tokens are set for the "
                                     "whole fleet (fleet.engine), not per pool")
            for role, other in (("prefill", "decode"), ("decode", "prefill")):
                for p in self.pools:
                    if p.role == role and not any(q.role == other and model_key(q.model) == model_key(p.model)
                                                  for q in self.pools):
                        raise ValueError(f"pools: {role} pool '{p.name}' needs a {other} pool of the same model "
                                         f"({p.model})")
        return self

    @property
    def pooled(self) -> bool:
        """Whether the scenario gives ``fleet.pools`` (per-pool sections appear in the summary only then)."""
        return self.pools is not None

    def pool_list(self) -> list[Pool]:
        """The fleet's pools: ``pools`` as given, or one ``mixed`` pool named ``fleet`` made of the fleet-level
        fields (pricing None: the scenario's)."""
        if self.pools is not None:
            return list(self.pools)
        return [Pool(name="fleet", role="mixed", nodes=self.nodes, gpu=self.gpu, gpus_per_node=self.gpus_per_node,
                     model=self.model, weights=self.weights, kv_cache=self.kv_cache, engine=self.engine,
                     stack=self.stack, parallelism=self.parallelism, speculative=self.speculative,
                     on_demand=self.on_demand, spot=self.spot, autoscaler=self.autoscaler)]

    def pool_fleet(self, index: int) -> Fleet:
        """Pool ``index`` as a single-pool :class:`Fleet` (what the per-node machinery — node model, capacity,
        energy, cost — reads), keeping ``engine_impl``."""
        if self.pools is None:
            return self
        p = self.pools[index]
        return Fleet(nodes=p.nodes, gpu=p.gpu, gpus_per_node=p.gpus_per_node, model=p.model, weights=p.weights,
                     kv_cache=p.kv_cache, engine=p.engine, engine_impl=self.engine_impl, stack=p.stack,
                     parallelism=p.parallelism, speculative=p.speculative, on_demand=p.on_demand, spot=p.spot,
                     autoscaler=p.autoscaler)

    @property
    def initial_nodes(self) -> int:
        """Nodes serving at t = 0: reserved and spot, over all pools."""
        return sum(p.nodes + p.spot.nodes for p in self.pool_list())

    @property
    def max_nodes(self) -> int:
        """Node slots: reserved, then spot, then on-demand (pool by pool, in pool order)."""
        if self.pools is not None:
            return sum(p.max_nodes for p in self.pools)
        return self.nodes + self.spot.nodes + self.on_demand.max_nodes


class Router(Strict):
    """How arrivals are spread over nodes. ``least_work`` counts all outstanding tokens of a node
    (queued + running, prefill and decode still to do); ``power_of_two`` samples two nodes and takes the
    one with less outstanding work; ``prefix_aware`` takes the node with the lowest outstanding tokens +
    ``prefix_weight`` × the request's prompt tokens not in that node's prefix cache (Dynamo's KV router cost);
    ``session_affinity`` keeps a conversation on the node of its first turn (new ones: least work). For pools of
    different GPUs (docs/pools.md): ``weighted_least_work`` divides a node's outstanding tokens by its speed (what
    its pool sustains for the traffic mix, from the performance model), ``weighted_round_robin`` sends each node a
    share proportional to its speed.

    ``staleness_s`` > 0: the router sees node state (outstanding tokens, cached prefixes) as sampled every
    ``staleness_s`` seconds, plus, with ``count_own``, the requests it sent itself since the last sample (as real
    routers count their own in-flight requests); 0: exact state now (docs/prefix-cache.md). The speed-weighted
    routers always read the exact state.

    ``pool_mode``: ``spread`` routes over the nodes of every pool serving the request's model together;
    ``overflow`` tries those pools in list order and moves on to the next one when the node the policy picks in
    a pool already has ``overflow_max_waiting`` or more requests waiting (the last pool takes what is left, and
    a spill policy may then send it to the hosted API)."""

    policy: Literal["round_robin", "least_work", "power_of_two", "prefix_aware", "session_affinity",
                    "weighted_least_work", "weighted_round_robin"] = "least_work"
    staleness_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="node-state sampling interval (0: exact)")
    count_own: bool = Field(True, description="between samples, add the work of the requests the router sent")
    prefix_weight: float = Field(1.0, ge=0, allow_inf_nan=False,
                                 description="prefix_aware: weight of uncached prompt tokens against load")
    pool_mode: Literal["spread", "overflow"] = "spread"
    overflow_max_waiting: int = Field(4, ge=0)


class Slo(Strict):
    """Latency objectives. Each is a P95 target and also the per-request threshold for attainment.

    ``slo.met`` needs every P95 target and ``attainment ≥ attainment_target`` (attainment counts every
    arrived request: rejected, failed, timed-out and unfinished ones miss), and no interactive class clearly below
    the attainment target on its own targets (a class's ``slo`` or these; one-sided 95 % Wilson bound on its
    arrivals, :func:`sim.metrics.tables.class_clearly_misses`), so a fleet-wide figure cannot hide a class that
    misses and a class of a few arrivals cannot fail it on one unlucky request; with ``require_worst_window`` also
    the worst ``window_s`` window's attainment (the guide sizes for the peak hour, not the day's average)."""

    ttft_p95_s: float | None = Field(2.0, gt=0)
    tpot_p95_s: float | None = Field(0.1, gt=0)
    e2e_p95_s: float | None = Field(None, gt=0)
    attainment_target: float = Field(0.95, ge=0, le=1, description="share of requests that must meet every target")
    window_s: float = Field(3600.0, gt=0, description="length of the per-window view (P95s and attainment)")
    require_worst_window: bool = Field(False, description="slo.met also needs the worst window's attainment")
    every_class: bool = Field(True, description="slo.met also needs no interactive class clearly below the "
                                                "attainment target (one-sided 95 % bound on its arrivals; false: "
                                                "only classes with their own slo decide)")


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


class Energy(Strict):
    """Power draw and carbon (``sim.metrics.energy``): each GPU draws ``idle_w`` + (``tdp_w`` − ``idle_w``) × busy
    share × ``busy_power_fraction`` (profile values), plus ``node_overhead_w_per_gpu`` (CPUs, NICs, fans; the guide's
    10 kW per 8× H100 box at full load less 8 × 700 W), times ``pue``. CO2 from a constant grid intensity or a
    24-value local-hour profile."""

    pue: float | None = Field(None, ge=1, description="default: pricing.owned.pue")
    usd_per_kwh: float | None = Field(None, ge=0, description="default: pricing.owned.usd_per_kwh")
    node_overhead_w_per_gpu: float = Field(550.0, ge=0)
    busy_power_fraction: float = Field(1.0, gt=0, le=1, description="share of (TDP − idle) a busy GPU adds")
    grid_kg_co2_per_kwh: float = Field(0.48, ge=0, description="Ember Global Electricity Review 2024: 480 g/kWh")
    grid_kg_co2_per_kwh_by_hour: list[Annotated[float, Field(ge=0)]] | None = Field(None, min_length=24,
                                                                                    max_length=24)


class Output(Strict):
    sample_interval_s: float = Field(1.0, gt=0)


# --- hosted API and spill policies (issue 5) -----------------------------------------------------------
class ApiLatency(Strict):
    """Latency of one API call: TTFT = ``network_s`` + lognormal(``ttft_median_s``, ``ttft_p95_s``) +
    ``ttft_s_per_input_token`` × uncached input tokens; then the remaining output tokens stream at a per-call
    rate drawn lognormal with median ``output_tokens_per_s`` and coefficient of variation ``output_rate_cv``."""

    ttft_median_s: float = Field(0.4, gt=0)
    ttft_p95_s: float = Field(1.2, gt=0)
    ttft_s_per_input_token: float = Field(0.0001, ge=0)
    network_s: float = Field(0.05, ge=0, description="client ↔ provider round trip added to TTFT")
    output_tokens_per_s: float = Field(85.0, gt=0)
    output_rate_cv: float = Field(0.2, ge=0, le=3)
    batch_median_s: float = Field(7200.0, gt=0, description="batch tier: median completion time")
    batch_p95_s: float = Field(14400.0, gt=0, description="batch tier: 95th percentile completion time")

    @model_validator(mode="after")
    def _check(self) -> ApiLatency:
        if self.ttft_p95_s < self.ttft_median_s:
            raise ValueError(f"ttft_p95_s ({self.ttft_p95_s}) must be >= ttft_median_s ({self.ttft_median_s})")
        if self.batch_p95_s < self.batch_median_s:
            raise ValueError(f"batch_p95_s ({self.batch_p95_s}) must be >= batch_median_s ({self.batch_median_s})")
        return self


class ApiLimits(Strict):
    """Account limits, each a token bucket refilled continuously and holding ``bucket_s`` seconds of its
    per-minute limit (60: one minute's worth). Tokens counted are the call's input + output tokens (``tpm``),
    or input / output alone (``input_tpm`` / ``output_tpm``, Anthropic style). A call over any limit, or over
    ``max_concurrency`` calls in progress, is answered 429 at once and not billed. None: no limit."""

    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    input_tpm: float | None = Field(None, gt=0)
    output_tpm: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, gt=0)
    bucket_s: float = Field(60.0, gt=0, le=3600)


class ApiRetry(Strict):
    """Client retry policy: after a 429, a 5xx (outage), a transient failure or a timeout, wait
    ``min(backoff_max_s, backoff_base_s × multiplier^(k−1))`` before retry k (``full`` jitter: a uniform draw
    in [0, that]; ``equal``: half fixed, half uniform; ``none``), at most ``max_retries`` times; then give up.
    ``timeout_s``: the client abandons an attempt not finished by then (the work done is billed)."""

    max_retries: int = Field(2, ge=0, le=50)
    backoff_base_s: float = Field(1.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    backoff_max_s: float = Field(30.0, ge=0)
    jitter: Literal["full", "equal", "none"] = "full"
    timeout_s: float | None = Field(120.0, gt=0)


class ApiOutage(Strict):
    """A window [start_s, end_s) of simulated time in which every call fails at once with a 5xx (not billed)."""

    start_s: float = Field(ge=0)
    end_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _check(self) -> ApiOutage:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be > start_s ({self.start_s})")
        return self


class Api(Strict):
    """The hosted API that spilled requests go to. ``provider`` + ``model`` pick an entry of the catalogue
    (``hardware_profiles/apis.yaml``); any price, ``latency``, ``limits`` or ``failure_rate`` given here
    overrides it (without a catalogue entry, the prices are required). Prices are USD per million tokens;
    the cached-input price applies to a request's prefix-cached tokens (default: the input price); the batch
    tier costs ``1 − batch_discount`` of the synchronous price. ``failure_rate``: chance that an admitted call
    fails part-way (the work processed until then is billed). ``on_give_up``: what happens to a request whose
    retries are exhausted: ``fail`` (status failed) or ``fleet`` (queue it on the fleet after all)."""

    provider: str | None = None
    model: str | None = None
    input_usd_per_mtok: float | None = Field(None, ge=0)
    output_usd_per_mtok: float | None = Field(None, ge=0)
    cached_input_usd_per_mtok: float | None = Field(None, ge=0)
    batch_discount: float | None = Field(None, ge=0, lt=1)
    latency: ApiLatency | None = None
    limits: ApiLimits | None = None
    failure_rate: float | None = Field(None, ge=0, le=1)
    retry: ApiRetry = ApiRetry()
    outages: list[ApiOutage] = []
    on_give_up: Literal["fail", "fleet"] = "fail"

    @model_validator(mode="after")
    def _check(self) -> Api:
        if self.provider is None and (self.input_usd_per_mtok is None or self.output_usd_per_mtok is None):
            raise ValueError("give provider (and model) from the API catalogue, or input_usd_per_mtok and "
                             "output_usd_per_mtok")
        return self


class LateSpill(Strict):
    """Re-decide for queued requests: every ``check_every_s``, a request still waiting on a node after
    ``after_s`` (and never scheduled) is taken off the queue and sent to the API."""

    after_s: float = Field(gt=0)
    check_every_s: float = Field(1.0, gt=0)


class _SpillBase(Strict):
    late: LateSpill | None = None


class NeverSpill(_SpillBase):
    """Never spill: every request queues on the fleet."""

    policy: Literal["never"]


class AllApi(_SpillBase):
    """Send every request to the API (usually with ``fleet.nodes: 0``)."""

    policy: Literal["all_api"]


class QueueLengthSpill(_SpillBase):
    """Spill when the node the router picked already has ``max_waiting`` or more requests waiting."""

    policy: Literal["queue_length"]
    max_waiting: int = Field(ge=0)


class QueueWaitSpill(_SpillBase):
    """Spill when the expected wait before the request is first scheduled exceeds ``max_wait_s``."""

    policy: Literal["queue_wait"]
    max_wait_s: float = Field(gt=0)


class PredictedTtftSpill(_SpillBase):
    """Spill when the fleet's predicted TTFT exceeds ``margin`` × the TTFT target (``ttft_s``, default the
    request class's or the scenario's ``slo.ttft_p95_s``)."""

    policy: Literal["predicted_ttft"]
    ttft_s: float | None = Field(None, gt=0)
    margin: float = Field(1.0, gt=0)


class KvPressureSpill(_SpillBase):
    """Spill when the node's KV cache, counting the prompts already waiting and this one, would be over
    ``max_kv_fraction`` of its capacity."""

    policy: Literal["kv_pressure"]
    max_kv_fraction: float = Field(0.9, gt=0, le=1)


class ClassBasedSpill(_SpillBase):
    """Requests of ``classes`` (or with at least ``min_input_tokens`` input tokens) always go to the API;
    ``batch_classes`` go to the API's batch tier; the rest stay on the fleet."""

    policy: Literal["class_based"]
    classes: list[str] = []
    batch_classes: list[str] = []
    min_input_tokens: int | None = Field(None, gt=0)


class RateBudgetSpill(_SpillBase):
    """Own up to ``fleet_rps`` requests/s (a token bucket holding ``burst_s`` seconds of it); spill the rest."""

    policy: Literal["rate_budget"]
    fleet_rps: float = Field(gt=0)
    burst_s: float = Field(10.0, gt=0)


SpillPolicySpec = Annotated[
    NeverSpill | AllApi | QueueLengthSpill | QueueWaitSpill | PredictedTtftSpill | KvPressureSpill | ClassBasedSpill
    | RateBudgetSpill,
    Field(discriminator="policy"),
]


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
    energy: Energy = Energy()
    plan: PlanSpec | None = None  # what `capsim plan` searches (sim/plan/spec.py); ignored by other commands
    api: Api | None = None
    spill: SpillPolicySpec | None = None

    _base_dir: Path | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="scenario")
    _demand: dict[str, float] | None = PrivateAttr(default=None)

    @property
    def demand(self) -> dict[str, float] | None:
        """How a token-per-day demand was converted to ``traffic.rate_rps`` (None when rate_rps was given)."""
        return self._demand

    @property
    def base_dir(self) -> Path:
        """Folder that relative file paths in the scenario are resolved against."""
        return self._base_dir or Path.cwd()

    @property
    def source(self) -> str:
        """Where the scenario came from (for error messages)."""
        return self._source

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < duration_s ({self.duration_s})")
        return self

    @model_validator(mode="after")
    def _check_spill(self) -> Scenario:
        policy = self.spill.policy if self.spill is not None else "never"
        if self.fleet.initial_nodes < 1 and policy != "all_api":
            raise ValueError("the fleet needs at least one node at the start (fleet.nodes + fleet.spot.nodes >= 1)"
                             " unless spill.policy is all_api")
        if any(p.spot.on_eviction == "spill" and p.spot.nodes for p in self.fleet.pool_list()) and self.api is None:
            raise ValueError("fleet.spot.on_eviction 'spill' needs an api section (where evicted requests go)")
        if policy != "never" and self.api is None:
            raise ValueError(f"spill policy '{policy}' needs an api section (where spilled requests go)")
        if self.fleet.max_nodes == 0 and self.api is not None and self.api.on_give_up == "fleet":
            raise ValueError("api.on_give_up 'fleet' needs a fleet (it has no nodes)")
        if isinstance(self.spill, ClassBasedSpill):
            names = {c.name for c in self.traffic.classes}
            for key in ("classes", "batch_classes"):
                unknown = [c for c in getattr(self.spill, key) if c not in names]
                if unknown:
                    raise ValueError(f"spill.{key}: unknown request class(es) {unknown} (known: {sorted(names)})")
        return self


# --- loading ---------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    """A ``--set`` value is parsed as YAML: ``4`` is an int, ``fp8`` a string, ``[1, 2]`` a list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(data: Any, key: str, value: Any, source: str = "--set") -> None:
    """Set ``a.b.c`` in a raw mapping in place: missing (or null) sections are created, list items are
    addressed by index (``classes.0.share``); a bad path is ConfigError(source, key, problem)."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(source, key, f"'{part}' is not an index of {'.'.join(parts[:i])}")
            node = node[int(part)]
        else:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(source, key, f"'{'.'.join(parts[: i + 1])}' is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(source, key, f"'{last}' is not an index")
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied; list items by index (``classes.0.share``)."""
    data = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("--set", item, "expected KEY=VALUE with a dotted key, e.g. fleet.nodes=4")
        key, _, text = item.partition("=")
        value = _parse_value(text)
        if key.strip() in {f"traffic.{k}" for k in DEMAND_KEYS} and value is not None \
                and isinstance(data.get("traffic"), dict):
            for other in DEMAND_KEYS:  # one way of stating demand replaces another
                data["traffic"].pop(other, None)
        set_dotted(data, key.strip(), value)
    return data


def _format_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # drop pydantic's discriminator tags (e.g. 'lognormal') from the path
    field = ".".join(p for p in loc if p not in {"fixed", "lognormal", "empirical", "pmf"})
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


M = TypeVar("M", bound=BaseModel)


def validate_mapping(model_cls: type[M], raw: Any, source: str) -> M:
    """Validate a raw YAML mapping as ``model_cls``; the first problem becomes ConfigError(source, field, problem)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a YAML mapping at the top level")
    try:
        return model_cls.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_error(exc)
        raise ConfigError(source, field, msg) from None


def validate_scenario(raw: dict[str, Any], source: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Validate a raw mapping; raise ConfigError(source, field, problem) on the first problem. With
    ``base_dir`` (the folder relative data paths resolve against) the scenario also keeps ``source`` for
    later error messages."""
    scenario = validate_mapping(Scenario, raw, source)
    demand = None
    if scenario.traffic.rate_rps is None and scenario.traffic.trace is None:
        from sim.traffic.demand import demand_to_rate

        demand = demand_to_rate(scenario.traffic, base_dir or Path.cwd(), source)
        raw = copy.deepcopy(raw)
        for key in DEMAND_KEYS:
            raw["traffic"].pop(key, None)
        raw["traffic"]["rate_rps"] = demand["rate_rps"]
        scenario = validate_mapping(Scenario, raw, source)
        scenario._demand = demand
    # numbers that validate but make no sense together
    for name in ("duration_s", "traffic.rate_rps"):
        value = scenario.duration_s if name == "duration_s" else scenario.traffic.rate_rps
        if value is not None and not math.isfinite(value):
            raise ConfigError(source, name, f"must be finite (got {value})")
    check_class_models(scenario, source)
    if base_dir is not None:
        scenario._base_dir = base_dir
        scenario._source = source
    return scenario


def check_class_models(scenario: Scenario, source: str = "scenario") -> None:
    """Every request class's model (default ``fleet.model``) must be served by a pool; one ConfigError naming the
    class's ``model`` field otherwise."""
    fleet = scenario.fleet
    served = {model_key(p.model): p.model for p in fleet.pool_list()}
    for i, c in enumerate(scenario.traffic.classes):
        if c.model is None:
            if not fleet.model:
                raise ConfigError(source, f"traffic.classes.{i}.model", f"class '{c.name}' names no model and "
                                  f"the pools serve several ({', '.join(sorted(served.values()))}): name one, or "
                                  "set fleet.model")
            want = fleet.model
        else:
            want = c.model
        if model_key(want) not in served:
            field = f"traffic.classes.{i}.model" if c.model is not None else "fleet.model"
            raise ConfigError(source, field, f"no pool serves model '{want}' (class '{c.name}'; pools serve: "
                              f"{', '.join(sorted(served.values()))})")


def read_text_file(path: Path, what: str = "a text file") -> str:
    """A UTF-8 text file's content; a missing, unreadable, binary or non-UTF-8 file is one ConfigError line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", f"is a folder, expected {what}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror or exc})") from None
    if b"\0" in data[:65536]:
        raise ConfigError(str(path), "", f"is a binary file, expected {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
                          f"expected {what}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "a YAML file")
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
    raw = read_yaml(path)
    if isinstance(raw, dict) and ("strategies" in raw or "axes" in raw) and "fleet" not in raw:
        raise ConfigError(str(path), "", "this is an experiment file, not a scenario: use capsim compare "
                          "(strategies) or capsim sweep (axes)")
    raw = apply_overrides(raw, overrides)
    return validate_scenario(raw, str(path), path.parent.resolve())


def check_tensor_parallel(gpu: Any, model: Any, tp: int, source: str = "scenario",
                          field: str = "fleet.gpus_per_node") -> None:
    """Tensor parallelism ``tp`` must fit the GPU profile's fast interconnect (``max_gpus_per_node``) and split
    the model's heads evenly: ``attention_heads % tp == 0`` and, for grouped-query attention, either
    ``kv_heads % tp == 0`` or (``tp > kv_heads``) ``tp % kv_heads == 0`` — then each KV head is replicated
    on ``tp / kv_heads`` GPUs, as vLLM does (capsim counts the replicated KV bytes). MLA models cache one
    latent per rank, so only the attention heads are checked."""
    limit = getattr(gpu, "max_gpus_per_node", None)
    if limit is not None and tp > limit:
        raise ConfigError(source, field, f"{tp} GPUs exceed {gpu.name}'s tensor-parallel maximum of {limit} "
                          "per node (max_gpus_per_node in its profile)")
    heads, kv = model.attention_heads, model.kv_heads
    if heads % tp:
        raise ConfigError(source, field, f"tensor parallelism {tp} must divide {model.name}'s {heads} attention "
                          "heads")
    if getattr(model, "mla", None) is None and (kv % tp if tp <= kv else tp % kv):
        raise ConfigError(source, field, f"tensor parallelism {tp} must divide {model.name}'s {kv} KV heads, or "
                          f"be a multiple of them (KV heads replicated)")
