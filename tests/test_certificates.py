"""Issue 13: certificates that survive floating point, degenerate data and any scale.

Each reproduction of the issue is kept as a test. Oracles are independent of otaudit:
``scipy.optimize.linear_sum_assignment`` on costs from direct differences (equal sizes,
uniform weights: the exact OT is an assignment), POT's ``ot.emd2`` on costs rescaled by a
power of two (exact in floating point) otherwise, closed forms for Gaussians.

Tolerances: ``ORACLE_RTOL`` = 1e-12 relative covers only the oracle's own round-off (a sum
of n float64 costs from direct differences: <= (n + d) u relative, 5e-14 at n = 400; POT's
simplex on a well-scaled cost adds ~1e-15); certified bounds themselves are compared with
no slack beyond it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from otaudit import InputError, ot_bounds, otdd
from otaudit.core.certify import (
    certified_dual_objective,
    certified_plan_cost,
    certified_sum_products,
    pow2_scale,
)
from otaudit.core.costs import SqEuclidean, sq_euclidean
from otaudit.core.exact import emd
from otaudit.core.gaussian import bures_sq, covariance, gaussian_w2_sq_table, sqrtm_psd
from tests.oracles import ORACLE_RTOL, direct_cost, oracle_otdd


def oracle(X, Y, a=None, b=None) -> float:
    """Exact OT (squared Euclidean): assignment for equal sizes and uniform weights, else
    POT emd2 on the power-of-two rescaled direct-difference cost."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    C = direct_cost(X, Y)
    if a is None and b is None and X.shape[0] == Y.shape[0]:
        r, c = linear_sum_assignment(C)
        return math.fsum(C[r, c]) / X.shape[0]
    a = np.full(X.shape[0], 1.0 / X.shape[0]) if a is None else np.asarray(a, float) / np.sum(a)
    b = np.full(Y.shape[0], 1.0 / Y.shape[0]) if b is None else np.asarray(b, float) / np.sum(b)
    s = pow2_scale(float(C.max()))
    return float(ot.emd2(a, b, C * s, numItermax=10**8)) / s


def assert_brackets(res, exact: float) -> None:
    tol = ORACLE_RTOL * abs(exact)
    assert res.certified
    assert math.isfinite(res.lower) and math.isfinite(res.upper)
    assert res.lower <= exact + tol, (res.lower, exact)
    assert exact <= res.upper + tol, (exact, res.upper)


# --- the floating-point helpers -----------------------------------------------------------
def test_certified_sum_products_bounds_the_exact_sum():
    # exact rational reference via fractions: the bound must contain the real sum
    from fractions import Fraction

    rng = np.random.default_rng(0)
    x = rng.standard_normal(500) * 10.0 ** rng.integers(-30, 30, 500)
    y = rng.random(500)
    s, err = certified_sum_products(x, y)
    exact = sum(Fraction(float(p)) * Fraction(float(q)) for p, q in zip(x, y, strict=True))
    assert abs(Fraction(s) - exact) <= Fraction(err)
    assert err < 1e-10 * float(np.abs(x * y).sum())  # and it is tight (u-sized)


def test_certified_dual_objective_is_below_and_ignores_zero_weights():
    f = np.array([1e16, -1e16, 3.0, np.inf])
    a = np.array([0.25, 0.25, 0.5, 0.0])  # the infinite potential carries no mass
    g = np.array([2.0])
    b = np.array([1.0])
    lo = certified_dual_objective(f, a, g, b)
    assert lo <= 1.5 + 2.0 and lo > 3.5 - 10.0  # exact: 0.25e16 - 0.25e16 + 1.5 + 2
    assert certified_dual_objective(f, a, g, b, infeasibility=1.0) <= 2.5
    assert certified_plan_cost(np.array([0.5, 0.5]), np.array([0.0, 0.0])) == 0.0


def test_emd_reports_a_verified_interval():
    rng = np.random.default_rng(3)
    C = rng.random((30, 40))
    a, b = rng.random(30), rng.random(40)
    sol = emd(a, b, C)
    ref = ot.emd2(a / a.sum(), b / b.sum(), C, numItermax=10**7)
    assert sol.lower <= ref * (1 + ORACLE_RTOL) and ref <= sol.upper * (1 + ORACLE_RTOL)
    assert sol.upper - sol.lower <= 1e-12 * C.max()
    with pytest.raises(InputError, match="weights a"):
        emd(np.zeros(30), b, C)


