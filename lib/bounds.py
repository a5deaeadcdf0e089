"""Certified OT bounds: the dispatcher :func:`solve_ot`, mini-batch bounds and :func:`ot_bounds`.

Mini-batch bounds (Alvarez-Melis, Fusi, Mackey et al., "Budget-Constrained Bounds for
Mini-Batch Estimation of Optimal Transport", 2022; SPEC.md §1.2). X is cut into weighted
blocks ``mu_1..mu_kx`` (masses ``alpha``), Y into ``nu_1..nu_ky`` (masses ``beta``), with
``sum_i mu_i = a`` and ``sum_j nu_j = b`` (no point dropped or padded; a point may be split
between blocks). ``W_ij`` is the exact OT cost between the normalised blocks (one
"mini-batch solve", POT's network simplex).

**Upper bound.** For any block coupling ``Gamma in U(alpha, beta)``, gluing the block plans,
``pi = sum_ij Gamma_ij P_ij`` with ``P_ij in U(mu_i/alpha_i, nu_j/beta_j)``, is a feasible
plan of ``U(a, b)``; hence ``UB = sum_ij Gamma_ij W_ij >= OT(a, b)``. The plan is then
improved by *plan-restricted block coordinate descent*: the entries of the glued plan are
regrouped (by k-means clusters of X or of Y) and, inside each group, the plan is replaced by
the exact OT between the group's X-masses and Y-masses; the cost never increases and the
marginals never change, so every iterate stays a certified upper bound.

**Lower bound.** Weak duality: for ``f [n]``, ``g [m]`` and ANY disjoint partitions
``X = U_i I_i``, ``Y = U_j J_j`` (masses ``alpha``, ``beta``) set
``D_ij = min_{p in I_i, q in J_j} C_pq - f_p - g_q``. Then

.. math::
    OT(a, b) \\ge \\langle f, a\\rangle + \\langle g, b\\rangle + OT(\\alpha, \\beta; D).

*Proof.* For an optimal plan ``pi``, ``<pi, C> = <f, a> + <g, b> + <pi, C - f - g>``; the
block masses ``Gamma_ij = pi(I_i x J_j)`` form a coupling of ``(alpha, beta)`` and
``<pi, C - f - g> >= sum_ij Gamma_ij D_ij >= OT(alpha, beta; D)``. No feasibility of (f, g)
is needed. With the block LP's duals ``(u, v)`` (``u_i + v_j <= D_ij``), ``f + u_{i(p)}`` and
``g + v_{j(q)}`` are dual feasible with the same objective; two c-transforms
(``g <- f^c``, ``f <- g^c``, :func:`otaudit.cost.c_transform`, blockwise) can only raise it.
The potentials come from the block solves' exact duals (stitched), so the lower bound is
tight where the blocks follow the optimal plan.

**Dual ascent.** For problems up to ``config.BOUNDS_LOWER_SINKHORN_MAX_ENTRIES`` entries the
certified potentials are then improved by a few full-problem log-domain Sinkhorn iterations
(eps schedule ``config.BOUNDS_LOWER_SINKHORN_REGS`` relative to the upper bound) warm-started
at them, with float32 residual blocks recomputed by matmul (:func:`sinkhorn_dual_ascent`),
and certified again by the LP correction + c-transforms; the larger of the two bounds is
kept (on gauss 10-d 3k x 3k: LB -4.9 % -> -0.1 %; digits 64-d: -8.7 % -> -2.0 %).

Precision. Upper bounds are evaluated in float64 on the support of the glued plan (block
costs from ``cost.block``). The lower-bound passes (block minima ``D``, c-transforms, the
proxy ``L`` of column generation) use, for costs offering it
(:meth:`otaudit.cost.SqEuclidean.lower_block`), float32 blocks with a rigorous error margin:
``D`` and ``L`` are lowered by the margin (so they remain lower bounds), the c-transforms
recompute the candidates within twice the margin of the minimum in float64 (so they are
the float64 c-transforms). Feasibility of the glued plan holds up to float64 round-off of
the block masses (relative ~1e-15).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import config
from ._arrays import as_points, as_weights, check_pair, device_of
from .cost import (
    DenseCost,
    GroundCost,
    SqEuclidean,
    c_transform,
    chunk_size,
    has_lower_block,
    row_chunks,
)
from .errors import ConvergenceWarning, InputError
from .exact import emd
from .partition import Blocks, aligned_pieces, kmeans, random_blocks
from .result import OTResult
from .sinkhorn import batched_plans, sparsify_plan

__all__ = [
    "solve_ot",
    "exact_ot",
    "minibatch_bounds",
    "sinkhorn_bounds",
    "ot_bounds",
    "PARTITIONS",
    "COUPLINGS",
    "SOLVERS",
]

SOLVERS = ("auto", "exact", "sinkhorn", "minibatch")
PARTITIONS = ("aligned", "random")
COUPLINGS = ("diagonal", "optimal", "independent", "union", "greedy", "colgen")
BLOCK_SOLVERS = ("auto", "exact", "sinkhorn")


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _weights(w: Any, n: int, device: torch.device, name: str) -> torch.Tensor:
    return as_weights(w, n, dataset=name, device=device)


def exact_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    max_iter: int | None = None,
) -> OTResult:
    """Exact OT with POT's network simplex on the full ``[n, m]`` float64 cost matrix."""
    t0 = time.perf_counter()
    a = _weights(a, cost.n, cost.device, "a")
    b = _weights(b, cost.m, cost.device, "b")
    sol = emd(a, b, cost.block(None, None), max_iter=max_iter)
    return OTResult(
        value=sol.cost,
        lower=sol.cost,
        upper=sol.cost,
        certified=True,
        method="exact",
        n_solves=1,
        seconds=time.perf_counter() - t0,
        params={"solver": "exact"},
        converged=True,
        extra={"bytes_moved": 8 * cost.n * cost.m},
    )


