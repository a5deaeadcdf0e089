"""Block couplings of the upper bound: north-west corner support and the certified lower
proxy used by column generation."""

from __future__ import annotations

import math

import torch

from ..costs import (
    GroundCost,
    SqEuclidean,
    has_lower_block,
)
from ..partition import Blocks


# ----------------------------------------------------------------------------------------
# block couplings
# ----------------------------------------------------------------------------------------
def northwest(alpha: torch.Tensor, beta: torch.Tensor) -> list[tuple[int, int]]:
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


def proxy_lower(cost: GroundCost, BX: Blocks, BY: Blocks) -> torch.Tensor:
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
