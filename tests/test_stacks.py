"""Software-stack profiles carry their engine's defaults and scheduler; a scenario's explicit values win."""

from __future__ import annotations

import pytest
from scenarios import make_scenario

from sim.core.config import Engine
from sim.core.errors import ConfigError
from sim.perf.benchmark import NodeSetup
from sim.perf.catalog import StackSpec, get_gpu, get_stack
from sim.runner.simulation import build_node_model


def _engine(stack: str | None, **engine) -> Engine:
    sc = make_scenario(**{"fleet.stack": stack, "fleet.engine": engine}) if stack else make_scenario(
        **{"fleet.engine": engine})
    return build_node_model(sc).engine


def test_trtllm_brings_its_batch_limits_and_no_evict_scheduler() -> None:
    eng = _engine("nvidia-trtllm")
    got = (eng.max_num_seqs, eng.max_num_batched_tokens, eng.scheduler, eng.reserve_kv)
    assert got == (2048, 8192, "reserve_kv", True)
    # explicit values win over the stack's defaults
    eng = _engine("nvidia-trtllm", max_num_seqs=256)
    assert eng.max_num_seqs == 256 and eng.reserve_kv
    # MAX_UTILIZATION: reserve_kv false -> allocate as computed, preempt when full
    assert _engine("nvidia-trtllm", reserve_kv=False).scheduler == "preempt"


def test_sglang_is_its_own_stack() -> None:
    eng = _engine("nvidia-sglang")
    assert eng.scheduler == "sglang" and not eng.reserve_kv
    assert (eng.max_num_seqs, eng.gpu_memory_utilization) == (1024, 0.88)
    assert get_stack("sglang").name == "nvidia-sglang" and get_stack("vllm").name == "nvidia-vllm"
    # the kernel factors are fitted together with vLLM's
    assert get_stack("sglang").calibration == get_stack("vllm").calibration
    assert _engine("nvidia-sglang", scheduler="preempt").scheduler == "preempt"


def test_vllm_default_is_unchanged() -> None:
    eng = _engine(None)
    assert (eng.scheduler, eng.reserve_kv, eng.max_num_batched_tokens) == ("preempt", False, 8192)


def test_contradictions_and_bad_defaults_are_config_errors() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        Engine(scheduler="sglang", reserve_kv=True)
    with pytest.raises(ValueError, match="unknown engine field"):
        StackSpec(name="x", vendor="nvidia", calibration={}, engine_defaults={"max_batch": 3})
    with pytest.raises(ConfigError, match=r"fleet\.engine"):
        # the stack's max_num_seqs 2048 exceeds the scenario's max_num_batched_tokens
        _engine("nvidia-trtllm", max_num_batched_tokens=1024)


def test_profile_and_calibration_runs_take_the_stack_defaults() -> None:
    s = NodeSetup.build(get_gpu("H100-SXM"), "llama-3.1-8b", 1, "fp8", "fp8", stack="nvidia-trtllm")
    assert s.engine.max_num_seqs == 2048 and s.engine.reserve_kv
    s = NodeSetup.build("H100-SXM", "llama-3.1-8b", 1, "fp8", "fp8", Engine(max_num_seqs=64), stack="sglang")
    assert s.engine.max_num_seqs == 64 and s.engine.scheduler == "sglang"
