"""lib/sinkhorn.py: batched log-domain Sinkhorn and its certificates."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from otaudit.core.costs import SqEuclidean, sq_euclidean
from otaudit.core.sinkhorn import batched_bounds, sinkhorn_log, sinkhorn_online
from otaudit.core.solve import solve_ot
from otaudit.errors import ConvergenceWarning


def _batch(B: int, n: int, m: int, d: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    Y = torch.randn(B, m, d, generator=g, dtype=torch.float64) + 0.5
    C = torch.stack([sq_euclidean(X[k], Y[k]) for k in range(B)]).to(dtype)
    a = torch.rand(B, n, generator=g, dtype=torch.float64) + 0.5
    b = torch.rand(B, m, generator=g, dtype=torch.float64) + 0.5
    return C, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)


def test_batched_equals_one_at_a_time():
    C, a, b = _batch(3, 20, 15, 2, 0)
    st = sinkhorn_log(C, a.log(), b.log(), 0.1, max_iter=300, tol=1e-10, warn=False)
    for k in range(3):
        sk = sinkhorn_log(
            C[k : k + 1],
            a[k : k + 1].log(),
            b[k : k + 1].log(),
            0.1,
            max_iter=300,
            tol=1e-10,
            warn=False,
        )
        # same float64 operations on a slice: identical up to reduction-order round-off
        torch.testing.assert_close(st.f[k], sk.f[0], rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(st.g[k], sk.g[0], rtol=1e-9, atol=1e-11)


def test_padding_is_ignored():
    C, a, b = _batch(1, 12, 9, 2, 1)
    Cp = torch.zeros(1, 16, 11, dtype=torch.float64)
    Cp[0, :12, :9] = C[0]
    ap = torch.zeros(1, 16, dtype=torch.float64)
    ap[0, :12] = a[0]
    bp = torch.zeros(1, 11, dtype=torch.float64)
    bp[0, :9] = b[0]
    lo, up, _, _, _ = batched_bounds(C, a, b, 0.05, max_iter=2000, tol=1e-10, warn=False)
    lop, upp, _, _, _ = batched_bounds(Cp, ap, bp, 0.05, max_iter=2000, tol=1e-10, warn=False)
    # padding carries zero mass: the same problem, equal to round-off
    torch.testing.assert_close(lop, lo, rtol=1e-9, atol=0)
    torch.testing.assert_close(upp, up, rtol=1e-9, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_certified_bounds_bracket_exact(seed, dtype):
    C, a, b = _batch(4, 30, 25, 3, seed, dtype)
    lo, up, f, g, st = batched_bounds(C, a, b, 0.05, max_iter=3000, tol=1e-5, warn=False)
    assert lo.dtype == up.dtype == torch.float64
    for k in range(4):
        ex = ot.emd2(a[k].numpy(), b[k].numpy(), C[k].double().numpy(), numItermax=10**8)
        # certificates: UB = cost of a feasible plan, LB = feasible dual; the only slack is
        # float64 round-off of sums of ~750 terms of size ~10 (relative 1e-12)
        assert float(lo[k]) <= ex * (1 + 1e-12)
        assert ex <= float(up[k]) * (1 + 1e-12)
        # the dual pair is feasible
        assert float((f[k][:, None] + g[k][None, :] - C[k].double()).max()) <= 1e-12
    # float32 and float64 both give a useful interval: reg = 0.05 is ~2.5 % of the mean
    # cost (~2); the entropic blur of the rounded plan costs up to ~10 % at 30 points
    assert float(((up - lo) / up).max()) < 0.12


def test_convergence_warning_names_the_knob():
    C, a, b = _batch(2, 20, 20, 2, 3)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        lo, up, *_ = batched_bounds(C, a, b, 0.01, max_iter=2, tol=1e-12)
    ex = ot.emd2(a[0].numpy(), b[0].numpy(), C[0].numpy(), numItermax=10**8)
    # still certified (2 iterations only); round-off slack as above
    assert float(lo[0]) <= ex * (1 + 1e-12) and ex <= float(up[0]) * (1 + 1e-12)


def test_online_full_problem_matches_batched_and_brackets():
    C, a, b = _batch(1, 40, 30, 2, 4)
    g = torch.Generator().manual_seed(4)
    X = torch.randn(40, 2, generator=g, dtype=torch.float64)
    Y = torch.randn(30, 2, generator=g, dtype=torch.float64) + 0.5
    cost = SqEuclidean(X, Y)
    C = cost.block(None, None)[None]
    lo_b, up_b, _, _, _ = batched_bounds(C, a, b, 0.05, max_iter=500, tol=1e-9, warn=False)
    # tiny budget_bytes forces many blocks: the online version must not depend on it
    lo, up, _, _, _, _, _ = sinkhorn_online(
        cost, a[0], b[0], 0.05, max_iter=500, tol=1e-9, budget_bytes=2000, warn=False
    )
    # the same 500 iterations (tol 1e-9 is not reached, so both run max_iter) in a
    # different reduction order: measured 1.2e-13 relative apart on the lower bound and
    # 1.5e-11 on the upper (the rounded plan's cost amplifies the potentials' round-off);
    # the online version's rigorous float margins are ~1e-13. 1e-9 leaves ~70x on the upper.
    assert lo == pytest.approx(float(lo_b[0]), rel=1e-9)
    assert up == pytest.approx(float(up_b[0]), rel=1e-9)
    ex = ot.emd2(a[0].numpy(), b[0].numpy(), C[0].numpy(), numItermax=10**8)
    assert lo <= ex * (1 + 1e-12) and ex <= up * (1 + 1e-12)


def test_solve_ot_sinkhorn_path():
    rng = np.random.default_rng(5)
    X = torch.tensor(rng.normal(size=(60, 3)))
    Y = torch.tensor(rng.normal(size=(50, 3)) + 1)
    r = solve_ot(SqEuclidean(X, Y), solver="sinkhorn", reg=0.05, max_iter=5000, tol=1e-4)
    ex = ot.emd2(
        np.ones(60) / 60, np.ones(50) / 50, ot.dist(X.numpy(), Y.numpy()), numItermax=10**8
    )
    assert r.certified and r.lower <= ex * (1 + 1e-12) <= r.upper * (1 + 2e-12)
    # reg = 0.05 is ~1 % of the mean cost (~4.5): the interval is within 5 %
    assert r.gap_rel < 0.05
