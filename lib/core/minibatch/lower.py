"""Certified lower bounds from any potentials: block-LP correction, c-transforms and
full-problem dual ascent (see :mod:`otaudit.core.minibatch` for the proof)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import config
from .. import parallel
from ..certify import certified_lower_of, cost_max
from ..costs import (
    GroundCost,
    c_transform,
    chunk_size,
    has_lower_block,
    row_chunks,
)
from ..exact import emd
from ..partition import kmeans
from ..sinkhorn import log_weights


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
    stats: dict | None = None,
) -> torch.Tensor:
    """``D_ij = min_{p: lab_x[p]=i, q: lab_y[q]=j} C_pq - f_p - g_q`` (``[kx, ky]``, float64),
    blockwise over rows of the cost (memory: one ``[rows, m]`` block).

    ``fast=True`` (costs with ``lower_block`` only): float32 blocks minus their certified
    margin, so the result is a rigorous lower bound of ``D`` (what the LP correction needs:
    any ``D' <= D`` keeps the bound valid)."""
    dev = f.device
    fast = fast and has_lower_block(cost)
    rows = chunk_size(cost.m, budget_bytes, itemsize=2 if fast else 8)
    tiles = list(row_chunks(cost.n, rows))
    pool = parallel.current()
    if pool is None or dev.type != "cpu" or len(tiles) < 2:
        parts = [_residual_rows(cost, f, g, lab_x, kx, lab_y, ky, fast, tiles)]
    else:  # each task: the exact minimum over its tiles; min is exact in any order
        if fast:
            cost.lower_block(slice(0, 1), slice(0, 1))  # type: ignore[attr-defined]
        chunks = parallel.chunked(tiles, pool.n_chunks(len(tiles)))
        shared = pool.share(cost)
        parts = pool.map(_residual_chunk, chunks, shared, f, g, lab_x, kx, lab_y, ky, fast)
    D = parts[0][0]
    for Dk, _ in parts[1:]:
        D = torch.minimum(D, Dk)
    seen = [c for _, c in parts if c is not None]
    if stats is not None and seen:
        stats["cmax"] = max(stats.get("cmax", 0.0), *seen)
    return D


def _residual_chunk(cost, f, g, lab_x, kx, lab_y, ky, fast, tiles) -> list:
    """One submitted task of :func:`block_residual_min` (a one-element list)."""
    return [_residual_rows(cost, f, g, lab_x, kx, lab_y, ky, fast, tiles)]


def _residual_rows(
    cost: GroundCost,
    f: torch.Tensor,
    g: torch.Tensor,
    lab_x: torch.Tensor,
    kx: int,
    lab_y: torch.Tensor,
    ky: int,
    fast: bool,
    tiles: list[slice],
) -> tuple[torch.Tensor, float | None]:
    """The block minima ``D [kx, ky]`` over the rows ``tiles`` of X, and the largest cost
    entry seen (float64 path only; None when no entry was evaluated in float64)."""
    dev = f.device
    D = torch.full((kx, ky), math.inf, dtype=torch.float64, device=dev)
    cmax: float | None = None
    for I in tiles:
        if fast:
            B, margin = cost.lower_block(I, None, f[I], g)  # type: ignore[attr-defined]
            r = B.shape[0]
            Rm = torch.full((r, ky), math.inf, dtype=B.dtype, device=dev)
            Rm.scatter_reduce_(1, lab_y[None, :].expand(r, -1), B, reduce="amin")
            Rm = Rm.to(torch.float64) - margin
        else:
            C = cost.block(I, None)
            if C.numel():
                cmax = max(cmax or 0.0, float(C.abs().max()))
            R = C - f[I, None] - g[None, :]
            r = R.shape[0]
            Rm = torch.full((r, ky), math.inf, dtype=torch.float64, device=dev)
            Rm.scatter_reduce_(1, lab_y[None, :].expand(r, -1), R, reduce="amin")
        D.scatter_reduce_(0, lab_x[I, None].expand(-1, ky), Rm, reduce="amin")
    return D, cmax


@dataclass(frozen=True)
class LowerCertificate:
    """A certified lower bound ``lower = <f, a> + <g, b>`` with ``(f, g)`` dual feasible, and
    its diagnostics: the bound right after the block-LP correction (``lb_lp_correction``),
    after the last c-transform (``lb_ctransform``) and the block counts of the correction
    (``lb_blocks``). Unpacks as the former tuple ``(lower, f, g, info)``."""

    lower: float
    f: torch.Tensor
    g: torch.Tensor
    lb_lp_correction: float
    lb_ctransform: float
    lb_blocks: list[int]

    @property
    def info(self) -> dict[str, Any]:
        return {
            "lb_lp_correction": self.lb_lp_correction,
            "lb_ctransform": self.lb_ctransform,
            "lb_blocks": list(self.lb_blocks),
        }

    def __iter__(self):
        return iter((self.lower, self.f, self.g, self.info))


@dataclass(frozen=True)
class LowerStage:
    """The lower-bound stage of the mini-batch bounds: ``lower`` (certified; -inf when
    ``lower="none"``) and its diagnostics for ``OTResult.extra``."""

    lower: float
    extra: dict[str, Any] = field(default_factory=dict)
    ascent_iters: int = 0  # dual-ascent iterations per eps actually run (0: skipped)


def lower_bound(
    cost: GroundCost,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    lab_x: torch.Tensor,
    lab_y: torch.Tensor,
    *,
    upper: float,
    rounds: int,
    sinkhorn_iters: int | None,
    batch_size: int,
    features: tuple[torch.Tensor, torch.Tensor],
    gen: torch.Generator,
    single_block: bool,
) -> LowerStage:
    """The certified lower bound from stitched potentials: one certification on the
    partition's labels, ``rounds - 1`` further LP corrections on k-means partitions of
    varying granularity (each adds ``OT(alpha, beta; D) >= 0``), then (costs with
    ``lower_block``, ``sinkhorn_iters`` > 0, more than one block, a gap left) full-problem
    dual ascent re-certified on the first labels. The bound kept is the max of all."""
    Zx, Zy = features
    c0 = certify_lower(cost, a, b, f, g, lab_x, lab_y)
    extra: dict[str, Any] = dict(c0.info)
    f, g = c0.f, c0.g
    hist = [c0.lower]
    for r in range(rounds - 1):
        k = max(2, math.ceil(max(cost.n, cost.m) / (batch_size / 4 * 2 ** (r % 4))))
        lx, _ = kmeans(Zx, a, min(k, cost.n), gen, n_iter=4)
        ly, _ = kmeans(Zy, b, min(k, cost.m), gen, n_iter=4)
        cr = certify_lower(cost, a, b, f, g, lx, ly)
        f, g = cr.f, cr.g
        hist.append(cr.lower)
    if sinkhorn_iters is None:
        small = cost.n * cost.m <= config.BOUNDS_LOWER_SINKHORN_MAX_ENTRIES
        sinkhorn_iters = config.BOUNDS_LOWER_SINKHORN_ITERS if small else 0
    closed = max(hist) >= upper  # nothing left to gain (e.g. identical clouds, ub = 0)
    ascent = sinkhorn_iters > 0 and has_lower_block(cost) and not single_block and not closed
    if ascent:
        regs = [r * max(upper, 1e-300) for r in config.BOUNDS_LOWER_SINKHORN_REGS]
        f2, g2 = sinkhorn_dual_ascent(cost, a, b, f, g, regs, sinkhorn_iters)
        cs = certify_lower(cost, a, b, f2, g2, lab_x, lab_y)
        extra["lb_sinkhorn"] = cs.lower
        hist.append(cs.lower)
    extra["lower_history"] = hist
    return LowerStage(max(hist), extra, sinkhorn_iters if ascent else 0)


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
) -> LowerCertificate:
    """Certified lower bound from ANY potentials ``f [n]``, ``g [m]`` (not necessarily
    feasible) and disjoint labels: block-LP correction, fold its duals into (f, g), then
    ``n_ctransform`` alternating c-transforms. Returns a :class:`LowerCertificate` (which
    unpacks as ``(lower, f, g, info)``) with (f, g) dual feasible. Cost: ``1 + n_ctransform`` passes over the ``n x m`` costs.

    ``fast`` (default): for costs with ``lower_block`` the passes use certified float32
    lower blocks (one matmul each; see :meth:`otaudit.cost.SqEuclidean.lower_block`), which
    lowers the bound by at most ~1e-6 relative and keeps it rigorous."""
    f = f.to(torch.float64).clone()
    g = g.to(torch.float64).clone()
    ux, lx = torch.unique(lab_x, return_inverse=True)
    uy, ly = torch.unique(lab_y, return_inverse=True)
    kx, ky = ux.numel(), uy.numel()
    stats: dict = {}
    D = block_residual_min(cost, f, g, lx, kx, ly, ky, fast=fast, stats=stats)
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
    cmax = cost_max(cost, stats)
    extra_uv = float(u.abs().max()) + float(v.abs().max())
    lb_lp = certified_lower_of(cost, a, b, f, g, cmax, extra=extra_uv)
    lbs = [lb_lp]
    for t in range(n_ctransform):
        if t % 2 == 0:
            g = c_transform(cost, f, side="x", fast=fast)
        else:
            f = c_transform(cost, g, side="y", fast=fast)
        lbs.append(certified_lower_of(cost, a, b, f, g, cmax))
    return LowerCertificate(max(lbs), f, g, lb_lp, lbs[-1], [kx, ky])


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
    la, lb = log_weights(a), log_weights(b)
    la32, lb32 = la.float(), lb.float()
    rows_x = chunk_size(cost.m, budget_bytes, itemsize=4)
    rows_y = chunk_size(cost.n, budget_bytes, itemsize=4)
    for eps in regs:
        # a degenerate schedule (eps <= 0, NaN, or so small that the residuals / eps
        # overflow: e.g. an upper bound of exactly 0 for a permuted copy) stops the ascent
        # with the last finite potentials instead of producing NaN (issue 13)
        if not (math.isfinite(eps) and eps > 0):
            break
        f_prev, g_prev = f.clone(), g.clone()
        ok = True
        for _ in range(n_iter):
            for I in row_chunks(cost.n, rows_x):
                B, _ = cost.lower_block(I, None, f[I], g)  # type: ignore[attr-defined]
                B.div_(-eps).add_(lb32[None, :])
                f[I] -= eps * torch.logsumexp(B, dim=1).to(torch.float64)
            ok = bool(torch.isfinite(f).all())
            if not ok:
                break
            for J in row_chunks(cost.m, rows_y):
                B, _ = cost.lower_block(None, J, f, g[J])  # type: ignore[attr-defined]
                B.div_(-eps).add_(la32[:, None])
                g[J] -= eps * torch.logsumexp(B, dim=0).to(torch.float64)
            ok = bool(torch.isfinite(g).all())
            if not ok:
                break
        if not ok:
            f, g = f_prev, g_prev
            break
    f = torch.where(a > 0, f, torch.zeros_like(f))
    g = torch.where(b > 0, g, torch.zeros_like(g))
    return f, g
