"""One accessor for the dotted metric names of a run's summary (``summary.json``).

``metric(summary, "latency.ttft_s.p95")`` walks a :class:`~sim.metrics.summary.Summary` (by attribute) or its JSON
form (``summary.json``, a cached result, compare's mean over seeds; by key). The names are a closed list
(:data:`METRIC_NAMES`, plus the per-class ``slo.by_class.<class>.*`` and per-target ``slo.targets.<target>.*``
entries): an unknown name raises :class:`UnknownMetricError` naming close matches, so a renamed summary key
fails loudly (and in ``tests/test_metrics_access.py``) instead of reading as ``None``. A known name that a
run does not report (the ``api`` and ``spill`` sections without a hosted API, a latency with no served
request) reads as ``None``. sizing, compare, sweep and plan read summaries only through :func:`metric`.

Names from the scenario (a class, a target, a pool, a model) follow their section: ``pools.h100.cost.self_host_usd``;
the rest of such a name must be a field of that section's record (``models.<name>.attainment``, not ``.attain``).
A name that holds dots — model names do: ``Llama-3.1-8B`` — is written in brackets and quotes,
``models["Llama-3.1-8B"].attainment`` (or ``['…']``); written plainly, ``models.Llama-3.1-8B.attainment`` also
resolves (the shortest run of dotted parts that is a key of the section, whose rest is a valid path). A model name
matches the summary's key exactly, else ignoring case (``models["llama-3.1-8b"]``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from sim.metrics.summary import Record, Summary

#: every fixed dotted name of a summary, in summary order (sections: run, requests, throughput, latency,
#: utilisation, overload, slo, cost, energy, prefix_cache, routing, batch, api, spill, fleet)
METRIC_NAMES: tuple[str, ...] = (
    "scenario",
    "seed",
    "duration_s",
    "warmup_s",
    "simulated_end_s",
    "requests.arrived", "requests.completed", "requests.spilled", "requests.rejected", "requests.failed",
    "requests.timed_out", "requests.in_flight", "requests.retries",
    "latency.ttft_s.mean", "latency.ttft_s.p50", "latency.ttft_s.p90", "latency.ttft_s.p95", "latency.ttft_s.p99",
    "latency.tpot_s.mean", "latency.tpot_s.p50", "latency.tpot_s.p90", "latency.tpot_s.p95", "latency.tpot_s.p99",
    "latency.e2e_s.mean", "latency.e2e_s.p50", "latency.e2e_s.p90", "latency.e2e_s.p95", "latency.e2e_s.p99",
    "latency.queue_wait_s.mean", "latency.queue_wait_s.p50", "latency.queue_wait_s.p90", "latency.queue_wait_s.p95",
    "latency.queue_wait_s.p99",
    "throughput.offered_requests_per_s", "throughput.offered_output_tokens_per_s",
    "throughput.served_requests_per_s", "throughput.served_output_tokens_per_s", "throughput.requests_per_s",
    "throughput.input_tokens_per_s", "throughput.output_tokens_per_s",
    "utilisation.load_factor", "utilisation.bottleneck", "utilisation.limit_at_saturation",
    "utilisation.capacity_requests_per_s", "utilisation.capacity_per_node_requests_per_s",
    "utilisation.capacity_output_tokens_per_s", "utilisation.saturation_batch_per_node",
    "utilisation.load_factor_peak", "utilisation.mfu_mean", "utilisation.mfu_p95", "utilisation.mbu_mean",
    "utilisation.mbu_p95", "utilisation.kv_fraction_mean", "utilisation.kv_fraction_p95",
    "utilisation.batch_fill_mean", "utilisation.batch_fill_p95", "utilisation.busy_fraction",
    "utilisation.queue_len_mean", "utilisation.running_seqs_mean", "utilisation.nodes_up_mean",
    "overload.overloaded", "overload.queue_growing", "overload.since_s", "overload.peak_queue",
    "overload.peak_queue_at_s", "overload.queue_at_end", "overload.time_above_threshold_s",
    "overload.threshold_queue", "overload.served_share",
    "slo.attainment", "slo.attainment_target", "slo.met", "slo.percentile_targets_met", "slo.window_s",
    "slo.worst_window.start_s", "slo.worst_window.end_s", "slo.worst_window.arrived", "slo.worst_window.attainment",
    "slo.worst_window.ttft_p95_s", "slo.worst_window.tpot_p95_s",
    "cost.total_usd", "cost.self_host_usd", "cost.api_usd", "cost.gpu_hours", "cost.usd_per_gpu_hour",
    "cost.self_host_usd_by_kind.reserved", "cost.self_host_usd_by_kind.spot", "cost.self_host_usd_by_kind.on_demand",
    "cost.gpu_hours_by_kind.reserved", "cost.gpu_hours_by_kind.spot", "cost.gpu_hours_by_kind.on_demand",
    "cost.pricing_mode", "cost.owned_energy_usd", "cost.usd_per_mtok_output", "cost.usd_per_mtok_total",
    "energy.kwh", "energy.avg_power_kw", "energy.co2_kg", "energy.usd", "energy.usd_per_kwh", "energy.pue",
    "energy.gpu_idle_w", "energy.gpu_tdp_w", "energy.kg_co2_per_kwh_mean", "energy.paid_in",
    "prefix_cache.enabled", "prefix_cache.hit_token_ratio", "prefix_cache.requests_with_hit",
    "routing.policy", "routing.staleness_s", "routing.node_work_max_over_mean", "routing.node_work_cv",
    # only with deferrable (batch) classes
    "batch.classes", "batch.arrived", "batch.completed", "batch.deadline_met", "batch.deadline_missed",
    "batch.deadline_attainment", "batch.queue_wait_s.mean", "batch.queue_wait_s.p50", "batch.queue_wait_s.p90",
    "batch.queue_wait_s.p95", "batch.queue_wait_s.p99", "batch.e2e_s.mean", "batch.e2e_s.p50", "batch.e2e_s.p90",
    "batch.e2e_s.p95", "batch.e2e_s.p99",
    # only with a spill policy (and its hosted API)
    "api.provider", "api.requests", "api.calls", "api.rate_limited", "api.server_errors", "api.transient_failures",
    "api.timeouts", "api.retries", "api.served", "api.failed", "api.returned_to_fleet", "api.usd", "api.wasted_usd",
    "api.billed_input_tokens", "api.billed_output_tokens", "api.peak_concurrency", "api.ttft_s.mean",
    "api.ttft_s.p50", "api.ttft_s.p90", "api.ttft_s.p95", "api.ttft_s.p99", "api.e2e_s.mean", "api.e2e_s.p50",
    "api.e2e_s.p90", "api.e2e_s.p95", "api.e2e_s.p99",
    "spill.policy", "spill.requests", "spill.at_arrival", "spill.late", "spill.request_share", "spill.token_share",
    "fleet.nodes", "fleet.gpu", "fleet.gpus_per_node", "fleet.model", "fleet.weights", "fleet.kv_cache",
    "fleet.kv_capacity_tokens_per_node", "fleet.weight_gb_per_node", "fleet.engine_steps",
    # only with prefill/decode pools (sim.fleet.disagg)
    "disaggregation.prefill_nodes", "disaggregation.decode_nodes", "disaggregation.transfers",
    "disaggregation.transfer_mean_s", "disaggregation.transfer_p95_s", "disaggregation.kv_gb_sent",
    "disaggregation.link_busy_mean", "disaggregation.ingress_busy_mean",
)
#: sections whose next key is a name from the scenario (a request class, an SLO target, a pool, a model)
PER_NAME_SECTIONS: tuple[str, ...] = ("slo.by_class.", "slo.targets.", "pools.", "models.",
                                      "cost.self_host_usd_by_pool.", "utilisation.load_factor_by_pool.")

_KNOWN = frozenset(METRIC_NAMES)


class UnknownMetricError(ValueError):
    """A dotted name that is not a summary metric."""

    def __init__(self, name: str) -> None:
        close = difflib.get_close_matches(name, METRIC_NAMES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        super().__init__(f"unknown metric '{name}'{hint}")
        self.name = name


#: one part of a name: its text, and whether it was written in brackets (a key, never split or joined)
_Part = tuple[str, bool]
_TOKEN = re.compile(r"""\[\s*(?:"([^"]*)"|'([^']*)')\s*\]|([^.\[\]"']+)""")


