"""Traffic shapes and sampling: statistical tests that fail if the arrival process is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.core.config import RequestClass, Traffic, validate_scenario
from sim.core.errors import ConfigError
from sim.core.rng import stream
from sim.traffic import RateCurve, nhpp_times, renewal_times, resolve_components, traffic_chunks
from sim.traffic.arrivals import ArrivalChunk, arrival_chunks  # noqa: F401 - public names
from sim.traffic.classes import ClassMix
from sim.traffic.fit import fit_rate_series, fit_times
from sim.traffic.sampling import (
    GammaModulation,
    poisson_times,  # noqa: F401 - public names
)
from sim.traffic.shapes import available_shapes

CLS = [{"name": "chat", "share": 1.0, "input_tokens": {"dist": "fixed", "value": 100},
        "output_tokens": {"dist": "fixed", "value": 10}}]


def curve(shape, rate=1.0, clock0=0.0) -> RateCurve:
    return RateCurve(rate, resolve_components(shape), clock0)


def times_of(traffic: dict, duration_s: float, seed: int = 1) -> np.ndarray:
    tr = Traffic.model_validate({"classes": CLS, **traffic})
    return np.concatenate([c.time_s for c in traffic_chunks(tr, __import__("pathlib").Path.cwd(), duration_s, seed)])


def cumulative(c: RateCurve, t: np.ndarray, end_s: float, step_s: float = 5.0) -> np.ndarray:
    """Λ(t) by trapezoid on a fine grid, interpolated."""
    g = np.arange(0.0, end_s + step_s, step_s)
    lam = c.rate_rps(g)
    cum = np.concatenate([[0.0], np.cumsum((lam[1:] + lam[:-1]) / 2 * step_s)])
    return np.interp(t, g, cum)


def test_shipped_shapes_exist_and_are_normalised() -> None:
    names = set(available_shapes())
    assert {"consumer_chat", "b2b_office_hours", "launch_day", "viral_incident", "nightly_batch"} <= names
    c = curve("consumer_chat")
    t = np.arange(0, 7 * 86400, 60.0) + 30
    assert c.factor(t).mean() == pytest.approx(1.0, rel=1e-3)
    day = c.factor(t[:1440])
    assert day.max() / day.min() == pytest.approx(4.0, rel=0.01)


def test_viral_peak_and_decay() -> None:
    c = RateCurve(1.0, resolve_components({"components": [{"type": "viral", "start_h": 10, "peak": 60,
                                                           "rise_h": 2, "half_life_h": 24}]}))
    h = np.array([0.0, 10.0, 12.0, 36.0, 60.0]) * 3600
    f = c.factor(h)
    assert f[0] == 1 and f[1] == 1 and f[2] == pytest.approx(60)
    assert f[3] == pytest.approx(1 + 59 / 2) and f[4] == pytest.approx(1 + 59 / 4)


def test_counts_per_window_match_integrated_rate_chisquare() -> None:
    c = curve("consumer_chat", rate=3.0)
    t = times_of({"rate_rps": 3.0, "shape": "consumer_chat"}, 2 * 86400)
    edges = np.arange(0, 2 * 86400 + 1, 600.0)
    obs = np.histogram(t, edges)[0]
    exp = c.expected_counts(edges)
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    p = stats.chi2.sf(chi2, len(obs))
    assert p > 1e-3, (chi2, len(obs))
    assert abs(obs.sum() - exp.sum()) < 4 * np.sqrt(exp.sum())
    # power: the same counts are wildly inconsistent with a constant rate of the same mean
    flat = np.full_like(exp, exp.mean())
    assert stats.chi2.sf(float(((obs - flat) ** 2 / flat).sum()), len(obs)) < 1e-12


def test_time_rescaled_gaps_are_exponential() -> None:
    """Time-rescaling theorem: Λ(t_i) − Λ(t_{i−1}) ~ Exp(1) iff the process is the NHPP with intensity λ."""
    c = curve("launch_day", rate=0.5)
    end = 3 * 86400
    t = times_of({"rate_rps": 0.5, "shape": "launch_day"}, end, seed=3)
    gaps = np.diff(cumulative(c, t, end))
    assert stats.kstest(gaps, "expon").pvalue > 1e-3
    wrong = np.diff(t) * 0.5 * gaps.size / np.diff(t).sum() * np.diff(t).sum() / gaps.size  # constant-rate view
    assert stats.kstest(wrong / wrong.mean(), "expon").pvalue < 1e-6


def test_constant_rate_interarrivals_ks_exponential() -> None:
    rate = 20.0
    t = times_of({"rate_rps": rate}, 2000.0)
    gaps = np.diff(t)
    assert stats.kstest(gaps * rate, "expon").pvalue > 1e-3
    # the thinning sampler at a constant rate must be exponential too
    rng = stream(5, "x")
    t2 = np.concatenate(list(nhpp_times(rng, lambda x: np.full_like(x, rate), 2000.0)))
    assert stats.kstest(np.diff(t2) * rate, "expon").pvalue > 1e-3
    assert stats.kstest(np.diff(t2) * rate * 1.2, "expon").pvalue < 1e-6  # and the test has power


def test_high_rate_spike_is_exact_and_streamed() -> None:
    comps = {"components": [{"type": "viral", "start_h": 1, "peak": 80, "rise_h": 0.5, "half_life_h": 1}]}
    c = RateCurve(20.0, resolve_components(comps))
    rng = stream(9, "spike")
    chunks = list(nhpp_times(rng, c.rate_rps, 4 * 3600.0))
    assert max(len(x) for x in chunks) < 50_000  # segments shrink at the peak
    t = np.concatenate(chunks)
    assert np.all(np.diff(t) >= 0)
    edges = np.arange(0, 4 * 3600 + 1, 300.0)
    obs, exp = np.histogram(t, edges)[0], c.expected_counts(edges)
    assert stats.chi2.sf(float(((obs - exp) ** 2 / exp).sum()), len(obs)) > 1e-3


def test_step_rate_is_sampled_exactly() -> None:
    pw = {"components": [{"type": "piecewise", "interp": "step", "points": [[0, 1], [0.5, 30], [0.51, 1]]}]}
    c = RateCurve(5.0, resolve_components(pw))
    t = np.concatenate(list(nhpp_times(stream(2, "s"), c.rate_rps, 3600.0)))
    inside = ((t >= 1800) & (t < 1836)).sum()
    assert abs(inside - 5 * 30 * 36) < 5 * np.sqrt(5 * 30 * 36)


def test_gamma_renewal_matches_target_cv_and_mean() -> None:
    rng = stream(1, "r")
    t = np.concatenate(list(renewal_times(rng, lambda x: np.full_like(x, 10.0), 20000.0, cv=2.0)))
    g = np.diff(t)
    assert g.std() / g.mean() == pytest.approx(2.0, rel=0.05)
    assert len(t) == pytest.approx(200_000, rel=0.03)
    # shaped: the mean count still follows ∫λ
    c = curve("consumer_chat", rate=2.0)
    t = times_of({"rate_rps": 2.0, "shape": "consumer_chat", "dispersion": {"model": "gamma_renewal", "cv": 0.5}},
                 86400.0)
    edges = np.arange(0, 86401, 3600.0)
    obs, exp = np.histogram(t, edges)[0], c.expected_counts(edges)
    assert np.all(np.abs(obs - exp) < 5 * np.sqrt(exp))
    assert (obs - exp).var() / exp.mean() < 0.6  # cv 0.5 renewal is under-dispersed (≈ cv² = 0.25)


def test_modulated_is_overdispersed_with_right_mean() -> None:
    t = times_of({"rate_rps": 5.0, "dispersion": {"model": "modulated", "cv": 1.0, "window_s": 60}}, 6 * 3600.0)
    counts = np.histogram(t, np.arange(0, 6 * 3600 + 1, 60.0))[0]
    assert counts.mean() == pytest.approx(300, rel=0.1)
    assert counts.var() / counts.mean() > 50  # Poisson would be ≈ 1; cv 1 gives ≈ 1 + 300
    m = GammaModulation(stream(0, "m"), 0.5, 10.0, 1e6)
    assert m.values.mean() == pytest.approx(1.0, rel=0.01) and m.values.std() == pytest.approx(0.5, rel=0.03)


def test_same_seed_same_arrivals_and_streaming() -> None:
    a = times_of({"rate_rps": 50.0, "shape": "consumer_chat"}, 3600.0, seed=7)
    b = times_of({"rate_rps": 50.0, "shape": "consumer_chat"}, 3600.0, seed=7)
    c = times_of({"rate_rps": 50.0, "shape": "consumer_chat"}, 3600.0, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a[:100], c[:100])
    tr = Traffic.model_validate({"classes": CLS, "rate_rps": 50.0, "shape": "consumer_chat"})
    chunks = traffic_chunks(tr, __import__("pathlib").Path.cwd(), 3600.0, 7)
    assert not isinstance(chunks, (list, tuple))
    sizes = [len(ch) for ch in chunks]
    assert len(sizes) > 5 and max(sizes) <= 4 * 8192


def test_time_varying_share() -> None:
    night = [1.0] * 24
    for h in range(6):
        night[h] = 9.0
    classes = [
        {**CLS[0], "name": "chat", "share": 0.5},
        {**CLS[0], "name": "batch", "share": 0.5, "share_by_hour": night,
         "output_tokens": {"dist": "fixed", "value": 99}},
    ]
    tr = Traffic.model_validate({"classes": classes, "rate_rps": 20.0})
    got = {"night": [], "day": []}
    for ch in traffic_chunks(tr, __import__("pathlib").Path.cwd(), 86400.0, 1):
        h = (ch.time_s / 3600) % 24
        got["night"].append(ch.class_idx[(h > 1) & (h < 5)])
        got["day"].append(ch.class_idx[(h > 9) & (h < 20)])
        assert np.all(ch.output_tokens[ch.class_idx == 1] == 99)
    assert np.concatenate(got["night"]).mean() == pytest.approx(0.9, abs=0.01)
    assert np.concatenate(got["day"]).mean() == pytest.approx(0.5, abs=0.01)


def test_pmf_tokens_and_bad_pmf(tmp_path) -> None:
    cls = [{"name": "r1", "share": 1, "input_tokens": {"dist": "pmf",
            "file": "data/traces/servegen/pmf_reason_deepseek-r1_input_tokens.csv"},
            "output_tokens": {"dist": "pmf", "file": "data/traces/servegen/pmf_reason_deepseek-r1_output_tokens.csv"}}]
    mix = ClassMix([RequestClass.model_validate(c) for c in cls], __import__("pathlib").Path.cwd(), 16)
    assert mix.mean_tokens()[0] == pytest.approx(1268.25, rel=1e-3)
    _, p, o, _ = mix.draw(stream(0, "t"), 200_000)
    assert p.mean() == pytest.approx(1268.25, rel=0.03) and o.mean() == pytest.approx(1527.4, rel=0.03)
    bad = tmp_path / "bad.csv"
    bad.write_text("value,probability\n1,0.5\n2,-1\n")
    with pytest.raises(ConfigError, match="negative"):
        ClassMix([RequestClass.model_validate({**cls[0], "input_tokens": {"dist": "pmf", "file": str(bad)}})],
                 tmp_path, 16)


def scenario(traffic: dict) -> dict:
    return {"duration_s": 600, "traffic": traffic, "fleet": {"nodes": 1}}


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="shape and trace"):
        validate_scenario(scenario({"rate_rps": 1, "shape": "consumer_chat", "trace": {"file": "x.csv"},
                                    "classes": CLS}))
    with pytest.raises(ConfigError, match="input_tokens and output_tokens"):
        validate_scenario(scenario({"rate_rps": 1, "classes": [{"name": "a", "share": 1}]}))
    with pytest.raises(ConfigError, match="peak_to_trough"):
        validate_scenario(scenario({"rate_rps": 1, "classes": CLS,
                                    "shape": {"components": [{"type": "daily", "peak_to_trough": 0.5}]}}))
    s = validate_scenario(scenario({"rate_rps": 1, "classes": CLS, "shape": "no_such_shape"}))
    with pytest.raises(ConfigError, match="no shape file 'no_such_shape'"):
        arrival_chunks(s)  # files are checked when the stream is built, before the run


def test_shape_file_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("components:\n  - {type: weekly, weekday_to_weekend: 2, bogus: 1}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_components(str(bad))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"include: [{b}]\n")
    b.write_text(f"include: [{a}]\n")
    with pytest.raises(ConfigError, match="cycle"):
        resolve_components(str(a))


def test_fit_recovers_consumer_chat() -> None:
    t = times_of({"rate_rps": 2.0, "shape": "consumer_chat"}, 14 * 86400.0, seed=11)
    fit = fit_times(t, 0.0, bin_s=600.0)
    assert fit.rate_rps == pytest.approx(2.0, rel=0.02)
    c = RateCurve(fit.rate_rps, fit.shape.components)
    h = np.arange(0, 7 * 86400, 60.0) + 30
    days = c.rate_rps(h).reshape(7, 1440)
    assert days[1].max() / days[1].min() == pytest.approx(4.0, rel=0.1)
    assert days[:5].mean() / days[5:].mean() == pytest.approx(2.5, rel=0.05)
    # a fitted shape round-trips through a shape file
    truth = curve("consumer_chat", 2.0).rate_rps(h)
    assert np.abs(c.rate_rps(h) / truth - 1).mean() < 0.1


def test_fit_servegen_rate_series_and_short_data() -> None:
    import pandas as pd

    d = pd.read_csv("data/traces/servegen/rate_language_m-large_600s.csv")
    fit = fit_rate_series(d.window_start_s, d.rate_rps, 600.0)
    assert fit.rate_rps == pytest.approx(d.rate_rps.mean(), rel=1e-3)
    assert 0.1 < fit.deviance_explained < 1
    with pytest.raises(ConfigError, match="needs at least 24 h"):
        fit_times(np.sort(np.random.default_rng(0).uniform(0, 3600, 1000)))
