"""Validation protocol: fits never see held-out points; the default split holds out every GPU family but
H100/A100; ``capsim validate`` reports fitted vs held-out errors; ``capsim calibrate`` warns at bounds and
honours --weights/--kv."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim.cli import main
from sim.core.errors import ConfigError
from sim.perf import validation
from sim.perf.calibration import CalPoint, Predictor, Split, fit_calibration, read_measurement_csv
from sim.perf.catalog import Calibration

TRUE = Calibration(mfu=0.55, mbu=0.72, overhead_s=0.006)
START = Calibration(mfu=0.3, mbu=0.4, overhead_s=0.02)


def _step_points() -> list[CalPoint]:
    base = {"gpu": "H100-SXM", "gpus": 1, "model": "Llama-3.1-8B", "weights": "bf16", "kv": "bf16", "measured": 1.0}
    pts = [CalPoint(id=f"p{n}", mode="prefill_step", metric="ttft_p50", input_mean=n, **base) for n in (512, 4096)]
    pts += [CalPoint(id=f"d{b}", mode="decode_step", metric="tpot_p50", batch=b, context=1000, **base) for b in (1, 64)]
    pred = Predictor(pts)
    return [replace(p, measured=pred.predict(p, TRUE)) for p in pts]


def test_split_refuses_a_point_both_fitted_and_held_out() -> None:
    with pytest.raises(ValueError, match="both fitted and held out"):
        Split(frozenset({"a", "b"}), frozenset({"b"}))
    s = Split(frozenset({"a"}), frozenset({"b"}))
    assert (s.role("a"), s.role("b"), s.role("c")) == ("fitted", "held-out", "unused")


def test_fit_never_uses_a_held_out_point() -> None:
    """A held-out point with an absurd measurement changes nothing: the fit equals the fit without it."""
    pts = _step_points()
    poison = replace(pts[-1], id="poison", measured=pts[-1].measured * 50)
    ids = frozenset(p.id for p in pts)
    split = Split(ids, frozenset({"poison"}))
    with_poison = fit_calibration(pts + [poison], START, ("mfu", "mbu", "overhead_s"), split=split)
    without = fit_calibration(pts, START, ("mfu", "mbu", "overhead_s"), split=Split(ids))
    assert with_poison.calibration == without.calibration
    row = next(r for r in with_poison.rows_after if r["id"] == "poison")
    assert row["fit"] is False and row["error_pct"] < -90
    # a fitted point whose flag says "do not fit" is still only fitted when the split says so
    only = fit_calibration(pts, START, ("mfu",), max_evaluations=3, split=Split(frozenset({"p512"})))
    assert only.rows_after[1]["fit"] is False


def test_default_split_holds_out_every_family_but_h100_a100() -> None:
    pts = validation.published_points()
    split = validation.default_split(pts)
    assert not split.fit & split.held_out
    assert split.fit | split.held_out == {p.id for p in pts}
    fams = {validation.gpu_family(p.gpu) for p in pts if p.id in split.held_out}
    assert {"H200", "B200", "GB200", "GH200", "MI300X"} <= fams
    for p in pts:
        if p.id in split.fit:
            assert p.fit and validation.gpu_family(p.gpu) in ("H100", "A100"), p.id
        if not p.fit:
            assert p.id in split.held_out
    assert validation.gpu_family("GH200-96GB") == "GH200" and validation.gpu_family("h100") == "H100"


def test_leave_one_gpu_out_never_fits_the_left_out_family() -> None:
    """Synthetic: two families; leaving one out refits on the other only (its rows are held out)."""
    base = {"model": "Llama-3.1-8B", "weights": "bf16", "kv": "bf16", "measured": 1.0, "stack": "nvidia-vllm"}
    pts = []
    for gpu in ("H100-SXM", "A100-SXM-80GB"):
        pts += [CalPoint(id=f"{gpu}-p{n}", gpu=gpu, gpus=1, mode="prefill_step", metric="ttft_p50",
                         input_mean=n, **base) for n in (512, 4096)]
        pts += [CalPoint(id=f"{gpu}-d{b}", gpu=gpu, gpus=1, mode="decode_step", metric="tpot_p50", batch=b,
                         context=1000, **base) for b in (1, 64, 256)]
    pred = Predictor(pts)
    pts = [replace(p, measured=pred.predict(p, TRUE)) for p in pts]
    rep = validation.run_leave_one_gpu_out(pts, max_evaluations=30)
    assert {r["fold"] for r in rep.rows} == {"without A100", "without H100"}
    for r in rep.rows:
        assert r["role"] == "held-out" and r["fold"] == f"without {r['gpu_family']}"
        assert abs(r["error_pct"]) < 3  # the same factors hold on both families, so prediction works


def test_validate_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pts = [p for p in validation.published_points()
           if p.id in ("trt8b-2048-128", "trt-h200-8b-2048-128", "sgl-8b-a100-rps8-tpot",
                       "mlperf41-mi300x1-l2-70b-offline")]
    pts = [replace(p, requests=min(p.requests, 300)) for p in pts]
    monkeypatch.setattr(validation, "all_points", lambda: pts)
    out = tmp_path / "v.json"
    res = CliRunner().invoke(main, ["validate", "--protocol", "shipped", "--protocol", "leave-one-stack-out",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "shipped · 4 point(s): 2 fitted, 2 held out" in res.output
    assert "H200" in res.output and "MI300X" in res.output and "≤10%" in res.output
    doc = json.loads(out.read_text())
    assert [d["protocol"] for d in doc] == ["shipped", "leave-one-stack-out"]
    md = validation.markdown_points(validation.run_shipped(pts), pts)
    assert "Poisson 8 req/s" in md and "| offline, 2048/128" in md and "held-out" in md
    loso = doc[1]["rows"]
    assert loso and all(r["role"] == "held-out" for r in loso)
    assert {r["fold"] for r in loso} == {"nvidia-trtllm with nvidia-vllm", "nvidia-vllm with nvidia-trtllm"}


def test_calibrate_csv_rows_take_weights_and_kv_defaults(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("gpu,gpus,model,input,output,concurrency,rate,throughput,weights,kv\n"
                 "H100-SXM,1,llama-3.1-8b,1000,200,32,,2500,,\n"
                 "H100-SXM,1,llama-3.1-8b,1000,200,32,,2500,bf16,fp16\n")
    a, b = read_measurement_csv(f, weights="fp8", kv="fp8")
    assert (a.weights, a.kv) == ("fp8", "fp8")
    assert (b.weights, b.kv) == ("bf16", "fp16")
    f.write_text("gpu,gpus,model,input,output,concurrency,rate,throughput\nH100-SXM,1,llama-3.1-8b,1000,200,32,,2500\n")
    assert read_measurement_csv(f, weights="fp4", kv="fp8")[0].weights == "fp4"


def test_calibrate_warns_when_a_factor_hits_its_bound(tmp_path: Path) -> None:
    """Decode steps measured 100x slower than any bandwidth could explain drive mbu to its lower bound."""
    f = tmp_path / "m.csv"
    f.write_text("gpu,gpus,model,input,output,concurrency,rate,tpot_ms\n"
                 "H100-SXM,1,llama-3.1-8b,200,64,1,,2000\n"
                 "H100-SXM,1,llama-3.1-8b,400,64,1,,2000\n")
    out = tmp_path / "cal.yaml"
    res = CliRunner().invoke(main, ["calibrate", str(f), "--fit", "mbu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: mbu" in res.output and "lower bound" in res.output


def test_point_engine_settings_reach_the_benchmark(tmp_path: Path) -> None:
    """A point's published engine flags (point_engine_settings.csv) are applied; a bad field or id is one clear
    error naming the file."""
    pts = {p.id: p for p in validation.published_points()}
    vllm = dict(pts["vllm-8b-a100-rps4-ttft"].engine)
    assert vllm["num_scheduler_steps"] == 10 and vllm["chunked_prefill"] is False
    assert dict(pts["sgl-8b-a100-rps4-ttft"].engine) == {}
    assert dict(pts["trt-h200-8b-128-128"].engine) == {"chunked_prefill": True}  # the row's id pattern "trt*"
    # multi-step admission is what moves vLLM 0.6's TTFT: without the flags the prediction is far lower
    p = replace(pts["vllm-8b-a100-rps4-ttft"], requests=300)
    cal = validation.shipped_factors([p])["nvidia-vllm"]
    with_flags = Predictor([p]).predict(p, cal)
    plain = replace(p, engine=())
    assert with_flags > 2.0 * Predictor([plain]).predict(plain, cal)

    src = validation.calibration_data_dir() / "published_points.csv"
    (tmp_path / "published_points.csv").write_text(src.read_text())
    bad = tmp_path / "point_engine_settings.csv"
    bad.write_text("id,field,value,source\nvllm-8b-a100-rps4-ttft,num_sched_steps,10,x\n")
    with pytest.raises(ConfigError, match=r"not a fleet\.engine field"):
        validation.published_points(tmp_path / "published_points.csv")
    for pattern in ("no-such-point", "zz*"):
        bad.write_text(f"id,field,value,source\n{pattern},num_scheduler_steps,10,x\n")
        with pytest.raises(ConfigError, match="no published point"):
            validation.published_points(tmp_path / "published_points.csv")
