"""The sparse exact route (lib/core/sparse.py) against independent oracles.

Oracles: POT's dense network simplex ``ot.emd2`` on costs rescaled by a power of two (its pivot
tolerance is absolute, ECOSYSTEM.md), the closed-form W2^2 of every family in
benchmarks/families.py, and a dense numpy recomputation of every reduced cost.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from benchmarks.families import FAMILIES, make
from otaudit import InputError, config
from otaudit.core.anytime import anytime_bounds
from otaudit.core.costs import DenseCost, SqEuclidean
from otaudit.core.sparse import (
    SparseOT,
    integer_supplies,
    residual_potentials,
    solve_mcf,
)


def _emd2(X, Y, a, b) -> float:
    C = ot.dist(X, Y)
    s = 2.0 ** -np.floor(np.log2(C.max()))  # exact rescaling: POT's pivot tolerance is absolute
    a = np.full(len(X), 1 / len(X)) if a is None else a
    b = np.full(len(Y), 1 / len(Y)) if b is None else b
    return float(ot.emd2(a, b, C * s, numItermax=10**9)) / s


def _cost(p):
    return SqEuclidean(torch.from_numpy(p.X), torch.from_numpy(p.Y))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_matches_emd2_and_truth(name):
    n = 150 if name == "lowrank768" else 300
    p = make(name, n, seed=3)
    res = anytime_bounds(_cost(p), p.a, p.b, target_gap=0.0)
    exact = _emd2(p.X, p.Y, p.a, p.b)
    # the closed form and POT agree to float64 round-off of the sums (1e-9 relative)
    assert exact == pytest.approx(p.truth, rel=1e-9)
    # certified: truth inside [lower, upper], up to the float64 round-off of the closed
    # form's own sum (<= n 2^-53 relative; 1e-12 stated)
    assert res.lower <= p.truth * (1 + 1e-12) and p.truth * (1 - 1e-12) <= res.upper
    assert res.certified
    # closed: integer supplies (uniform / integer counts) close to the integer cost
    # resolution (1e-9 relative); rounded supplies (weights_real) to ~(n + m) / 2^30
    tol = 1e-5 if name == "weights_real" else 1e-9
    assert res.gap_rel <= tol
    assert res.upper == pytest.approx(exact, rel=tol)


def test_plan_is_feasible_and_optimality_certificate_checks_densely():
    p = make("clusters", 400, seed=5)
    sp = SparseOT(_cost(p))
    for _ in range(10):
        r = sp.round()
        if r.optimal:
            break
    assert r.optimal
    I, J, P = sp.plan
    n, m = p.X.shape[0], p.Y.shape[0]
    # feasible to 1e-12 (unit supplies divided by n: exact up to one rounding per entry)
    assert np.abs(np.bincount(I, weights=P, minlength=n) - 1 / n).max() <= 1e-12
    assert np.abs(np.bincount(J, weights=P, minlength=m) - 1 / m).max() <= 1e-12
    assert P.min() >= 0
    # independent certificate: every reduced cost of the dense matrix, in numpy
    C = ((p.X[:, None, :] - p.Y[None, :, :]) ** 2).sum(-1)
    f = sp.f.numpy()
    g = sp.g_sparse.numpy()
    R = C - f[:, None] - g[None, :]
    unit = 1.0 / sp.scale  # one integer cost unit (~1e-12 of the cost range)
    assert R.min() >= -4 * unit  # dual feasible on ALL n*m edges, not only the sparse ones
    assert np.abs(R[I, J]).max() <= 4 * unit  # complementary slackness on the plan
    primal = float((P * C[I, J]).sum())
    dual = float(f.mean() + g.mean())
    assert primal - dual <= 8 * unit * (1 + abs(primal))  # strong duality, to the resolution
    assert primal == pytest.approx(_emd2(p.X, p.Y, None, None), rel=1e-10)


def test_general_cost_without_lower_block_matches_emd2():
    p = make("softplus", 250, seed=2)
    dense = DenseCost(_cost(p))  # a GroundCost with block() only: the generic code path
    assert not hasattr(dense, "lower_block")
    res = anytime_bounds(dense, None, None, target_gap=0.0)
    exact = _emd2(p.X, p.Y, None, None)
    assert res.lower <= exact * (1 + 1e-12) and exact <= res.upper * (1 + 1e-12)
    assert res.gap_rel <= 1e-9


def test_unequal_uniform_sizes_get_exact_supplies():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((210, 3)), rng.standard_normal((143, 3)) + 0.5
    A, B, S, exact = integer_supplies(np.full(210, 1 / 210), np.full(143, 1 / 143))
    assert exact and S == 210 * 143 and A.sum() == B.sum() == S
    res = anytime_bounds(SqEuclidean(torch.from_numpy(X), torch.from_numpy(Y)), target_gap=0.0)
    assert res.upper == pytest.approx(_emd2(X, Y, None, None), rel=1e-9)
    assert res.gap_rel <= 1e-9


def test_rounded_supplies_sum_exactly():
    rng = np.random.default_rng(1)
    a = rng.exponential(size=997)
    a /= a.sum()
    b = rng.exponential(size=501)
    b /= b.sum()
    A, B, S, exact = integer_supplies(a, b)
    assert not exact
    assert A.sum() == B.sum() == S
    assert np.abs(A / S - a).max() <= 1.0 / S  # each within one unit


def test_residual_potentials_are_feasible_and_tight_on_a_small_flow():
    # 3 x 3 assignment, hand-checkable: the optimum is the anti-diagonal (cost 3)
    I = np.repeat(np.arange(3), 3)
    J = np.tile(np.arange(3), 3)
    C = np.array([[5, 4, 1], [6, 1, 7], [1, 8, 9]], dtype=np.int64).flatten()
    one = np.ones(3, dtype=np.int64)
    flow = solve_mcf(3, 3, I, J, C, one, one)
    assert int((flow * C).sum()) == 3
    f, g, ok = residual_potentials(3, 3, I, J, C, flow)
    assert ok
    red = C - f[I] - g[J]
    assert red.min() >= 0 and np.all(red[flow > 0] == 0)
    assert int(f.sum() + g.sum()) == 3  # strong duality, exact in integers


def test_bad_knobs_are_one_line_input_errors():
    p = make("plane", 50, seed=0)
    with pytest.raises(InputError, match="field 'k'.*fix"):
        SparseOT(_cost(p), k=0)
    with pytest.raises(InputError, match="target_gap"):
        anytime_bounds(_cost(p), target_gap=-0.1)


def test_multilevel_coarse_start_recurses_and_stays_certified(monkeypatch):
    from otaudit import config
    from otaudit.core.costs import c_transform
    from otaudit.core.sparse import coarse_potentials

    # coarse problems above 20 clusters go through the sparse route itself (600 points:
    # 60 clusters -> sparse route, whose own start is 6 clusters -> POT's LP)
    monkeypatch.setattr(config, "SPARSE_COARSE_POINTS", 20)
    p = make("plane", 600, seed=1)
    cost = _cost(p)
    u = torch.full((600,), 1 / 600, dtype=torch.float64)
    f = coarse_potentials(cost, u, u)
    assert f is not None and bool(torch.isfinite(f).all())
    g = c_transform(cost, f, side="x")
    start = float(f.mean() + g.mean())  # a feasible pair: a lower bound whatever f is
    assert start <= p.truth * (1 + 1e-12)
    assert start >= 0.9 * p.truth  # and an informative one (measured: 0.971 truth)
    res = anytime_bounds(cost, target_gap=0.0)
    assert res.lower <= p.truth * (1 + 1e-12) and p.truth * (1 - 1e-12) <= res.upper
    assert res.gap_rel <= 1e-9


@pytest.mark.parametrize("n,m,d", [(1, 5, 3), (2, 2, 2), (5, 1, 2), (3, 7, 1)])
def test_tiny_problems_and_identical_clouds(n, m, d):
    rng = np.random.default_rng(n * 100 + m)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    res = anytime_bounds(SqEuclidean(torch.from_numpy(X), torch.from_numpy(Y)), target_gap=0.0)
    exact = _emd2(X, Y, None, None)
    assert res.lower <= exact * (1 + 1e-12) and exact <= res.upper * (1 + 1e-12)
    assert res.gap_rel <= 1e-9
    same = anytime_bounds(SqEuclidean(torch.from_numpy(X), torch.from_numpy(X)), target_gap=0.0)
    assert (same.lower, same.upper, same.gap_rel) == (0.0, 0.0, 0.0)  # W(D, D) = 0 exactly


def test_poor_first_round_adds_the_multiscale_start_once(monkeypatch):
    """16-d, mass moving between clusters: the affine start leaves round 1 at 3.4 % (more
    than config.SPARSE_COARSE_RETRY_GAP), so round 2 adds the coarse start's edges and dual
    and closes on the truth; without the retry round 2 is still 0.15 % above it."""
    p = make("cluster_swap", 5000, seed=1)

    def rounds(gap):
        monkeypatch.setattr(config, "SPARSE_COARSE_RETRY_GAP", gap)
        sp = SparseOT(_cost(p))
        return [sp.round() for _ in range(2)]

    with_retry, without = rounds(0.02), rounds(float("inf"))
    assert (with_retry[0].lower, with_retry[0].upper) == (without[0].lower, without[0].upper)
    assert with_retry[0].upper - with_retry[0].lower > 0.02 * with_retry[0].upper
    for r in with_retry + without:  # certified throughout (1e-12: the closed form's sum)
        assert r.lower <= p.truth * (1 + 1e-12) and p.truth * (1 - 1e-12) <= r.upper
    assert with_retry[1].n_edges > without[1].n_edges  # the coarse start's neighbours joined
    assert with_retry[1].lower > without[1].lower
    assert with_retry[1].upper == pytest.approx(p.truth, rel=1e-9)
    assert without[1].upper > p.truth * (1 + 1e-3)
