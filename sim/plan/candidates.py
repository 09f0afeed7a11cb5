"""The candidate space of ``capsim plan``: GPU type × GPUs per node (tensor parallelism) × precision ×
max_num_seqs, each checked against what the hardware and the performance model allow.

A candidate is excluded, with the reason recorded, when

* the GPU has no tensor-core rate for its weight precision (``peak_tflops``) — e.g. FP8 on A100;
* the tensor-parallel size exceeds the GPU's ``max_gpus_per_node`` or does not divide the model's attention
  heads (and its KV heads, or the KV heads divide it), as vLLM requires;
* the model does not fit, or leaves KV room for fewer than ``plan.min_kv_requests`` mean requests;
* its lone-request P95 TTFT, TPOT or E2E (:mod:`sim.plan.bounds`) already misses the SLO (not for spill
  variants: the hosted API takes what the fleet would serve too slowly).

With an ``api`` in the scenario each point comes twice: the fleet alone, and the fleet spilling to the API when
its predicted TTFT exceeds the target (``spill.policy: predicted_ttft``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.core.config import Scenario
from sim.core.errors import ConfigError
from sim.perf.catalog import GpuSpec, get_gpu, get_model, gpus, unique
from sim.perf.model import StepTimeModel, plan_memory
from sim.plan.bounds import Bounds, MixSample, node_bounds
from sim.plan.spec import PlanSpec, split_precision


@dataclass
class Candidate:
    """One point of the space and what is known about it before simulation."""

    gpu: str
    gpus_per_node: int
    weights: str
    kv_cache: str
    max_num_seqs: int
    spill: str = "none"  # or "predicted_ttft": spill to the scenario's api when the predicted TTFT is too long
    excluded: str | None = None  # why it cannot meet the SLO (or run) at any fleet size
    bounds: Bounds | None = None
    kv_capacity_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        prec = self.weights if self.weights == self.kv_cache else f"{self.weights}/{self.kv_cache}"
        tail = " + API spill" if self.spill != "none" else ""
        return f"{self.gpu} ×{self.gpus_per_node} {prec} seqs {self.max_num_seqs}{tail}"

    @property
    def key(self) -> tuple[str, int, str, str, int, str]:
        return (self.gpu, self.gpus_per_node, self.weights, self.kv_cache, self.max_num_seqs, self.spill)

    def changes(self, scenario: Scenario) -> dict[str, Any]:
        """Dotted-path changes that turn ``scenario`` into this candidate (the stack is the GPU's own unless the
        scenario names one for this very GPU type)."""
        ch: dict[str, Any] = {"fleet.gpu": self.gpu, "fleet.gpus_per_node": self.gpus_per_node,
                              "fleet.weights": self.weights, "fleet.kv_cache": self.kv_cache,
                              "fleet.engine.max_num_seqs": self.max_num_seqs}
        if scenario.fleet.stack is not None and get_gpu(scenario.fleet.gpu).name != self.gpu:
            ch["fleet.stack"] = None
        if self.spill == "none":
            ch["spill"] = None
        else:
            ch["spill"] = {"policy": self.spill}
        return ch


def supports(gpu: GpuSpec, precision: str) -> bool:
    """The GPU has a tensor-core rate for ``precision`` (BF16 and FP16 stand in for each other)."""
    same = {"bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16")}.get(precision, (precision,))
    return any(p in gpu.peak_tflops for p in same)


def tp_divides(heads: int, kv_heads: int, tp: int) -> bool:
    """vLLM's tensor-parallel rule: TP divides the attention heads, and TP and the KV heads divide one another."""
    return heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0)


def spill_options(scenario: Scenario, spec: PlanSpec) -> list[str]:
    """``plan.spill``, else the fleet alone plus predicted-TTFT spill when the scenario has an ``api``."""
    if spec.spill is not None:
        if "predicted_ttft" in spec.spill and scenario.api is None:
            raise ConfigError(scenario.source, "plan.spill", "predicted_ttft spill needs an api section")
        return list(dict.fromkeys(spec.spill))
    return ["none", "predicted_ttft"] if scenario.api is not None else ["none"]


def enumerate_candidates(scenario: Scenario, spec: PlanSpec, mix: MixSample) -> list[Candidate]:
    """Every candidate of the space, each either with its bounds or with the reason it is excluded."""
    model = get_model(scenario.fleet.model, scenario.source)
    names = spec.gpus or [g.name for g in unique(gpus())]
    gpu_specs = [get_gpu(n, scenario.source, "plan.gpus") for n in names]
    seqs = spec.max_num_seqs or [scenario.fleet.engine.max_num_seqs]
    spills = spill_options(scenario, spec)
    eng = scenario.fleet.engine
    slo = scenario.slo
    out: list[Candidate] = []
    for gpu in {g.name: g for g in gpu_specs}.values():
        for tp in spec.gpus_per_node:
            for prec in spec.precisions:
                w, kv = split_precision(prec)
                for n_seqs, spill in ((n, sp) for n in seqs for sp in spills):
                    c = Candidate(gpu.name, tp, w, kv, n_seqs, spill)
                    out.append(c)
                    if not supports(gpu, w):
                        c.excluded = f"{gpu.name} has no {w} tensor cores"
                        continue
                    if tp > gpu.max_gpus_per_node:
                        c.excluded = f"{tp} GPUs exceed the {gpu.max_gpus_per_node} per node of {gpu.name}"
                        continue
                    if not tp_divides(model.attention_heads, model.kv_heads, tp):
                        c.excluded = (f"TP {tp} does not divide {model.attention_heads} heads / "
                                      f"{model.kv_heads} KV heads")
                        continue
                    try:
                        mem = plan_memory(gpu, model, tp, w, kv, eng.gpu_memory_utilization, eng.block_size,
                                          eng.activation_reserve_gb_per_gpu, speculative=scenario.fleet.speculative,
                                          max_num_seqs=n_seqs)
                    except ConfigError:
                        c.excluded = f"{model.name} does not fit on {tp}× {gpu.name} in {w}"
                        continue
                    c.kv_capacity_tokens = mem.kv_capacity_tokens
                    need = spec.min_kv_requests * (mix.mean_prompt + mix.mean_output)
                    if mem.kv_capacity_tokens < need:
                        c.excluded = (f"KV room for {mem.kv_capacity_tokens:,} tokens < {spec.min_kv_requests:g} "
                                      "mean requests")
                        continue
                    stack = scenario.fleet.stack if gpu.name == get_gpu(scenario.fleet.gpu).name else None
                    try:
                        perf = StepTimeModel.build(gpu, model, tp, w, kv, stack=stack,
                                                   speculative=scenario.fleet.speculative)
                    except ConfigError as exc:
                        c.excluded = exc.problem
                        continue
                    b = node_bounds(perf, mem, mix, n_seqs, eng.max_num_batched_tokens, slo.tpot_p95_s)
                    c.bounds = b
                    if spill != "none":
                        continue  # the API can take what the fleet would serve too slowly
                    for target, lone, name in ((slo.ttft_p95_s, b.ttft_lone_p95_s, "TTFT"),
                                               (slo.tpot_p95_s, b.tpot_lone_p95_s, "TPOT"),
                                               (slo.e2e_p95_s, b.e2e_lone_p95_s, "E2E")):
                        if target is not None and lone > target:
                            c.excluded = f"lone-request P95 {name} {lone * 1000:,.0f} ms > {target * 1000:,.0f} ms"
                            break
    return out
