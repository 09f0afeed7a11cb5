"""``capsim profile``: what one node of a GPU type does for a model — memory plan, step times, and simulated
throughput/latency at a concurrency, at a Poisson rate, or offline (all requests at once)."""

from __future__ import annotations

import json

import click
import numpy as np

from sim.core.config import Engine, Parallelism, Speculative, validate_mapping
from sim.core.errors import ConfigError
from sim.perf.benchmark import NodeSetup, RunResult, run_closed_loop, run_offline, run_poisson
from sim.perf.catalog import GpuSpec, ModelSpec
from sim.perf.model import StepTimeModel, attention_pairs, plan_memory
from sim.perf.moe import resolve_layout

PRECISIONS = ["bf16", "fp16", "fp8", "int8", "fp4", "int4"]
DECODE_BATCHES = (1, 8, 32, 64, 128, 256)


def profile_node(
    gpu: str,
    gpus: int,
    model: str,
    weights: str,
    kv: str,
    input_tokens: int,
    output_tokens: int,
    concurrency: int | None,
    offline: int | None,
    rate: float | None,
    requests: int | None,
    stack: str | None,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    gpu_memory_utilization: float,
    seed: int = 0,
    reserve_kv: bool | None = None,
    tensor: int | None = None,
    expert: int | None = None,
    expert_imbalance: float | None = None,
    spec_method: str | None = None,
    spec_tokens: int = 3,
    spec_acceptance: float = 0.7,
    draft_model: str | None = None,
) -> dict:
    """Everything ``capsim profile`` reports, as a JSON-ready dict (see the command's help).

    ``reserve_kv``: reserve each request's whole KV at admission (TensorRT-LLM's GUARANTEED_NO_EVICT);
    ``None`` = the stack's scheduler (``reserve_kv`` for ``nvidia-trtllm``, so ``--offline`` behaves like
    ``trtllm-bench throughput``).
    ``tensor``/``expert``/``expert_imbalance``: a ``fleet.parallelism`` layout (MoE models); ``spec_*``/``draft_model``:
    a ``fleet.speculative`` block. An MoE model on several GPUs also gets a ``layouts`` table: the same node under
    tensor parallelism, EP with TP attention, and EP with data-parallel attention.
    """
    if sum(x is not None for x in (concurrency, offline, rate)) > 1:
        raise ConfigError("profile", "--concurrency/--offline/--rate", "give at most one of them")
    if input_tokens < 1 or output_tokens < 1:
        raise ConfigError("profile", "--input/--output", "lengths must be >= 1 token")
    limits: dict = {"gpu_memory_utilization": gpu_memory_utilization}  # unset limits: the stack's defaults
    if max_num_seqs is not None:
        limits["max_num_seqs"] = max_num_seqs
    if max_num_batched_tokens is not None:
        limits["max_num_batched_tokens"] = max(max_num_batched_tokens, max_num_seqs or 0)
    if reserve_kv is not None:
        limits["reserve_kv"] = reserve_kv
    parallelism = _parallelism(tensor, expert, expert_imbalance)
    speculative = None
    if spec_method is not None:
        speculative = validate_mapping(Speculative, {"method": spec_method, "num_tokens": spec_tokens,
                                                     "acceptance_rate": spec_acceptance, "draft_model": draft_model},
                                       "profile")
    setup = NodeSetup.build(gpu, model, gpus, weights, kv, Engine(**limits), stack=stack, source="profile",
                            parallelism=parallelism, speculative=speculative)
    max_num_seqs = setup.engine.max_num_seqs
    reserve_kv = setup.engine.reserve_kv
    g, m, mem, perf = setup.gpu, setup.model, setup.memory, setup.perf
    if input_tokens + output_tokens > setup.max_model_len:
        raise ConfigError("profile", "--input/--output", f"{input_tokens}+{output_tokens} tokens exceed the model's "
                          f"context ({setup.max_model_len})")
    per_req = input_tokens + output_tokens
    chunk = min(setup.engine.max_num_batched_tokens, input_tokens)
    prefill_s = perf.prefill_s(input_tokens, chunk)
    mid_ctx = input_tokens + output_tokens // 2
    decode = []
    for b in DECODE_BATCHES:
        if b * (mid_ctx + 1) > mem.kv_capacity_tokens or b > max_num_seqs:
            continue
        t = perf.decode_step_s(b, mid_ctx)
        ctx = b * (mid_ctx + 1)
        bound = perf.bound(b, ctx, ctx, decode_only=True)
        decode.append({"batch": b, "step_s": t, "tokens_per_s": b / t, "bound": bound})
    big = min(max_num_seqs, max(1, mem.kv_capacity_tokens // per_req))
    # compute roof: decode tokens/s if only FLOPs counted (context at mid-length)
    roof = 1.0 / (perf.compute_s_per_token + perf.compute_s_per_attn_pair * (mid_ctx + 1))
    out: dict = {
        "gpu": g.name,
        "gpus": gpus,
        "model": m.name,
        "weights": weights,
        "kv_cache": kv,
        "stack": stack or (g.default_stack if g.calibration is None else f"{g.name} calibration"),
        "reserve_kv": reserve_kv,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "weight_memory_gb": mem.weight_bytes / 1e9,
        "weight_memory_gb_per_gpu": mem.weight_bytes / 1e9 / gpus,
        "kv_bytes_per_token": mem.kv_bytes_per_token,
        "kv_capacity_tokens": mem.kv_capacity_tokens,
        "kv_capacity_requests": mem.kv_capacity_tokens // per_req,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": input_tokens / prefill_s,
        "prefill_bound": perf.bound(chunk, attention_pairs(chunk, chunk), chunk),
        "decode": decode,
        "decode_compute_roof_tokens_per_s": roof,
        "max_batch": big,
        "usd_per_gpu_hour": g.usd_per_gpu_hour,
    }
    if parallelism is not None:
        out["parallelism"] = resolve_layout(parallelism, m, g, gpus, "profile").name
    if speculative is not None and perf.spec is not None:
        out["speculative"] = {"method": spec_method, "num_tokens": spec_tokens, "acceptance_rate": spec_acceptance,
                              "tokens_per_step": perf.spec.tokens_per_step}
    if m.moe is not None and gpus > 1:
        out["layouts"] = layout_table(g, m, gpus, weights, kv, setup.engine, stack, mid_ctx, speculative,
                                      expert_imbalance)
    if gpus > g.max_gpus_per_node and (parallelism is None or parallelism.expert != gpus):
        out["warning"] = f"{g.name} connects at most {g.max_gpus_per_node} GPUs on its fast interconnect"
    run: RunResult
    if offline is not None:
        if offline < 1:
            raise ConfigError("profile", "--offline", f"must be >= 1 (got {offline})")
        run = run_offline(setup, [input_tokens] * offline, [output_tokens] * offline)
    elif rate is not None:
        n = requests or max(200, int(rate * 120))
        run = run_poisson(setup, rate, [input_tokens] * n, [output_tokens] * n, np.random.default_rng(seed))
    else:
        conc = concurrency if concurrency is not None else min(64, big)
        n = requests or max(5 * conc, 200)
        run = run_closed_loop(setup, conc, [input_tokens] * n, [output_tokens] * n)
        out["concurrency"] = conc
    out["run"] = run.as_dict()
    out["output_tokens_per_s"] = run.output_tokens_per_s
    out["input_tokens_per_s"] = run.input_tokens_per_s
    out["ttft_s"] = run.ttft_s.get("p50")
    out["tpot_s"] = run.tpot_s.get("p50")
    out["usd_per_million_output_tokens"] = (
        g.usd_per_gpu_hour * gpus / 3600 / run.output_tokens_per_s * 1e6 if run.output_tokens_per_s > 0 else None
    )
    return out


def _parallelism(tensor: int | None, expert: int | None, imbalance: float | None) -> Parallelism | None:
    if tensor is None and expert is None and imbalance is None:
        return None
    data: dict = {"tensor": tensor, "expert": expert or 1}
    if imbalance is not None:
        data["expert_imbalance"] = imbalance
    return validate_mapping(Parallelism, data, "profile")


def layout_table(g: GpuSpec, m: ModelSpec, gpus: int, weights: str, kv: str, engine: Engine, stack: str | None,
                 ctx: int, speculative: Speculative | None, imbalance: float | None) -> list[dict]:
    """The node under TP over all GPUs, TP attention + EP experts, and DP attention + EP experts (where the
    model's heads and experts allow): memory, KV capacity and decode step time at a few batch sizes."""
    rows = []
    extra = {"expert_imbalance": imbalance} if imbalance is not None else {}
    candidates: list[Parallelism | None] = [None]
    if m.moe is not None and m.moe.experts % gpus == 0:
        candidates += [Parallelism(tensor=gpus, expert=gpus, **extra), Parallelism(tensor=1, expert=gpus, **extra)]
    for par in candidates:
        try:
            lay = resolve_layout(par, m, g, gpus, "profile")
            mem = plan_memory(g, m, gpus, weights, kv, engine.gpu_memory_utilization, engine.block_size,
                              engine.activation_reserve_gb_per_gpu, source="profile", layout=lay,
                              speculative=speculative, max_num_seqs=engine.max_num_seqs)
        except ConfigError:
            continue
        perf = StepTimeModel.build(g, m, gpus, weights, kv, stack=stack, layout=lay, speculative=speculative)
        steps = {}
        for b in (1, 16, 64, 256):
            if b * (ctx + 1) <= mem.kv_capacity_tokens:
                steps[b] = perf.decode_step_s(b, ctx)
        rows.append({"layout": lay.name, "weight_memory_gb_per_gpu": mem.weight_bytes / 1e9 / gpus,
                     "kv_capacity_tokens": mem.kv_capacity_tokens,
                     "decode": [{"batch": b, "step_s": t, "tokens_per_s": b / t} for b, t in steps.items()]})
    return rows


def _text(r: dict) -> str:
    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v * 1e3:,.1f} ms"

    lines = [
        f"capsim profile · {r['gpus']}× {r['gpu']} · {r['model']} · weights {r['weights']}, KV {r['kv_cache']} · "
        f"stack {r['stack']}" + (" · whole-KV reservation (no preemption)" if r["reserve_kv"] else ""),
        f"  weights      {r['weight_memory_gb']:,.1f} GB ({r['weight_memory_gb_per_gpu']:,.1f} GB per GPU)",
        f"  KV cache     {r['kv_capacity_tokens']:,} tokens ({r['kv_bytes_per_token'] / 1024:,.1f} KiB/token) = "
        f"{r['kv_capacity_requests']:,} requests of {r['input_tokens']}+{r['output_tokens']} tokens",
        f"  prefill      {r['prefill_tokens_per_s']:,.0f} tokens/s ({r['input_tokens']}-token prompt alone in "
        f"{ms(r['prefill_s'])}, {r['prefill_bound']}-bound)",
        "  decode step  " + "  ".join(
            f"b={d['batch']}: {ms(d['step_s'])} ({d['tokens_per_s']:,.0f} tok/s, {d['bound']})" for d in r["decode"]
        ),
        f"               compute roof {r['decode_compute_roof_tokens_per_s']:,.0f} tok/s",
    ]
    run = r["run"]
    if run["mode"] == "offline":
        lines.append(
            f"  offline      {run['requests']:,} requests at once: {r['output_tokens_per_s']:,.0f} output tok/s, "
            f"{r['input_tokens_per_s']:,.0f} input tok/s, done in {run['duration_s']:,.1f} s"
        )
    else:
        what = f"concurrency {r['concurrency']}" if "concurrency" in r else f"{run['requests']} Poisson requests"
        lines.append(
            f"  simulated    {what}: {r['output_tokens_per_s']:,.0f} output tok/s, "
            f"{r['input_tokens_per_s']:,.0f} input tok/s, {run['requests_per_s']:.2f} req/s"
        )
    lines.append(
        f"               TTFT P50 {ms(r['ttft_s'])} P99 {ms(run['ttft_s'].get('p99'))} · "
        f"TPOT P50 {ms(r['tpot_s'])} P99 {ms(run['tpot_s'].get('p99'))}"
    )
    if r["usd_per_million_output_tokens"] is not None:
        lines.append(
            f"  cost         ${r['usd_per_million_output_tokens']:.2f} per M output tokens at 100 % busy "
            f"(${r['usd_per_gpu_hour']:.2f}/GPU-hour)"
        )
    if "speculative" in r:
        sp = r["speculative"]
        lines.insert(1, f"  speculative  {sp['method']}, {sp['num_tokens']} draft tokens, acceptance "
                        f"{sp['acceptance_rate']:.2f} → {sp['tokens_per_step']:.2f} tokens per verification step "
                        "(decode steps below are per emitted token)")
    if "parallelism" in r:
        lines.insert(1, f"  layout       {r['parallelism']}")
    if r.get("layouts"):
        lines.append(f"  layouts      decode at context {r['input_tokens'] + r['output_tokens'] // 2:,} "
                     "(tokens/s per node at batch b)")
        for row in r["layouts"]:
            dec = "  ".join(f"b={d['batch']}: {d['tokens_per_s']:,.0f}" for d in row["decode"])
            lines.append(f"    {row['layout']:<38} {row['weight_memory_gb_per_gpu']:6.1f} GB/GPU weights, "
                         f"KV {row['kv_capacity_tokens']:>11,} tokens   {dec}")
    if "warning" in r:
        lines.append(f"  warning      {r['warning']}")
    return "\n".join(lines)


@click.command("profile")
@click.option("--gpu", required=True, help="GPU profile name or alias (see `capsim catalog`).")
@click.option("--gpus", default=1, show_default=True, type=int, help="GPUs per node (tensor parallelism).")
@click.option("--model", required=True, help="Model name or alias.")
@click.option("--weights", default="bf16", show_default=True, type=click.Choice(PRECISIONS))
@click.option(
    "--kv", "kv", default="bf16", show_default=True, type=click.Choice(PRECISIONS), help="KV-cache precision."
)
@click.option("--input", "input_tokens", default=1000, show_default=True, type=int, help="Prompt tokens per request.")
@click.option("--output", "output_tokens", default=1000, show_default=True, type=int, help="Output tokens per request.")
@click.option(
    "--concurrency", type=int, default=None, help="Closed loop: requests kept in flight (default min(64, fit))."
)
@click.option("--offline", type=int, default=None, help="Offline: N requests issued at once (trtllm-bench style).")
@click.option("--rate", type=float, default=None, help="Open loop: Poisson arrivals at this many requests/s.")
@click.option("--requests", type=int, default=None, help="Requests to simulate (closed loop / Poisson).")
@click.option("--stack", default=None, help="Software stack whose factors to use (default: the GPU's).")
@click.option("--max-num-seqs", default=None, type=int, help="Default: the stack's (vLLM 256, TensorRT-LLM 2048, …).")
@click.option("--max-num-batched-tokens", default=None, type=int, help="Default: the stack's (8192).")
@click.option("--gpu-memory-utilization", default=0.9, show_default=True, type=float)
@click.option(
    "--reserve-kv/--no-reserve-kv",
    "reserve_kv",
    default=None,
    help="Reserve each request's whole KV at admission, never preempt (TensorRT-LLM's GUARANTEED_NO_EVICT). "
    "Default: the stack's scheduler (on for nvidia-trtllm).",
)
@click.option("--tensor", type=int, default=None,
              help="MoE layout: attention tensor-parallel degree (default: --gpus).")
@click.option("--expert", type=int, default=None, help="MoE layout: expert-parallel degree (default 1: TP experts).")
@click.option("--expert-imbalance", type=float, default=None,
              help="Busiest expert-parallel rank's load ÷ mean (default 1.25).")
@click.option("--spec-method", type=click.Choice(["draft", "eagle", "mtp", "ngram"]), default=None,
              help="Speculative decoding method (default: none).")
@click.option("--spec-tokens", type=int, default=3, show_default=True, help="Draft tokens per step (k).")
@click.option("--spec-acceptance", type=float, default=0.7, show_default=True,
              help="Per-token acceptance probability (i.i.d.).")
@click.option("--draft-model", default=None, help="Draft model (catalogue name) for --spec-method draft.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def profile(as_json: bool, **kw) -> None:  # noqa: ANN003
    """Memory plan, step times and simulated throughput/latency of one node.

    Example: capsim profile --gpu H100-SXM --gpus 8 --model llama-3.1-70b --weights fp8 --kv fp8 --concurrency 64
    """
    if not 0 < kw["gpu_memory_utilization"] <= 1:
        raise ConfigError("profile", "--gpu-memory-utilization", "must be in (0, 1]")
    result = profile_node(**kw)
    click.echo(json.dumps(result, indent=1) if as_json else _text(result))
