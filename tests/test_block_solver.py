"""The batched block solver of ``minibatch_bounds`` (``block_solver="sinkhorn"``).

It is the GPU path (hundreds of block problems per launch); here it runs on the CPU, with
the same code. Oracle: POT's exact LP (tests/oracles.py).

Slack. On the small padded problems each comparison allows the float64 round-off bound of
both sides, :func:`tests.oracles.roundoff` (``N 2^-52 max C`` for a cost of ``N`` terms;
``(n + m) 2^-52 (max|f| + max|g|)`` for a dual objective): ~1e-13 relative here, computed
per problem from its sizes and magnitudes. The sparse rounding's marginals are compared at
1e-15 absolute: a marginal is a sum of <= 40 terms adding to <= 0.19 (the largest weight of
these seeds), whose round-off is <= 40 u 0.19 = 8.4e-16 (u = 2^-53). The
mini-batch runs on digits use ``oracles.RTOL`` (derived in tests/oracles.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import otaudit
from otaudit import InputError
from otaudit.core.costs import SqEuclidean
from otaudit.core.minibatch import minibatch_bounds
from otaudit.core.sinkhorn import batched_plans, sparsify_plan
from tests.oracles import RTOL, brackets, exact, exact_cost, roundoff


@pytest.fixture(scope="module")
def digits():
    D = load_digits().data.astype(np.float64)
    p = np.random.default_rng(1).permutation(len(D))
    X, Y = D[p[:300]], D[p[300:540]]  # 300 vs 240 points, 64-d (real, offline)
    return X, Y, exact(X, Y)


def _problems(seed: int):
    g = torch.Generator().manual_seed(seed)
    C = torch.zeros(3, 40, 35, dtype=torch.float64)
    A = torch.zeros(3, 40, dtype=torch.float64)
    B = torch.zeros(3, 35, dtype=torch.float64)
    for k, (n, m) in enumerate([(40, 35), (17, 30), (25, 9)]):  # padded problems
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = torch.randn(m, 3, generator=g, dtype=torch.float64) + 0.7
        C[k, :n, :m] = torch.cdist(x, y) ** 2
        A[k, :n] = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
        B[k, :m] = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    return C, A / A.sum(1, keepdim=True), B / B.sum(1, keepdim=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("drop", [0.0, 1e-3, 0.3])
def test_sparse_rounding_is_feasible_and_bounds_the_lp(seed, drop):
    C, A, B = _problems(seed)
    r = batched_plans(C, A, B, 0.02, max_iter=200, eps_scaling=3, warn=False)
    for k in range(3):
        n, m = int((A[k] > 0).sum()), int((B[k] > 0).sum())
        a, b, c = A[k, :n], B[k, :m], C[k, :n, :m]
        ex = exact_cost(a.numpy(), b.numpy(), c.numpy())
        tol_up = roundoff(2 * n * m, float(c.max()))  # <P, C> on both sides
        f, g = r.f[k, :n], r.g[k, :m]
        tol_low = tol_up + roundoff(n + m, float(f.abs().max() + g.abs().max()))
        rows, cols, mass = sparsify_plan(r.plan[k, :n, :m], a, b, drop)
        P = torch.zeros(n, m, dtype=torch.float64).index_put_((rows, cols), mass)
        assert bool((mass > 0).all())
        assert torch.allclose(P.sum(1), a, rtol=0, atol=1e-15)
        assert torch.allclose(P.sum(0), b, rtol=0, atol=1e-15)
        assert rows.numel() <= n * m
        up = float((mass * c[rows, cols]).sum())
        assert ex <= up + tol_up  # a feasible plan's cost
        assert float(r.lower[k]) <= ex + tol_low  # dual feasible
        if drop == 0.0:  # nothing dropped: the rounded plan itself, summed in another order
            assert abs(up - float(r.upper[k])) <= tol_up
        if drop == 1e-3:  # sparse (the dense rounding fills all n * m entries)
            assert rows.numel() < n * m / 2


def test_batched_plans_float32_iterations_keep_float64_certificates():
    C, A, B = _problems(3)
    r32 = batched_plans(C, A, B, 0.02, max_iter=300, warn=False, iter_dtype=torch.float32)
    r64 = batched_plans(C, A, B, 0.02, max_iter=300, warn=False)
    assert r32.plan.dtype == torch.float64 and r32.f.dtype == torch.float64
    for k in range(3):
        n, m = int((A[k] > 0).sum()), int((B[k] > 0).sum())
        c = C[k, :n, :m]
        ex = exact_cost(A[k, :n].numpy(), B[k, :m].numpy(), c.numpy())
        tol_up = roundoff(2 * n * m, float(c.max()))
        for r in (r32, r64):
            fg = float(r.f[k, :n].abs().max() + r.g[k, :m].abs().max())
            assert float(r.lower[k]) <= ex + tol_up + roundoff(n + m, fg)
            assert ex <= float(r.upper[k]) + tol_up
        # float32 iterations perturb the potentials by ~ u32 max C (u32 = 2^-24 = 6e-8,
        # max C / OT <= 18 on these seeds: ~1e-6 relative); measured 4.7e-7 .. 1.0e-6 on the
        # upper bound. 1e-5 leaves a factor 10 for other BLAS/torch builds.
        assert abs(float(r32.upper[k] - r64.upper[k])) <= 1e-5 * ex


@pytest.mark.parametrize(
    "partition,coupling",
    [("aligned", "optimal"), ("aligned", "diagonal"), ("aligned", "union"), ("random", "greedy")],
)
def test_sinkhorn_blocks_certify_like_the_lp(digits, partition, coupling):
    X, Y, ex = digits
    kw = dict(batch_size=64, partition=partition, coupling=coupling, refine=1, seed=0)
    rs = otaudit.ot_bounds(X, Y, block_solver="sinkhorn", **kw)
    re = otaudit.ot_bounds(X, Y, block_solver="exact", **kw)
    assert brackets(rs, ex) and brackets(re, ex)
    assert rs.certified and rs.params["block_solver"] == "sinkhorn"
    assert re.params["block_solver"] == "exact"
    # entropic block plans cost more than the LP's: measured here, the upper-bound gap is
    # 1.3-1.4x the exact path's (6.1-7.1 % of OT against 4.5-5.6 %)
    assert rs.upper <= ex + 1.7 * (re.upper - ex) + 0.01 * ex


def test_sinkhorn_blocks_respect_the_budget_and_weights():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(260, 5)), rng.normal(size=(200, 5)) * 1.5 + 1
    a, b = rng.random(260) + 0.1, rng.random(200) + 0.1
    ex = exact(X, Y, a / a.sum(), b / b.sum())
    cost = SqEuclidean(torch.tensor(X), torch.tensor(Y))
    for budget in (2, 5, None):
        r = minibatch_bounds(
            cost,
            torch.tensor(a),
            torch.tensor(b),
            batch_size=50,
            budget=budget,
            block_solver="sinkhorn",
        )
        assert brackets(r, ex)
        if budget is not None:
            assert r.n_solves <= budget


def test_sinkhorn_blocks_in_otdd_stay_certified():
    D = load_digits()
    X, y = D.data.astype(np.float64), D.target
    X1, y1, X2, y2 = X[:250], y[:250], X[250:480], y[250:480]
    ex = otaudit.otdd(X1, y1, X2, y2, inner="gaussian", solver="exact")
    r = otaudit.otdd(
        X1,
        y1,
        X2,
        y2,
        inner="gaussian",
        solver="minibatch",
        batch_size=64,
        block_solver="sinkhorn",
    )
    assert r.lower <= ex.value * (1 + RTOL) and ex.value <= r.upper * (1 + RTOL)


def test_block_solver_auto_and_errors():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(120, 3)), rng.normal(size=(100, 3))
    r = otaudit.ot_bounds(X, Y, batch_size=40, block_solver="auto")
    assert r.params["block_solver"] == "exact"  # CPU tensors: POT's LP
    with pytest.raises(InputError, match="block_solver"):
        otaudit.ot_bounds(X, Y, batch_size=40, block_solver="lp")
