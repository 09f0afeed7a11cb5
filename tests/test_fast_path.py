"""Closed forms the fast engine relies on: decode-run time and its inverse."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.perf.model import StepTimeModel, attention_pairs

coef = st.one_of(st.just(0.0), st.floats(1e-9, 1e-2))
# every real step reads the weights, so memory_s_const > 0 (a zero-time step is not a model)
coefs7 = st.tuples(coef, coef, st.floats(1e-6, 1e-1), coef, coef, coef, coef)


# the engine's model: GEMMs and attention in sequence, CUDA-graph padding (and the single-roofline variant)
sequential = st.booleans()
graphs = st.sampled_from([(), (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512)])


@settings(max_examples=300, deadline=None)
@given(coefs=coefs7, batch=st.integers(1, 512), ctx0=st.integers(0, 2_000_000),
       steps=st.integers(1, 3000), seq=sequential, sizes=graphs)
def test_decode_run_equals_sum_of_steps(coefs, batch, ctx0, steps, seq, sizes):
    m = StepTimeModel(*coefs, graph_sizes=sizes, sequential=seq)
    total = sum(m.step_s(batch, ctx0 + batch * j, ctx0 + batch * j, decode_only=True) for j in range(1, steps + 1))
    assert abs(m.decode_run_s(batch, ctx0, steps) - total) <= 1e-9 * max(1.0, total)


@settings(max_examples=500, deadline=None)
@given(coefs=coefs7, batch=st.integers(1, 512), ctx0=st.integers(0, 2_000_000),
       max_steps=st.integers(1, 5000), frac=st.floats(0, 1.3), exact=st.booleans(), seq=sequential, sizes=graphs)
def test_steps_within_is_the_exact_inverse(coefs, batch, ctx0, max_steps, frac, exact, seq, sizes):
    m = StepTimeModel(*coefs, graph_sizes=sizes, sequential=seq)
    if exact:  # budgets that land exactly on a step boundary
        budget = m.decode_run_s(batch, ctx0, int(frac * max_steps) % (max_steps + 1))
    else:
        budget = frac * m.decode_run_s(batch, ctx0, max_steps)
    n = m.decode_steps_within(batch, ctx0, budget, max_steps)
    assert 0 <= n <= max_steps
    assert n == 0 or m.decode_run_s(batch, ctx0, n) <= budget
    assert n == max_steps or m.decode_run_s(batch, ctx0, n + 1) > budget


def test_attention_pairs_is_causal_triangle():
    # 3 new tokens at positions 8, 9, 10 attend to 8 + 9 + 10 keys
    assert attention_pairs(3, 10) == 27
    assert attention_pairs(1, 10) == 10
