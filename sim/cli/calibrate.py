"""``capsim calibrate``: fit a GPU profile's efficiency factors to your own benchmark results and write a new
profile YAML (with a ``calibration`` block) plus a before/after error table."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from sim.core.atomic_io import write_text
from sim.core.errors import ConfigError
from sim.perf.calibration import (
    FITTABLE,
    fit_calibration,
    format_table,
    read_measurement_csv,
    read_vllm_bench_json,
    starting_calibration,
)
from sim.perf.catalog import get_gpu

PRECISIONS = ["bf16", "fp16", "fp8", "int8", "fp4", "int4"]


def write_profile(gpu_name: str, cal: dict, path: Path, comment: str) -> None:
    """The GPU's catalogue profile with ``calibration`` replaced, under a new name ``<gpu>-calibrated``."""
    g = get_gpu(gpu_name, "calibrate", "--gpu")
    data = g.model_dump(exclude_none=True)
    data["name"] = f"{g.name}-calibrated" if path.stem.lower() != g.name.lower() else g.name
    data["aliases"] = []
    data["calibration"] = {k: float(f"{v:.4g}") for k, v in cal.items()}
    data["sources"] = list(g.sources) + [comment]
    write_text(path, f"# {comment}\n" + yaml.safe_dump(data, sort_keys=False, width=120))


@click.command("calibrate")
@click.argument("measurements", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--gpu", default=None, help="GPU the JSON results were measured on (CSV rows name their own).")
@click.option("--gpus", default=1, show_default=True, type=int, help="GPUs per node for JSON results.")
@click.option("--model", default=None, help="Catalogue model for JSON results (default: from model_id).")
@click.option("--weights", default="bf16", show_default=True, type=click.Choice(PRECISIONS),
              help="Weight precision of JSON results and of CSV rows that do not name one.")
@click.option("--kv", default="bf16", show_default=True, type=click.Choice(PRECISIONS),
              help="KV-cache precision of JSON results and of CSV rows that do not name one.")
@click.option("--max-num-seqs", default=256, show_default=True, type=int,
              help="The server's max_num_seqs (JSON results and CSV rows without the column).")
@click.option("--stack", default=None, help="Start from this stack's factors (default: the GPU's).")
@click.option("--fit", "fit_params", default="mfu,mbu,overhead_s", show_default=True,
              help=f"Factors to fit, comma-separated ({', '.join(FITTABLE)}).")
@click.option("--out", "out_path", default=None, type=click.Path(path_type=Path),
              help="Profile YAML to write (default: ./<GPU>-calibrated.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calibrate(measurements: tuple[Path, ...], gpu: str | None, gpus: int, model: str | None, weights: str, kv: str,
              max_num_seqs: int, stack: str | None, fit_params: str, out_path: Path | None, as_json: bool) -> None:
    """Fit factors to MEASUREMENTS: `vllm bench serve --save-result` JSON files and/or a CSV with columns
    gpu,gpus,model,input,output,concurrency|rate,throughput,ttft_ms,tpot_ms (weights, kv optional).

    Drop the written YAML into hardware_profiles/gpus/ to use it.
    """
    points = []
    for path in measurements:
        if path.suffix.lower() == ".json":
            if gpu is None:
                raise ConfigError(str(path), "--gpu", "a vllm bench JSON does not record the GPU; pass --gpu")
            points += read_vllm_bench_json(path, gpu, gpus, model, weights, kv, max_num_seqs=max_num_seqs)
        elif path.suffix.lower() == ".csv":
            points += read_measurement_csv(path, weights=weights, kv=kv, max_num_seqs=max_num_seqs)
        else:
            raise ConfigError(str(path), "", "expected a .json (vllm bench) or .csv file")
    params = [p.strip() for p in fit_params.split(",") if p.strip()]
    families = {p.family for p in points}
    if len(points) < len(params):
        raise ConfigError("calibrate", "--fit", f"{len(points)} measurement(s) cannot determine {len(params)} factors; "
                          "fit fewer (e.g. --fit mbu) or add measurements")
    start = starting_calibration(points, stack)
    res = fit_calibration(points, start, params)
    gpu_name = get_gpu(points[0].gpu, "calibrate", "gpu").name
    out = out_path or Path(f"{gpu_name}-calibrated.yaml")
    before, after = res.mape(after=False), res.mape()
    comment = (
        f"calibration fitted by `capsim calibrate` to {len(points)} measurement(s) from "
        f"{', '.join(p.name for p in measurements)}; MAPE {before.get('all', 0):.1f}% -> {after.get('all', 0):.1f}%"
    )
    write_profile(gpu_name, res.calibration.model_dump(), out, comment)
    warnings = res.bound_warnings()
    for line in warnings:
        click.echo(line, err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "profile": str(out),
                    "calibration": res.calibration.model_dump(),
                    "warnings": warnings,
                    "start": res.start.model_dump(),
                    "mape_before": before,
                    "mape_after": after,
                    "rows_before": res.rows_before,
                    "rows_after": res.rows_after,
                },
                indent=1,
                default=float,
            )
        )
        return
    click.echo(format_table(res.rows_after, res.rows_before))
    click.echo("")
    for fam in sorted(families) + ["all"]:
        if fam in after:
            click.echo(f"MAPE {fam:10} before {before[fam]:6.1f}%   after {after[fam]:6.1f}%")
    click.echo(
        "factors: " + ", ".join(f"{k} {getattr(start, k):.4g} -> {getattr(res.calibration, k):.4g}" for k in params)
    )
    click.echo(f"wrote {out}")
