"""The run summary as typed records: :class:`Summary` and one frozen dataclass per section.

``summary.json`` is ``Summary.to_json()``; a summary read back from disk (cached sweep and plan results) is
``Summary.from_json(data)``. The records mirror the JSON one to one: field order is key order, a field's name is
its key, and the optional sections (``batch``, ``api``, ``spill``: present only with deferrable classes or a
spill policy) are omitted from the JSON when None (fields marked :data:`OMIT_IF_NONE`). New sections (e.g.
per-pool results) are added the same way: a record, and a field of :class:`Summary`, optional if not every run
has it. Values are plain Python numbers (no NaN: an undefined statistic is None).

Definitions of the numbers are in :mod:`sim.metrics.tables` (how they are computed) and the README.
``from_json`` is strict: a missing or unknown key raises :class:`SummaryFormatError` naming its dotted path, so a
stale cache or a renamed field fails loudly instead of reading as None.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: field metadata: leave the key out of the JSON when the value is None (optional sections)
OMIT_IF_NONE: Mapping[str, bool] = types.MappingProxyType({"omit_if_none": True})

R = TypeVar("R", bound="Record")


class SummaryFormatError(ValueError):
    """A JSON summary whose keys do not match the records (``path``: the dotted key at fault)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"summary{'.' + path if path else ''}: {problem}")
        self.path = path


@dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every summary record: ``to_json`` (a JSON-ready dict in field order) and ``from_json``."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record: one key per field, in field order (optional sections left out when
        None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = _dump(v)
        return out

    def value_of(self, name: str) -> Any:
        """The value of field ``name``; None when the record has no such field."""
        return getattr(self, name) if any(f.name == name for f in dataclasses.fields(self)) else None

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a JSON object written by :meth:`to_json` (strict: every key known, none missing)."""
        return typing.cast(R, _load(cls, data, ""))


# --- sections ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RequestCounts(Record):
    """Logical requests by outcome: arrived = completed + spilled + rejected + failed + timed_out + in_flight;
    ``retries``: extra attempts clients sent after giving up on one."""

    arrived: int
    completed: int
    spilled: int
    rejected: int
    failed: int
    timed_out: int
    in_flight: int
    retries: int


@dataclass(frozen=True, kw_only=True)
class Percentiles(Record):
    """Mean and P50/P90/P95/P99 (numpy ``linear``) of one latency, in seconds; None without a sample."""

    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, kw_only=True)
class Latency(Record):
    """Latencies of the served interactive requests that arrived after warm-up (definitions: ``tables``)."""

    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    queue_wait_s: Percentiles


@dataclass(frozen=True, kw_only=True)
class Throughput(Record):
    """Rates over the measurement window ``[warmup_s, duration_s]``: offered = arrivals, served = completions
    (fleet or API); the unprefixed rates are the fleet's own completions."""

    offered_requests_per_s: float
    offered_output_tokens_per_s: float
    served_requests_per_s: float
    served_output_tokens_per_s: float
    requests_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float


@dataclass(frozen=True, kw_only=True)
class Utilisation(Record):
    """Load factor and bottleneck (:mod:`sim.perf.capacity`; None and ``none`` without traffic or nodes), and
    time-sampled fleet means/P95s over the arrival window (None without samples)."""

    load_factor: float | None
    bottleneck: str
    limit_at_saturation: str | None
    capacity_requests_per_s: float | None
    capacity_per_node_requests_per_s: float | None
    capacity_output_tokens_per_s: float | None
    saturation_batch_per_node: float | None
    load_factor_peak: float | None
    mfu_mean: float | None
    mfu_p95: float | None
    mbu_mean: float | None
    mbu_p95: float | None
    kv_fraction_mean: float | None
    kv_fraction_p95: float | None
    batch_fill_mean: float | None
    batch_fill_p95: float | None
    busy_fraction: float | None
    queue_len_mean: float | None
    running_seqs_mean: float | None
    nodes_up_mean: float | None
    #: with ``fleet.pools``: each pool's load factor
    load_factor_by_pool: dict[str, float | None] | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(frozen=True, kw_only=True)
class Overload(Record):
    """Whether the waiting queue grows or stayed above its threshold (:mod:`sim.metrics.overload`)."""

    overloaded: bool
    queue_growing: bool
    since_s: float | None
    peak_queue: int
    peak_queue_at_s: float | None
    queue_at_end: int
    time_above_threshold_s: float
    threshold_queue: float
    served_share: float | None


@dataclass(frozen=True, kw_only=True)
class TargetCheck(Record):
    """One scenario-wide P95 target against the served requests' P95 (seconds)."""

    target: float
    actual: float | None
    met: bool


@dataclass(frozen=True, kw_only=True)
class SloWindow(Record):
    """One SLO window with arrivals: its span, arrivals, attainment and the P95s of its served requests."""

    start_s: float
    end_s: float
    arrived: int
    attainment: float
    ttft_p95_s: float | None
    tpot_p95_s: float | None


