"""`capsim profile`, `capsim calibrate` and `capsim catalog` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from sim.cli import main
from sim.perf.catalog import GpuSpec, get_gpu

ARGS = ["profile", "--gpu", "H100-SXM", "--gpus", "8", "--model", "llama-3.1-70b", "--weights", "fp8", "--kv", "fp8"]


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_profile_json_closed_loop() -> None:
    r = _run(ARGS + ["--input", "1500", "--output", "300", "--concurrency", "50", "--requests", "300", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for k in ("kv_capacity_tokens", "output_tokens_per_s", "ttft_s", "tpot_s", "weight_memory_gb",
              "prefill_tokens_per_s", "decode", "kv_capacity_requests"):
        assert k in d
    assert d["weight_memory_gb"] == 70.553706496
    assert d["kv_capacity_requests"] == d["kv_capacity_tokens"] // 1800
    assert d["decode"][0]["batch"] == 1 and d["decode"][0]["bound"] == "memory"
    steps = [x["step_s"] for x in d["decode"]]
    assert steps == sorted(steps)
    # Little's law for a closed loop: concurrency ≈ throughput × latency
    e2e = d["run"]["e2e_s"]["mean"]
    assert d["run"]["requests_per_s"] * e2e == __import__("pytest").approx(50, rel=0.15)
    assert 500 < d["output_tokens_per_s"] < 20_000
    assert 0 < d["tpot_s"] < 0.2


def test_profile_offline_and_text() -> None:
    r = _run(ARGS + ["--input", "1000", "--output", "1000", "--offline", "400"])
    assert r.exit_code == 0, r.output
    assert "KV cache" in r.output and "offline" in r.output and "output tok/s" in r.output
    j = json.loads(_run(ARGS + ["--input", "1000", "--output", "1000", "--offline", "400", "--json"]).output)
    c = json.loads(_run(ARGS + ["--input", "1000", "--output", "1000", "--concurrency", "4", "--json"]).output)
    assert j["output_tokens_per_s"] > 5 * c["output_tokens_per_s"]  # batching pays
    assert j["run"]["completed"] == 400


def test_profile_offline_trtllm_reserves_kv() -> None:
    """`--offline` under nvidia-trtllm behaves like trtllm-bench: whole-KV reservation, so long prompts do not
    thrash; `--no-reserve-kv` gives vLLM's preempting scheduler, `--reserve-kv` forces reservation elsewhere."""
    base = ["profile", "--gpu", "H100-SXM", "--model", "llama-3.1-8b", "--weights", "fp8", "--kv", "fp8",
            "--input", "20000", "--output", "2000", "--offline", "100", "--max-num-seqs", "2048", "--json"]
    trt = json.loads(_run(base + ["--stack", "nvidia-trtllm"]).output)
    pre = json.loads(_run(base + ["--stack", "nvidia-trtllm", "--no-reserve-kv"]).output)
    assert trt["reserve_kv"] is True and pre["reserve_kv"] is False
    assert trt["run"]["completed"] == pre["run"]["completed"] == 100
    assert trt["output_tokens_per_s"] > 1.5 * pre["output_tokens_per_s"]  # preemption thrash without reservation
    vllm = json.loads(_run(base).output)
    forced = json.loads(_run(base + ["--reserve-kv"]).output)
    assert vllm["reserve_kv"] is False and forced["reserve_kv"] is True
    assert forced["output_tokens_per_s"] > vllm["output_tokens_per_s"]
    text = _run(base[:-1] + ["--stack", "trtllm"]).output
    assert "whole-KV reservation" in text


def test_profile_rate_and_other_hardware() -> None:
    for gpu in ("H200-SXM", "B200", "MI300X", "L40S", "GH200-144GB"):
        gpus = "8" if gpu != "GH200-144GB" else "1"
        r = _run(["profile", "--gpu", gpu, "--gpus", gpus, "--model", "llama-3.1-70b", "--weights", "fp8",
                  "--kv", "fp8", "--input", "1500", "--output", "300", "--rate", "2", "--requests", "100", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["run"]["completed"] == 100


def test_profile_model_too_large() -> None:
    r = CliRunner().invoke(main, ["profile", "--gpu", "L40S", "--model", "llama-3.1-405b"])
    assert r.exit_code == 2
    assert "does not fit" in r.output and "GB missing (" in r.output and "bytes)" in r.output
    r = CliRunner().invoke(main, ARGS + ["--offline", "10", "--concurrency", "3"])
    assert r.exit_code == 2 and "at most one" in r.output
    r = CliRunner().invoke(main, ["profile", "--gpu", "H900", "--model", "llama-3.1-8b"])
    assert r.exit_code == 2 and "unknown GPU" in r.output


def test_catalog_lists_everything() -> None:
    r = _run(["catalog"])
    assert r.exit_code == 0
    for name in ("H100-SXM", "B200", "MI300X", "DeepSeek-V3", "Mixtral-8x7B", "nvidia-vllm"):
        assert name in r.output
    d = json.loads(_run(["catalog", "--json"]).output)
    assert len(d["gpus"]) >= 12 and len(d["models"]) >= 7


def test_calibrate_csv_writes_loadable_profile(tmp_path: Path) -> None:
    # measurements made to look like a slower H100: fit should move the factors and cut the error
    f = tmp_path / "mine.csv"
    f.write_text("gpu,gpus,model,input,output,concurrency,rate,throughput,ttft_ms,tpot_ms,requests\n"
                 "H100-SXM,1,llama-3.1-8b,512,128,,,2500,,,300\n"
                 "H100-SXM,1,llama-3.1-8b,512,128,,2,,60,14,200\n"
                 "H100-SXM,1,llama-3.1-8b,2000,64,,1,,250,,150\n")
    out = tmp_path / "H100-mine.yaml"
    r = _run(["calibrate", str(f), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "MAPE all" in r.output and "before" in r.output
    raw = yaml.safe_load(out.read_text())
    spec = GpuSpec.model_validate(raw)
    assert spec.calibration is not None and spec.calibration != get_gpu("H100-SXM").calibration
    before = float(r.output.split("MAPE all")[1].split("before")[1].split("%")[0])
    after = float(r.output.split("MAPE all")[1].split("after")[1].split("%")[0])
    assert after < before


def test_calibrate_errors(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"completed": 10, "total_input_tokens": 100, "total_output_tokens": 100,
                             "output_throughput": 100.0, "request_rate": "inf", "model_id": "x/Llama-3.1-8B"}))
    r = CliRunner().invoke(main, ["calibrate", str(f)])
    assert r.exit_code == 2 and "--gpu" in r.output
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "nope.txt")])
    assert r.exit_code == 2
