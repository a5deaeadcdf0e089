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

import numpy as np
import ot

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
