"""Batched log-domain Sinkhorn in torch, with certified bounds for every solve.

Entropic OT (Cuturi 2013) in the log domain (Schmitzer 2019, "Stabilized sparse scaling
algorithms for entropy regularized transport problems"): with potentials ``f [B, n]``,
``g [B, m]`` the plan is

.. math::
    P_{ij} = a_i b_j \\exp((f_i + g_j - C_{ij}) / \\varepsilon),

and the updates are ``f = -eps * LSE_j((g_j - C_ij)/eps + log b_j)`` and the same for ``g``.

Certificates, valid whatever the convergence state:

* **upper bound**: the plan is rounded onto the exact marginals (Altschuler, Weed & Rigollet,
  NeurIPS 2017, "Near-linear time approximation algorithms for optimal transport via
  Sinkhorn iteration", Algorithm 2) and ``<P, C>`` is evaluated in float64 — the cost of a
  feasible plan, hence ``>= OT``.
* **lower bound**: the c-transform ``g'_j = min_i C_ij - f_i`` makes ``(f, g')`` dual
  feasible (``f_i + g'_j <= C_ij``), and the second c-transform ``f'_i = min_j C_ij - g'_j``
  only improves it; ``<f', a> + <g', b> <= OT`` by weak duality.

Padded batches: entries with ``log a = -inf`` (rows) or ``log b = -inf`` (columns) carry no
mass and are ignored by every reduction (the cost there may hold anything finite).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from .. import config
from ..errors import ConvergenceWarning, InputError
from .arrays import as_weights
from .certify import U64, abs_error_mass, certified_lower_of, cost_max, gamma
from .costs import DenseCost, GroundCost, chunk_size, row_chunks
from .result import OTResult

#: iterations per certified chunk of the final Sinkhorn stage (see :func:`sinkhorn_bounds`)
SINKHORN_CHUNK = 100
#: a chunk that shrinks the certified gap by less than this fraction stops the final stage
SINKHORN_STALL = 0.05

__all__ = [
    "SinkhornState",
    "sinkhorn_log",
    "round_to_marginals",
    "log_weights",
    "plan_from_potentials",
    "batched_bounds",
    "batched_plans",
    "BatchedPlans",
    "sparsify_plan",
    "sinkhorn_online",
    "eps_stages",
]


@dataclass(frozen=True)
class SinkhornState:
    """Potentials ``f [B, n]``, ``g [B, m]``, iterations run, ``converged [B]`` (bool),
    final L1 marginal violation ``err [B]``."""

    f: torch.Tensor
    g: torch.Tensor
    n_iter: int
    converged: torch.Tensor
    err: torch.Tensor


def _as_reg(reg: float | torch.Tensor, B: int, ref: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(reg, dtype=ref.dtype, device=ref.device)
    if r.ndim == 0:
        r = r.expand(B)
    return r.reshape(B, 1, 1)


def eps_stages(hi, lo, n: int) -> list:
    """The one epsilon-scaling schedule of otaudit's Sinkhorn loops: ``n`` geometric warm-up
    values strictly between ``hi`` and ``lo`` (largest first),
    ``hi (lo / hi)^(1 - s / (n + 1))`` for ``s = n, ..., 1``; scalars or tensors.
    :func:`sinkhorn_log` uses it from ``max C`` down to ``reg``; :func:`sinkhorn_bounds` from
    ``reg 10^(steps + 1)`` (stages ``reg 10^steps, ..., reg 10``). The mini-batch dual ascent
    (:func:`otaudit.core.minibatch.lower.sinkhorn_dual_ascent`) keeps its configured list
    ``config.BOUNDS_LOWER_SINKHORN_REGS`` (1e-1, 3e-2, 1e-2: not geometric; replacing it would
    change the default lower bounds)."""
    return [hi * (lo / hi) ** (1 - s / (n + 1)) for s in range(n, 0, -1)]


def sinkhorn_log(
    C: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    reg: float | torch.Tensor,
    *,
    max_iter: int = config.SINKHORN_MAX_ITER,
    tol: float = config.SINKHORN_TOL,
    eps_scaling: int = 0,
    check_every: int = 10,
    warn: bool = True,
) -> SinkhornState:
    """Solve ``B`` entropic OT problems at once.

    Args:
        C: costs ``[B, n, m]`` (float32 or float64; the iteration runs in C's dtype).
        log_a: ``[B, n]`` log-weights (``-inf`` marks padding); each row sums to 1 in exp.
        log_b: ``[B, m]`` log-weights (``-inf`` marks padding).
        reg: entropic regularisation, a scalar or ``[B]``.
        max_iter: iteration cap (one iteration = one f- and one g-update).
        tol: stop when every problem's L1 row-marginal violation is below ``tol``
            (the column marginals are exact after each g-update).
        eps_scaling: number of geometric warm-up stages from ``max C`` down to ``reg``
            (0 = none); each stage runs ``check_every`` iterations.
    Returns:
        :class:`SinkhornState`. Emits :class:`ConvergenceWarning` naming ``max_iter`` and
        ``reg`` if some problem did not reach ``tol`` (the certificates of
        :func:`batched_bounds` stay valid regardless).
    """
    if C.ndim != 3:
        raise ValueError(f"C must be [B, n, m], got {tuple(C.shape)}")
    B, n, m = C.shape
    dt = C.dtype
    log_a = log_a.to(dt)
    log_b = log_b.to(dt)
    eps_final = _as_reg(reg, B, C)
    f = torch.zeros(B, n, dtype=dt, device=C.device)
    g = torch.zeros(B, m, dtype=dt, device=C.device)
    stages: list[torch.Tensor] = []
    if eps_scaling > 0:
        cmax = C.amax(dim=(1, 2)).reshape(B, 1, 1).clamp(min=1e-30)
        stages = [torch.maximum(eps_final, e) for e in eps_stages(cmax, eps_final, eps_scaling)]
    a_mass = log_a.exp()
    err = torch.full((B,), math.inf, dtype=dt, device=C.device)
    n_iter = 0

    def step(eps: torch.Tensor) -> None:
        nonlocal f, g
        e = eps.reshape(B, 1)
        f = -e * torch.logsumexp((g[:, None, :] - C) / eps + log_b[:, None, :], dim=2)
        f = torch.where(torch.isfinite(log_a), f, torch.zeros_like(f))
        g = -e * torch.logsumexp((f[:, :, None] - C) / eps + log_a[:, :, None], dim=1)
        g = torch.where(torch.isfinite(log_b), g, torch.zeros_like(g))

    for eps in stages:
        for _ in range(check_every):
            step(eps)
            n_iter += 1
    while n_iter < max_iter:
        step(eps_final)
        n_iter += 1
        if n_iter % check_every == 0 or n_iter == max_iter:
            logP = (
                (f[:, :, None] + g[:, None, :] - C) / eps_final
                + log_a[:, :, None]
                + log_b[:, None, :]
            )
            err = (logP.exp().sum(2) - a_mass).abs().sum(1)
            if bool((err <= tol).all()):
                break
    converged = err <= tol
    if warn and not bool(converged.all()):
        bad = int((~converged).sum())
        warnings.warn(
            f"Sinkhorn: {bad} of {B} problems did not reach tol={tol:g} in max_iter={max_iter} "
            f"iterations (max marginal error {float(err.max()):.3g}); raise max_iter or reg "
            "(the certified bounds remain valid, only looser)",
            ConvergenceWarning,
            stacklevel=2,
        )
    return SinkhornState(f=f, g=g, n_iter=n_iter, converged=converged, err=err)


def plan_from_potentials(
    C: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    reg: float | torch.Tensor,
) -> torch.Tensor:
    """``P = a b^T exp((f + g - C)/reg)`` in float64, ``[B, n, m]``."""
    C = C.to(torch.float64)
    eps = _as_reg(reg, C.shape[0], C)
    logP = (
        (f.double()[:, :, None] + g.double()[:, None, :] - C) / eps
        + log_a.double()[:, :, None]
        + log_b.double()[:, None, :]
    )
    return logP.exp()


def round_to_marginals(P: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Altschuler-Weed-Rigollet rounding of ``P [B, n, m]`` onto ``U(a [B, n], b [B, m])``.

    ``x = min(a / r(P), 1)``, ``P <- diag(x) P``; ``y = min(b / c(P), 1)``, ``P <- P diag(y)``;
    then ``P <- P + err_r err_c^T / ||err_r||_1``: every entry stays ``>= 0`` and both
    marginals become exact (up to float64 round-off).
    """
    P = P.to(torch.float64)
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    r = P.sum(2)
    x = torch.where(r > 0, torch.clamp(a / r.clamp(min=1e-300), max=1.0), torch.zeros_like(r))
    P = P * x[:, :, None]
    c = P.sum(1)
    y = torch.where(c > 0, torch.clamp(b / c.clamp(min=1e-300), max=1.0), torch.zeros_like(c))
    P = P * y[:, None, :]
    err_r = (a - P.sum(2)).clamp(min=0.0)
    err_c = (b - P.sum(1)).clamp(min=0.0)
    s = err_r.sum(1, keepdim=True)
    corr = torch.where(s > 0, 1.0 / s.clamp(min=1e-300), torch.zeros_like(s))
    return P + err_r[:, :, None] * err_c[:, None, :] * corr[:, :, None]


@dataclass(frozen=True)
class BatchedPlans:
    """Feasible plans and certificates of ``B`` problems (:func:`batched_plans`), float64.

    ``plan [B, n, m]``: the rounded plan (exact marginals, hence feasible); ``upper [B]`` its
    cost; ``f [B, n]``, ``g [B, m]``: the double c-transform of the Sinkhorn potential
    (``f_i + g_j <= C_ij`` on the support, zeros on padding); ``lower [B] = <f, a> + <g, b>``.
    """

    plan: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    state: SinkhornState


def batched_plans(
    C: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    reg: float | torch.Tensor,
    *,
    max_iter: int = config.SINKHORN_MAX_ITER,
    tol: float = config.SINKHORN_TOL,
    eps_scaling: int = 0,
    warn: bool = True,
    iter_dtype: torch.dtype | None = None,
    check_every: int = 10,
) -> BatchedPlans:
    """Solve ``B`` entropic problems at once and certify each (see :class:`BatchedPlans`).

    Args:
        C: ``[B, n, m]``; a: ``[B, n]``, b: ``[B, m]`` non-negative, each summing to 1
            (zeros = padding).
        check_every: iterations per eps-scaling stage and between convergence checks.
        iter_dtype: dtype of the Sinkhorn iterations (default: C's). float32 halves the
            memory traffic; the plan, its cost and the c-transforms are float64 whatever it
            is, so the certificates do not depend on it.
    """
    C64 = C.to(torch.float64)
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    log_a, log_b = log_weights(a), log_weights(b)
    Ci = C if iter_dtype is None else C.to(iter_dtype)
    st = sinkhorn_log(
        Ci,
        log_a.to(Ci.dtype),
        log_b.to(Ci.dtype),
        reg,
        max_iter=max_iter,
        tol=tol,
        eps_scaling=eps_scaling,
        check_every=check_every,
        warn=warn,
    )
    reg64 = reg.to(torch.float64) if isinstance(reg, torch.Tensor) else reg
    P = round_to_marginals(plan_from_potentials(C64, log_a, log_b, st.f, st.g, reg64), a, b)
    upper = (P * C64).sum((1, 2))
    ma = (a > 0)[:, :, None]
    mb = (b > 0)[:, None, :]
    inf = torch.tensor(math.inf, dtype=torch.float64, device=C.device)
    f = st.f.to(torch.float64)
    g1 = torch.where(ma, C64 - f[:, :, None], inf).amin(1)
    g1 = torch.where(b > 0, g1, torch.zeros_like(g1))
    f1 = torch.where(mb, C64 - g1[:, None, :], inf).amin(2)
    f1 = torch.where(a > 0, f1, torch.zeros_like(f1))
    lower = (f1 * a).sum(1) + (g1 * b).sum(1)
    return BatchedPlans(plan=P, lower=lower, upper=upper, f=f1, g=g1, state=st)


def batched_bounds(
    C: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    reg: float | torch.Tensor,
    *,
    max_iter: int = config.SINKHORN_MAX_ITER,
    tol: float = config.SINKHORN_TOL,
    eps_scaling: int = 0,
    warn: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, SinkhornState]:
    """Certified bounds for ``B`` OT problems ``min <P, C_b>``, ``P in U(a_b, b_b)``.

    Args:
        C: ``[B, n, m]``; a: ``[B, n]``, b: ``[B, m]`` non-negative, each summing to 1
        (zeros = padding).
    Returns:
        ``(lower [B], upper [B], f' [B, n], g' [B, m], state)``, float64: ``upper`` is the
        cost of the rounded plan, ``lower = <f', a> + <g', b>`` with ``(f', g')`` the double
        c-transform of the Sinkhorn potential (dual feasible; ``f'`` = +0 on padding).
    """
    r = batched_plans(C, a, b, reg, max_iter=max_iter, tol=tol, eps_scaling=eps_scaling, warn=warn)
    return r.lower, r.upper, r.f, r.g, r.state


def sparsify_plan(
    P: torch.Tensor, a: torch.Tensor, b: torch.Tensor, drop: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A feasible plan of ``U(a [n], b [m])`` with sparse support, from a dense one.

    Entries ``P_ij < drop * min(a_i, b_j)`` are dropped, rows then columns are scaled down
    where they exceed their marginal (as in :func:`round_to_marginals`), and the remaining
    deficits ``a - P 1`` and ``b - P^T 1`` (non-negative, equal sums) are coupled by the
    north-west corner rule: at most ``n + m - 1`` extra entries instead of the dense
    rank-one correction. Every entry stays ``>= 0`` and both marginals are exact up to
    float64 round-off, so ``<P', C>`` is the cost of a feasible plan (an upper bound on OT).

    Returns ``(rows, cols, mass)`` of the non-zero entries (coalesced, float64 mass).
    """
    P = P.to(torch.float64)
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    n, m = P.shape
    P = torch.where(P >= drop * torch.minimum(a[:, None], b[None, :]), P, torch.zeros_like(P))
    r = P.sum(1)
    P = P * torch.where(r > a, a / r.clamp(min=1e-300), torch.ones_like(r))[:, None]
    c = P.sum(0)
    P = P * torch.where(c > b, b / c.clamp(min=1e-300), torch.ones_like(c))[None, :]
    rows, cols = P.nonzero(as_tuple=True)
    mass = P[rows, cols]
    da = (a - P.sum(1)).clamp(min=0.0)
    db = (b - P.sum(0)).clamp(min=0.0)
    total = float(torch.minimum(da.sum(), db.sum()))
    if total > 0:
        ca = torch.cumsum(da, 0)
        cb = torch.cumsum(db, 0)
        zero = torch.zeros(1, dtype=torch.float64, device=P.device)
        t = torch.unique(torch.cat([zero, ca.clamp(max=total), cb.clamp(max=total)]))
        w = t[1:] - t[:-1]
        mid = 0.5 * (t[1:] + t[:-1])
        keep = w > 0
        mid, w = mid[keep], w[keep]
        ri = torch.searchsorted(ca, mid).clamp(max=n - 1)
        ci = torch.searchsorted(cb, mid).clamp(max=m - 1)
        flat = torch.cat([rows * m + cols, ri * m + ci])
        allm = torch.cat([mass, w])
        uf, inv = torch.unique(flat, return_inverse=True)
        mass = torch.zeros(uf.numel(), dtype=torch.float64, device=P.device).index_add_(
            0, inv, allm
        )
        rows, cols = uf // m, uf % m
    return rows, cols, mass


def sinkhorn_online(
    cost: GroundCost,
    a: torch.Tensor,
    b: torch.Tensor,
    reg: float,
    *,
    max_iter: int = config.SINKHORN_MAX_ITER,
    tol: float = config.SINKHORN_TOL,
    budget_bytes: int | None = None,
    warn: bool = True,
    f0: torch.Tensor | None = None,
    g0: torch.Tensor | None = None,
    certify: bool = True,
    raw_out: dict | None = None,
) -> tuple[float, float, torch.Tensor, torch.Tensor, int, bool, float]:
    """Full-problem log-domain Sinkhorn with costs recomputed block by block.

    Never holds more than one ``[rows, m]`` (or ``[n, cols]``) cost block
    (``config.COST_BLOCK_BYTES``). Each iteration evaluates the cost twice.

    Returns ``(lower, upper, f', g', n_iter, converged, seconds)``: ``upper`` is the cost of
    the Altschuler-Weed-Rigollet rounded plan (computed blockwise: row sums, column sums
    after row scaling, then ``sum x_i y_j K_ij C_ij + err_r^T C err_c / ||err_r||_1``),
    ``lower`` the dual objective of the double c-transform. ``f0``/``g0`` warm-start the
    potentials (epsilon-scaling). ``certify=False`` skips the rounding and the c-transforms
    (warm-up stages): it returns ``(nan, nan, f, g, ...)`` with the raw potentials.
    ``raw_out`` (a dict) receives the raw potentials ``"f"``, ``"g"`` (to resume).
    """
    from .costs import c_transform

    t0 = time.perf_counter()
    n, m = cost.n, cost.m
    dev = cost.device
    a = a.to(torch.float64).to(dev)
    b = b.to(torch.float64).to(dev)
    p = _online_problem(cost, a, b, reg, budget_bytes)
    f = torch.zeros(n, dtype=torch.float64, device=dev) if f0 is None else f0.clone()
    g = torch.zeros(m, dtype=torch.float64, device=dev) if g0 is None else g0.clone()
    err = math.inf
    n_iter = 0
    check_every = 10
    while n_iter < max_iter:
        _update_f(p, f, g)
        n_iter += 1
        if n_iter % check_every == 0 or n_iter == max_iter:
            _update_g(p, f, g)
            # row-marginal violation after the g-update
            err = float((_row_sums(p, f, g) - a).abs().sum())
            if err <= tol:
                break
        else:
            _update_g(p, f, g)
    converged = err <= tol
    if warn and not converged:
        warnings.warn(
            f"Sinkhorn (full problem {n}x{m}) did not reach tol={tol:g} in max_iter={max_iter} "
            f"iterations (marginal error {err:.3g}); raise max_iter or reg (the certified "
            "bounds remain valid, only looser)",
            ConvergenceWarning,
            stacklevel=2,
        )
    if raw_out is not None:
        raw_out["f"], raw_out["g"] = f.clone(), g.clone()
    if not certify:
        return math.nan, math.nan, f, g, n_iter, converged, time.perf_counter() - t0
    upper = _rounded_upper(p, a, b, f, g.where(b > 0, torch.zeros_like(g)))
    g1 = c_transform(cost, f, side="x", budget_bytes=budget_bytes)
    f1 = c_transform(cost, g1, side="y", budget_bytes=budget_bytes)
    lower = certified_lower_of(cost, a, b, f1, g1, cost_max(cost))
    return lower, upper, f1, g1, n_iter, converged, time.perf_counter() - t0


@dataclass(frozen=True)
class _OnlineProblem:
    """What the blockwise Sinkhorn updates of :func:`sinkhorn_online` read: the cost, the
    float64 log-weights, the block sizes and, for a held cost, ``-C / reg`` and its
    transpose."""

    cost: GroundCost
    la: torch.Tensor
    lb: torch.Tensor
    reg: float
    rows_x: int
    rows_y: int
    Kr: torch.Tensor | None
    KrT: torch.Tensor | None


def log_weights(w: torch.Tensor) -> torch.Tensor:
    """``log w`` (float64), ``-inf`` where ``w = 0``."""
    minus_inf = torch.tensor(-math.inf, dtype=torch.float64, device=w.device)
    return w.clamp(min=1e-300).log().where(w > 0, minus_inf)


def _online_problem(
    cost: GroundCost, a: torch.Tensor, b: torch.Tensor, reg: float, budget_bytes: int | None
) -> _OnlineProblem:
    # a held cost (DenseCost, which fits the memory budget) is pre-scaled once per call:
    # -C / reg and its transpose, so each update is one addition and one logsumexp along the
    # contiguous dimension (about half the memory traffic of (g - C) / reg + log b; the
    # iterates differ from the blockwise form by round-off only)
    Kr = KrT = None
    if isinstance(cost, DenseCost):
        Kr = cost.C / (-reg)
        KrT = Kr.T.contiguous()
    rows_x, rows_y = chunk_size(cost.m, budget_bytes), chunk_size(cost.n, budget_bytes)
    return _OnlineProblem(cost, log_weights(a), log_weights(b), reg, rows_x, rows_y, Kr, KrT)


def _update_f(p: _OnlineProblem, f: torch.Tensor, g: torch.Tensor) -> None:
    """The f-update of the log-domain Sinkhorn, in place."""
    if p.Kr is not None:
        f.copy_(-p.reg * torch.logsumexp(p.Kr + (g / p.reg + p.lb)[None, :], dim=1))
        return
    for I in row_chunks(p.cost.n, p.rows_x):
        C = p.cost.block(I, None)
        f[I] = -p.reg * torch.logsumexp((g[None, :] - C) / p.reg + p.lb[None, :], dim=1)


def _update_g(p: _OnlineProblem, f: torch.Tensor, g: torch.Tensor) -> None:
    """The g-update of the log-domain Sinkhorn, in place."""
    if p.KrT is not None:
        g.copy_(-p.reg * torch.logsumexp(p.KrT + (f / p.reg + p.la)[None, :], dim=1))
        return
    for J in row_chunks(p.cost.m, p.rows_y):
        C = p.cost.block(None, J)
        g[J] = -p.reg * torch.logsumexp((f[:, None] - C) / p.reg + p.la[:, None], dim=0)


def _log_plan(p: _OnlineProblem, f: torch.Tensor, g: torch.Tensor, I, C: torch.Tensor):
    """``log P`` on the rows ``I`` (cost block ``C``) of the plan of potentials ``f``, ``g``."""
    return (f[I, None] + g[None, :] - C) / p.reg + p.la[I, None] + p.lb[None, :]


def _row_sums(p: _OnlineProblem, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Row sums ``P 1`` of the plan of potentials ``f``, ``g`` (blockwise)."""
    r = torch.empty(p.cost.n, dtype=torch.float64, device=f.device)
    for I in row_chunks(p.cost.n, p.rows_x):
        r[I] = _log_plan(p, f, g, I, p.cost.block(I, None)).exp().sum(1)
    return r


def _rounded_upper(
    p: _OnlineProblem, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, g: torch.Tensor
) -> float:
    """Certified cost of the Altschuler-Weed-Rigollet rounding of the plan of ``f``, ``g``
    (blockwise: row sums, column sums after row scaling, then
    ``sum x_i y_j K_ij C_ij + err_r^T C err_c / ||err_r||_1``), inflated for round-off."""
    cost, n, m, dev = p.cost, p.cost.n, p.cost.m, f.device
    r = _row_sums(p, f, g)
    x = torch.where(r > 0, torch.clamp(a / r.clamp(min=1e-300), max=1.0), torch.zeros_like(r))
    c = torch.zeros(m, dtype=torch.float64, device=dev)
    for I in row_chunks(n, p.rows_x):
        C = cost.block(I, None)
        c += (x[I, None] * _log_plan(p, f, g, I, C).exp()).sum(0)
    y = torch.where(c > 0, torch.clamp(b / c.clamp(min=1e-300), max=1.0), torch.zeros_like(c))
    rr = torch.zeros(n, dtype=torch.float64, device=dev)
    cc = torch.zeros(m, dtype=torch.float64, device=dev)
    upper = 0.0
    for I in row_chunks(n, p.rows_x):
        C = cost.block(I, None)
        P = x[I, None] * y[None, :] * _log_plan(p, f, g, I, C).exp()
        rr[I] = P.sum(1)
        cc += P.sum(0)
        upper += float((P * C).sum())
    err_r = (a - rr).clamp(min=0.0)
    err_c = (b - cc).clamp(min=0.0)
    s = float(err_r.sum())
    if s > 0:
        for I in row_chunks(n, p.rows_x):
            C = cost.block(I, None)
            upper += float((err_r[I, None] * C * err_c[None, :]).sum()) / s
    # the upper bound was summed in float64 over n*m non-negative products per pass: inflate
    # by gamma_{n m + 8} (recursive summation bound, any order) and by the cost's stated
    # relative error (issue 13: no unchecked float sum in a certificate)
    rel_error = getattr(cost, "rel_error", None)
    rel = float(rel_error()) if callable(rel_error) else 0.0
    N = n * m + 8
    out = upper * (1.0 + gamma(N)) * (1.0 + rel) * (1.0 + 4 * U64)
    # costs that state only an absolute error (OTDDCost: label-table margins): the plan has
    # mass sum(a) (rounded onto the marginals), each unit errs by at most max_abs_error
    if not callable(rel_error):
        out += abs_error_mass(cost, a)
    return out


# ----------------------------------------------------------------------------------------
# full-problem Sinkhorn
# ----------------------------------------------------------------------------------------
def sinkhorn_bounds(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    reg: float | None = None,
    max_iter: int = config.SINKHORN_MAX_ITER,
    tol: float = config.SINKHORN_TOL,
) -> OTResult:
    """Certified bounds from one full-problem log-domain Sinkhorn with online costs.

    ``reg`` defaults to ``config.SINKHORN_REG_REL`` times the mean ground cost (computed
    exactly, blockwise). ``upper`` = cost of the rounded plan, ``lower`` = dual objective of
    the double c-transform (:func:`otaudit.core.sinkhorn.sinkhorn_online`); both valid whatever
    the convergence state; non-convergence emits ConvergenceWarning. ``value`` = midpoint.
    """
    t0 = time.perf_counter()
    a = as_weights(a, cost.n, dataset="a", device=cost.device)
    b = as_weights(b, cost.m, dataset="b", device=cost.device)
    if reg is None:
        tot = 0.0
        for I in row_chunks(cost.n, chunk_size(cost.m)):
            tot += float((a[I, None] * cost.block(I, None) * b[None, :]).sum())
        reg = config.SINKHORN_REG_REL * max(tot, 1e-300)
    if not (reg > 0):
        raise InputError(
            f"reg must be > 0, got {reg!r}",
            field="reg",
            fix="pass a positive entropic regularisation",
        )
    # Hold the cost when it fits the memory budget (each iteration touches every entry).
    work = DenseCost(cost) if cost.n * cost.m * 8 <= config.COST_BLOCK_BYTES else cost
    # epsilon-scaling: warm-start from coarser regularisations (x10 steps) down to ``reg``;
    # the coarse stages only provide starting potentials, the certificates come from the last.
    f0 = g0 = None
    n_iter = 0
    steps = config.SINKHORN_EPS_SCALING_STEPS
    # the coarse stages only warm-start the next (raw potentials, no certificate): a loose
    # tolerance and a tenth of the iterations each (issue 13: 300 x 300 took 40-58 s when
    # every stage ran to max_iter and was certified)
    for stage_reg in eps_stages(float(reg) * 10.0 ** (steps + 1), float(reg), steps):
        _, _, f0, g0, it, _, _ = sinkhorn_online(
            work,
            a,
            b,
            stage_reg,
            max_iter=max(10, max_iter // 10),
            tol=max(tol, 1e-3),
            f0=f0,
            g0=g0,
            warn=False,
            certify=False,
        )
        n_iter += it
    # final stage in chunks of SINKHORN_CHUNK iterations, each certified (rounded plan +
    # double c-transform, ~5 passes against ~2 per iteration): the best lower and the best
    # upper seen are kept (each is a valid certificate); the loop stops at tol, at max_iter,
    # or when a chunk shrinks the certified gap by less than SINKHORN_STALL (5 %) — the cap
    # on work: at 300 x 300 the last 1 700 of 2 000 iterations narrowed the gap < 2x.
    lo, up = -math.inf, math.inf
    left = int(max_iter)
    prev_gap = math.inf
    conv = False
    stalled = False
    it_final = 0
    while left > 0:
        raw: dict = {}
        lo_c, up_c, _, _, it, conv, _ = sinkhorn_online(
            work,
            a,
            b,
            float(reg),
            max_iter=min(left, SINKHORN_CHUNK),
            tol=tol,
            f0=f0,
            g0=g0,
            warn=False,
            raw_out=raw,
        )
        f0, g0 = raw["f"], raw["g"]
        n_iter += it
        it_final += it
        left -= it
        lo, up = max(lo, lo_c), min(up, up_c)
        gap = up - lo
        if conv or gap <= 0:
            break
        if gap > (1.0 - SINKHORN_STALL) * prev_gap:
            stalled = True
            break
        prev_gap = gap
    if not conv:
        why = (
            f"the certified gap stalled after {it_final} iterations"
            if stalled
            else f"max_iter={max_iter} iterations ran out"
        )
        warnings.warn(
            f"Sinkhorn (full problem {cost.n}x{cost.m}) did not reach tol={tol:g}: {why} "
            f"(relative gap {(up - lo) / up if up > 0 else 0.0:.3g}); raise reg for a tighter "
            "certificate or use solver='exact'/'minibatch' (the certified bounds remain valid)",
            ConvergenceWarning,
            stacklevel=2,
        )
    lo = min(max(lo, 0.0), up)  # costs are non-negative: OT >= 0 is certified
    return OTResult(
        value=0.5 * (lo + up),
        lower=lo,
        upper=up,
        certified=True,
        method="sinkhorn",
        n_solves=1,
        seconds=time.perf_counter() - t0,
        params={"reg": float(reg), "max_iter": int(max_iter), "tol": float(tol)},
        converged=bool(conv),
        extra={"n_iter": n_iter},
    )