def _outer_ot(
    alpha: torch.Tensor, beta: torch.Tensor, W: torch.Tensor, allowed: torch.Tensor | None = None
) -> tuple[float, torch.Tensor, np.ndarray, np.ndarray]:
    """Exact OT between block masses; pairs outside ``allowed`` get a prohibitive cost and
    the returned coupling is checked to avoid them. Returns (cost, Gamma, u, v)."""
    Wn = W.detach().cpu().double().clone()
    if allowed is not None:
        al = allowed.cpu()
        finite = Wn[al]
        big = (float(finite.abs().max()) + 1.0) * 1e6 if finite.numel() else 1e6
        Wn[~al] = big
    sol = emd(alpha, beta, Wn)
    G = torch.from_numpy(sol.plan) * float(alpha.sum())
    if allowed is not None:
        bad = ~allowed.cpu()
        # masses agree only up to float64 round-off: the LP may put ~1e-16 on a forbidden
        # pair; anything beyond round-off would mean an infeasible support
        if bool((G[bad] > 1e-12 * float(alpha.sum())).any()):
            raise RuntimeError("restricted block coupling infeasible (internal error)")
        G[bad] = 0.0
    cost = float((G * Wn).sum())
    return cost, G, sol.f, sol.g


@dataclass
class _Solve:
    W: float
    f: torch.Tensor  # [|I|] duals on the block's points
    g: torch.Tensor  # [|J|]
    pi: torch.Tensor  # [nnz] normalised plan entries
    pp: torch.Tensor  # [nnz] positions in the X block
    qq: torch.Tensor  # [nnz] positions in the Y block
    exact: bool = True


@dataclass
class _Ledger:
    """Counts mini-batch solves against the budget."""

    budget: float
    n_solves: int = 0
    bytes_moved: int = 0
    cost_evals: int = 0
    notes: list[str] = field(default_factory=list)

    def can(self, k: int = 1) -> bool:
        return self.n_solves + k <= self.budget

    def room(self, k: int) -> int:
        """How many of ``k`` further solves the budget allows."""
        return k if self.can(k) else max(0, int(self.budget - self.n_solves))


def _exact_block(
    cost: GroundCost, I: torch.Tensor, J: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor
) -> _Solve:
    C = cost.block(I, J)
    sol = emd(wa / wa.sum(), wb / wb.sum(), C)
    P = torch.from_numpy(sol.plan).to(C.device)
    pp, qq = (P > 0).nonzero(as_tuple=True)
    return _Solve(
        W=sol.cost,
        f=torch.from_numpy(sol.f).to(C.device),
        g=torch.from_numpy(sol.g).to(C.device),
        pi=P[pp, qq],
        pp=pp,
        qq=qq,
    )


