"""Exact OT through POT's network simplex (``ot.emd``), with plan, cost, duals and a
verified certificate.

POT's default ``numItermax`` (1e5) silently returns a non-optimal plan above ~1000 points;
here the iteration cap scales with the problem and POT's warning is an error.

Scale first, then solve, then check (issue 13). POT's network simplex stops on absolute
tolerances, so on costs of magnitude 1e-16 it returns non-optimal plans that its own duals
"certify". :func:`emd` therefore

1. rescales the cost by the power of two ``s`` that puts ``max |C|`` in ``[0.5, 2)`` (exact
   in floating point; entries that underflow are covered by ``eta`` in the checks);
2. solves the rescaled problem;
3. verifies on the rescaled cost what POT returned: the plan's marginals, the dual
   feasibility ``f_i + g_j <= C_ij`` (POT's duals are feasible to its tolerance only: a
   double c-transform makes them feasible up to one rounding per entry) and the duality
   gap. The certified interval is ``[lower, upper]`` with ``upper`` = the plan's cost
   (:func:`otaudit.core.certify.certified_plan_cost`, plus ``2 max C`` times the L1
   marginal error when the plan's marginals are off by more than the float round-off of the
   weights themselves — Altschuler, Weed & Rigollet 2017, Lemma 7: rounding onto the exact
   marginals moves at most that much mass) and ``lower`` = the dual objective of the
   c-transformed duals (:func:`otaudit.core.certify.certified_dual_objective`, with the
   float error ``4 u (max C + max |f| + max |g|)`` of the c-transform as infeasibility);
4. if the gap exceeds ``GAP_TOL`` (relative to ``max |C|``) re-solves once on the reduced
   cost ``C - r_i - c_j`` (row then column minima subtracted; the same LP up to a constant)
   and keeps the better certificate of each side, both verified on the rescaled ``C``;
5. scales ``cost``, ``lower``, ``upper`` and the duals back by ``1/s`` (exact).

The duals returned are the c-transformed ``f/s, g/s`` (feasible up to float round-off,
which the certified ``lower`` already accounts for).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import ot
import torch

from .. import config
from ..errors import InputError, SolverError
from .certify import ETA64, U64, certified_dual_objective, certified_plan_cost, pow2_scale

__all__ = ["ExactSolution", "emd", "emd_cost", "GAP_TOL"]

#: duality gap (relative to max |C| of the rescaled problem, i.e. to ~1) beyond which the LP
#: is re-solved on the reduced cost; POT's simplex reaches ~1e-15 on well-scaled problems.
GAP_TOL: float = 1e-12


@dataclass(frozen=True)
class ExactSolution:
    """Exact OT solution. ``cost = <plan, C>`` (float64 sum); ``f + g <= C`` (duals, up to
    round-off); ``lower <= OT <= upper`` verified rigorously (see the module docstring);
    ``gap_checked`` = ``upper - lower`` on the rescaled problem (relative to max |C|)."""

    cost: float
    plan: np.ndarray  # [n, m] float64
    f: np.ndarray  # [n]
    g: np.ndarray  # [m]
    lower: float = -math.inf
    upper: float = math.inf
    scale: float = 1.0
    gap_checked: float = math.inf
    support: tuple | None = None  # (rows, cols) of the plan's non-zero entries, if computed


def _as_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _pot(a, b, C, max_iter: int, n: int, m: int):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            P, log = ot.emd(a, b, C, numItermax=int(max_iter), log=True)
        except UserWarning as w:  # POT warns when it hits numItermax or is infeasible
            msg = str(w)
            if "infeasible" in msg.lower():
                raise SolverError(
                    f"exact OT ({n}x{m}) failed: POT reports the problem infeasible ({msg}) "
                    "on rescaled costs in [0, 2); internal error, please report"
                ) from None
            raise SolverError(
                f"exact OT ({n}x{m}) did not reach optimality: {w}; raise max_iter "
                f"(was {max_iter}) or use solver='sinkhorn'/'minibatch'"
            ) from None
    if log.get("warning"):
        raise SolverError(f"exact OT ({n}x{m}) failed: {log['warning']}")
    return P, np.asarray(log["u"], dtype=np.float64), np.asarray(log["v"], dtype=np.float64)


def _check(a, b, Cs, P, f, g, cmax: float, nz=None):
    """Verified ``(lower, upper, f_feasible, g_feasible)`` on the rescaled cost ``Cs``
    (``cmax = max |Cs|``). Two passes over ``Cs`` (the c-transforms) plus one over ``P``."""
    ma, mb = a > 0, b > 0
    all_pos = bool(ma.all() and mb.all())
    n, m = Cs.shape
    ii, jj = np.nonzero(P) if nz is None else nz
    pv = np.maximum(P[ii, jj], 0.0)
    # marginals: tolerated up to the round-off of the weights themselves
    err_m = float(
        np.abs(np.bincount(ii, pv, minlength=n) - a).sum()
        + np.abs(np.bincount(jj, pv, minlength=m) - b).sum()
    )
    err_m += (n + m) * U64 * float(pv.sum()) * 2
    tol_m = 4.0 * (n + m) * U64 * max(float(a.sum()), float(b.sum()))
    extra = 2.0 * err_m * cmax if err_m > tol_m else 0.0
    upper = certified_plan_cost(pv, Cs[ii, jj]) + extra * (1 + 4 * U64)
    # duals: POT's are feasible only to its internal tolerance (~1e-13 on costs ~1): the
    # double c-transform g' = min_i C - f, f' = min_j C - g' makes them feasible up to one
    # rounding per entry (|fl(C - f) - (C - f)| <= u |C - f|) and can only raise the
    # objective of a feasible pair
    Cm = Cs if all_pos else Cs[np.ix_(ma, mb)]
    fm = f if all_pos else f[ma]
    if fm.size and Cm.shape[1] and np.all(np.isfinite(fm)):
        g2 = g.copy()
        f2 = f.copy()
        gm, fm2 = _double_c_transform(Cm, fm)
        if all_pos:
            g2, f2 = gm, fm2
        else:
            g2[mb], f2[ma] = gm, fm2
        big = cmax + float(np.abs(fm2).max()) + float(np.abs(gm).max())
        infeas = 4.0 * U64 * big + ETA64 * 4
        lower = certified_dual_objective(f2, a, g2, b, infeasibility=infeas)
    else:
        f2, g2 = f, g
        lower = -math.inf
    return lower, upper, f2, g2


def _double_c_transform(C: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``g = min_i (C_ij - f_i)`` and ``f' = min_j (C_ij - g_j)``, in row chunks of
    ``config.COST_BLOCK_BYTES`` through one reused buffer: the same numbers as the whole-matrix
    expressions (each entry is the same single subtraction; minima are exact), without two
    ``[n, m]`` temporaries (page faults alone cost 0.5 s per 200 MB here)."""
    n, m = C.shape
    rows = max(1, int(config.COST_BLOCK_BYTES // max(1, 8 * m)))
    buf = np.empty((min(rows, n), m))
    g = np.full(m, np.inf)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        blk = np.subtract(C[r0:r1], f[r0:r1, None], out=buf[: r1 - r0])
        np.minimum(g, blk.min(0), out=g)
    f2 = np.empty(n)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        blk = np.subtract(C[r0:r1], g[None, :], out=buf[: r1 - r0])
        f2[r0:r1] = blk.min(1)
    return g, f2


def _tree_duals(P: np.ndarray, Cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Duals recomputed from the plan's support: ``f_i + g_j = C_ij`` along a spanning
    forest of the support graph (breadth first, one subtraction per node, so the residual
    on the tree is one rounding instead of the simplex's accumulated pivot updates; POT's
    own duals violate complementary slackness by ~3e-14 on costs ~1). Each component's
    root gets ``f = 0``; the c-transforms in :func:`_check` then restore feasibility."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    n, m = Cs.shape
    ii, jj = np.nonzero(P > 0)
    G = coo_matrix((np.ones(ii.size), (ii, n + jj)), shape=(n + m, n + m)).tocsr()
    G = G + G.T
    f = np.full(n, np.nan)
    g = np.full(m, np.nan)
    seen = np.zeros(n + m, dtype=bool)
    for root in range(n + m):
        if seen[root]:
            continue
        order, pred = breadth_first_order(G, root, directed=False, return_predecessors=True)
        seen[order] = True
        if root < n:
            f[root] = 0.0
        else:
            g[root - n] = 0.0
        for v in order[1:]:
            u = pred[v]
            if v < n:  # row v reached from column u - n
                f[v] = Cs[v, u - n] - g[u - n]
            else:  # column v - n reached from row u
                g[v - n] = Cs[u, v - n] - f[u]
    return np.nan_to_num(f), np.nan_to_num(g)


def emd(
    a, b, C, *, max_iter: int | None = None, verify: bool = True, overwrite: bool = False
) -> ExactSolution:
    """Solve ``min <P, C>`` over couplings of ``a [n]`` and ``b [m]`` exactly, with a
    verified certificate ``lower <= OT <= upper`` (see the module docstring).

    ``verify=False`` (for callers that certify the plan and the duals themselves, e.g. the
    mini-batch block LPs, whose duals :func:`otaudit.core.minibatch.lower.certify_lower`
    re-certifies and whose plans the final upper bound re-evaluates rigorously): rescale
    and solve only; ``lower = -inf``, ``upper = inf``, ``cost`` = the plan's float64 cost.

    ``overwrite=True`` (callers that pass a freshly evaluated cost they do not reuse): ``C``
    is rescaled in place instead of copied (a 200 MB copy took 0.5 s at 5 000 x 5 000, mostly
    page faults) and its contents are undefined afterwards. The interval is the same: it is
    verified on the rescaled cost either way.

    Raises SolverError if the network simplex stops before optimality (never returns a
    silently suboptimal "exact" value) and InputError on weights that cannot be normalised
    or non-finite costs.
    """
    a = _as_np(a).ravel()
    b = _as_np(b).ravel()
    C = np.ascontiguousarray(_as_np(C))
    n, m = C.shape
    for name, w in (("a", a), ("b", b)):
        tot = float(w.sum()) if w.size else 0.0
        if not (math.isfinite(tot) and tot > 0) or bool((w < 0).any()):
            raise InputError(
                f"exact OT ({n}x{m}): weights {name} must be non-negative with a positive "
                f"finite sum (sum {tot!r})",
                field=name,
                fix="pass weights with at least one positive entry and no NaN",
            )
    if not np.all(np.isfinite(C)):
        raise InputError(
            f"exact OT ({n}x{m}): the cost matrix holds NaN or inf",
            field="cost",
            fix="check the data for NaN/inf or values beyond float64 (|x| > 1e150)",
        )
    a = a / a.sum()
    b = b / b.sum()
    if max_iter is None:
        max_iter = max(config.EMD_MIN_MAX_ITER, config.EMD_MAX_ITER_PER_ENTRY * n * m)
    cabs = max(float(C.max()), -float(C.min())) if C.size else 0.0
    s = pow2_scale(cabs)
    overwrite = overwrite and C.flags.writeable
    Cs = np.multiply(C, s, out=C) if overwrite else C * s
    cmax = cabs * s
    P, f, g = _pot(a, b, Cs, max_iter, n, m)
    if not verify:
        cost = float(np.sum(P * Cs)) / s if overwrite else float(np.sum(P * C))
        return ExactSolution(cost=cost, plan=P, f=f / s, g=g / s, scale=s)
    nz = np.nonzero(P)
    lower, upper, f, g = _check(a, b, Cs, P, f, g, cmax, nz)
    if not (upper - lower <= 4 * (n + m) * U64 * max(upper, 2.0**-1022)):
        lo_t, _, f_t, g_t = _check(a, b, Cs, P, *_tree_duals(P, Cs), cmax, nz)
        if lo_t > lower:
            lower, f, g = lo_t, f_t, g_t
    if not (upper - lower <= GAP_TOL):
        # re-solve once on the reduced cost (same LP up to the constant <r, a> + <c, b>)
        r = Cs.min(1)
        Cr = Cs - r[:, None]
        c = Cr.min(0)
        Cr = Cr - c[None, :]
        try:
            P2, f2, g2 = _pot(a, b, Cr, max_iter, n, m)
        except SolverError:
            P2 = None
        if P2 is not None:
            lo2, up2, f2, g2 = _check(a, b, Cs, P2, f2 + r, g2 + c, cmax)
            if up2 < upper:
                P, upper, nz = P2, up2, np.nonzero(P2)
            if lo2 > lower:
                lower, f, g = lo2, f2, g2
    if not (lower <= upper):  # both are verified; equal up to their margins
        lower = min(lower, upper)
    ii, jj = nz
    # the plan's float64 cost on the unscaled entries (overwritten: Cs / s, exact for a power
    # of two s unless an entry underflowed in the rescaling; the value is clamped into the
    # certified interval below either way)
    Cu = (Cs[ii, jj] / s) if overwrite else C[ii, jj]
    cost = math.fsum((P[ii, jj] * Cu).ravel()) if ii.size else 0.0
    lo, up = lower / s, upper / s
    if lo != 0.0 and abs(lo) < 2.0**-1022:
        lo = math.nextafter(lo, -math.inf)
    if up != 0.0 and abs(up) < 2.0**-1022:
        up = math.nextafter(up, math.inf)
    cost = min(max(cost, lo), up)
    return ExactSolution(
        cost=cost,
        plan=P,
        f=f / s,
        g=g / s,
        lower=lo,
        upper=up,
        scale=s,
        gap_checked=upper - lower,
        support=nz,
    )


def emd_cost(a, b, C, *, max_iter: int | None = None) -> float:
    """Exact OT cost only (the plan's cost; see :class:`ExactSolution` for the interval)."""
    return emd(a, b, C, max_iter=max_iter).cost
