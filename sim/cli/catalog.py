"""``capsim catalog``: list the GPUs, models and software stacks capsim knows."""

from __future__ import annotations

import json

import click

from sim.perf.catalog import gpus, models, resolve_calibration, stacks, unique


def catalog_dict() -> dict:
    out: dict = {"gpus": [], "models": [], "stacks": []}
    for g in unique(gpus()):
        cal = resolve_calibration(g)
        out["gpus"].append({
            "name": g.name, "vendor": g.vendor, "memory_gb": g.memory_gb, "hbm_bw_gb_s": g.hbm_bw_gb_s,
            "peak_tflops": g.peak_tflops, "interconnect_gb_s": g.interconnect_gb_s, "tdp_w": g.tdp_w,
            "usd_per_gpu_hour": g.usd_per_gpu_hour, "purchase_usd_per_gpu": g.purchase_usd_per_gpu,
            "stack": g.default_stack if g.calibration is None else "own calibration", "mfu": cal.mfu, "mbu": cal.mbu,
            "aliases": g.aliases,
        })
    for m in unique(models()):
        out["models"].append({
            "name": m.name, "params_total": m.params_total, "params_active": m.params_active, "layers": m.layers,
            "kv_bytes_per_token_bf16": 2 * m.kv_elements_per_token(), "max_context": m.max_context,
            "attention": "MLA" if m.mla else "GQA", "moe": m.is_moe, "aliases": m.aliases,
        })
    for s in unique(stacks()):
        out["stacks"].append({"name": s.name, "vendor": s.vendor, **s.calibration.model_dump(),
                              "description": s.description})
    return out


@click.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def catalog(as_json: bool) -> None:
    """List GPU profiles, models and software stacks (hardware_profiles/)."""
    d = catalog_dict()
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    click.echo("GPUs")
    click.echo(f"  {'name':14} {'vendor':6} {'mem GB':>7} {'HBM GB/s':>9} {'BF16':>6} {'FP8':>6} {'FP4':>6} "
               f"{'link GB/s':>9} {'TDP W':>6} {'$/GPU-h':>8} {'buy $':>8}  stack")
    for g in d["gpus"]:
        p = g["peak_tflops"]
        f = {k: f"{p[k]:6.0f}" if k in p else f"{'–':>6}" for k in ("bf16", "fp8", "fp4")}
        click.echo(f"  {g['name']:14} {g['vendor']:6} {g['memory_gb']:7.0f} {g['hbm_bw_gb_s']:9.0f} {f['bf16']} "
                   f"{f['fp8']} {f['fp4']} {g['interconnect_gb_s']:9.0f} {g['tdp_w']:6.0f} "
                   f"{g['usd_per_gpu_hour']:8.2f} "
                   f"{g['purchase_usd_per_gpu']:8,.0f}  {g['stack']}")
    click.echo("\nModels")
    click.echo(f"  {'name':16} {'params':>8} {'active':>8} {'layers':>6} {'KV B/token (bf16)':>18} {'context':>8}  "
               "attention")
    for m in d["models"]:
        moe = " MoE" if m["moe"] else ""
        click.echo(f"  {m['name']:16} {m['params_total'] / 1e9:7.1f}B {m['params_active'] / 1e9:7.1f}B "
                   f"{m['layers']:6d} {m['kv_bytes_per_token_bf16']:18,d} {m['max_context']:8,d}  "
                   f"{m['attention']}{moe}")
    click.echo("\nSoftware stacks (fitted factors)")
    for s in d["stacks"]:
        click.echo(f"  {s['name']:16} mfu {s['mfu']:.3f}  mbu {s['mbu']:.3f}  overhead {s['overhead_s'] * 1e3:.2f} ms"
                   f"  all-reduce eff {s['allreduce_efficiency']:.2f}  — {s['description']}")