# --- issue reproduction 1: small absolute costs ------------------------------------------
def test_small_absolute_costs_exact_path_is_exact():
    X = np.random.default_rng(1).standard_normal((400, 3)) * 1e-8
    Y = X + 0.3e-8
    res = ot_bounds(X, Y)
    ex = oracle(X, Y)
    assert_brackets(res, ex)
    assert res.upper <= ex * (1 + 1e-9)  # was 5.25 x the exact value, "certified"


def test_small_absolute_costs_random_weights():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((150, 3)) * 1e-4
    Y = rng.standard_normal((120, 3)) * 1e-4
    a, b = rng.random(150), rng.random(120)
    res = ot_bounds(X, Y, a=a, b=b)
    assert_brackets(res, oracle(X, Y, a, b))


@pytest.mark.parametrize("scale", [1e-7, 1e-3, 1.0, 1e4])
def test_otdd_scale_equivariance(scale):
    # documented: otdd(s X) = s^2 otdd(X) for the feature term (lambda_y = 0 isolates it)
    rng = np.random.default_rng(4)
    X1, X2 = rng.standard_normal((60, 3)), rng.standard_normal((50, 3)) + 0.5
    y1, y2 = rng.integers(0, 3, 60), rng.integers(0, 3, 50)
    base = otdd(X1, y1, X2, y2, lambda_y=0.0)
    r = otdd(scale * X1, y1, scale * X2, y2, lambda_y=0.0)
    # 1e-9: the power-of-two rescaling is exact, scale * X is not (one rounding per entry)
    assert r.value / (scale**2 * base.value) == pytest.approx(1.0, rel=1e-9)


def test_otdd_tiny_lambdas_brackets_the_plain_ot():
    # lambda_x = lambda_y = 1e-14: OTDD^2 = 1e-14 (W2^2 + label part); the feature part
    # alone (lambda_y = 0) must bracket 1e-14 * the oracle W2^2 (was 1.40 x exact)
    rng = np.random.default_rng(5)
    X1, X2 = rng.standard_normal((50, 3)), rng.standard_normal((50, 3)) + 1.0
    r = otdd(X1, None, X2, None, lambda_x=1e-14, lambda_y=1e-14)
    ex = 1e-14 * oracle(X1, X2)
    assert r.lower <= ex * (1 + 1e-9) and ex <= r.upper * (1 + 1e-9)


# --- reproduction 2: dual round-off for near-duplicates ----------------------------------
def _near_dups(seed=0, n=200, d=16, noise=3e-8):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = X[rng.permutation(n)] + noise * rng.standard_normal((n, d))
    return X, Y


@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=32, partition="random"),
        dict(batch_size=32),
        dict(solver="sinkhorn"),
        dict(solver="exact"),
    ],
)
def test_near_duplicates_lower_not_above_exact(kw):
    X, Y = _near_dups()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ot_bounds(X, Y, **kw)
    assert_brackets(res, oracle(X, Y))


def test_identical_up_to_permutation_lower_is_zero_not_positive():
    X, _ = _near_dups(noise=0.0)
    Y = X[::-1].copy()
    for kw in (dict(), dict(batch_size=32, partition="random"), dict(batch_size=16)):
        res = ot_bounds(X, Y, **kw)
        assert res.lower == 0.0  # was > 0 (dual round-off) where the exact value is 0
        if kw.get("partition") != "random":  # random blocks do not pair the copies up
            assert res.upper <= 1e-15  # a feasible plan's cost: 0 up to round-off masses