def _parts(name: str) -> list[_Part] | None:
    """``models["Llama-3.1-8B"].attainment`` → [("models", False), ("Llama-3.1-8B", True), ("attainment", False)];
    None when ``name`` is not well formed (an empty part, an unclosed bracket)."""
    out: list[_Part] = []
    pos, need_sep = 0, False
    while pos < len(name):
        if need_sep and name[pos] == ".":
            pos, need_sep = pos + 1, False
            if pos == len(name):
                return None
            continue
        m = _TOKEN.match(name, pos)
        if m is None or (need_sep and m.group(3) is not None):
            return None
        plain = m.group(3)
        text = plain if plain is not None else m.group(1) if m.group(1) is not None else m.group(2)
        if not text.strip():
            return None
        out.append((text, plain is None))
        pos, need_sep = m.end(), True
    return out or None


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _valid(tp: Any, parts: list[_Part]) -> bool:
    """Whether ``parts`` leads from type ``tp`` (a record's fields, a per-name mapping's keys) to a value that is
    not a section (a metric is a number, a label or a list, not a record or a mapping)."""
    tp = _strip_none(tp)
    if not parts:
        return not (isinstance(tp, type) and issubclass(tp, Record)) and typing.get_origin(tp) is not dict
    if isinstance(tp, type) and issubclass(tp, Record):
        text, quoted = parts[0]
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        return not quoted and text in names and _valid(hints[text], parts[1:])
    if typing.get_origin(tp) is dict:
        _, val = typing.get_args(tp)
        return any(_valid(val, rest) for _, rest in _key_splits(parts))
    return False


