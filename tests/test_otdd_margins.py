"""Rigorous float margins of the OTDD label tables (issue 13): the Gaussian and exact-inner
tables carry ``err >= |table - true|`` and the OTDD certificates cover it.

Oracles: class statistics, Bures and costs in mpmath at 60 digits from the float points;
OT of equal-size uniform clouds is an assignment (``linear_sum_assignment`` on the
accurate costs, the chosen assignment evaluated in mpmath)."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import otaudit
from otaudit.dataset_distance.cost import label_costs
from otaudit.dataset_distance.stats import dataset_stats, gaussian_table
from tests.oracles import _mp_stats

mp.mp.dps = 60  # tests.oracles._mp_stats runs at the global precision


def _mp_gauss_w2(P: np.ndarray, Q: np.ndarray) -> mp.mpf:
    m1, S1 = _mp_stats(P)
    m2, S2 = _mp_stats(Q)
    R1 = mp.sqrtm(S1)
    F = mp.sqrtm(R1 * S2 * R1)
    tr = lambda A: mp.fsum(A[i, i] for i in range(A.rows))  # noqa: E731
    bures = tr(S1) + tr(S2) - 2 * mp.re(tr(F))
    return mp.fsum((a - b) ** 2 for a, b in zip(m1, m2, strict=True)) + max(bures, mp.mpf(0))


def _mp_sq(x, y) -> mp.mpf:
    return mp.fsum((mp.mpf(float(a)) - mp.mpf(float(b))) ** 2 for a, b in zip(x, y, strict=True))


def _mp_assignment(C: list[list[mp.mpf]]) -> mp.mpf:
    """Exact OT between equal-size uniform clouds: an optimal assignment."""
    n = len(C)
    r, c = linear_sum_assignment(np.array([[float(v) for v in row] for row in C]))
    return mp.fsum(C[i][j] for i, j in zip(r, c, strict=True)) / n


def _families(seed: int):
    """(name, X1, y1, X2, y2) adversarial pairs: near-equal covariances, translated classes
    at a large common offset, near-duplicates."""
    rng = np.random.default_rng(seed)
    d, k = 3, 2
    X = rng.normal(size=(8 * k, d))
    y = np.repeat(np.arange(k), 8)
    out = [("near-equal", X, y, X + 1e-9 * rng.normal(size=X.shape), y)]
    off = 1e8 * np.ones(d)
    t = np.array([1e-3, 0.0, 0.0])
    out.append(("translated", X + off, y, X + off + t, y))
    out.append(("scaled-large", 1e5 * X, y, 1e5 * (X + 0.3 * rng.normal(size=X.shape)), y))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_table_interval_contains_mpmath_oracle(seed):
    for name, X1, y1, X2, y2 in _families(seed):
        s1 = dataset_stats(X1, y1, name="a", inner="gaussian", self_tables=False)
        s2 = dataset_stats(X2, y2, name="b", inner="gaussian", self_tables=False)
        g, e = gaussian_table(s1, s2)
        for i in range(2):
            for j in range(2):
                ref = _mp_gauss_w2(X1[y1 == i], X2[y2 == j])
                gij, eij = mp.mpf(float(g[i, j])), mp.mpf(float(e[i, j]))
                assert abs(gij - ref) <= eij, (name, i, j, float(gij), float(ref), float(eij))
                # the margin is a round-off bound, not a blanket: far below the value (the
                # translated classes sit at 1e8, where storing a mean already errs by 1e-8)
                assert float(eij) <= 1e-3 * float(ref) + 1e-12, (name, float(eij), float(ref))


def test_gaussian_self_table_margins_cover_oracle():
    X, y, *_ = _families(3)[1][1:]
    s = dataset_stats(X, y, name="a", inner="gaussian")
    g, e = s.self_gaussian, s.self_gaussian_err
    assert e is not None and torch.equal(e, e.T) and float(e.diagonal().abs().max()) == 0.0
    ref = _mp_gauss_w2(X[y == 0], X[y == 1])
    assert abs(mp.mpf(float(g[0, 1])) - ref) <= mp.mpf(float(e[0, 1]))


def test_exact_table_err_contains_emd2_on_rescaled_costs():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 4)) * 1e-6 + 3.0  # small costs at an offset
    y = np.repeat([0, 1, 2], 10)
    X2 = X + 1e-7 * rng.normal(size=X.shape)
    s1 = dataset_stats(X, y, name="a", self_tables=False)
    s2 = dataset_stats(X2, y, name="b", self_tables=False)
    T = label_costs(s1, s2, inner="exact")
    assert T.err is not None and float(T.err.max()) > 0
    for i in range(3):
        for j in range(3):
            A, B = X[y == i], X2[y == j]
            C = ot.dist(A, B)  # POT's oracle on costs rescaled by a power of two
            s = 2.0 ** -np.round(np.log2(C.max()))
            ref = ot.emd2(np.full(10, 0.1), np.full(10, 0.1), C * s) / s
            Cm = [[_mp_sq(a, b) for b in B] for a in A]
            ref_mp = _mp_assignment(Cm)
            v, e = float(T.value[i, j]), float(T.err[i, j])
            assert abs(mp.mpf(v) - ref_mp) <= mp.mpf(e)
            assert abs(v - ref) <= e + 1e-12 * ref
            # the dual side's margin is the cost's uniform evaluation bound
            # (SqEuclidean.max_abs_error: ~d u |x|^2 at the offset 3), here ~ the value itself
            assert e <= 1e-6 * float(ref_mp) + 1e-12


def _mp_otdd(X1, y1, X2, y2, inner: str, ly: float) -> mp.mpf:
    K = int(y1.max()) + 1
    W = {}
    for i in range(K):
        for j in range(K):
            P, Q = X1[y1 == i], X2[y2 == j]
            if inner == "gaussian":
                W[i, j] = _mp_gauss_w2(P, Q)
            else:
                W[i, j] = _mp_assignment([[_mp_sq(a, b) for b in Q] for a in P])
    C = [
        [_mp_sq(x, z) + ly * W[int(a), int(b)] for z, b in zip(X2, y2, strict=True)]
        for x, a in zip(X1, y1, strict=True)
    ]
    return _mp_assignment(C)


@pytest.mark.parametrize("inner", ["gaussian", "exact"])
@pytest.mark.parametrize("solver", ["exact", "minibatch"])
def test_otdd_interval_contains_exact_otdd(inner, solver):
    opts = {"batch_size": 4} if solver == "minibatch" else {}
    for name, X1, y1, X2, y2 in _families(7):
        for ly in (1.0, 1e6):
            r = otaudit.otdd(X1, y1, X2, y2, inner=inner, solver=solver, lambda_y=ly, **opts)
            ref = _mp_otdd(X1, y1, X2, y2, inner, ly)
            assert r.certified
            lo, up = r.lower, r.upper
            if r.lower == r.upper:  # exact_ot's SPEC snap (width <= EXACT_ROUNDOFF_REL)
                lo, up = r.extra["outer"][0]["extra"]["rigorous_interval"]
            assert mp.mpf(lo) <= ref <= mp.mpf(up), (name, ly, lo, up, float(ref))


@pytest.mark.parametrize("inner", ["gaussian", "exact"])
def test_dd_zero_exactly_for_permuted_and_relabelled_copies(inner):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(40, 3)) + 1e6
    y = rng.integers(0, 3, size=40)
    perm = rng.permutation(40)
    names = np.array(["cat", "dog", "eel"])
    for X2, y2 in ((X[perm], y[perm]), (X[perm], names[y[perm]])):
        r = otaudit.otdd(X, y, X2, y2, inner=inner, lambda_y=1e6)
        assert (r.value, r.lower, r.upper) == (0.0, 0.0, 0.0) and r.certified
    s1 = dataset_stats(X, y, name="a", inner=inner, self_tables=False)
    s2 = dataset_stats(X[perm], names[y[perm]], name="b", inner=inner, self_tables=False)
    T = label_costs(s1, s2, inner=inner)
    assert float(T.value.diagonal().abs().max()) == 0.0
    assert float(T.error.diagonal().abs().max()) == 0.0


def test_label_renaming_invariance_with_margins():
    fam = _families(4)[2]
    _, X1, y1, X2, y2 = fam
    for inner in ("gaussian", "exact"):
        r = otaudit.otdd(X1, y1, X2, y2, inner=inner, lambda_y=1e6)
        r2 = otaudit.otdd(X1, 1 - y1, X2, np.where(y2 == 0, "b", "a"), inner=inner, lambda_y=1e6)
        # both certified intervals hold the truth, so they overlap; the Gaussian value
        # itself differs by ~1e-15 relative under renaming (already so on main)
        assert r.lower <= r2.upper and r2.lower <= r.upper
        assert r.value == pytest.approx(r2.value, rel=1e-13)
