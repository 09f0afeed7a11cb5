"""CUDA-graph padding follows each stack's rule, identically in the fast and the reference engine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import simpy

from sim.core.config import Engine
from sim.engine.node import Node
from sim.engine.reference import ReferenceNode
from sim.perf.catalog import get_gpu, get_model
from sim.perf.model import StepTimeModel, attention_pairs
from sim.traffic.request import Request


def _perf(stack: str) -> StepTimeModel:
    # A100 BF16 Llama-3.1-8B: GEMMs are compute-bound from ~130 tokens a step, so padding above that costs time
    return StepTimeModel.build(get_gpu("A100-SXM-80GB"), get_model("llama-3.1-8b"), 1, "bf16", "bf16", stack=stack)


def _serve(impl: type, perf: StepTimeModel | str, prompts: list[int], output: int) -> tuple[StepTimeModel,
                                                                                            list[Request]]:
    """Serve the first prompt from t = 0, the others from t = 1 ns (both engines then schedule the same steps)."""
    perf = _perf(perf) if isinstance(perf, str) else perf
    env = simpy.Environment()
    node = impl(env, 0, perf, Engine(max_num_seqs=256, max_num_batched_tokens=8192), 20_000, 100_000,
                lambda r: None)
    reqs = [Request(i, 0.0, 0, p, output) for i, p in enumerate(prompts)]
    node.submit(reqs[0])

    def later():
        yield env.timeout(1e-9)
        for r in reqs[1:]:
            node.submit(r)

    env.process(later())
    env.run()
    return perf, reqs


@pytest.mark.parametrize("impl", [Node, ReferenceNode])
@pytest.mark.parametrize(("stack", "prompt", "padded"), [
    ("nvidia-trtllm", 600, False),  # generation-only graphs: a prefill step runs eagerly
    ("nvidia-sglang", 150, False),  # SGLang graphs decode batches only
    ("nvidia-vllm", 600, False),  # above vLLM v1's largest capture size (512): eager
    ("nvidia-vllm", 300, True),  # piecewise graphs: a 300-token prefill is padded to 304
])
def test_prefill_step_padding(impl: type, stack: str, prompt: int, padded: bool) -> None:
    perf, (req,) = _serve(impl, stack, [prompt], 2)
    pairs = attention_pairs(prompt, prompt)
    eager = replace(perf, graph_sizes=()).step_s(prompt, pairs, prompt)
    graphed = replace(perf, graph_all_steps=True).step_s(prompt, pairs, prompt)
    assert graphed > eager * 1.001 or prompt > perf.graph_sizes[-1]  # where padding applies it costs time here
    assert req.first_token_s == pytest.approx(graphed if padded else eager, rel=1e-12)
    # the second token: a decode-only step of one sequence
    ctx = prompt + 1
    assert req.finish_s - req.first_token_s == pytest.approx(perf.step_s(1, ctx, ctx, decode_only=True), rel=1e-9)


def test_trtllm_pads_decode_only_steps_in_both_engines() -> None:
    """200 sequences decoding together: TensorRT-LLM runs the batch as a graph of 256 (compute-bound: slower than
    unpadded), but its mixed step (one decode + 199 prefills, 3,185 tokens) eagerly (faster than padding it to
    4,096, what the old every-step rule did). Both engines agree."""
    trt = _perf("nvidia-trtllm")
    assert trt.gemm_tokens(200, decode_only=True) == 256 and trt.gemm_tokens(3185) == 3185
    assert trt.compute_s_per_token * 256 > trt.memory_s_const  # the padded decode step is compute-bound
    finish = {}
    for impl in (Node, ReferenceNode):
        for name, perf in (("trt", trt), ("none", replace(trt, graph_sizes=())),
                           ("all", replace(trt, graph_all_steps=True))):
            _, reqs = _serve(impl, perf, [16] * 200, 6)
            finish[impl.__name__, name] = max(r.finish_s for r in reqs)
    for name in ("trt", "none", "all"):
        assert finish["Node", name] == pytest.approx(finish["ReferenceNode", name], rel=1e-9)
    assert finish["Node", "none"] < finish["Node", "trt"] < finish["Node", "all"]
