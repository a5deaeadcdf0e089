"""Candidate edges of the sparse exact route: each point's partners of smallest reduced cost.

The sparse route (:mod:`otaudit.core.sparse`) restricts the transport problem to edges of
small reduced cost ``c(x, y) - f(x) - g(y)``. Which edges are *candidates* is a heuristic
(pricing over all edges certifies the result), but finding them is a pass over all ``n m``
entries, so it is where a large problem spends its time. Three things keep the passes few and
cheap:

* :func:`otaudit.core.topk.smallest_k`: the exact ``k`` smallest entries of each row from a
  group minimum and a top-k over ``k`` groups (~4x faster than ``torch.topk`` at 50 000
  columns; :mod:`otaudit.core.topk` says why it is exact);
* the augmented float32 operands of a pass are prepared once
  (:meth:`otaudit.core.costs.SqEuclidean.lower_operands`), not once per block;
* :func:`first_pass`: the first round's c-transform ``g = f^c`` and both sides' neighbour
  lists come from **one** pass over the blocks ``c - f`` of all y-rows against all x. A
  y-row's order over x does not depend on ``g(y)``, so its ``k`` nearest come from the same
  block; for the x-side, each block's entries minus the just computed ``g`` of its rows give
  per-x minima over that block of y-rows, the ``k`` blocks of smallest minimum per x are kept
  (the grouping argument again, the blocks being the groups), and their entries are
  recomputed for just those pairs afterwards.

Memory: one ``[rows, n]`` block at a time, plus ``k`` float32 values per point and
``k x rows`` per x in the recomputation (``k x FAST_BLOCK_BYTES`` in all, ``rows`` being
capped so that one block is at most ``FAST_BLOCK_BYTES``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .costs import (
    GroundCost,
    c_transform,
    c_transform_tile,
    chunk_size,
    has_lower_block,
    row_chunks,
    transform_tiles,
)
from .topk import smallest_k

__all__ = ["smallest_reduced", "first_pass", "transform_neighbours"]


def _ops(cost: GroundCost, p, q):
    return cost.lower_operands(None, None, p, q) if has_lower_block(cost) else None  # type: ignore[attr-defined]


def smallest_reduced(
    cost: GroundCost,
    f: torch.Tensor,
    g: torch.Tensor,
    k: int,
    *,
    side: str,
    subset: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each x (``side="x"``) or y (``side="y"``) of ``subset`` (None: all), the ``k``
    partners of smallest reduced cost ``c - f - g`` (float32 blocks of ``lower_block`` when the
    cost has one, float64 blocks otherwise; a candidate heuristic, not a certificate).
    Memory: one ``[rows, m or n]`` block. Returns the edges ``(I, J)``."""
    n_other = cost.m if side == "x" else cost.n
    k = min(k, n_other)
    idx = (
        torch.arange(cost.n if side == "x" else cost.m, device=f.device)
        if subset is None
        else subset.to(f.device)
    )
    fast = has_lower_block(cost)
    ops = _ops(cost, f, g) if fast else None
    rows = chunk_size(n_other, itemsize=4 if fast else 8)
    I_l, J_l = [], []
    for s in range(0, idx.numel(), rows):
        R = idx[s : s + rows]
        if side == "x":
            if ops is not None:
                B = ops.block(R, None)
            elif fast:
                B, _ = cost.lower_block(R, None, f[R], g)  # type: ignore[attr-defined]
            else:
                B = cost.block(R, None) - f[R, None] - g[None, :]
        else:
            if ops is not None:
                B = ops.block(None, R, transposed=True)
            elif fast:
                B, _ = cost.lower_block(None, R, f, g[R], transposed=True)  # type: ignore[attr-defined]
            else:
                B = (cost.block(None, R) - f[:, None] - g[None, R]).T
        top = smallest_k(B, k)
        own = R[:, None].expand(-1, k)
        if side == "x":
            I_l.append(own.flatten().cpu())
            J_l.append(top.flatten().cpu())
        else:
            I_l.append(top.flatten().cpu())
            J_l.append(own.flatten().cpu())
    if not I_l:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(I_l).numpy().astype(np.int64), torch.cat(J_l).numpy().astype(np.int64)


