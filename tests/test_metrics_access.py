"""The one accessor for dotted summary metrics: every name the modules read resolves on a real summary."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from scenarios import BASE, make_scenario

from sim.cli.sweep import OVERVIEW_METRICS
from sim.compare.results import COLUMNS
from sim.metrics.access import (
    METRIC_NAMES,
    PER_NAME_SECTIONS,
    UnknownMetricError,
    check_metric_name,
    is_metric_name,
    metric,
)
from sim.metrics.summary import Disaggregation, ModelSummary, Percentiles, Summary, SummaryFormatError
from sim.runner.pipeline import run_scenario

SIM = Path(__file__).resolve().parents[1] / "sim"
#: modules that read summaries: sizing, compare, sweep (CLI overview), plan
READERS = ["sizing/*.py", "compare/*.py", "cli/sweep.py", "cli/size.py", "cli/compare.py", "plan/search.py",
           "plan/pricing.py", "plan/report.py"]
# a literal dotted name passed to metric(summary, "...") or Replicates.mean/ci("...")
_USE = re.compile(r"""(?:\bmetric\([^()"']*?,\s*|\.mean\(|\.ci\()["']([a-z_][\w.]*)["']""")


@pytest.fixture(scope="module")
def summary() -> Summary:
    """Every optional section present: a deferrable class (batch), a spill policy and its hosted API."""
    chat = BASE["traffic"]["classes"][0]
    classes = [{**chat, "share": 0.7}, {**chat, "name": "batch", "share": 0.3, "deferrable": {"deadline_s": 3600}}]
    sc = make_scenario(**{"fleet.nodes": 1, "duration_s": 20, "traffic.rate_rps": 6.0, "traffic.classes": classes,
                          "spill": {"policy": "queue_length", "max_waiting": 2},
                          "api": {"input_usd_per_mtok": 0.6, "output_usd_per_mtok": 2.4}})
    return run_scenario(sc).summary


def _has(summary: dict, name: str) -> bool:
    node = summary
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, name + ".")
        else:
            yield name


def _used_names() -> set[str]:
    names = {path for _, path in COLUMNS} | set(OVERVIEW_METRICS)
    for pattern in READERS:
        for path in SIM.glob(pattern):
            names |= set(_USE.findall(path.read_text()))
    return names


def test_every_known_name_resolves_on_a_real_summary(summary):
    # the disaggregation section needs prefill/decode pools (tests/test_disagg.py reads it): checked by type below
    missing = [n for n in METRIC_NAMES if not _has(summary.to_json(), n) and not n.startswith("disaggregation.")]
    assert not missing, f"METRIC_NAMES not in the summary (renamed?): {missing}"


def test_every_summary_field_is_a_known_name(summary):
    fixed = [n for n in _leaves(summary.to_json()) if not n.startswith(PER_NAME_SECTIONS) and n != "slo.windows"]
    unknown = [n for n in fixed if n not in METRIC_NAMES]
    assert not unknown, f"summary fields missing from sim/metrics_access.METRIC_NAMES: {unknown}"


def test_every_name_the_readers_use_resolves(summary):
    used = _used_names()
    assert {"cost.total_usd", "slo.attainment", "latency.ttft_s.p95", "slo.met"} <= used  # scan works
    bad = sorted(n for n in used if not (is_metric_name(n) and _has(summary.to_json(), n)))
    assert not bad, f"dotted names read by sizing/compare/sweep/plan that the summary lacks: {bad}"


def test_values_and_per_class_names(summary):
    assert metric(summary, "latency.ttft_s.p95") == summary.latency.ttft_s.p95
    assert metric(summary, "slo.by_class.chat.arrived") == summary.slo.by_class["chat"].arrived
    assert metric(summary, "slo.by_class.nosuch.arrived") is None  # a class this run does not have
    no_api = dataclasses.replace(summary, api=None, spill=None)
    assert metric(no_api, "api.calls") is None  # known, but not reported without a hosted API
    assert "api" not in no_api.to_json() and "spill" not in no_api.to_json()


def test_the_record_and_its_json_read_alike(summary):
    data = json.loads(json.dumps(summary.to_json()))
    assert Summary.from_json(data) == summary  # exact round trip (cached sweep and plan results)
    for name in METRIC_NAMES:
        assert metric(summary, name) == metric(data, name), name
    assert metric(summary, "slo.by_class.chat.met") == data["slo"]["by_class"]["chat"]["met"]


def test_from_json_names_a_missing_or_unknown_key(summary):
    data = summary.to_json()
    del data["slo"]["worst_window"]
    with pytest.raises(SummaryFormatError, match=r"summary\.slo\.worst_window: missing"):
        Summary.from_json(data)
    data = summary.to_json()
    data["latency"]["ttft_s"]["p999"] = 1.0
    with pytest.raises(SummaryFormatError, match=r"summary\.latency\.ttft_s\.p999: unknown key"):
        Summary.from_json(data)


def test_readers_do_not_subscript_summaries():
    """sizing/compare/sweep/plan read a summary through attributes or metric(), never ``summary["..."]``."""
    walk = re.compile(r"""summar\w*\[\s*["']""")
    bad = [f"{p.relative_to(SIM)}" for pattern in READERS + ["report/*.py", "cli/run.py", "metrics/headline.py"]
           for p in SIM.glob(pattern) if walk.search(p.read_text())]
    assert not bad, f"dict-walking a summary in {bad}"


@pytest.mark.parametrize("name", ["latency.ttft_s.p59", "cost", "slo.by_class.", "throughput.rps", ""])
def test_unknown_name_is_a_clear_error(name):
    with pytest.raises(UnknownMetricError, match="unknown metric"):
        metric({}, name)
    assert not is_metric_name(name)


def test_close_matches_are_suggested():
    with pytest.raises(UnknownMetricError, match=r"did you mean latency\.ttft_s\.p99"):
        check_metric_name("latency.ttft_s.p999")


def test_disaggregation_names_are_its_record_fields():
    names = [n.split(".", 1)[1] for n in METRIC_NAMES if n.startswith("disaggregation.")]
    assert names == [f.name for f in dataclasses.fields(Disaggregation)]


def _with_model(summary: Summary, name: str, attainment: float) -> Summary:
    p = Percentiles(mean=0.1, p50=0.1, p90=0.2, p95=0.25, p99=0.3)
    m = ModelSummary(classes=["chat"], pools=["a"], arrived=10, served=9, attainment=attainment,
                     attainment_target=0.95, met=False, ttft_s=p, tpot_s=p, cost_usd=1.0, self_host_usd=1.0,
                     api_usd=0.0, served_output_tokens=100.0, usd_per_mtok_output=1e4, usd_per_mtok_total=None)
    return dataclasses.replace(summary, models={name: m})


@pytest.mark.parametrize("name", ['models["Llama-3.1-8B"].attainment', "models['Llama-3.1-8B'].attainment",
                                  "models.Llama-3.1-8B.attainment", 'models["llama-3.1-8b"].attainment'])
def test_model_names_with_dots(summary, name):
    s = _with_model(summary, "Llama-3.1-8B", 0.9)
    assert is_metric_name(name)
    assert metric(s, name) == 0.9
    assert metric(json.loads(json.dumps(s.to_json())), name) == 0.9  # the JSON form reads alike
    assert metric(summary, name) is None  # a run without that model
    assert metric(s, 'models["Llama-3.1-8B"].ttft_s.p95') == 0.25


@pytest.mark.parametrize("name", ['models["Llama-3.1-8B"]', "models.Llama-3.1-8B.attain", 'models["x".met',
                                  'models[""].met', "models..met", 'models["x"]met', 'latency["ttft_s"].p95',
                                  "pools.h100.requests.foo", "pools.h100.latency.ttft_s", "slo.by_class.chat.nope"])
def test_per_name_paths_are_checked_against_their_record(name):
    """The rest of a per-name metric must be a field path of its section's record, ending at a value."""
    assert not is_metric_name(name)
    with pytest.raises(UnknownMetricError):
        metric({}, name)
