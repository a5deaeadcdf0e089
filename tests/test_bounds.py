"""lib/bounds.py: certified mini-batch bounds against POT's exact LP and a closed form.

Slack: bounds are compared to ``ot.emd2`` with a relative slack of 1e-9 — both sides are
float64 sums of up to ~1e6 products of size ~1e2, whose round-off is far below 1e-9
relative; anything larger would be a real violation.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import otaudit
from otaudit import InputError
from otaudit.core.costs import SqEuclidean
from otaudit.core.minibatch import minibatch_bounds
from otaudit.core.solve import solve_ot

RTOL = 1e-9  # float64 round-off slack (module docstring)


def exact(X, Y, a=None, b=None):
    """POT's exact LP (the oracle); uniform weights unless ``a``/``b`` are given."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    a = np.ones(len(X)) / len(X) if a is None else np.asarray(a, float)
    b = np.ones(len(Y)) / len(Y) if b is None else np.asarray(b, float)
    return ot.emd2(a, b, ot.dist(X, Y), numItermax=10**9)


def brackets(r, ex):
    return r.lower <= ex + RTOL * abs(ex) and ex <= r.upper + RTOL * abs(ex)


@pytest.fixture(scope="module")
def digits():
    D = load_digits().data.astype(np.float64)
    p = np.random.default_rng(0).permutation(len(D))
    X, Y = D[p[:300]], D[p[300:550]]  # 300 vs 250 points, 64-d (real, offline)
    return X, Y, exact(X, Y)


@pytest.mark.parametrize("partition", ["aligned", "random"])
@pytest.mark.parametrize(
    "coupling", ["diagonal", "optimal", "independent", "union", "greedy", "colgen"]
)
def test_digits_all_couplings_bracket(digits, partition, coupling):
    X, Y, ex = digits
    for seed in (0, 1):
        for budget in (3, None):
            r = otaudit.ot_bounds(
                X,
                Y,
                batch_size=70,
                partition=partition,
                coupling=coupling,
                budget=budget,
                seed=seed,
            )
            assert r.certified and brackets(r, ex), (r.lower, ex, r.upper)
            if budget is not None:
                assert r.n_solves <= budget


@given(
    n=st.integers(5, 80),
    m=st.integers(5, 80),
    d=st.integers(1, 6),
    bs=st.integers(3, 40),
    seed=st.integers(0, 10**6),
    partition=st.sampled_from(["aligned", "random"]),
    coupling=st.sampled_from(["diagonal", "optimal", "independent", "union", "greedy"]),
)
@settings(max_examples=25, deadline=None)
def test_random_problems_bracket(n, m, d, bs, seed, partition, coupling):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(m, d)) * rng.uniform(0.5, 2) + rng.normal(size=d)
    r = otaudit.ot_bounds(
        X, Y, batch_size=bs, partition=partition, coupling=coupling, seed=seed % 7
    )
    assert brackets(r, exact(X, Y))


def test_optimal_coupling_below_independent(digits):
    X, Y, ex = digits
    for seed in (0, 1, 2):
        kw = dict(batch_size=60, partition="random", seed=seed, refine=0)
        opt = otaudit.ot_bounds(X, Y, coupling="optimal", **kw)
        ind = otaudit.ot_bounds(X, Y, coupling="independent", **kw)
        assert opt.extra["coupling_optimal_proven"] is True
        # OT(alpha, beta; W) <= <alpha x beta, W> on the same blocks; round-off slack
        assert opt.upper <= ind.upper * (1 + RTOL)


@pytest.mark.parametrize(
    "partition,coupling", [("random", "optimal"), ("aligned", "diagonal"), ("random", "greedy")]
)
def test_more_budget_never_wider(digits, partition, coupling):
    X, Y, ex = digits
    widths = []
    for budget in (2, 5, 10, 20, 40, 80, None):
        r = otaudit.ot_bounds(
            X, Y, batch_size=70, partition=partition, coupling=coupling, budget=budget
        )
        assert brackets(r, ex)
        widths.append(r.upper - r.lower)
    # monotone up to float64 round-off of the bounds
    for w0, w1 in zip(widths, widths[1:], strict=False):
        assert w1 <= w0 + RTOL * ex


def test_exact_solve_is_exact():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(120, 4)), rng.normal(size=(90, 4))
    r = otaudit.ot_bounds(X, Y)
    assert r.method == "exact" and r.lower == r.upper == r.value
    assert r.value == pytest.approx(exact(X, Y), rel=1e-12)  # same LP; round-off only
    # one block holding everything is also exact
    r1 = otaudit.ot_bounds(X, Y, batch_size=500, partition="random", coupling="diagonal")
    assert r1.n_solves == 1
    assert r1.upper == pytest.approx(exact(X, Y), rel=1e-12)
    assert r1.lower == pytest.approx(exact(X, Y), rel=1e-9)  # c-transform of exact duals


def test_unequal_sizes_batch_not_dividing_torch_float32():
    rng = np.random.default_rng(4)
    X = torch.tensor(rng.normal(size=(203, 5)), dtype=torch.float32)
    Y = torch.tensor(rng.normal(size=(97, 5)) + 1, dtype=torch.float32)
    ex = exact(X.double().numpy(), Y.double().numpy())
    for partition in ("aligned", "random"):
        r = otaudit.ot_bounds(X, Y, batch_size=33, partition=partition)
        assert brackets(r, ex)
        assert isinstance(r.upper, float)