def _y_pass(cost: GroundCost, f: torch.Tensor, k: int, rows: int, ops, kt: int):
    """The pass over the y-rows' blocks of ``c - f``: ``g = f^c``, each y's ``k`` nearest x,
    and (``kt > 0``) for each x the ``kt`` tiles of y-rows where ``c - f - g`` is smallest."""
    n, m = cost.n, cost.m
    dev = f.device
    g = torch.empty(m, dtype=torch.float64, device=dev)
    tiles = list(row_chunks(m, rows))
    best_v = torch.full((kt, n), math.inf, dtype=torch.float32, device=dev)  # per x: the
    best_t = torch.zeros((kt, n), dtype=torch.long, device=dev)  # kt tiles of smallest min
    near = torch.empty((m, k), dtype=torch.long, device=dev)
    whole = slice(0, n)
    for t, R in enumerate(tiles):
        res, B, order = c_transform_tile(cost, f, "x", True, R, whole, None, ops, k)
        g[R] = res
        assert B is not None and order is not None
        near[R] = order[:, :k]  # y-rows' nearest x: the order over x ignores g(y)
        if kt:
            B.sub_(res.to(torch.float32)[:, None])  # ~ c - f - g over this tile's y-rows
            tmin = B.amin(dim=0)
            worst_v, worst_i = best_v.max(dim=0)
            cols_t = (tmin < worst_v).nonzero().flatten()
            best_v[worst_i[cols_t], cols_t] = tmin[cols_t]
            best_t[worst_i[cols_t], cols_t] = t
    return g, near, tiles, best_t


def _fused_tiles(cost: GroundCost, f: torch.Tensor):
    """``(rows, ops)`` of the fused passes, or None where they do not apply (no
    ``lower_block``, float64 data, column tiles, an empty side)."""
    rows, cols = transform_tiles(cost.m, cost.n, None, fast=True)
    ops = _ops(cost, f, None)
    if ops is None or cols < cost.n or cost.n == 0 or cost.m == 0:
        return None
    return rows, ops


def transform_neighbours(
    cost: GroundCost, f: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(g, near)``: ``g = f^c`` on Y (as :func:`otaudit.core.costs.c_transform`, to the bit)
    and ``near [m, k]``, each y's ``k`` partners of smallest reduced cost ``c - f - g``
    (the x-indices), from the same pass; ``near`` is None where the fused pass does not
    apply (then ``g`` comes from ``c_transform``)."""
    f = f.to(torch.float64)
    fused = _fused_tiles(cost, f)
    if fused is None:
        return c_transform(cost, f, side="x", fast=True), None
    rows, ops = fused
    g, near, _, _ = _y_pass(cost, f, min(int(k), cost.n), rows, ops, 0)
    return g, near


def first_pass(
    cost: GroundCost, f: torch.Tensor, k: int
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``(g, I, J)``: ``g = f^c`` on Y (the same exact c-transform as
    ``c_transform(cost, f, side="x", fast=True)``, to the bit) and the edges of both sides'
    ``k`` partners of smallest reduced cost ``c - f - g`` (y-side first, then x-side), in
    one pass over the cost (module docstring). Costs without ``lower_block``, or problems
    whose c-transform needs column tiles, take the three separate passes instead."""
    f = f.to(torch.float64)
    n, m = cost.n, cost.m
    fused = _fused_tiles(cost, f)
    if fused is None:
        g = c_transform(cost, f, side="x", fast=True)
        Iy, Jy = smallest_reduced(cost, f, g, k, side="y")
        Ix, Jx = smallest_reduced(cost, f, g, k, side="x")
        return g, np.concatenate([Iy, Ix]), np.concatenate([Jy, Jx])
    rows, ops = fused
    k = min(int(k), n)
    kx = min(int(k), m)
    dev = f.device
    kt = min(kx, -(-m // rows))
    g, near, tiles, best_t = _y_pass(cost, f, k, rows, ops, kt)
    Iy = near.reshape(-1).cpu().numpy().astype(np.int64)
    Jy = np.repeat(np.arange(m, dtype=np.int64), k)
    # x-side: recompute c - f - g on each x's kt best tiles (one small matmul per tile),
    # keep the kx smallest
    ops2 = _ops(cost, f, g)
    if ops2 is None:  # g outside the float32 analysis' range: the blockwise search
        Ix, Jx = smallest_reduced(cost, f, g, kx, side="x")
        return g, np.concatenate([Iy, Ix]), np.concatenate([Jy, Jx])
    starts = torch.tensor([R.start for R in tiles], device=dev)
    T = rows
    V = torch.full((n * kt, T), math.inf, dtype=torch.float32, device=dev)  # (x, slot) rows
    tile_of = best_t.T.reshape(-1)
    by_tile = torch.argsort(tile_of, stable=True)
    bounds = torch.searchsorted(tile_of[by_tile], torch.arange(len(tiles) + 1, device=dev))
    for t, R in enumerate(tiles):
        ps = by_tile[bounds[t] : bounds[t + 1]]
        if ps.numel():
            V[ps, : R.stop - R.start] = ops2.block(ps // kt, R)
    sel = smallest_k(V.view(n, kt * T), kx)
    slot, col = sel // T, sel % T
    Jx = (starts[best_t.T.gather(1, slot)] + col).reshape(-1).cpu().numpy().astype(np.int64)
    Ix = np.repeat(np.arange(n, dtype=np.int64), kx)
    return g, np.concatenate([Iy, Ix]), np.concatenate([Jy, Jx])
