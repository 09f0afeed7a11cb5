"""Any --set override either validates or fails with a ConfigError (one line, exit 2) — never a traceback."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.core.config import load_scenario
from sim.core.errors import ConfigError
from sim.runner.simulation import build_node_model, simulate
from sim.traffic.arrivals import arrival_chunks

DEFAULT = Path(__file__).resolve().parent.parent / "experiments" / "default.yaml"

KEYS = [
    "duration_s", "seed", "warmup_s", "max_drain_s", "traffic.rate_rps", "traffic.shape", "traffic.start_hour",
    "traffic.classes.0.share", "traffic.classes.0.input_tokens.median", "traffic.classes.0.input_tokens.p95",
    "traffic.classes.0.output_tokens", "traffic.classes.1.prefix_tokens", "traffic.classes.5.share",
    "fleet.nodes", "fleet.gpu", "fleet.gpus_per_node", "fleet.model", "fleet.weights", "fleet.kv_cache",
    "fleet.stack", "fleet.engine.max_num_seqs", "fleet.engine.max_num_batched_tokens", "fleet.engine.block_size",
    "fleet.engine.gpu_memory_utilization", "fleet.spot.nodes", "fleet.autoscaler.policy", "router.policy",
    "slo.ttft_p95_s", "pricing.mode", "spill.policy", "api.provider", "output.sample_interval_s", "nonsense.key",
]
VALUES = st.sampled_from(
    ["-1", "0", "1", "2.5", "1e309", "nan", "null", "[]", "[1, 2]", "{}", "abc", "true", "H200-SXM",
     "llama-3.1-70b", "fp8", "consumer_chat", "least_work", "owned", "queue", "'x: [1'", "{dist: fixed, value: 3}"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_overrides_validate_or_fail_cleanly(pairs):
    sets = ["duration_s=5", "warmup_s=0"] + [f"{k}={v}" for k, v in pairs]
    try:
        sc = load_scenario(DEFAULT, sets)
        build_node_model(sc)
        next(iter(arrival_chunks(sc)), None)
        if sc.duration_s <= 20 and (sc.traffic.rate_rps or 0) <= 100:
            simulate(sc)  # a valid scenario must also run
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