def _key_splits(parts: list[_Part]) -> list[tuple[str, list[_Part]]]:
    """The ways the leading parts can name one key: a bracketed part alone, or 1, 2, … plain parts joined by dots."""
    if parts[0][1]:
        return [(parts[0][0], parts[1:])]
    out = []
    for k in range(1, len(parts) + 1):
        if parts[k - 1][1]:
            break
        out.append((".".join(t for t, _ in parts[:k]), parts[k:]))
    return out


def is_metric_name(name: str) -> bool:
    """Whether ``name`` is a summary metric: a fixed name, or a valid path under a per-name section (module
    docstring)."""
    if name in _KNOWN:
        return True
    parts = _parts(name)
    if parts is None:
        return False
    for prefix in PER_NAME_SECTIONS:
        head = prefix.rstrip(".").split(".")
        if len(parts) > len(head) and [t for t, q in parts[:len(head)] if not q] == head:
            return _valid(Summary, parts)
    return False


def check_metric_name(name: str) -> str:
    """``name`` itself if it is a summary metric; else :class:`UnknownMetricError` (for CLI/file validation)."""
    if not is_metric_name(name):
        raise UnknownMetricError(name)
    return name


def metric(summary: Summary | Mapping[str, Any], name: str) -> Any:
    """The value of the metric ``name`` in ``summary`` (a record or its JSON); None when this run does not report
    it."""
    check_metric_name(name)
    parts = _parts(name)
    assert parts is not None  # a known name is well formed
    return _walk(summary, parts)


def _walk(node: Any, parts: list[_Part]) -> Any:
    if not parts or node is None:
        return node
    if isinstance(node, Record):
        return _walk(node.value_of(parts[0][0]), parts[1:])
    if not isinstance(node, Mapping):
        return None
    splits = _key_splits(parts)
    for key, rest in splits:  # the exact key first, then ignoring case (model names)
        if key in node:
            return _walk(node[key], rest)
    folded = {str(k).casefold(): k for k in node}
    for key, rest in splits:
        if key.casefold() in folded:
            return _walk(node[folded[key.casefold()]], rest)
    return None
