"""Rigorous floating-point bounds for the two quantities every certificate of otaudit ends in:
a dual objective ``<f, a> + <g, b>`` (lower bounds) and a plan's cost ``<P, C>`` (upper
bounds), plus the power-of-two rescaling that keeps every solver in a safe range.

Error analysis (IEEE float64, round to nearest, unit round-off ``u = 2^-53``, smallest
subnormal ``eta = 2^-1074``). For float inputs ``x_k``, ``y_k`` the computed product
``fl(x_k y_k) = x_k y_k (1 + d_k) + e_k`` with ``|d_k| <= u`` and ``|e_k| <= eta`` (``e_k``
covers underflow; at most one of ``d_k``, ``e_k`` is non-zero). ``math.fsum`` returns the
correctly rounded sum of its float inputs: ``fsum = (sum_k fl(x_k y_k))(1 + d)``,
``|d| <= u``. Hence, in real arithmetic,

    | fsum_k fl(x_k y_k) - sum_k x_k y_k |
        <= u sum_k |x_k y_k| + K eta + u |fsum|
        <= u (1 + u) fsum_k |fl(x_k y_k)| + 2 K eta + u |fsum|         (K terms)

and ``fsum_k |fl(x_k y_k)|`` is itself computed with ``fsum`` (relative error ``u``), so the
bound below multiplies by ``(1 + 4u)`` to cover its own evaluation. Overflow (an infinite or
NaN partial result) yields ``-inf`` for a lower bound and ``+inf`` for an upper one: no
value that was not checked is ever returned. Callers rescale costs by a power of two first
(:func:`pow2_scale`), which is exact, so overflow only occurs for data beyond float64.

A dual pair that is only ``delta``-feasible (``f_i + g_j <= C_ij + delta`` in real
arithmetic) still certifies ``<f, a> + <g, b> - delta * sum(a) <= OT`` (weak duality against
any coupling, whose mass is ``sum(a)``); when the two marginals' float sums differ, the
dual objective is not shift-invariant, and the term ``|sum a - sum b| * max(|f|, |g|)``
covers any common shift of (f, g).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "U64",
    "ETA64",
    "pow2_scale",
    "certified_sum_products",
    "certified_dual_objective",
    "certified_plan_cost",
    "certified_lower_of",
    "cost_max",
]

U64 = 2.0**-53
ETA64 = 2.0**-1074


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy().ravel()
    return np.asarray(x, dtype=np.float64).ravel()


def pow2_scale(maxabs: float) -> float:
    """The power of two ``s`` with ``maxabs * s`` in ``[0.5, 2)`` (1.0 for 0 or non-finite
    input). Multiplying by ``s`` is exact in floating point unless it underflows."""
    if not (maxabs > 0) or not math.isfinite(maxabs):
        return 1.0
    return 2.0 ** (-round(math.log2(maxabs)))


def certified_sum_products(x, y) -> tuple[float, float]:
    """``(s, err)`` with ``|s - sum_k x_k y_k| <= err`` rigorously (real arithmetic on the
    float inputs). ``s`` is NaN/inf only if the data overflow float64 (``err = inf``)."""
    x = _np(x)
    y = _np(y)
    xm = float(np.abs(x).max(initial=0.0))
    ym = float(np.abs(y).max(initial=0.0))
    if xm < 1e150 and ym < 1e150:  # no overflow possible (also NaN-free: NaN fails this)
        prods = x * y
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            prods = x * y
    if not np.all(np.isfinite(prods)):
        return math.nan, math.inf
    s = math.fsum(prods)
    sabs = math.fsum(np.abs(prods))
    if not (math.isfinite(s) and math.isfinite(sabs)):
        return math.nan, math.inf
    # underflow can only occur for products of two non-zero factors below 2^-1022
    k_under = int(np.count_nonzero((np.abs(prods) < 2.0**-1022) & (x != 0) & (y != 0)))
    err = (U64 * (1.0 + U64) * sabs + 2.0 * k_under * ETA64 + U64 * abs(s)) * (1.0 + 4 * U64)
    return s, err


def certified_dual_objective(f, a, g, b, *, infeasibility: float = 0.0) -> float:
    """A rigorous lower bound on ``<f, a> + <g, b> - infeasibility * sum(a)`` (see the module
    docstring), i.e. on OT whenever ``f_i + g_j <= C_ij + infeasibility`` for all ``i, j``
    with positive mass. Entries with zero weight are ignored (their potential may be
    anything, even infinite). Returns ``-inf`` if the objective overflows."""
    f, a, g, b = _np(f), _np(a), _np(g), _np(b)
    ma, mb = a > 0, b > 0
    f, a, g, b = f[ma], a[ma], g[mb], b[mb]
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
        return -math.inf
    s1, e1 = certified_sum_products(f, a)
    s2, e2 = certified_sum_products(g, b)
    if not (math.isfinite(e1) and math.isfinite(e2)):
        return -math.inf
    sa, sb = math.fsum(a), math.fsum(b)
    big = max(float(np.abs(f).max(initial=0.0)), float(np.abs(g).max(initial=0.0)))
    mism = abs(sa - sb) * big * (1.0 + 4 * U64) + (sa + sb) * U64 * big
    infeas = max(float(infeasibility), 0.0) * max(sa, sb) * (1.0 + 4 * U64)
    val = s1 + s2
    err = (e1 + e2 + U64 * abs(val) + mism + infeas) * (1.0 + 4 * U64)
    out = val - err
    return out if math.isfinite(out) else -math.inf


def certified_plan_cost(P, C, *, cost_error: float = 0.0) -> float:
    """A rigorous upper bound on ``<P, C>`` (+ ``cost_error * sum(P)``, covering an absolute
    evaluation error of the entries of ``C`` on the support). ``+inf`` on overflow."""
    P = _np(P)
    C = _np(C)
    keep = P != 0
    P, C = P[keep], C[keep]
    s, e = certified_sum_products(P, C)
    if not math.isfinite(e):
        return math.inf
    extra = max(float(cost_error), 0.0) * math.fsum(np.abs(P)) * (1.0 + 4 * U64)
    out = s + (e + extra + U64 * abs(s)) * (1.0 + 4 * U64)
    return out if math.isfinite(out) else math.inf


#: data whose largest coordinate lies in [2^-SAFE_EXP, 2^SAFE_EXP] are used as given
SAFE_EXP = 150


def scale_points(X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(X s, Y s, s^2)`` with a power of two ``s`` that brings the largest coordinate into
    ``[0.5, 2)`` when it lies outside ``[2^-SAFE_EXP, 2^SAFE_EXP]`` (data ~1e-23 or ~1e150,
    whose squared distances underflow or overflow float32/float64 sums); else ``s = 1`` (the
    default paths are unchanged). Squared-Euclidean OT is then ``OT(X, Y) = OT(Xs, Ys) / s^2``
    exactly: the scaling is exact in float64 (checked by the round trip; if some coordinate
    would underflow to a subnormal the data are used unscaled)."""
    mx = 0.0
    for Z in (X, Y):
        if Z.numel():
            mx = max(mx, float(Z.abs().max()))
    if not (mx > 0) or 2.0**-SAFE_EXP <= mx <= 2.0**SAFE_EXP:
        return X, Y, 1.0
    s = pow2_scale(mx)
    Xs, Ys = X * s, Y * s
    if not (torch.equal(Xs / s, X) and torch.equal(Ys / s, Y)):
        return X, Y, 1.0
    return Xs, Ys, s * s