@dataclass(frozen=True, kw_only=True)
class P50P95(Record):
    """Median and P95 of one latency of a class (seconds; None without a sample)."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True, kw_only=True)
class ClassSlo(Record):
    """One interactive class: counts, P50/P95 latencies, attainment over its arrivals, whether its targets
    hold."""

    arrived: int
    completed: int
    ttft_s: P50P95
    tpot_s: P50P95
    e2e_s: P50P95
    attainment: float | None
    met: bool


@dataclass(frozen=True, kw_only=True)
class SloVerdict(Record):
    """The SLO verdict (:mod:`sim.metrics.slo`): attainment over every interactive arrival after warm-up
    (every miss counts), the P95 targets, the windows and the per-class view; ``met`` is the verdict."""

    attainment: float | None
    attainment_target: float
    met: bool
    percentile_targets_met: bool
    targets: dict[str, TargetCheck]
    window_s: float
    worst_window: SloWindow | None
    windows: list[SloWindow]
    by_class: dict[str, ClassSlo]


@dataclass(frozen=True, kw_only=True)
class Cost(Record):
    """What the run cost (:mod:`sim.metrics.cost`): GPU-hours and spend by node kind, API spend, per M tokens."""

    total_usd: float
    self_host_usd: float
    api_usd: float
    gpu_hours: float
    usd_per_gpu_hour: float | None
    self_host_usd_by_kind: dict[str, float]
    gpu_hours_by_kind: dict[str, float]
    pricing_mode: str
    owned_energy_usd: float | None
    usd_per_mtok_output: float | None
    usd_per_mtok_total: float | None
    #: with ``fleet.pools``: each pool's self-hosting spend
    self_host_usd_by_pool: dict[str, float] | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(frozen=True, kw_only=True)
class Energy(Record):
    """Energy, power, CO2 and energy cost of the nodes up (:mod:`sim.metrics.energy`) and the inputs used."""

    kwh: float
    avg_power_kw: float
    co2_kg: float
    usd: float
    usd_per_kwh: float
    pue: float
    gpu_idle_w: float
    gpu_tdp_w: float
    kg_co2_per_kwh_mean: float | None
    paid_in: str


@dataclass(frozen=True, kw_only=True)
class PrefixCache(Record):
    """Prefix-cache hits of the fleet's completions after warm-up: prompt tokens served from the cache over all
    prompt tokens, and the share of requests with a hit (None without such requests)."""

    enabled: bool
    hit_token_ratio: float | None
    requests_with_hit: float | None


@dataclass(frozen=True, kw_only=True)
class Routing(Record):
    """The router and the load balance it achieved: per-node work (uncached prompt + output tokens) of the
    requests served after warm-up, busiest node over the mean and the coefficient of variation."""

    policy: str
    staleness_s: float
    node_work_max_over_mean: float | None
    node_work_cv: float | None


@dataclass(frozen=True, kw_only=True)
class Batch(Record):
    """Deferrable (batch) classes: counts, deadline attainment over finished requests, waits and latencies."""

    classes: list[str]
    arrived: int
    completed: int
    deadline_met: int
    deadline_missed: int
    deadline_attainment: float | None
    queue_wait_s: Percentiles
    e2e_s: Percentiles


@dataclass(frozen=True, kw_only=True)
class Api(Record):
    """The hosted API's counters (``calls`` = every attempt, ``rate_limited`` = 429s, ``failed`` = given up),
    spend and the latencies of the requests it served."""

    provider: str | None
    requests: int
    calls: int
    rate_limited: int
    server_errors: int
    transient_failures: int
    timeouts: int
    retries: int
    served: int
    failed: int
    returned_to_fleet: int
    usd: float
    wasted_usd: float
    billed_input_tokens: int
    billed_output_tokens: int
    peak_concurrency: int
    ttft_s: Percentiles
    e2e_s: Percentiles


@dataclass(frozen=True, kw_only=True)
class Spill(Record):
    """The spill policy: requests sent to the API (at arrival / late) and their share of requests and tokens."""

    policy: str | None
    requests: int
    at_arrival: int
    late: int
    request_share: float | None
    token_share: float | None


@dataclass(frozen=True, kw_only=True)
class FleetInfo(Record):
    """What ran: nodes, GPU, model, precisions, KV capacity and weights per node, engine steps executed. With
    ``fleet.pools`` the per-node fields name each pool's value, joined by `` + `` (a string)."""

    nodes: int
    gpu: str
    gpus_per_node: int | str
    model: str
    weights: str
    kv_cache: str
    kv_capacity_tokens_per_node: int | str
    weight_gb_per_node: float | str
    engine_steps: int