def test_otdd_sinkhorn_outer_near_duplicates():
    X, Y = _near_dups(n=120, d=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = otdd(X, None, Y, None, solver="sinkhorn")
    assert r.lower <= oracle(X, Y) * (1 + ORACLE_RTOL) + 1e-300  # lambda_x = 1 default


# --- reproduction 3: Gaussian label costs -------------------------------------------------
def test_bures_of_permuted_copy_is_exactly_zero():
    rng = np.random.default_rng(6)
    X = torch.from_numpy(rng.standard_normal((80, 5)) @ rng.standard_normal((5, 5)))
    mu1, S1 = covariance(X)
    mu2, S2 = covariance(X[torch.from_numpy(rng.permutation(80))])
    assert torch.equal(mu1, mu2) and torch.equal(S1, S2)  # order-independent statistics
    assert bures_sq(S1, S2) == 0.0


def test_bures_near_equal_covariances_is_accurate():
    # S2 = S1 + t I: closed form for commuting matrices sum (sqrt(l + t) - sqrt(l))^2;
    # the trace formula cancels to ~1e-15 absolute, the Procrustes form keeps ~1e-10 rel.
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    lam = np.geomspace(1.0, 20.0, 6)
    t = 1e-6
    S1 = torch.from_numpy((Q * lam) @ Q.T)
    S2 = torch.from_numpy((Q * (lam + t)) @ Q.T)
    exact = float(((np.sqrt(lam + t) - np.sqrt(lam)) ** 2).sum())
    assert bures_sq(S1, S2) == pytest.approx(exact, rel=1e-6)
    assert bures_sq(S1, S1.clone()) == 0.0


def test_gaussian_table_translated_classes():
    # translated class: same covariance, means shifted by v: W2^2 = |v|^2 (closed form)
    rng = np.random.default_rng(8)
    X = torch.from_numpy(rng.standard_normal((100, 4)))
    v = torch.tensor([1e-3, -2e-3, 0.0, 5e-4], dtype=torch.float64)
    mu1, S1 = covariance(X)
    mu2, S2 = covariance(X + v)
    R1, R2 = sqrtm_psd(S1), sqrtm_psd(S2)
    tab = gaussian_w2_sq_table(mu1[None], S1[None], R1[None], mu2[None], S2[None], R2[None])
    # 1e-8: the covariance of X + v differs from S1 by round-off (~1e-16), whose Bures
    # contribution is second order; the mean term is a direct difference
    assert float(tab[0, 0]) == pytest.approx(float((v * v).sum()), rel=1e-8)


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_otdd_self_distance_zero_permuted_and_relabelled(inner):
    rng = np.random.default_rng(9)
    X = rng.standard_normal((90, 4))
    y = rng.integers(0, 3, 90)
    p = rng.permutation(90)
    names = np.array(["cat", "dog", "eel"])
    for X2, y2 in ((X, y), (X[p], y[p]), (X[p], names[y[p]])):
        r = otdd(X, y, X2, y2, inner=inner, lambda_y=1e6)
        assert r.value == 0.0 and r.lower == 0.0 and r.upper == 0.0, (inner, r)


# --- reproduction 4: offsets ---------------------------------------------------------------
@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_sq_euclidean_large_offset_accuracy(offset):
    rng = np.random.default_rng(10)
    X = rng.standard_normal((50, 6)) + offset
    Y = rng.standard_normal((40, 6)) + offset
    C = sq_euclidean(torch.from_numpy(X), torch.from_numpy(Y)).numpy()
    ref = direct_cost(X, Y)
    rho = SqEuclidean(torch.from_numpy(X), torch.from_numpy(Y)).rel_error()
    # the stated rigorous relative bound (1e-10 scale), not the 2.3e-7 of the raw expansion;
    # the reference itself errs by gamma_7 relative (plus the offset's rounding: u * offset)
    slack = 8 * 2.0**-53 * offset * 10
    assert np.all(np.abs(C - ref) <= rho * ref + slack * np.sqrt(ref) + 1e-300)
    res = ot_bounds(X, Y)
    assert_brackets(res, oracle(X, Y, np.ones(50), np.ones(40)))


# --- reproduction 5: float32 margin under underflow / overflow --------------------------
@pytest.mark.parametrize("scale", [1e-22, 1e-12, 1e12, 1e19])
def test_lower_block_margin_at_extreme_scales(scale):
    rng = np.random.default_rng(11)
    X = torch.from_numpy(rng.standard_normal((30, 3)) * scale)
    Y = torch.from_numpy(rng.standard_normal((20, 3)) * scale)
    c = SqEuclidean(X, Y)
    p = torch.from_numpy(rng.standard_normal(30)) * scale**2
    q = torch.from_numpy(rng.standard_normal(20)) * scale**2
    B, margin = c.lower_block(None, None, p, q)
    ref = direct_cost(X.numpy(), Y.numpy()) - p.numpy()[:, None] - q.numpy()[None, :]
    assert math.isfinite(margin)
    assert np.all(np.abs(B.double().numpy() - ref) <= margin)


# --- reproduction 6: crashes ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_permuted_copy_batch16_no_nan(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((400, 8))
    res = ot_bounds(X, X[rng.permutation(400)], batch_size=16)
    assert res.lower == 0.0 and 0.0 <= res.upper <= 1e-15


def test_two_points_against_seven_hundred_batch1():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((2, 3)), rng.standard_normal((700, 3))
    res = ot_bounds(X, Y, batch_size=1)
    assert_brackets(res, oracle(X, Y, np.ones(2), np.ones(700)))


@pytest.mark.parametrize("partition", ["random", "aligned"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_zero_weights(partition, batch_size):
    rng = np.random.default_rng(12)
    X, Y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3))
    a = np.zeros(40)
    a[:5] = rng.random(5)
    res = ot_bounds(X, Y, a=a, batch_size=batch_size, partition=partition)
    assert_brackets(res, oracle(X, Y, a, np.ones(30)))


@pytest.mark.parametrize("scale", [1e-23, 1e-150, 1e150])
@pytest.mark.parametrize("kw", [dict(), dict(batch_size=16)])
def test_extreme_scales(scale, kw):
    rng = np.random.default_rng(13)
    X0, Y0 = rng.standard_normal((60, 3)), rng.standard_normal((60, 3))
    s = 2.0 ** round(math.log2(scale))  # exact scaling, so the oracle scales exactly
    res = ot_bounds(X0 * s, Y0 * s, **kw)
    ex = oracle(X0, Y0)
    assert res.lower / s**2 <= ex * (1 + ORACLE_RTOL)
    assert ex <= res.upper / s**2 * (1 + ORACLE_RTOL)


def test_float32_large_values():
    rng = np.random.default_rng(14)
    X = (rng.standard_normal((40, 3)) * 5e18).astype(np.float32)
    Y = (rng.standard_normal((40, 3)) * 5e18).astype(np.float32)
    ex = oracle(X.astype(np.float64), Y.astype(np.float64))
    for kw in (dict(), dict(batch_size=8)):
        assert_brackets(ot_bounds(X, Y, **kw), ex)


def test_all_points_identical():
    X = np.ones((50, 4))
    Y = np.ones((30, 4))
    for kw in (dict(), dict(batch_size=1), dict(batch_size=8, partition="random")):
        res = ot_bounds(X, Y, **kw)
        assert res.lower == 0.0 and res.upper == 0.0


def test_nan_input_is_a_one_line_input_error():
    X = np.zeros((5, 2))
    X[2, 1] = np.nan
    with pytest.raises(InputError) as e:
        ot_bounds(X, np.zeros((5, 2)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("solver", ["sinkhorn", "minibatch", "exact"])
@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_otdd_outer_solvers_near_duplicates_labelled(solver, inner):
    # issue 13: OTDD with a Sinkhorn outer was +68 % above exact on near-duplicates
    X, Y = _near_dups(n=90, d=4)
    y = np.arange(90) % 3
    kw = dict(batch_size=16) if solver == "minibatch" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = otdd(X, y, Y, y, inner=inner, solver=solver, **kw)
    ex, tol = oracle_otdd(X, y, Y, y, inner, 1.0)
    assert r.lower <= ex + tol and ex <= r.upper + tol, (r.lower, ex, r.upper)


@pytest.mark.parametrize("scale", [2.0**-75, 2.0**64])
def test_minibatch_on_raw_extreme_cost_uses_the_float64_fallback(scale):
    # no ot_bounds rescaling here: the float32 path of lower_block is outside its safe range,
    # so c-transforms, block minima and the dual ascent run on the float64 fallback
    from otaudit.core.minibatch import minibatch_bounds

    rng = np.random.default_rng(15)
    X0, Y0 = rng.standard_normal((80, 3)), rng.standard_normal((70, 3)) + 0.3
    cost = SqEuclidean(torch.from_numpy(X0 * scale), torch.from_numpy(Y0 * scale))
    assert not cost.lower_block()[0].dtype == torch.float32
    res = minibatch_bounds(cost, batch_size=16)
    ex = oracle(X0, Y0, np.ones(80), np.ones(70))
    assert res.lower / scale**2 <= ex * (1 + ORACLE_RTOL)
    assert ex <= res.upper / scale**2 * (1 + ORACLE_RTOL)
    assert res.lower / scale**2 > 0.5 * ex  # and still informative