def unscale_result(res, s2: float):
    """The :class:`OTResult` of scaled data (costs multiplied by ``s2``, a power of two) in
    the original units: value, lower, upper divided by ``s2`` (exact unless they overflow:
    an overflowing upper becomes ``inf``, still valid; ``lower`` is capped at ``upper``)."""
    if s2 == 1.0:
        return res
    lo, up, val = res.lower / s2, res.upper / s2, res.value / s2
    lo = min(lo, up)
    return res.replace(
        value=min(max(val, lo), up),
        lower=lo,
        upper=up,
        extra={**res.extra, "data_scale_sq": s2, "extra_units": "scaled by data_scale_sq"},
    )


def gamma(k: int, u: float = U64) -> float:
    """``gamma_k = k u / (1 - k u)``: the standard bound on ``k`` accumulated roundings
    (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1)."""
    return k * u / (1.0 - k * u)


def abs_error_mass(cost: Any, a: Any) -> float:
    """``max_abs_error * sum(a)`` for a cost that states an absolute evaluation error
    (``OTDDCost``: the label-table margins of issue 13), else 0: how far any dual objective
    or plan cost of total mass ``sum(a)`` can move between the evaluated and the real
    costs."""
    mae = getattr(cost, "max_abs_error", None)
    if not callable(mae):
        return 0.0
    return float(mae()) * float(a.sum()) * (1.0 + (a.numel() + 4) * U64)


