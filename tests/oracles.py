"""Shared oracles of the numerical tests: POT's exact LP, the bracket check and the
round-off slack it uses.

``exact`` solves the LP with ``ot.emd2`` on the squared-Euclidean costs rescaled by a power
of two (``2^-e`` with ``2^e >= max C``): multiplying float64 numbers by a power of two is
exact (no rounding, far from under/overflow), so the rescaled LP has exactly the same optimal
plan, and the network simplex works on costs in ``[0, 1]`` whatever the data's scale.

Slack. ``fl(sum_t x_t)`` of ``N`` non-negative terms errs by at most ``(N - 1) u sum_t x_t
+ O(u^2)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2; ``u = 2^-53``).
A transport cost ``<P, C>`` with ``sum P = 1`` has ``sum_t x_t <= max C``, so with
``N`` terms (products included, ``2 N u`` covers both roundings) its round-off is at most
``N 2^-52 max C``: :func:`roundoff`. An oracle comparison adds the round-off of both sides.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

#: Relative slack of the bracket checks of the mini-batch bounds (tests/test_bounds.py,
#: tests/test_block_solver.py). Their digits problems have N = 7.5e4 cost terms and
#: max C / OT = 8.7-9.3 (measured), so the summation round-off of both sides is
#: <= 2 N 2^-52 max C = 3.1e-10 relative; the aligned partition drops block pairs below 1e-12
#: of a cluster's mass (lib/core/partition.py), which moves the glued plan's marginals by
#: <= 1e-12 per piece (11-13 pieces measured: <= 1.3e-11 max C = 1.2e-10 relative). 1e-9
#: covers the sum, 4.3e-10, with a factor 2.3, no more.
RTOL = 1e-9
U2 = 2.0**-52  # twice the unit round-off of float64


def roundoff(n_terms: int, scale: float) -> float:
    """Bound on the float64 round-off of a transport cost of ``n_terms`` products whose
    costs are at most ``scale`` (module docstring)."""
    return n_terms * U2 * scale


def exact_cost(a, b, C) -> float:
    """POT's exact LP on ``C`` with costs rescaled by a power of two (module docstring)."""
    C = np.asarray(C, float)
    e = math.frexp(float(C.max()))[1] if C.size and C.max() > 0 else 0
    s = math.ldexp(1.0, -e)  # 2^-e: exact scaling
    return float(ot.emd2(np.asarray(a, float), np.asarray(b, float), C * s, numItermax=10**9)) / s


