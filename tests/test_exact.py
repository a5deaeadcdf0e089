"""lib/exact.py: the emd wrapper against POT's own exact LP."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from otaudit.core.exact import emd
from otaudit.errors import SolverError


def _problem(n: int, m: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.3
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, m)
    return a / a.sum(), b / b.sum(), ot.dist(X, Y)


@pytest.mark.parametrize("n,m", [(30, 30), (120, 80), (7, 200)])
def test_emd_matches_pot(n, m):
    a, b, C = _problem(n, m, 3, n + m)
    ref = ot.emd2(a, b, C, numItermax=10**9)
    sol = emd(a, b, C)
    # same LP, same optimum: equal to float64 round-off of a sum of n+m-1 terms
    assert sol.cost == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(sol.plan.sum(1), a, atol=1e-14)
    np.testing.assert_allclose(sol.plan.sum(0), b, atol=1e-14)


def test_duals_feasible_and_tight():
    a, b, C = _problem(60, 50, 4, 1)
    sol = emd(a, b, C)
    viol = sol.f[:, None] + sol.g[None, :] - C
    # dual feasibility up to float64 round-off of costs of order 10
    assert viol.max() <= 1e-10
    # strong duality: the dual objective equals the primal cost
    assert sol.f @ a + sol.g @ b == pytest.approx(sol.cost, rel=1e-10)


def test_iteration_cap_raises():
    a, b, C = _problem(200, 200, 2, 3)
    with pytest.raises(SolverError, match="max_iter"):
        emd(a, b, C, max_iter=10)


@pytest.mark.parametrize("n,m", [(60, 45), (7, 200)])
def test_overwrite_gives_the_same_solution_to_the_bit(n, m):
    """``overwrite=True`` rescales the caller's matrix in place instead of copying it: the
    certified interval, the value, the plan and the duals are the same bits (the rescaling
    is by a power of two either way; the value is the plan's cost on C = Cs / s)."""
    a, b, C = _problem(n, m, 4, 3 * n + m)
    ref = emd(a, b, C.copy())
    C2 = C.copy()
    sol = emd(a, b, C2, overwrite=True)
    for x, y in ((sol.cost, ref.cost), (sol.lower, ref.lower), (sol.upper, ref.upper)):
        assert x == y
    assert np.array_equal(sol.plan, ref.plan)
    assert np.array_equal(sol.f, ref.f) and np.array_equal(sol.g, ref.g)
    assert not np.array_equal(C2, C) or ref.scale == 1.0  # the matrix was reused


def test_double_c_transform_in_chunks_equals_the_whole_matrix(monkeypatch):
    """The verification's c-transforms run in row chunks through one buffer: the same
    numbers as the whole-matrix expressions (forced to 7 rows per chunk here)."""
    from otaudit import config
    from otaudit.core.exact import _double_c_transform

    rng = np.random.default_rng(5)
    C = rng.uniform(0, 2, size=(53, 41))
    f = rng.normal(size=53)
    g_ref = (C - f[:, None]).min(0)
    f_ref = (C - g_ref[None, :]).min(1)
    monkeypatch.setattr(config, "COST_BLOCK_BYTES", 7 * 41 * 8)
    g, f2 = _double_c_transform(C, f)
    assert np.array_equal(g, g_ref) and np.array_equal(f2, f_ref)