def certified_upper_support(cost, px, qy, mass, a, b, ub: float) -> float:
    """Rigorous upper bound on OT from a sparse plan (rows ``px``, columns ``qy``, masses
    ``mass``) whose float64 cost was evaluated as ``ub``.

    With a cost offering ``pair_cost(px, qy)`` (:class:`otaudit.core.costs.SqEuclidean`:
    direct differences, relative error ``gamma_{d+1}``) the plan is re-evaluated on its
    support by :func:`certified_plan_cost`; otherwise ``ub`` is inflated by ``gamma_{2N+8}``
    (recursive summation of ``N`` non-negative products, each rounded once) and by the
    cost's stated relative error. The plan's marginals are checked: beyond the float
    round-off of the weights themselves (``4 (n + m) u``) the L1 marginal error ``e`` adds
    ``2 e max C`` (Altschuler, Weed & Rigollet 2017, Lemma 7: rounding onto the exact
    marginals moves at most that mass)."""
    px = torch.as_tensor(px)
    qy = torch.as_tensor(qy)
    mass = torch.as_tensor(mass).to(torch.float64)
    pair = getattr(cost, "pair_cost", None)
    rel = getattr(cost, "rel_error", None)
    rel = float(rel()) if callable(rel) else 0.0
    if callable(pair):
        Cp, rel_p = pair(px, qy)
        val = certified_plan_cost(mass, Cp)
        val = val * (1.0 + rel_p) * (1.0 + 4 * U64)
    else:
        N = int(mass.numel())
        val = ub * (1.0 + gamma(2 * N + 8)) * (1.0 + rel) * (1.0 + 4 * U64)
    n, m = int(a.numel()), int(b.numel())
    r = torch.zeros(n, dtype=torch.float64, device=mass.device).index_add_(0, px, mass)
    c = torch.zeros(m, dtype=torch.float64, device=mass.device).index_add_(0, qy, mass)
    e = float((r - a.to(torch.float64)).abs().sum() + (c - b.to(torch.float64)).abs().sum())
    e += 2.0 * gamma(int(mass.numel()) + 2) * float(mass.abs().sum())
    tol = 4.0 * (n + m) * U64 * max(float(a.sum()), float(b.sum()))
    if e > tol:
        cm = getattr(cost, "max_cost", None)
        cmx = float(cm()) if callable(cm) else math.inf
        val = val + 2.0 * e * cmx * (1.0 + 4 * U64)
    return val if math.isfinite(val) or not math.isfinite(ub) else math.inf