def exact(X, Y, a=None, b=None) -> float:
    """``OT(a, b)`` for the squared-Euclidean cost (uniform weights unless given)."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    a = np.ones(len(X)) / len(X) if a is None else np.asarray(a, float)
    b = np.ones(len(Y)) / len(Y) if b is None else np.asarray(b, float)
    return exact_cost(a, b, ot.dist(X, Y))


def brackets(r, ex: float, tol: float | None = None) -> bool:
    """``r.lower <= ex <= r.upper`` up to ``tol`` (absolute; default ``RTOL * |ex|``)."""
    tol = RTOL * abs(ex) if tol is None else tol
    return r.lower <= ex + tol and ex <= r.upper + tol


# ------------------------------------------------------------------ issue 13's oracles
# (tests/test_properties.py, tests/test_certificates.py): assignment / rescaled POT LP on
# costs from direct differences, the Gaussian closed form from exact 50-digit statistics,
# and the full OTDD cost built from scratch. Each returns ``(value, tolerance)``.
#: The oracle's own round-off, relative: a sum of n float64 costs from direct differences
#: errs by <= (n + d) u relative (5e-14 at n = 400).
ORACLE_RTOL = 1e-12
#: POT's simplex on a cost rescaled to max entry in [0.5, 2) is accurate to ~1e-13 absolute.
EMD_ATOL_REL = 1e-12
#: The Gaussian oracle's own rounding to float64 (otaudit's table is certified: no slack for it).
GAUSS_ORACLE_RTOL = 1e-12


def direct_cost(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)


def emd2_scaled(a: np.ndarray, b: np.ndarray, C: np.ndarray) -> tuple[float, float]:
    cmax = float(C.max()) if C.size else 0.0
    s = 2.0 ** (-round(math.log2(cmax))) if cmax > 0 else 1.0
    val = float(ot.emd2(a / a.sum(), b / b.sum(), C * s, numItermax=10**8)) / s
    return val, EMD_ATOL_REL * cmax + ORACLE_RTOL * abs(val)


def oracle_ot(X, Y, a=None, b=None) -> tuple[float, float]:
    """``(exact OT, its tolerance)`` for the squared Euclidean cost."""
    C = direct_cost(X, Y)
    if a is None and b is None and X.shape[0] == Y.shape[0]:
        r, c = linear_sum_assignment(C)
        val = math.fsum(C[r, c]) / X.shape[0]
        return val, ORACLE_RTOL * val
    a = np.full(X.shape[0], 1.0) if a is None else np.asarray(a, float)
    b = np.full(Y.shape[0], 1.0) if b is None else np.asarray(b, float)
    return emd2_scaled(a, b, C)


def _mp_sqrt_psd(S):
    w, V = mp.eigsy(S)
    D = mp.diag([mp.sqrt(max(w[i], 0)) for i in range(S.rows)])
    return V * D * V.T


def _mp_stats(A: np.ndarray):
    """Exact (50-digit) mean and unbiased covariance of the float64 rows ``A``."""
    n, d = A.shape
    rows = [[mp.mpf(float(v)) for v in r] for r in A]
    mu = [mp.fsum(r[k] for r in rows) / n for k in range(d)]
    S = mp.matrix(d, d)
    for k in range(d):
        for l in range(d):
            S[k, l] = mp.fsum((r[k] - mu[k]) * (r[l] - mu[l]) for r in rows) / (n - 1)
    return mu, S


def gauss_w2(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:
    """Gaussian W2^2 between the classes ``A`` and ``B`` from exact (50-digit mpmath) means and
    covariances of the float points, and the oracle's own tolerance: otaudit's Gaussian label
    table is certified for exactly this quantity (issue 13: ``LabelTable.err``, see
    ``lib/core/gaussian_cert.py``), so only the oracle's rounding to float64 (``1e-12``
    relative) and its 50-digit eigenvalues (``1e-20 tr S`` absolute, which their square roots
    can amplify near singular covariances) are allowed for."""
    with mp.workdps(50):
        mu1, S1 = _mp_stats(A)
        mu2, S2 = _mp_stats(B)
        R = _mp_sqrt_psd(S1)
        M = R * S2 * R
        M = (M + M.T) / 2
        w, _ = mp.eigsy(M)
        fid = mp.fsum(mp.sqrt(max(w[i], 0)) for i in range(M.rows))
        d = S1.rows
        bures = mp.fsum(S1[i, i] + S2[i, i] for i in range(d)) - 2 * fid
        mean = mp.fsum((mu1[k] - mu2[k]) ** 2 for k in range(d))
        val = float(mean + max(bures, 0))
        trs = float(max(mp.fsum(S1[i, i] for i in range(d)), mp.fsum(S2[i, i] for i in range(d))))
    return val, GAUSS_ORACLE_RTOL * val + 1e-20 * trs


def oracle_otdd(X1, y1, X2, y2, inner: str, ly: float) -> tuple[float, float]:
    c1, c2 = sorted(set(y1.tolist())), sorted(set(y2.tolist()))
    W = np.zeros((len(c1), len(c2)))
    atol = 0.0
    for i, u in enumerate(c1):
        for j, v in enumerate(c2):
            A, B = X1[y1 == u], X2[y2 == v]
            if inner == "exact":
                W[i, j], t = oracle_ot(A, B, np.ones(len(A)), np.ones(len(B)))
                atol = max(atol, t)
            else:
                W[i, j], t = gauss_w2(A, B)
                atol = max(atol, t)
    i1 = np.array([c1.index(v) for v in y1.tolist()])
    i2 = np.array([c2.index(v) for v in y2.tolist()])
    C = direct_cost(X1, X2) + ly * W[i1][:, i2]
    val, t = emd2_scaled(np.ones(len(X1)), np.ones(len(X2)), C)
    return val, t + ly * atol
