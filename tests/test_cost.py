"""lib/cost.py: the float32 fast path is certified, and the float64 cost keeps exact zeros.

Slacks: ``RTOL = 1e-9`` relative when comparing float64 quantities computed by different
summation orders (round-off ~1e-15 relative per entry, far below 1e-9); the fast path's
certificate is checked with NO slack in its favour (``B - margin <= C64 - p - q`` where
``C64`` is the float64 direct-difference cost, whose own error is ~1e-16 relative, far below
the margins of ~1e-7 relative checked here).
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from otaudit.core.costs import SqEuclidean, c_transform, sq_euclidean
from otaudit.core.minibatch import certify_lower

RTOL = 1e-9  # float64 round-off slack between summation orders (module docstring)


def direct(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)


def adversarial(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda n, d: torch.randn(n, d, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "offset":  # large common offset, tiny spread: cancellation everywhere
        return 1e3 + 1e-2 * r(150, 6), 1e3 + 1e-2 * r(120, 6)
    if kind == "far":  # the two clouds far apart: costs ~1e7 with small differences
        return 1e3 + 1e-1 * r(150, 6), -1e3 + 1e-1 * r(120, 6)
    if kind == "duplicates":  # identical points on both sides
        X = r(100, 5) * 3 + 50
        return X, torch.cat([X[:60], r(40, 5)])
    return r(150, 8), r(120, 8) * 1.5 + 0.3


KINDS = ["gauss", "offset", "far", "duplicates"]


def test_sq_euclidean_exact_zeros_and_accuracy():
    X, Y = adversarial("duplicates")
    C = sq_euclidean(X, Y)
    assert torch.all(C[torch.arange(60), torch.arange(60)] == 0.0)
    assert torch.allclose(C, direct(X, Y), rtol=1e-6, atol=1e-9 * 2 * 50**2 * 5)
    Xo, Yo = adversarial("offset")
    Co, Do = sq_euclidean(Xo, Yo), direct(Xo, Yo)
    # small entries (all of them here) are recomputed by direct differences: float64 exact
    assert torch.allclose(Co, Do, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_lower_block_is_certified(kind):
    X, Y = adversarial(kind)
    cost = SqEuclidean(X, Y)
    g = torch.Generator().manual_seed(1)
    scale = float(direct(X, Y).mean())
    p = torch.randn(X.shape[0], generator=g, dtype=torch.float64) * scale
    q = torch.randn(Y.shape[0], generator=g, dtype=torch.float64) * scale
    R = direct(X, Y) - p[:, None] - q[None, :]
    B, margin = cost.lower_block(None, None, p, q)
    assert B.dtype == torch.float32
    lo = B.double() - margin
    hi = B.double() + margin
    assert bool((lo <= R).all()) and bool((R <= hi).all())
    # and the margin is small: ~1e-5 of the residual scale (float32 after centring)
    assert margin <= 1e-4 * float(R.abs().max())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["x", "y"])
def test_fast_c_transform_equals_exact(kind, side):
    X, Y = adversarial(kind)
    cost = SqEuclidean(X, Y)
    g = torch.Generator().manual_seed(2)
    k = X.shape[0] if side == "x" else Y.shape[0]
    f = torch.randn(k, generator=g, dtype=torch.float64) * float(direct(X, Y).mean()) * 0.1
    exact = c_transform(cost, f, side=side)
    fast = c_transform(cost, f, side=side, fast=True, budget_bytes=20_000)  # many chunks
    D = direct(X, Y)
    ref = (D - f[:, None]).amin(0) if side == "x" else (D - f[None, :]).amin(1)
    assert torch.allclose(exact, ref, rtol=RTOL, atol=RTOL * float(D.max()))
    assert torch.allclose(fast, ref, rtol=RTOL, atol=RTOL * float(D.max()))


@pytest.mark.parametrize("kind", KINDS)
def test_fast_lower_bound_never_exceeds_exact(kind):
    """The float32 path's certified lower bound is <= the float64 one (up to float64
    round-off) and <= the exact LP, from deliberately poor potentials and labels."""
    X, Y = adversarial(kind)
    n, m = X.shape[0], Y.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64)
    D = direct(X, Y)
    lp = ot.emd2(a.numpy(), b.numpy(), D.numpy(), numItermax=10**8)
    gen = torch.Generator().manual_seed(3)
    f0 = torch.randn(n, generator=gen, dtype=torch.float64) * float(D.mean()) * 0.01
    g0 = torch.zeros(m, dtype=torch.float64)
    lx = torch.randint(0, 7, (n,), generator=gen)
    ly = torch.randint(0, 5, (m,), generator=gen)
    cost = SqEuclidean(X, Y)
    for nct in (0, 2):
        lb_fast, ff, gf, _ = certify_lower(cost, a, b, f0, g0, lx, ly, n_ctransform=nct)
        lb_64, _, _, _ = certify_lower(cost, a, b, f0, g0, lx, ly, n_ctransform=nct, fast=False)
        tol = RTOL * abs(lp)
        assert lb_fast <= lp + tol, (kind, nct, lb_fast, lp)
        if nct == 0:  # D' <= D entrywise, so OT(alpha, beta; D') <= OT(alpha, beta; D)
            assert lb_fast <= lb_64 + tol, (kind, nct, lb_fast, lb_64)
        else:  # c-transforms start from (slightly) different potentials: no order, only
            # feasibility for the float64 direct cost and agreement to ~1e-6 relative
            assert float((ff[:, None] + gf[None, :] - D).max()) <= RTOL * float(D.max())
            assert lb_fast == pytest.approx(lb_64, rel=1e-6, abs=1e-9 * float(D.max()))


def test_fast_path_on_float32_input_and_device_agnostic():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(64, 3))).float()
    Y = torch.from_numpy(rng.normal(size=(50, 3))).float()
    cost = SqEuclidean(X, Y)
    f = torch.zeros(64, dtype=torch.float64)
    out = c_transform(cost, f, side="x", fast=True)
    assert out.device == X.device and out.dtype == torch.float64
    ref = direct(X.double(), Y.double()).amin(0)
    assert torch.allclose(out, ref, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("side", ["x", "y"])
def test_c_transform_column_tiles_equal_whole_rows(side):
    """A long other side is cut into column tiles (running minimum); same exact result."""
    from otaudit.core.costs import _tiles

    rng = np.random.default_rng(7)
    X = torch.from_numpy(rng.normal(size=(2000, 8)))
    Y = torch.from_numpy(rng.normal(size=(3000, 8)) + 0.3)
    cost = SqEuclidean(X, Y)
    k = X.shape[0] if side == "x" else Y.shape[0]
    f = torch.from_numpy(rng.normal(size=k)) * 0.5
    D = direct(X, Y)
    ref = (D - f[:, None]).amin(0) if side == "x" else (D - f[None, :]).amin(1)
    n_out, n_other = (3000, 2000) if side == "x" else (2000, 3000)
    from otaudit import config

    r0 = config.C_TRANSFORM_MIN_ROWS
    small = r0 * 2 * 3 * 500  # r0 rows x 500 columns of float32 (+ temporaries)
    assert _tiles(n_out, n_other, None, 2)[1] == n_other  # default budget: whole rows
    rows, cols = _tiles(n_out, n_other, small, 2)
    assert (rows, cols) == (r0, 500)
    for fast in (True, False):
        got = c_transform(cost, f, side=side, fast=fast, budget_bytes=small)
        # exact up to float64 round-off of the cost (same tolerance as above)
        assert torch.allclose(got, ref, rtol=RTOL, atol=RTOL * float(D.max()))
        whole = c_transform(cost, f, side=side, fast=fast)
        assert torch.allclose(got, whole, rtol=RTOL, atol=RTOL * float(D.max()))
