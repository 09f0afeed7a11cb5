"""``capsim traffic SHAPE_OR_TRACE``: plot and summarise a traffic shape, a trace, a rate series or a
scenario's traffic — the windowed P-rates that sizing rules ("P95 + 30 %") apply to."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from sim.core.atomic_io import write_text
from sim.core.config import (
    FixedTokens,
    RequestClass,
    Traffic,
    _format_error,
    load_scenario,
    read_yaml,
    validate_mapping,
)
from sim.core.errors import ConfigError

if TYPE_CHECKING:
    from sim.traffic.arrivals import ArrivalChunk

FAST_ABOVE = 2e7  # expected arrivals above which stats use per-minute counts instead of every arrival


def _classes(path: str | None) -> tuple[list[RequestClass], bool]:
    if path is None:
        one = FixedTokens(value=1)
        return [RequestClass(name="all", share=1.0, input_tokens=one, output_tokens=one)], False
    raw: Any = read_yaml(Path(path))
    if isinstance(raw, dict):
        traffic = raw.get("traffic")
        raw = raw.get("classes", traffic.get("classes") if isinstance(traffic, dict) else None)
    if not isinstance(raw, list):
        raise ConfigError(path, "classes", "expected a list of request classes")
    try:
        return [RequestClass.model_validate(c) for c in raw], True
    except ValidationError as exc:
        field, msg = _format_error(exc)
        raise ConfigError(path, f"classes.{field}", msg) from None


def _traffic(data: dict, source: str) -> Traffic:
    return validate_mapping(Traffic, data, source)


@click.command("traffic")
@click.argument("source")
@click.option("--days", type=float, default=None,
              help="Length to generate [default: 7 for shapes, the trace's span, the scenario's duration].")
@click.option("--rate-rps", type=float, default=None,
              help="Shapes: mean (base) rate [default 10]. Traces: rescale to this mean rate.")
@click.option("--classes", "classes_file", type=click.Path(), default=None,
              help="YAML list of request classes (for tokens per day of a shape).")
@click.option("--start-weekday", type=click.Choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), default="mon",
              show_default=True)
@click.option("--start-hour", type=float, default=0.0, show_default=True)
@click.option("--loop/--no-loop", default=False, help="Traces: repeat to fill --days.")
@click.option("--time-scale", type=float, default=1.0, show_default=True, help="Traces: multiply timestamps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fit-shape", type=click.Path(), default=None,
              help="Fit daily+weekly harmonics to the arrivals (or rate series) and write a shape YAML.")
@click.option("--plot", type=click.Path(), default=None, help="Write a PNG of the rate over time.")
@click.option("--json", "as_json", is_flag=True, help="Print statistics as JSON.")
def traffic(source: str, days: float | None, rate_rps: float | None, classes_file: str | None, start_weekday: str,
            start_hour: float, loop: bool, time_scale: float, seed: int, fit_shape: str | None, plot: str | None,
            as_json: bool) -> None:
    """Rate-over-time statistics of SOURCE: a shape name (traffic_shapes/), a shape or scenario YAML,
    a trace (Azure/BurstGPT/Vidur CSV, Mooncake JSONL) or a rate series CSV (window_start_s, rate_rps)."""
    from sim.traffic.arrivals import load_trace, rate_curve, trace_rate_scale, traffic_chunks
    from sim.traffic.shapes import available_shapes, clock0_hours, find_shape_file
    from sim.traffic.stats import plot_rate, traffic_stats
    from sim.traffic.traces import replay_period_s

    if days is not None and not (days > 0 and math.isfinite(days)):
        raise ConfigError("--days", "", f"must be > 0 (got {days})")
    if rate_rps is not None and not (rate_rps > 0 and math.isfinite(rate_rps)):
        raise ConfigError("--rate-rps", "", f"must be > 0 (got {rate_rps})")
    if not (time_scale > 0 and math.isfinite(time_scale)):
        raise ConfigError("--time-scale", "", f"must be > 0 (got {time_scale})")
    classes, have_tokens = _classes(classes_file)
    path = Path(source)
    base = Path.cwd()
    info: dict = {"source": source}
    rate_series = None
    block = 16
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        raw = read_yaml(path)
        if isinstance(raw, dict) and "traffic" in raw:
            scen = load_scenario(path)
            tr = scen.traffic
            base = scen.base_dir
            block = scen.fleet.engine.block_size
            duration = days * 86400.0 if days else scen.duration_s
            seed = scen.seed if seed == 0 else seed
            info["kind"] = "scenario"
            have_tokens = True
        elif isinstance(raw, dict) and ("components" in raw or "include" in raw):
            tr = _traffic({"rate_rps": rate_rps or 10.0, "shape": str(path.resolve()), "classes": classes,
                           "start_weekday": start_weekday, "start_hour": start_hour}, source)
            duration = (days or 7.0) * 86400.0
            info["kind"] = "shape"
        else:
            raise ConfigError(source, "", "a YAML file here must be a shape (components:) or a scenario (traffic:)")
    elif path.is_file():
        from sim.traffic.traces import check_text

        check_text(path)
        header = []
        if path.suffix.lower() == ".csv":
            try:
                header = [c.strip() for c in pd.read_csv(path, nrows=0).columns]
            except (ValueError, pd.errors.ParserError) as exc:
                raise ConfigError(source, "", f"cannot read as CSV ({exc})") from None
        if "rate_rps" in header and ("window_start_s" in header or "time_s" in header):
            tcol = "window_start_s" if "window_start_s" in header else "time_s"
            df = pd.read_csv(path)
            w = pd.to_numeric(df[tcol], errors="coerce").to_numpy(float)
            r = pd.to_numeric(df["rate_rps"], errors="coerce").to_numpy(float)
            if np.isnan(w).any() or np.isnan(r).any() or len(w) < 2 or (r < 0).any():
                raise ConfigError(source, "rate_rps", "needs ≥ 2 rows of numeric, non-negative values")
            step = float(np.median(np.diff(w)))
            mean = float(r.mean())
            if mean <= 0:
                raise ConfigError(source, "rate_rps", "all rates are 0")
            pts = [(float((x - w[0]) / 3600.0), float(v / mean)) for x, v in zip(w, r)]
            tr = _traffic({"rate_rps": rate_rps or mean, "classes": classes, "start_weekday": start_weekday,
                           "start_hour": start_hour,
                           "shape": {"components": [{"type": "piecewise", "points": pts, "interp": "step"}]}},
                          source)
            duration = days * 86400.0 if days else float(w[-1] - w[0] + step)
            rate_series = (w - w[0], r, step)
            info["kind"] = "rate_series"
        else:
            spec = {"file": str(path.resolve()), "loop": loop, "time_scale": time_scale}
            tr = _traffic({"rate_rps": rate_rps, "trace": spec}, source)
            trace = load_trace(tr, base)
            period = replay_period_s(trace) * time_scale
            duration = days * 86400.0 if days else period
            if not loop:
                duration = min(duration, period)
            k = trace_rate_scale(tr, trace)
            info.update({"kind": "trace", "trace": {
                "format": trace.format, "rows": trace.rows, "dropped_rows": trace.dropped_rows,
                "span_s": trace.span_s, "mean_rate_rps": trace.mean_rate_rps,
                "mean_input_tokens": float(trace.prompt_tokens.mean()),
                "mean_output_tokens": float(trace.output_tokens.mean()),
                "cached_token_fraction": (float(trace.cached_tokens.sum() / trace.prompt_tokens.sum())
                                          if trace.cached_tokens is not None else None),
                "start": str(trace.start) if trace.start is not None else None, "rate_scale": k}})
            have_tokens = True
            if trace.start is not None:
                st = trace.start
                start_weekday, start_hour = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][st.weekday()], (
                    st.hour + st.minute / 60 + st.second / 3600 + st.microsecond / 3.6e9)
                tr = tr.model_copy(update={"start_weekday": start_weekday, "start_hour": start_hour})
    else:
        if find_shape_file(source) is None:
            raise ConfigError(source, "", "not a file, and no such shape in traffic_shapes/ "
                              f"(shapes: {', '.join(available_shapes())})")
        tr = _traffic({"rate_rps": rate_rps or 10.0, "shape": source, "classes": classes,
                       "start_weekday": start_weekday, "start_hour": start_hour}, source)
        duration = (days or 7.0) * 86400.0
        info["kind"] = "shape"

    from sim.core.progress import Progress

    # sampling every arrival of days of traffic (and fitting) takes a while: a bar, or a line every ~10 s
    bar = Progress("capsim traffic (sampling arrivals)", "s of traffic")
    known_calendar = info["kind"] != "trace" or info["trace"]["start"] is not None
    clock0 = clock0_hours(tr.start_weekday, tr.start_hour) if known_calendar else None
    curve = rate_curve(tr, base, source) if tr.trace is None else None
    expected = curve.integral(0.0, duration, step_s=60.0) if curve is not None else 0.0
    if curve is not None and tr.dispersion.model == "poisson" and expected > FAST_ABOVE and not fit_shape:
        # many arrivals: draw per-minute Poisson counts (exact for windowed statistics), tokens at class means
        from sim.core.rng import stream
        from sim.traffic.classes import ClassMix
        from sim.traffic.stats import counts_chunks, minute_counts

        per_min = minute_counts(curve, duration, stream(seed, "arrivals"))
        means = ClassMix(tr.classes, base, block).mean_tokens() if have_tokens else None
        stats, series = traffic_stats(counts_chunks(per_min, means), duration, clock0, curve, tokens=have_tokens,
                                      weighted=True)
        info["sampling"] = "per-minute Poisson counts; tokens at class means"
    else:
        chunks = bar.iterate(traffic_chunks(tr, base, duration, seed, block, source), _chunk_end, duration)
        stats, series = traffic_stats(chunks, duration, clock0, curve, tokens=have_tokens)
        info["sampling"] = "every arrival"
    out = {**info, "days": duration / 86400.0, "seed": seed, **stats}
    if tr.trace is None:
        out["rate_rps"] = tr.rate_rps
    if fit_shape:
        from sim.traffic.fit import fit_rate_series, fit_times

        name = Path(fit_shape).stem
        if rate_series is not None:
            fit = fit_rate_series(rate_series[0], rate_series[1], rate_series[2], clock0 or 0.0, name=name,
                                  source=source)
        else:
            bar.label = "capsim traffic --fit-shape (arrivals for the fit)"
            times = np.concatenate([c.time_s for c in bar.iterate(
                traffic_chunks(tr, base, duration, seed, block, source), _chunk_end, duration)])
            fit = fit_times(times, clock0 or 0.0, name=name, source=source)
        d = fit.to_yaml_dict()
        d["description"] = f"daily+weekly harmonics fitted to {source} (mean {fit.rate_rps:.4g} req/s)"
        shape_header = (f"# Fitted by `capsim traffic {source} --fit-shape`: use with traffic.rate_rps: "
                  f"{fit.rate_rps:.6g}\n# deviance explained {fit.deviance_explained:.3f} over {fit.bins} bins; "
                  f"t = 0 is {tr.start_weekday} {tr.start_hour:g}:00\n")
        write_text(Path(fit_shape), shape_header + yaml.safe_dump(d, sort_keys=False))
        out["fit"] = {"file": fit_shape, "rate_rps": fit.rate_rps, "deviance_explained": fit.deviance_explained}
    bar.close()
    if plot:
        plot_rate(series, stats, plot, f"{source}: {info['kind']}, {duration / 86400.0:.3g} days")
        out["plot"] = plot
    if as_json:
        click.echo(json.dumps(out, indent=2, default=float))
        return
    _print(out)


def _chunk_end(chunk: ArrivalChunk) -> float:
    """Simulated time reached by an arrival chunk (its last arrival)."""
    t = chunk.time_s
    return float(t[-1]) if len(t) else 0.0


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _span(duration_s: float) -> str:
    """``7 days (1,008 complete 10-min windows)``: the span in a unit that reads, and how many 10-min windows the
    P-rates below are over (none: the 10-min row is empty)."""
    d = duration_s
    span = f"{d / 86400:.3g} days" if d >= 86400 else f"{d / 3600:.3g} hours" if d >= 3600 else f"{d:,.0f} s"
    n = int(d // 600)
    return f"{span} ({n:,} complete 10-min window{'s' if n != 1 else ''})"


def _print(o: dict) -> None:
    click.echo(f"{o['source']} ({o['kind']}), {_span(o['duration_s'])}, {o['requests']:,} requests")
    if "trace" in o:
        t = o["trace"]
        click.echo(f"  trace: {t['format']}, {t['rows']:,} rows over {t['span_s']:.1f} s, "
                   f"{t['mean_rate_rps']:.4g} req/s, "
                   f"mean tokens in {t['mean_input_tokens']:.1f} / out {t['mean_output_tokens']:.1f}")
    click.echo(f"  {'window':<8}{'mean':>10}{'P50':>10}{'P90':>10}{'P95':>10}{'P99':>10}{'peak':>10}   req/s")
    r1 = o["rps_1min"]
    click.echo(f"  {'10-min':<8}{_fmt(o['mean_rps']):>10}" + "".join(
        f"{_fmt(o[k]):>10}" for k in ("p50_rps", "p90_rps", "p95_rps", "p99_rps", "peak_rps")))
    click.echo(f"  {'1-min':<8}{'':>10}" + "".join(
        f"{_fmt(r1[k]):>10}" for k in ("p50_rps", "p90_rps", "p95_rps", "p99_rps", "peak_rps")))
    click.echo(f"  peak/trough (hourly, per day): {_fmt(o['peak_to_trough'])}   "
               f"weekday/weekend: {_fmt(o['weekday_to_weekend'])}   "
               f"sizing P95+30%: {_fmt(o['sizing_rps_p95_plus_30pct'])} req/s")
    line = f"  per day: {_fmt(o['requests_per_day'])} requests"
    if "input_tokens_per_day" in o:
        line += f", {_fmt(o['input_tokens_per_day'])} input and {_fmt(o['output_tokens_per_day'])} output tokens"
    click.echo(line)
    if "fit" in o:
        click.echo(f"  fitted shape → {o['fit']['file']} (rate_rps {o['fit']['rate_rps']:.4g}, "
                   f"deviance explained {o['fit']['deviance_explained']:.3f})")
    if "plot" in o:
        click.echo(f"  plot → {o['plot']}")