def cost_max(cost: Any, stats: dict | None = None) -> float:
    """An upper bound on ``max C`` (the cost's own :meth:`max_cost` when it has one, else the
    maximum seen by a float64 pass, inflated by the cost's relative error)."""
    fn = getattr(cost, "max_cost", None)
    if callable(fn):
        return float(fn())
    if stats is None or "cmax" not in stats:
        stats = {} if stats is None else stats
        for s0 in range(0, cost.n, max(1, 2**22 // max(1, cost.m))):
            I = slice(s0, min(cost.n, s0 + max(1, 2**22 // max(1, cost.m))))
            C = cost.block(I, None)
            if C.numel():
                stats["cmax"] = max(stats.get("cmax", 0.0), float(C.abs().max()))
    return float(stats.get("cmax", 0.0)) * (1.0 + _rel_error(cost)) * (1 + 2.0**-40)


def _rel_error(cost: Any) -> float:
    fn = getattr(cost, "rel_error", None)
    return float(fn()) if callable(fn) else 0.0


def _abs_error(cost: Any) -> float:
    fn = getattr(cost, "abs_error", None)
    return float(fn()) if callable(fn) else 0.0


def certified_lower_of(
    cost: Any,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    cmax: float,
    *,
    extra: float = 0.0,
) -> float:
    """Rigorous lower bound on OT from potentials made feasible in floating point (by a
    c-transform or by the LP correction), via
    :func:`otaudit.core.certify.certified_dual_objective`.

    Error analysis of the feasibility, real arithmetic: after ``g_j = min_i fl(C~_ij - f_i)``
    (the minimum is a selection, exact), ``f_i + g_j <= C~_ij + u |C~_ij - f_i|``; after the
    LP correction, ``D_kl`` (a block minimum of ``fl(fl(C~ - f) - g)``, or a certified float32
    lower bound), the slack shift and the sums ``f + u_k``, ``g + v_l`` add at most
    ``2 u (|C~| + |f| + |g|) + 2 u (|u| + |v|)`` more. The evaluated cost ``C~`` exceeds the
    real ``C`` by at most ``ev`` (the cost's :meth:`max_abs_error`, else ``rho max C + abs``
    from :meth:`rel_error`, :meth:`abs_error`; 0 for costs that state neither: they are
    then certified as evaluated in float64). So ``f_i + g_j <= C_ij + delta`` with
    ``delta = ev + 8 u (max C + max |f| + max |g| + extra)`` (``extra = max |u| + max |v|`` for the LP step; the factor 8 > 6
    covers the float64 evaluation of delta itself)."""
    fa = f[a > 0]
    gb = g[b > 0]
    fm = float(fa.abs().max()) if fa.numel() else 0.0
    gm = float(gb.abs().max()) if gb.numel() else 0.0
    mae = getattr(cost, "max_abs_error", None)
    ev = float(mae()) if callable(mae) else _rel_error(cost) * cmax + _abs_error(cost)
    delta = ev + 8 * U64 * (cmax + fm + gm + extra)
    return certified_dual_objective(f, a, g, b, infeasibility=delta)


def exact_interval(cost: Any, sol: Any, a, b) -> tuple[float, float]:
    """The certified ``(lower, upper)`` of an exact LP solution (:class:`ExactSolution`,
    verified on the float64 cost ``C~`` that was evaluated) for the cost's real values:
    ``lower`` minus the cost's ``max_abs_error`` (dual feasibility against ``C`` instead of
    ``C~``), clamped at 0 (costs are non-negative); ``upper`` re-evaluated on the plan's
    support with the cost's ``pair_cost`` (direct differences) when it has one, else
    inflated by its ``rel_error`` (0 for costs that state none: certified as evaluated)."""
    mae = getattr(cost, "max_abs_error", None)
    ev = float(mae()) if callable(mae) else 0.0
    lo = max(float(sol.lower) - ev * (1 + 4 * U64), 0.0) if math.isfinite(sol.lower) else 0.0
    if callable(getattr(cost, "pair_cost", None)):
        if getattr(sol, "support", None) is not None:
            ii, jj = (torch.from_numpy(np.ascontiguousarray(t)) for t in sol.support)
        else:
            ii, jj = torch.as_tensor(sol.plan).nonzero(as_tuple=True)
        mass = torch.from_numpy(np.ascontiguousarray(sol.plan[ii.numpy(), jj.numpy()]))
        dev = cost.device
        up = certified_upper_support(
            cost, ii.to(dev), jj.to(dev), mass.to(dev), a, b, float(sol.upper)
        )
    else:
        up = float(sol.upper) * (1.0 + _rel_error(cost)) * (1 + 4 * U64)
    return min(lo, up), up