def test_generic_cost_through_minibatch_and_solve_ot():
    rng = np.random.default_rng(5)
    X = torch.tensor(rng.normal(size=(150, 3)))
    Y = torch.tensor(rng.normal(size=(140, 3)) + 0.5)
    cost = SqEuclidean(X, Y)
    ex = solve_ot(cost, solver="exact")
    assert ex.certified and ex.lower == ex.upper == ex.value and ex.n_solves == 1
    r = minibatch_bounds(cost, batch_size=40, partition="aligned", coupling="diagonal")
    assert brackets(r, ex.value)
    assert solve_ot(cost).method == "exact"  # small: auto = exact


def test_closed_form_brenier_where_lp_cannot_run():
    """Y = grad phi(X) with phi(x) = 0.5 x^T A x + sum softplus(x), A SPD: phi is convex, so
    the identity pairing is optimal (Brenier) and W2^2 = mean ||x - grad phi(x)||^2."""
    rng = np.random.default_rng(6)
    n, d = 3000, 8
    X = rng.normal(size=(n, d))
    Q = rng.normal(size=(d, d))
    A = Q @ Q.T / d + 0.5 * np.eye(d)
    Y = X @ A + 1 / (1 + np.exp(-X))  # grad of 0.5 x^T A x + sum softplus(x)
    w2 = float(np.mean(((X - Y) ** 2).sum(1)))
    Y = Y[rng.permutation(n)]
    r = otaudit.ot_bounds(X, Y, batch_size=256, partition="aligned", coupling="diagonal", refine=2)
    assert r.lower <= w2 * (1 + RTOL) and w2 <= r.upper * (1 + RTOL)
    assert r.gap_rel < 0.5  # loose sanity: the interval is informative


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(budget=0), "budget"),
        (dict(partition="grid"), "partition.*aligned, random"),
        (dict(coupling="best"), "coupling.*diagonal"),
    ],
)
def test_bad_knobs(kwargs, match):
    X = np.zeros((5, 2))
    with pytest.raises(InputError, match=match):
        otaudit.ot_bounds(X, X + 1, **kwargs)


def test_bad_inputs():
    X = np.random.default_rng(0).normal(size=(10, 3))
    bad = X.copy()
    bad[4, 1] = math.nan
    with pytest.raises(InputError, match="NaN or inf.*row 4"):
        otaudit.ot_bounds(bad, X)
    bad[4, 1] = math.inf
    with pytest.raises(InputError, match="NaN or inf"):
        otaudit.ot_bounds(X, bad)
    with pytest.raises(InputError, match="empty"):
        otaudit.ot_bounds(np.zeros((0, 3)), X)
    with pytest.raises(InputError, match="dimension mismatch"):
        otaudit.ot_bounds(X, X[:, :2])


def test_sinkhorn_dual_ascent_tightens_certified_lower_bound():
    """The dual ascent (default for small problems) never lowers the certified bound, stays
    below the exact LP, and on a 10-d Gaussian pair closes most of the lower gap."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(700, 10)), rng.normal(size=(700, 10)) * 1.5 + 0.3
    ex = exact(X, Y)
    kw = dict(batch_size=100, partition="aligned", coupling="optimal")
    r0 = otaudit.ot_bounds(X, Y, lower_sinkhorn=0, **kw)
    r1 = otaudit.ot_bounds(X, Y, lower_sinkhorn=5, **kw)
    assert brackets(r0, ex) and brackets(r1, ex), (r0.lower, r1.lower, ex)
    assert r1.lower >= r0.lower
    # measured: -4.3 % without, -0.15 % with; 1 % leaves room for BLAS/platform differences
    assert r1.lower >= ex * (1 - 0.01), (r1.lower, ex)


def test_identical_clouds_in_any_order_give_zero_width_with_aligned_partition():
    """Shared k-means cells cut X and a shuffled copy of X identically, so every block
    solve is exact with cost 0: the certified interval is [0, 0] (no tolerance needed)."""
    from sklearn.datasets import load_digits

    X = load_digits().data[:600]
    Y = X[np.random.default_rng(0).permutation(600)]
    for kw in ({"batch_size": 128}, {"batch_size": 128, "budget": 16}):
        r = otaudit.ot_bounds(X, Y, **kw)
        assert (r.lower, r.value, r.upper) == (0.0, 0.0, 0.0), kw
    r = otaudit.ot_bounds(X, Y, batch_size=64, partition="random")
    assert r.lower >= 0.0  # OT of a non-negative cost is >= 0: certified and reported


def test_solver_options_route_to_the_chosen_solver():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(150, 3)), rng.normal(size=(120, 3)) + 1
    ex = exact(X, Y)
    # ot_bounds: any mini-batch option selects the mini-batch bounds (as batch_size does)
    r = otaudit.ot_bounds(X, Y, refine=1)
    assert r.method.startswith("minibatch") and brackets(r, ex)
    # solve_ot "auto": options of the solver it did not pick are ignored...
    cost = SqEuclidean(torch.tensor(X), torch.tensor(Y))
    r = solve_ot(cost, solver="auto", batch_size=32, block_solver="sinkhorn")
    assert r.method == "exact" and abs(r.value - ex) <= RTOL * ex
    # ...and so does otdd with solver="auto" (the manifest's `otdd: {options: ...}`)
    D = load_digits()
    args = (D.data[:150], D.target[:150], D.data[150:300], D.target[150:300])
    r = otaudit.otdd(*args, batch_size=64, block_solver="auto")
    assert "outer=exact" in r.method
    # a named solver that does not take the option, or an option nobody takes: one line
    with pytest.raises(InputError, match="'batch_size' does not apply to solver='exact'"):
        solve_ot(cost, solver="exact", batch_size=32)
    with pytest.raises(InputError, match="option 'colour'"):
        solve_ot(cost, solver="auto", colour=1)