def _sinkhorn_blocks(
    cost: GroundCost,
    problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[_Solve]:
    """Solve many block problems ``(I, J, wa, wb)`` with batched Sinkhorn launches.

    The problems are padded to a common ``[B, n_max, m_max]`` (padding carries zero mass and
    is ignored by every reduction) and grouped so that one launch fits
    ``config.BOUNDS_BLOCK_BATCH_BYTES``. Each problem's plan is rounded onto its exact
    marginals and sparsified (:func:`otaudit.sinkhorn.sparsify_plan`): ``W`` is the float64
    cost of that feasible plan (>= the block's OT, so the glued upper bound stays certified)
    and ``(f, g)`` the double c-transform of the Sinkhorn potentials (dual feasible; the
    lower bound is certified afterwards whatever they are). ``exact`` stays True: the block
    counts as solved (the coupling search treats ``W`` as the block's cost).
    """
    out: list[_Solve] = []
    if not problems:
        return out
    dev = cost.device
    per_entry = 8 + 4 + 8 + 8  # float64 cost, float32 copy, the plan, a temporary
    k = 0
    while k < len(problems):
        n_max = m_max = 1
        B = 0
        for I, J, _, _ in problems[k:]:
            n2, m2 = max(n_max, I.numel()), max(m_max, J.numel())
            if B and (B + 1) * n2 * m2 * per_entry > config.BOUNDS_BLOCK_BATCH_BYTES:
                break
            n_max, m_max, B = n2, m2, B + 1
        chunk = problems[k : k + B]
        k += B
        C = torch.zeros((B, n_max, m_max), dtype=torch.float64, device=dev)
        A = torch.zeros((B, n_max), dtype=torch.float64, device=dev)
        Bw = torch.zeros((B, m_max), dtype=torch.float64, device=dev)
        for t, (I, J, wa, wb) in enumerate(chunk):
            C[t, : I.numel(), : J.numel()] = cost.block(I, J).to(torch.float64)
            A[t, : I.numel()] = wa / wa.sum()
            Bw[t, : J.numel()] = wb / wb.sum()
        scale = torch.einsum("bn,bnm,bm->b", A, C, Bw)
        reg = config.BOUNDS_BLOCK_SINKHORN_REG * torch.where(
            scale > 0, scale, torch.ones_like(scale)
        )
        r = batched_plans(
            C,
            A,
            Bw,
            reg,
            max_iter=config.BOUNDS_BLOCK_SINKHORN_ITERS,
            eps_scaling=config.BOUNDS_BLOCK_SINKHORN_EPS_SCALING,
            warn=False,
            iter_dtype=torch.float32,
            check_every=config.BOUNDS_BLOCK_SINKHORN_STAGE_ITERS,
        )
        for t, (I, J, _, _) in enumerate(chunk):
            ni, mj = I.numel(), J.numel()
            pp, qq, pi = sparsify_plan(
                r.plan[t, :ni, :mj], A[t, :ni], Bw[t, :mj], config.BOUNDS_BLOCK_SINKHORN_DROP
            )
            out.append(
                _Solve(
                    W=float((pi * C[t, pp, qq]).sum()),
                    f=r.f[t, :ni].clone(),
                    g=r.g[t, :mj].clone(),
                    pi=pi,
                    pp=pp,
                    qq=qq,
                )
            )
        del C, r
    return out


def _solve_blocks(
    cost: GroundCost,
    problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    block_solver: str,
) -> list[_Solve]:
    """Solve block problems ``(I, J, wa, wb)``: POT's LP one by one, or batched Sinkhorn."""
    if block_solver == "sinkhorn":
        return _sinkhorn_blocks(cost, problems)
    return [_exact_block(cost, I, J, wa, wb) for I, J, wa, wb in problems]


def _resolve_block_solver(block_solver: Any, device: torch.device) -> str:
    if block_solver not in BLOCK_SOLVERS:
        raise InputError(
            f"unknown block_solver {block_solver!r}",
            field="block_solver",
            fix=f"use one of {', '.join(BLOCK_SOLVERS)}",
        )
    if block_solver == "auto":
        return "sinkhorn" if device.type == "cuda" else "exact"
    return block_solver


def _product_block(
    cost: GroundCost, I: torch.Tensor, J: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor
) -> _Solve:
    """The independent coupling of two blocks (a cost evaluation, not a solve)."""
    C = cost.block(I, J)
    pa = wa / wa.sum()
    pb = wb / wb.sum()
    P = pa[:, None] * pb[None, :]
    pp, qq = (P > 0).nonzero(as_tuple=True)
    z_f = torch.zeros(I.numel(), dtype=torch.float64, device=C.device)
    z_g = torch.zeros(J.numel(), dtype=torch.float64, device=C.device)
    return _Solve(W=float((P * C).sum()), f=z_f, g=z_g, pi=P[pp, qq], pp=pp, qq=qq, exact=False)


# ----------------------------------------------------------------------------------------
# lower bound machinery
# ----------------------------------------------------------------------------------------
def block_residual_min(
    cost: GroundCost,
    f: torch.Tensor,
    g: torch.Tensor,
    lab_x: torch.Tensor,
    kx: int,
    lab_y: torch.Tensor,
    ky: int,
    budget_bytes: int | None = None,
    *,
    fast: bool = False,
) -> torch.Tensor:
    """``D_ij = min_{p: lab_x[p]=i, q: lab_y[q]=j} C_pq - f_p - g_q`` (``[kx, ky]``, float64),
    blockwise over rows of the cost (memory: one ``[rows, m]`` block).

    ``fast=True`` (costs with ``lower_block`` only): float32 blocks minus their certified
    margin, so the result is a rigorous lower bound of ``D`` (what the LP correction needs:
    any ``D' <= D`` keeps the bound valid)."""
    dev = f.device
    fast = fast and has_lower_block(cost)
    D = torch.full((kx, ky), math.inf, dtype=torch.float64, device=dev)
    rows = chunk_size(cost.m, budget_bytes, itemsize=2 if fast else 8)
    for I in row_chunks(cost.n, rows):
        if fast:
            B, margin = cost.lower_block(I, None, f[I], g)  # type: ignore[attr-defined]
            r = B.shape[0]
            Rm = torch.full((r, ky), math.inf, dtype=B.dtype, device=dev)
            Rm.scatter_reduce_(1, lab_y[None, :].expand(r, -1), B, reduce="amin")
            Rm = Rm.to(torch.float64) - margin
        else:
            R = cost.block(I, None) - f[I, None] - g[None, :]
            r = R.shape[0]
            Rm = torch.full((r, ky), math.inf, dtype=torch.float64, device=dev)
            Rm.scatter_reduce_(1, lab_y[None, :].expand(r, -1), R, reduce="amin")
        D.scatter_reduce_(0, lab_x[I, None].expand(-1, ky), Rm, reduce="amin")
    return D


def certify_lower(
    cost: GroundCost,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    lab_x: torch.Tensor,
    lab_y: torch.Tensor,
    *,
    n_ctransform: int = 2,
    fast: bool = True,
) -> tuple[float, torch.Tensor, torch.Tensor, dict]:
    """Certified lower bound from ANY potentials ``f [n]``, ``g [m]`` (not necessarily
    feasible) and disjoint labels: block-LP correction, fold its duals into (f, g), then
    ``n_ctransform`` alternating c-transforms. Returns ``(lower, f, g, info)`` with (f, g)
    dual feasible. Cost: ``1 + n_ctransform`` passes over the ``n x m`` costs.

    ``fast`` (default): for costs with ``lower_block`` the passes use certified float32
    lower blocks (one matmul each; see :meth:`otaudit.cost.SqEuclidean.lower_block`), which
    lowers the bound by at most ~1e-6 relative and keeps it rigorous."""
    f = f.to(torch.float64).clone()
    g = g.to(torch.float64).clone()
    ux, lx = torch.unique(lab_x, return_inverse=True)
    uy, ly = torch.unique(lab_y, return_inverse=True)
    kx, ky = ux.numel(), uy.numel()
    D = block_residual_min(cost, f, g, lx, kx, ly, ky, fast=fast)
    alpha = torch.zeros(kx, dtype=torch.float64, device=a.device).index_add_(0, lx, a)
    beta = torch.zeros(ky, dtype=torch.float64, device=b.device).index_add_(0, ly, b)
    # POT's network simplex can report "infeasible" on costs that are all negative: solve
    # with D - min D >= 0 and shift u back (u + v <= D - min D  <=>  (u + min D) + v <= D)
    d0 = float(D.min())
    sol = emd(alpha, beta, D - d0)
    u = torch.from_numpy(sol.f).to(f.device) + d0
    v = torch.from_numpy(sol.g).to(f.device)
    # the LP duals satisfy u_i + v_j <= D_ij up to round-off; enforce it exactly
    slack = (D - u[:, None] - v[None, :]).amin()
    if float(slack) < 0:
        u = u + float(slack)
    f = f + u[lx]
    g = g + v[ly]
    lb_lp = float((f * a).sum() + (g * b).sum())
    lbs = [lb_lp]
    for t in range(n_ctransform):
        if t % 2 == 0:
            g = c_transform(cost, f, side="x", fast=fast)
        else:
            f = c_transform(cost, g, side="y", fast=fast)
        lbs.append(float((f * a).sum() + (g * b).sum()))
    return (
        max(lbs),
        f,
        g,
        {"lb_lp_correction": lb_lp, "lb_ctransform": lbs[-1], "lb_blocks": [kx, ky]},
    )


def sinkhorn_dual_ascent(
    cost: GroundCost,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    regs: list[float],
    n_iter: int,
    budget_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Improve potentials by log-domain Sinkhorn on the full problem, warm-started at
    ``(f, g)``, with costs recomputed block by block as float32 residuals
    ``B ~ C - f - g`` (:meth:`otaudit.cost.SqEuclidean.lower_block`, one matmul per block):
    ``f_i <- f_i - eps LSE_j(-B_ij / eps + log b_j)``, then the same for ``g``; ``n_iter``
    iterations at each ``eps`` of ``regs`` (decreasing). The result is NOT certified by
    itself (potentials only): feed it to :func:`certify_lower`. Memory: one block.
    """
    f = f.to(torch.float64).clone()
    g = g.to(torch.float64).clone()
    la = torch.where(a > 0, a.clamp(min=1e-300).log(), torch.full_like(a, -math.inf))
    lb = torch.where(b > 0, b.clamp(min=1e-300).log(), torch.full_like(b, -math.inf))
    la32, lb32 = la.float(), lb.float()
    rows_x = chunk_size(cost.m, budget_bytes, itemsize=4)
    rows_y = chunk_size(cost.n, budget_bytes, itemsize=4)
    for eps in regs:
        for _ in range(n_iter):
            for I in row_chunks(cost.n, rows_x):
                B, _ = cost.lower_block(I, None, f[I], g)  # type: ignore[attr-defined]
                B.div_(-eps).add_(lb32[None, :])
                f[I] -= eps * torch.logsumexp(B, dim=1).to(torch.float64)
            for J in row_chunks(cost.m, rows_y):
                B, _ = cost.lower_block(None, J, f, g[J])  # type: ignore[attr-defined]
                B.div_(-eps).add_(la32[:, None])
                g[J] -= eps * torch.logsumexp(B, dim=0).to(torch.float64)
    f = torch.where(a > 0, f, torch.zeros_like(f))
    g = torch.where(b > 0, g, torch.zeros_like(g))
    return f, g


# ----------------------------------------------------------------------------------------
# block couplings
# ----------------------------------------------------------------------------------------
def _northwest(alpha: torch.Tensor, beta: torch.Tensor) -> list[tuple[int, int]]:
    """Support of the north-west-corner coupling (<= kx + ky - 1 pairs; diagonal when the
    masses agree)."""
    i = j = 0
    ra = alpha.clone().cpu().tolist()
    rb = beta.clone().cpu().tolist()
    out = []
    tol = 1e-12 * float(alpha.sum())
    while i < len(ra) and j < len(rb):
        out.append((i, j))
        t = min(ra[i], rb[j])
        ra[i] -= t
        rb[j] -= t
        if ra[i] <= tol and i < len(ra) - 1:
            i += 1
        elif rb[j] <= tol and j < len(rb) - 1:
            j += 1
        elif i == len(ra) - 1 and j == len(rb) - 1:
            break
        elif ra[i] <= tol:
            i += 1
        else:
            j += 1
    return out


def _proxy_lower(cost: GroundCost, BX: Blocks, BY: Blocks) -> torch.Tensor:
    """A certified lower proxy ``L_ij <= W_ij`` for every block pair: the smallest cost
    inside the pair (any cost), and for the squared Euclidean cost also ``||m_i - m_j||^2``
    (Jensen: ``E||x - y||^2 >= ||E x - E y||^2`` under any coupling). Cost: one pass over
    the block supports."""
    dev = cost.device
    allY = torch.cat(BY.idx)
    ylab = torch.cat(
        [torch.full((j.numel(),), k, dtype=torch.long, device=dev) for k, j in enumerate(BY.idx)]
    )
    ky = len(BY)
    L = torch.empty(len(BX), ky, dtype=torch.float64, device=dev)
    fast = has_lower_block(cost)
    for i, I in enumerate(BX.idx):
        if fast:  # certified float32 lower block: min - margin <= the true min cost
            B, margin = cost.lower_block(I, allY)  # type: ignore[attr-defined]
            C = B.amin(0).to(torch.float64) - margin
        else:
            C = cost.block(I, allY).amin(0)
        L[i] = torch.full((ky,), math.inf, dtype=torch.float64, device=dev).scatter_reduce(
            0, ylab, C, reduce="amin"
        )
    if isinstance(cost, SqEuclidean):
        mx = torch.stack(
            [
                (cost.X[I].double() * w[:, None]).sum(0) / w.sum()
                for I, w in zip(BX.idx, BX.w, strict=True)
            ]
        )
        my = torch.stack(
            [
                (cost.Y[J].double() * w[:, None]).sum(0) / w.sum()
                for J, w in zip(BY.idx, BY.w, strict=True)
            ]
        )
        L = torch.maximum(L, torch.cdist(mx, my) ** 2 * (1 - 1e-12))
    return L


# ----------------------------------------------------------------------------------------
# plan-restricted block coordinate descent
# ----------------------------------------------------------------------------------------
def _refine(
    cost: GroundCost,
    px: torch.Tensor,
    qy: torch.Tensor,
    mass: torch.Tensor,
    group: torch.Tensor,
    by_x: bool,
    ledger: _Ledger,
    max_group: int,
    block_solver: str = "exact",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, dict[str, Any]]:
    """Re-solve the plan inside each group of entries (grouped by the X label
    ``group[px]`` if ``by_x`` else by ``group[qy]``). Returns the new entries and the
    stitched duals of the groups solved (f on X, g on Y, labels) for the lower bound.

    The group's current entries are a feasible plan of its sub-problem, so an exact re-solve
    never raises the cost; a Sinkhorn re-solve (``block_solver="sinkhorn"``, all groups in
    batched launches) replaces a group's entries only where its feasible plan is cheaper."""
    key = group[px] if by_x else group[qy]
    order = torch.argsort(key, stable=True)
    px, qy, mass, key = px[order], qy[order], mass[order], key[order]
    uk, counts = torch.unique_consecutive(key, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    dev = mass.device
    f = torch.zeros(cost.n, dtype=torch.float64, device=dev)
    g = torch.zeros(cost.m, dtype=torch.float64, device=dev)
    gbest = torch.full((cost.m,), -1.0, dtype=torch.float64, device=dev)
    fbest = torch.full((cost.n,), -1.0, dtype=torch.float64, device=dev)
    lab_x = torch.zeros(cost.n, dtype=torch.long, device=dev)
    lab_y = torch.zeros(cost.m, dtype=torch.long, device=dev)
    # pass 1: which groups are re-solved (within the budget)
    groups: list[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    todo: list[int] = []
    for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
        sl = slice(s, s + c)
        up, ip = torch.unique(px[sl], return_inverse=True)
        uq, iq = torch.unique(qy[sl], return_inverse=True)
        groups.append((sl, up, ip, uq, iq))
        if (
            up.numel() > 1
            and uq.numel() > 1
            and up.numel() <= max_group
            and uq.numel() <= max_group
            and ledger.can(len(todo) + 1)
        ):
            todo.append(len(groups) - 1)
    problems = []
    for t in todo:
        sl, up, ip, uq, iq = groups[t]
        M_ = mass[sl]
        wa = torch.zeros(up.numel(), dtype=torch.float64, device=dev).index_add_(0, ip, M_)
        wb = torch.zeros(uq.numel(), dtype=torch.float64, device=dev).index_add_(0, iq, M_)
        problems.append((up, uq, wa, wb))
    sols = _solve_blocks(cost, problems, block_solver)
    done = dict(zip(todo, zip(problems, sols, strict=True), strict=True))
    ledger.n_solves += len(problems)
    ledger.bytes_moved += sum(8 * p[0].numel() * p[1].numel() for p in problems)
    # pass 2: stitch
    new_p, new_q, new_m = [], [], []
    total = 0.0
    for t, (sl, up, ip, uq, iq) in enumerate(groups):
        P_, Q_, M_ = px[sl], qy[sl], mass[sl]
        prob, sol = done.get(t, (None, None))
        if sol is None or block_solver != "exact":
            old = float((M_ * cost.block(up, uq)[ip, iq]).sum())
        if sol is None:
            total += old
            new_p.append(P_)
            new_q.append(Q_)
            new_m.append(M_)
            continue
        wa, wb = prob[2:]
        tot = float(wa.sum())
        if block_solver != "exact" and sol.W * tot >= old:
            total += old  # keep the current (cheaper) plan of this group
            new_p.append(P_)
            new_q.append(Q_)
            new_m.append(M_)
        else:
            total += sol.W * tot
            new_p.append(up[sol.pp])
            new_q.append(uq[sol.qq])
            new_m.append(sol.pi * tot)
        gid = int(key[sl.start])
        better = wa > fbest[up]
        f[up[better]] = sol.f[better]
        fbest[up[better]] = wa[better]
        lab_x[up[better]] = gid
        better = wb > gbest[uq]
        g[uq[better]] = sol.g[better]
        gbest[uq[better]] = wb[better]
        lab_y[uq[better]] = gid
    duals = {
        "f": f,
        "g": g,
        "lab_x": lab_x,
        "lab_y": lab_y,
        "covered": bool((fbest >= 0).all() and (gbest >= 0).all()),
    }
    return torch.cat(new_p), torch.cat(new_q), torch.cat(new_m), total, duals


# ----------------------------------------------------------------------------------------
# mini-batch bounds
# ----------------------------------------------------------------------------------------
def minibatch_bounds(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    batch_size: int = config.BATCH_SIZE,
    budget: int | None = config.BUDGET,
    partition: str = config.PARTITION,
    coupling: str = config.COUPLING,
    seed: int = config.SEED,
    refine: int = config.BOUNDS_REFINE_ROUNDS,
    n_permutations: int = 2,
    lower: str = "lp+ctransform",
    lower_rounds: int = config.BOUNDS_LOWER_ROUNDS,
    lower_sinkhorn: int | None = None,
    block_solver: str = config.BOUNDS_BLOCK_SOLVER,
) -> OTResult:
    """Certified mini-batch lower/upper bounds on ``OT(a, b)`` for any ground cost.

    Args:
        cost: a :class:`otaudit.cost.GroundCost`; ``features_x``/``features_y`` are used to
            build the partitions.
        a, b: weights ``[n]``, ``[m]`` (uniform if None).
        batch_size: target block size (points per block and side); blocks may be smaller
            and of unequal sizes — no point is dropped or padded.
        budget: maximal number of mini-batch OT solves (None: as many as the coupling and
            ``refine`` need). With fewer solves than the base coupling needs, the unsolved
            block pairs use their independent (product) coupling, a feasible plan whose cost
            is evaluated, not solved.
        partition: ``"aligned"`` (OT-aware: k-means on both sides, exact OT between the
            cluster measures, clusters split by destination; block k of X faces block k of
            Y with equal masses — see :func:`otaudit.partition.aligned_pieces`) or
            ``"random"`` (shuffled near-equal blocks).
        coupling: block coupling of the upper bound: ``"diagonal"`` (block k faces block k;
            north-west corner for unequal random blocks), ``"independent"`` (alpha ⊗ beta,
            all kx*ky solves: classic mini-batch averaging), ``"optimal"``/``"colgen"``
            (column generation with a certified proxy ``L <= W``; stops when the outer LP
            uses no unsolved pair — then it equals ``OT(alpha, beta; W)`` provably — or when
            the budget is spent), ``"greedy"`` (adds the pairs of smallest proxy first),
            ``"union"`` (union of ``n_permutations`` block permutations).
        refine: rounds of plan-restricted block coordinate descent after the coupling
            (each round re-solves every group once; the solves count against ``budget``).
        lower: ``"lp+ctransform"`` (block-LP correction then two c-transforms; 3 passes
            over the n x m costs) or ``"none"`` (``lower = -inf``).
        lower_sinkhorn: Sinkhorn iterations per ``eps`` of ``config.BOUNDS_LOWER_SINKHORN_REGS``
            (relative to the upper bound) of full-problem dual ascent warm-started at the
            certified potentials (:func:`sinkhorn_dual_ascent`, float32 residual blocks),
            followed by a new certification (the bound kept is the max, so it never gets
            worse); 0 = off; None = ``config.BOUNDS_LOWER_SINKHORN_ITERS`` when
            ``n * m <= config.BOUNDS_LOWER_SINKHORN_MAX_ENTRIES``, else off. Costs with
            ``lower_block`` (:class:`otaudit.cost.SqEuclidean`) only.
        lower_rounds: LP-correction rounds of the lower bound (round r > 0 uses k-means
            partitions of X and Y; each round can only raise the bound; 3 passes each).
        block_solver: ``"exact"`` (POT's network simplex, one block at a time, on the CPU),
            ``"sinkhorn"`` (all the blocks a stage needs — the base coupling, each round of
            column generation, each refinement pass — in batched log-domain Sinkhorn
            launches on the cost's device, each block's plan rounded to a sparse feasible
            plan; certified like the exact path: a block's ``W`` is the cost of a feasible
            plan, so the upper bound stays a feasible plan's cost, and the lower bound is
            certified by the same LP correction and c-transforms) or ``"auto"`` (sinkhorn
            on CUDA, exact elsewhere). Knobs: ``config.BOUNDS_BLOCK_SINKHORN_*``.
    Returns:
        OTResult with ``value = (lower + upper) / 2`` (the midpoint minimises the worst-case
        error), ``n_solves`` the mini-batch solves done, ``extra`` holding ``width_rel``,
        ``bytes_moved``, the upper bounds before refinement, etc.
    """
    t0 = time.perf_counter()
    _check_knobs(batch_size, budget, partition, coupling, refine)
    dev = cost.device
    block_solver = _resolve_block_solver(block_solver, dev)
    a = _weights(a, cost.n, dev, "a")
    b = _weights(b, cost.m, dev, "b")
    gen = torch.Generator().manual_seed(int(seed))
    ledger = _Ledger(budget=math.inf if budget is None else float(budget))
    extra: dict[str, Any] = {}

    # --- partition ---
    Zx = cost.features_x.to(torch.float64)
    Zy = cost.features_y.to(torch.float64)
    if partition == "aligned":
        BX, BY = aligned_pieces(Zx, a, Zy, b, batch_size, gen)
    else:
        BX = random_blocks(cost.n, batch_size, a, gen)
        BY = random_blocks(cost.m, batch_size, b, gen)
    kx, ky = len(BX), len(BY)
    alpha, beta = BX.mass, BY.mass
    extra["blocks"] = [kx, ky]
    solved: dict[tuple[int, int], _Solve] = {}

    def solve_pairs(pairs: list[tuple[int, int]], allow_product: bool) -> None:
        """Solve the block pairs not solved yet, in order, while the budget lasts (one
        batched launch for the sinkhorn block solver); the rest get their independent
        coupling if ``allow_product``."""
        todo = [p for p in dict.fromkeys(pairs) if p not in solved]
        n_run = ledger.room(len(todo))
        run = todo[:n_run]
        problems = [(BX.idx[i], BY.idx[j], BX.w[i], BY.w[j]) for i, j in run]
        for (i, j), s in zip(run, _solve_blocks(cost, problems, block_solver), strict=True):
            solved[(i, j)] = s
            ledger.n_solves += 1
            ledger.bytes_moved += 8 * BX.idx[i].numel() * BY.idx[j].numel()
        if allow_product:
            for i, j in todo[n_run:]:
                solved[(i, j)] = _product_block(cost, BX.idx[i], BY.idx[j], BX.w[i], BY.w[j])

    # --- base support (always a feasible coupling) ---
    if partition == "aligned":
        base = [(k, k) for k in range(kx)]
    else:
        base = _northwest(alpha, beta)
    if coupling == "independent":
        base = [(i, j) for i in range(kx) for j in range(ky)]
    solve_pairs(base, allow_product=True)

    def current_ub(fixed: str | None = None) -> tuple[float, torch.Tensor]:
        Wm = torch.full((kx, ky), math.inf, dtype=torch.float64)
        for (i, j), s in solved.items():
            Wm[i, j] = s.W
        if fixed == "independent":
            G = alpha.cpu()[:, None] * beta.cpu()[None, :]
            return float((G * Wm).sum()), G
        if fixed == "diagonal" and partition == "aligned":
            G = torch.diag(alpha.cpu())
            return float((alpha.cpu() * Wm.diagonal()).sum()), G
        allowed = torch.isfinite(Wm)
        cst, G, _, _ = _outer_ot(
            alpha, beta, torch.where(allowed, Wm, torch.zeros_like(Wm)), allowed
        )
        return cst, G

    fixed = coupling if coupling in ("independent", "diagonal") else None
    ub, G = current_ub(fixed)
    extra["upper_base"] = ub
    # --- coupling growth ---
    proven = None
    if coupling in ("optimal", "colgen", "greedy") and ledger.can():
        L = _proxy_lower(cost, BX, BY).cpu()
        if coupling == "greedy":
            order = torch.argsort(L.flatten()).tolist()
            solve_pairs([(flat // ky, flat % ky) for flat in order], allow_product=False)
            ub, G = current_ub()
        else:
            proven = False
            while True:
                Wm = L.clone()
                for (i, j), s in solved.items():
                    if s.exact:
                        Wm[i, j] = s.W
                _, Gp, _, _ = _outer_ot(alpha, beta, Wm)
                need = [
                    (i, j)
                    for i, j in (Gp > 0).nonzero().tolist()
                    if (i, j) not in solved or not solved[(i, j)].exact
                ]
                if not need:
                    proven = all(s.exact for s in solved.values())
                    break
                if not ledger.can():
                    break
                need = need[: ledger.room(len(need))]
                for p in need:
                    solved.pop(p, None)
                solve_pairs(need, allow_product=False)
            ub, G = current_ub()
        extra["coupling_optimal_proven"] = proven
    elif coupling == "union" and partition == "aligned":
        for _ in range(max(0, n_permutations - 1)):
            perm = torch.randperm(kx, generator=gen).tolist()
            solve_pairs([(i, perm[i]) for i in range(kx)], allow_product=False)
        ub, G = current_ub()
    elif coupling == "union":
        for r in range(1, max(1, n_permutations)):
            shift = r * max(1, ky // n_permutations)
            solve_pairs(
                [(i, (j + shift) % ky) for i, j in _northwest(alpha, beta)],
                allow_product=False,
            )
        ub, G = current_ub()
    extra["upper_coupling"] = ub

    # --- glued plan entries ---
    px_l, qy_l, m_l = [], [], []
    for i, j in (G > 0).nonzero().tolist():
        s = solved[(i, j)]
        px_l.append(BX.idx[i][s.pp])
        qy_l.append(BY.idx[j][s.qq])
        m_l.append(s.pi * float(G[i, j]))
    px, qy, mass = torch.cat(px_l), torch.cat(qy_l), torch.cat(m_l)

    # --- stitched block duals for the lower bound ---
    f = torch.zeros(cost.n, dtype=torch.float64, device=dev)
    g = torch.zeros(cost.m, dtype=torch.float64, device=dev)
    fw = torch.full((cost.n,), -1.0, dtype=torch.float64, device=dev)
    gw = torch.full((cost.m,), -1.0, dtype=torch.float64, device=dev)
    for i, j in (G > 0).nonzero().tolist():
        s = solved[(i, j)]
        wx = BX.w[i] * float(G[i, j]) / float(alpha[i])
        better = wx > fw[BX.idx[i]]
        f[BX.idx[i][better]] = s.f[better]
        fw[BX.idx[i][better]] = wx[better]
        wy = BY.w[j] * float(G[i, j]) / float(beta[j])
        better = wy > gw[BY.idx[j]]
        g[BY.idx[j][better]] = s.g[better]
        gw[BY.idx[j][better]] = wy[better]
    duals = {"f": f, "g": g, "lab_x": BX.label, "lab_y": BY.label}

    # --- plan-restricted block coordinate descent (certified UB improvement) ---
    ub_hist = [ub]
    single = kx == 1 and ky == 1  # one block pair: already the exact plan
    if refine > 0 and not single and (coupling not in ("optimal", "colgen") or proven):
        k = max(1, math.ceil(max(cost.n, cost.m) / batch_size))
        for _ in range(refine):
            for by_x in (True, False):
                Z, w = (Zx, a) if by_x else (Zy, b)
                lab, _ = kmeans(Z, w, k, gen, n_iter=4)
                if not ledger.can():
                    break
                px, qy, mass, new_ub, d = _refine(
                    cost,
                    px,
                    qy,
                    mass,
                    lab,
                    by_x,
                    ledger,
                    max_group=(4 if block_solver == "exact" else 8) * batch_size,
                    block_solver=block_solver,
                )
                if new_ub <= ub_hist[-1]:
                    ub_hist.append(new_ub)
                    if d["covered"]:
                        duals = d
        ub = min(ub_hist)
    extra["upper_history"] = ub_hist

    # --- certified lower bound ---
    if lower == "none":
        lb = -math.inf
    else:
        lab_x0, lab_y0 = duals["lab_x"], duals["lab_y"]
        lb, f, g, info = certify_lower(cost, a, b, duals["f"], duals["g"], lab_x0, lab_y0)
        extra.update(info)
        lb_hist = [lb]
        for r in range(lower_rounds - 1):
            # further LP corrections on k-means partitions of varying granularity: (f, g)
            # is feasible, so each correction adds OT(alpha, beta; D) >= 0
            k = max(2, math.ceil(max(cost.n, cost.m) / (batch_size / 4 * 2 ** (r % 4))))
            lab_x, _ = kmeans(Zx, a, min(k, cost.n), gen, n_iter=4)
            lab_y, _ = kmeans(Zy, b, min(k, cost.m), gen, n_iter=4)
            lb_r, f, g, _ = certify_lower(cost, a, b, f, g, lab_x, lab_y)
            lb_hist.append(lb_r)
        if lower_sinkhorn is None:
            small = cost.n * cost.m <= config.BOUNDS_LOWER_SINKHORN_MAX_ENTRIES
            lower_sinkhorn = config.BOUNDS_LOWER_SINKHORN_ITERS if small else 0
        closed = max(lb_hist) >= ub  # nothing left to gain (e.g. identical clouds, ub = 0)
        if (
            lower_sinkhorn > 0
            and has_lower_block(cost)
            and not (kx == 1 and ky == 1)
            and not closed
        ):
            # dual ascent on the full problem (float32 residual blocks), warm-started at the
            # certified potentials, then certified again (LP correction + c-transforms)
            regs = [r * max(ub, 1e-300) for r in config.BOUNDS_LOWER_SINKHORN_REGS]
            f2, g2 = sinkhorn_dual_ascent(cost, a, b, f, g, regs, lower_sinkhorn)
            lb_s, f2, g2, info_s = certify_lower(cost, a, b, f2, g2, lab_x0, lab_y0)
            extra["lb_sinkhorn"] = lb_s
            lb_hist.append(lb_s)
        lb = max(lb_hist)
        extra["lower_history"] = lb_hist
    # Ground costs are non-negative (GroundCost protocol), so OT >= 0 is itself certified.
    lb = max(lb, 0.0)
    lb = min(lb, ub)  # never report lower > upper from round-off (both remain valid)
    extra.update(
        width_rel=(ub - lb) / ub if ub > 0 else 0.0,
        solves_budget=budget,
        bytes_moved=ledger.bytes_moved,
    )
    return OTResult(
        value=0.5 * (lb + ub) if math.isfinite(lb) else ub,
        lower=lb,
        upper=ub,
        certified=True,
        method=f"minibatch[{partition},{coupling}]",
        n_solves=ledger.n_solves,
        seconds=time.perf_counter() - t0,
        params={
            "batch_size": int(batch_size),
            "budget": budget,
            "partition": partition,
            "coupling": coupling,
            "seed": int(seed),
            "refine": int(refine),
            "block_solver": block_solver,
        },
        converged=True,
        extra=extra,
    )


def _check_knobs(
    batch_size: Any, budget: Any, partition: Any, coupling: Any, refine: Any = 0
) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise InputError(
            f"batch_size must be an integer >= 1, got {batch_size!r}",
            field="batch_size",
            fix="pass e.g. batch_size=256",
        )
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1
    ):
        raise InputError(
            f"budget must be None or an integer >= 1, got {budget!r}",
            field="budget",
            fix="pass the number of mini-batch solves allowed",
        )
    if partition not in PARTITIONS:
        raise InputError(
            f"unknown partition {partition!r}",
            field="partition",
            fix=f"use one of {', '.join(PARTITIONS)}",
        )
    if coupling not in COUPLINGS:
        raise InputError(
            f"unknown coupling {coupling!r}",
            field="coupling",
            fix=f"use one of {', '.join(COUPLINGS)}",
        )
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise InputError(
            f"refine must be an integer >= 0, got {refine!r}",
            field="refine",
            fix="pass the number of refinement rounds, e.g. refine=2",
        )


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
    the double c-transform (:func:`otaudit.sinkhorn.sinkhorn_online`); both valid whatever
    the convergence state; non-convergence emits ConvergenceWarning. ``value`` = midpoint.
    """
    from .sinkhorn import sinkhorn_online

    t0 = time.perf_counter()
    a = _weights(a, cost.n, cost.device, "a")
    b = _weights(b, cost.m, cost.device, "b")
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
    stage_reg = float(reg) * 10.0**config.SINKHORN_EPS_SCALING_STEPS
    while stage_reg > float(reg) * 1.5:
        _, _, f0, g0, it, _, _ = sinkhorn_online(
            work, a, b, stage_reg, max_iter=max_iter, tol=tol, f0=f0, g0=g0, warn=False
        )
        n_iter += it
        stage_reg /= 10.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        lo, up, _, _, it, conv, _ = sinkhorn_online(
            work, a, b, float(reg), max_iter=max_iter, tol=tol, f0=f0, g0=g0
        )
        n_iter += it
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
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
        extra={"n_iter": n_iter, "width_rel": (up - lo) / up if up > 0 else 0.0},
    )


# ----------------------------------------------------------------------------------------
# dispatcher and public entry point
# ----------------------------------------------------------------------------------------
@functools.cache
def _solver_options() -> dict[str, frozenset[str]]:
    """The keyword options each solver of :func:`solve_ot` takes (from its signature)."""
    fns = {"exact": exact_ot, "sinkhorn": sinkhorn_bounds, "minibatch": minibatch_bounds}
    return {
        k: frozenset(inspect.signature(f).parameters) - {"cost", "a", "b"} for k, f in fns.items()
    }


def _options_for(solver: str, opts: dict[str, Any], auto: bool) -> dict[str, Any]:
    """The options of ``opts`` that ``solver`` takes (see :func:`solve_ot`)."""
    takes = _solver_options()
    out: dict[str, Any] = {}
    for key, v in opts.items():
        if key in takes[solver]:
            out[key] = v
            continue
        owners = [k for k, names in takes.items() if key in names]
        if owners and auto:
            continue  # a knob of the solver auto did not pick
        raise InputError(
            f"option {key!r} does not apply to solver={solver!r}"
            + (f" (it is an option of solver={owners[0]!r})" if owners else ""),
            field=key,
            fix=f"use solver={owners[0]!r} or drop {key!r}"
            if owners
            else "options: " + ", ".join(sorted(set().union(*takes.values()))),
        )
    return out


def solve_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    solver: str = "auto",
    **opts: Any,
) -> OTResult:
    """Solve (or certifiably bound) OT for any ground cost.

    ``solver``: ``"exact"`` (POT network simplex on the full cost; value = lower = upper),
    ``"sinkhorn"`` (:func:`sinkhorn_bounds`), ``"minibatch"`` (:func:`minibatch_bounds`), or
    ``"auto"``: exact when ``n*m <= config.EXACT_MAX_ENTRIES``, else mini-batch.
    ``opts`` go to the chosen solver; with ``"auto"``, options of the solvers it did not
    choose (e.g. ``batch_size`` or ``block_solver`` on a pair small enough for the exact LP)
    are ignored. An option no solver takes, or one the named solver does not take, is an
    :class:`InputError`.
    """
    if solver not in SOLVERS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SOLVERS)}"
        )
    auto = solver == "auto"
    if auto:
        solver = "exact" if cost.n * cost.m <= config.EXACT_MAX_ENTRIES else "minibatch"
    opts = _options_for(solver, opts, auto)
    if solver == "exact":
        return exact_ot(cost, a, b, **opts)
    if solver == "sinkhorn":
        return sinkhorn_bounds(cost, a, b, **opts)
    return minibatch_bounds(cost, a, b, **opts)


def ot_bounds(
    X: Any,
    Y: Any,
    *,
    batch_size: int | None = None,
    budget: int | None = None,
    partition: str | None = None,
    coupling: str | None = None,
    seed: int = config.SEED,
    a: Any = None,
    b: Any = None,
    solver: str = "auto",
    **opts: Any,
) -> OTResult:
    """Certified bounds on ``W_2^2(X, Y)`` (squared Euclidean ground cost).

    ``X [n, d]``, ``Y [m, d]``: numpy arrays or torch tensors (CPU/CUDA, float32/float64;
    computed in float64 on the input's device). ``a``, ``b``: optional weights.

    Exact by default when small: with ``solver="auto"`` and none of ``batch_size``,
    ``budget``, ``partition``, ``coupling`` given, problems with
    ``n*m <= config.EXACT_MAX_ENTRIES`` (2500 x 2500) are solved exactly (width 0).
    Giving any of those knobs (or another option of :func:`minibatch_bounds` such as
    ``refine`` or ``block_solver``), or ``solver="minibatch"``, runs the mini-batch bounds
    (:func:`minibatch_bounds`; defaults ``config.BATCH_SIZE``, ``config.BUDGET``,
    ``config.PARTITION``, ``config.COUPLING``). ``solver="sinkhorn"`` runs the certified
    full-problem Sinkhorn.

    Returns OTResult: ``lower``/``upper`` certified; ``value`` = their midpoint (exact
    value for an exact solve); ``n_solves`` = block OT solves done.
    """
    mb_only = _solver_options()["minibatch"] - _solver_options()["exact"]
    forced = any(v is not None for v in (batch_size, budget, partition, coupling)) or any(
        k in mb_only for k in opts
    )
    batch_size = config.BATCH_SIZE if batch_size is None else batch_size
    budget = config.BUDGET if budget is None else budget
    partition = config.PARTITION if partition is None else partition
    coupling = config.COUPLING if coupling is None else coupling
    _check_knobs(batch_size, budget, partition, coupling, opts.get("refine", 0))
    if solver not in SOLVERS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SOLVERS)}"
        )
    dev = device_of(X, Y)
    Xt = as_points(X, name="X", device=dev)
    Yt = as_points(Y, name="Y", device=dev)
    check_pair(Xt, Yt)
    cost = SqEuclidean(Xt, Yt)
    if solver == "auto":
        small = cost.n * cost.m <= config.EXACT_MAX_ENTRIES
        solver = "exact" if (small and not forced) else "minibatch"
    if solver == "minibatch":
        res = minibatch_bounds(
            cost,
            a,
            b,
            batch_size=batch_size,
            budget=budget,
            partition=partition,
            coupling=coupling,
            seed=seed,
            **opts,
        )
    else:
        res = solve_ot(cost, a, b, solver=solver, **opts)
    return res.replace(
        params={**res.params, "solver": solver, "n": cost.n, "m": cost.m, "d": int(Xt.shape[1])}
    )