@dataclass(frozen=True, kw_only=True)
class Disaggregation(Record):
    """Prefill/decode disaggregation (:mod:`sim.fleet.disagg`): the prefill and decode nodes, KV transfers and GB
    sent, the transfer time after the prefill (mean and P95, queueing on the links included; seconds) and the mean
    busy share of the prefill nodes' egress and the decode nodes' ingress links."""

    prefill_nodes: int
    decode_nodes: int
    transfers: int
    transfer_mean_s: float
    transfer_p95_s: float
    kv_gb_sent: float
    link_busy_mean: float
    ingress_busy_mean: float


@dataclass(frozen=True, kw_only=True)
class PoolRequests(Record):
    """Requests routed to a pool's nodes (re-dispatches and client retries included) and completed on them."""

    sent: int
    completed: int


@dataclass(frozen=True, kw_only=True)
class PoolThroughput(Record):
    """A pool's completions per second and output tokens per second over the run."""

    requests_per_s: float
    output_tokens_per_s: float


@dataclass(frozen=True, kw_only=True)
class PoolSummary(Record):
    """One pool of ``fleet.pools`` measured as a fleet of its own (:mod:`sim.metrics.pools`): what it is, what it
    was sent and completed, the latency of its completions, its utilisation, energy and cost."""

    role: str
    gpu: str
    gpus_per_node: int
    model: str
    weights: str
    kv_cache: str
    stack: str | None
    nodes: int
    spot_nodes: int
    on_demand_max_nodes: int
    kv_capacity_tokens_per_node: int
    weight_gb_per_node: float
    engine_steps: int
    requests: PoolRequests
    latency: Latency
    throughput: PoolThroughput
    utilisation: Utilisation
    energy: Energy
    cost: Cost


@dataclass(frozen=True, kw_only=True)
class ModelSummary(Record):
    """One model of a pooled fleet (:mod:`sim.metrics.pools`): its classes and pools, interactive arrivals after
    warm-up and those served, SLO attainment over every arrival (every miss counts) and ``met`` (the P95 targets over
    its served requests and the attainment target), its P50–P99 TTFT / TPOT and its cost (pools + API spend)."""

    classes: list[str]
    pools: list[str]
    arrived: int
    served: int
    attainment: float | None
    attainment_target: float
    met: bool
    ttft_s: Percentiles
    tpot_s: Percentiles
    cost_usd: float
    self_host_usd: float
    api_usd: float
    served_output_tokens: float
    usd_per_mtok_output: float | None
    usd_per_mtok_total: float | None


@dataclass(frozen=True, kw_only=True)
class Summary(Record):
    """One run's results (``summary.json``). ``batch``, ``api`` and ``spill`` are None when the scenario has no
    deferrable class / no spill policy; ``disaggregation`` without prefill/decode pools; ``pools`` and ``models``
    (keyed by pool name and by the catalogue's model name) without ``fleet.pools``."""

    scenario: str
    seed: int
    duration_s: float
    warmup_s: float
    simulated_end_s: float
    requests: RequestCounts
    latency: Latency
    throughput: Throughput
    utilisation: Utilisation
    overload: Overload
    slo: SloVerdict
    cost: Cost
    energy: Energy
    prefix_cache: PrefixCache
    routing: Routing
    batch: Batch | None = field(default=None, metadata=OMIT_IF_NONE)
    api: Api | None = field(default=None, metadata=OMIT_IF_NONE)
    spill: Spill | None = field(default=None, metadata=OMIT_IF_NONE)
    disaggregation: Disaggregation | None = field(default=None, metadata=OMIT_IF_NONE)
    fleet: FleetInfo
    pools: dict[str, PoolSummary] | None = field(default=None, metadata=OMIT_IF_NONE)
    models: dict[str, ModelSummary] | None = field(default=None, metadata=OMIT_IF_NONE)


# --- (de)serialisation ------------------------------------------------------------------------------------
def _dump(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    return v


def _load(tp: Any, data: Any, path: str) -> Any:
    """``data`` (parsed JSON) as type ``tp``: records recursively, ``X | None``, ``dict[str, X]``, ``list[X]``;
    scalars are kept as they are (no coercion, so a round trip is exact)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _load(inner[0], data, path) if len(inner) == 1 else data  # a union of scalars: kept as it is
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(data, Mapping):
            raise SummaryFormatError(path, f"expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs: dict[str, Any] = {}
        names = set()
        for f in dataclasses.fields(tp):
            names.add(f.name)
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in data:
                kwargs[f.name] = _load(hints[f.name], data[f.name], sub)
            elif f.default is dataclasses.MISSING:
                raise SummaryFormatError(sub, "missing")
        extra = sorted(set(data) - names)
        if extra:
            raise SummaryFormatError(f"{path}.{extra[0]}" if path else extra[0], "unknown key")
        return tp(**kwargs)
    if origin is dict:
        _, val = typing.get_args(tp)
        if not isinstance(data, Mapping):
            raise SummaryFormatError(path, f"expected an object, got {type(data).__name__}")
        return {k: _load(val, v, f"{path}.{k}") for k, v in data.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(data, list):
            raise SummaryFormatError(path, f"expected a list, got {type(data).__name__}")
        return [_load(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    return data
