"""The engine against queueing theory: M/G/1 (Pollaczek–Khinchine) and Little's law."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scenarios import make_scenario

from sim.perf import attention_pairs
from sim.rng import stream
from sim.run import run_scenario
from sim.simulation import build_node_model, simulate
from sim.workload import ClassMix

CLASSES = [
    {
        "name": "c",
        "share": 1.0,
        "input_tokens": {"dist": "lognormal", "median": 300, "p95": 1200, "max": 4000},
        "output_tokens": {"dist": "lognormal", "median": 60, "p95": 250, "max": 1000},
    }
]


def _service_moments(scenario, n: int = 200_000) -> tuple[float, float]:
    """E[S], E[S²] of the model's own service time of one request alone on a node (one prefill step,
    then output − 1 decode steps)."""
    nm = build_node_model(scenario)
    mix = ClassMix(scenario.traffic.classes, scenario.base_dir, scenario.fleet.engine.block_size)
    _, p, o, _ = mix.draw(stream(123, "moments"), n)
    perf = nm.perf
    s = np.array(
        [
            perf.step_s(pi, attention_pairs(pi, pi), pi) + perf.decode_run_s(1, pi, oi - 1)
            for pi, oi in zip(p.tolist(), o.tolist())
        ]
    )
    return float(s.mean()), float((s**2).mean())


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_single_sequence_node_is_mg1(rho):
    """max_num_seqs = 1 makes a node a single FCFS server: mean queue wait must match P-K."""
    base = make_scenario(**{"traffic.classes": CLASSES, "fleet.nodes": 1,
                            "fleet.engine": {"max_num_seqs": 1, "max_num_batched_tokens": 8192}})
    es, es2 = _service_moments(base)
    lam = rho / es
    n_target = 40_000
    sc = make_scenario(**{"traffic.classes": CLASSES, "fleet.nodes": 1, "traffic.rate_rps": lam,
                          "duration_s": n_target / lam, "seed": 11,
                          "fleet.engine": {"max_num_seqs": 1, "max_num_batched_tokens": 8192}})
    result = simulate(sc)
    waits = np.array([r.first_scheduled_s - r.arrival_s for r in result.requests if r.finish_s >= 0])
    pk = lam * es2 / (2 * (1 - rho))
    batches = np.array_split(waits, 20)
    means = np.array([b.mean() for b in batches])
    half = stats.t.ppf(0.995, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
    print(f"rho={rho}: Wq sim {waits.mean():.4f} PK {pk:.4f} half {half:.4f}")
    assert abs(waits.mean() - pk) <= half, f"rho={rho}: simulated Wq {waits.mean():.3f} s, P-K {pk:.3f} s ± {half:.3f}"


def test_littles_law_on_time_series():
    """Time-averaged number in system = arrival rate × mean time in system."""
    sc = make_scenario(**{"duration_s": 600, "traffic.rate_rps": 20.0, "fleet.nodes": 2, "seed": 5,
                          "output.sample_interval_s": 0.25})
    out = run_scenario(sc)
    ts = out.timeseries
    req = out.requests
    assert (req["status"] == "completed").all()
    horizon = ts["time_s"].iloc[-1]
    l_time_avg = ts["in_system"].mean()
    l_little = req["e2e_s"].sum() / horizon
    assert l_time_avg == pytest.approx(l_little, rel=0.03)


def _erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load a = λ·E[S] (Erlang C)."""
    from math import factorial

    rho = a / c
    top = a**c / factorial(c) / (1 - rho)
    return top / (sum(a**k / factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_multi_node_wait_between_central_queue_and_random_split(rho):
    """c single-sequence nodes behind the least-work router: the mean wait must lie between the M/G/c central
    queue (Lee–Longton: Wq ≈ (1 + C²)/2 · Wq(M/M/c); routing each request to the node with the least work
    left reproduces a central FCFS queue, so least_work should land close to it — the approximation itself
    is good to ~10 %) and c independent M/G/1 queues fed by a random split (a router that ignores load)."""
    c = 4
    eng = {"max_num_seqs": 1, "max_num_batched_tokens": 8192}
    base = make_scenario(**{"traffic.classes": CLASSES, "fleet.nodes": c, "fleet.engine": eng})
    es, es2 = _service_moments(base)
    lam = rho * c / es
    sc = make_scenario(**{"traffic.classes": CLASSES, "fleet.nodes": c, "traffic.rate_rps": lam,
                          "duration_s": 40_000 / lam, "seed": 21, "fleet.engine": eng})
    result = simulate(sc)
    wq = np.mean([r.first_scheduled_s - r.arrival_s for r in result.requests if r.finish_s >= 0])
    cs2 = es2 / es**2 - 1
    central = (1 + cs2) / 2 * _erlang_c(c, lam * es) * es / (c * (1 - rho))
    split = (lam / c) * es2 / (2 * (1 - rho))
    print(f"rho={rho}: central {central:.4f} s <= sim {wq:.4f} s <= random split {split:.4f} s")
    assert 0.8 * central <= wq <= 1.25 * central  # as good as a central queue, within the approximation
    assert wq < split / 3  # and far better than ignoring load
