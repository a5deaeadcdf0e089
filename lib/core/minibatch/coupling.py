"""Block couplings of the upper bound (:func:`block_coupling`): the base support (diagonal,
north-west corner or all pairs), then growth by column generation, greedy or a union of
permutations, with the certified lower proxy used by column generation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..costs import (
    GroundCost,
    SqEuclidean,
    has_lower_block,
)
from ..partition import Blocks
from .blocks import BlockSolves, outer_ot


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


# ----------------------------------------------------------------------------------------
# the coupling stage
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coupling:
    """The block coupling of the upper bound: ``upper = <G, W>`` (a feasible plan's cost),
    ``G [kx, ky]`` on solved pairs only, ``upper_base`` the cost of the base support, and
    ``proven`` (column generation: True when the outer LP provably equals
    ``OT(alpha, beta; W)``; None when the coupling does not search)."""

    upper: float
    G: torch.Tensor
    upper_base: float
    proven: bool | None
    searched: bool  # the coupling search ran (optimal/colgen/greedy with budget left)


def base_support(store: BlockSolves, partition: str, coupling: str) -> list[tuple[int, int]]:
    """A feasible block coupling's support: all pairs (independent), the diagonal (aligned:
    equal masses) or the north-west corner."""
    if coupling == "independent":
        return [(i, j) for i in range(store.kx) for j in range(store.ky)]
    if partition == "aligned":
        return [(k, k) for k in range(store.kx)]
    return northwest(store.alpha, store.beta)


def coupling_cost(
    store: BlockSolves, partition: str, fixed: str | None = None
) -> tuple[float, torch.Tensor]:
    """``(<G, W>, G)`` for the fixed coupling (``"independent"``, ``"diagonal"`` of an
    aligned partition) or the best coupling supported on the solved pairs (exact LP)."""
    Wm = store.costs()
    alpha, beta = store.alpha.cpu(), store.beta.cpu()
    if fixed == "independent":
        G = alpha[:, None] * beta[None, :]
        return float((G * Wm).sum()), G
    if fixed == "diagonal" and partition == "aligned":
        return float((alpha * Wm.diagonal()).sum()), torch.diag(alpha)
    allowed = torch.isfinite(Wm)
    o = outer_ot(store.alpha, store.beta, torch.where(allowed, Wm, torch.zeros_like(Wm)), allowed)
    return o.cost, o.G


def column_generation(store: BlockSolves, L: torch.Tensor) -> bool:
    """Solve the pairs the outer LP on ``min(W, L)`` uses until it uses only solved pairs
    (then it equals ``OT(alpha, beta; W)``: returns True) or the budget is spent (False)."""
    while True:
        _, Gp, _, _ = outer_ot(store.alpha, store.beta, store.costs(fill=L, exact_only=True))
        need = [
            (i, j)
            for i, j in (Gp > 0).nonzero().tolist()
            if (i, j) not in store.solved or not store.solved[(i, j)].exact
        ]
        if not need:
            return all(s.exact for s in store.solved.values())
        if not store.ledger.can():
            return False
        need = need[: store.ledger.room(len(need))]
        store.forget(need)
        store.solve(need)


def union_pairs(
    store: BlockSolves, partition: str, n_permutations: int, gen: torch.Generator
) -> None:
    """Solve ``n_permutations - 1`` further block permutations (aligned: random ones drawn
    from ``gen``; random: shifted north-west supports)."""
    kx, ky = store.kx, store.ky
    if partition == "aligned":
        for _ in range(max(0, n_permutations - 1)):
            perm = torch.randperm(kx, generator=gen).tolist()
            store.solve([(i, perm[i]) for i in range(kx)])
        return
    for r in range(1, max(1, n_permutations)):
        shift = r * max(1, ky // n_permutations)
        store.solve([(i, (j + shift) % ky) for i, j in northwest(store.alpha, store.beta)])


def block_coupling(
    store: BlockSolves, partition: str, coupling: str, n_permutations: int, gen: torch.Generator
) -> Coupling:
    """The coupling stage: solve the base support (unsolved pairs past the budget get their
    independent coupling, so the plan is always feasible), then grow it as ``coupling``
    says and return the best coupling on the solved pairs."""
    store.solve(base_support(store, partition, coupling), allow_product=True)
    fixed = coupling if coupling in ("independent", "diagonal") else None
    ub, G = coupling_cost(store, partition, fixed)
    upper_base, proven, searched = ub, None, False
    if coupling in ("optimal", "colgen", "greedy") and store.ledger.can():
        searched = True
        L = proxy_lower(store.cost, store.BX, store.BY).cpu()
        if coupling == "greedy":
            ky = store.ky
            store.solve([(f // ky, f % ky) for f in torch.argsort(L.flatten()).tolist()])
        else:
            proven = column_generation(store, L)
        ub, G = coupling_cost(store, partition)
    elif coupling == "union":
        union_pairs(store, partition, n_permutations, gen)
        ub, G = coupling_cost(store, partition)
    return Coupling(upper=ub, G=G, upper_base=upper_base, proven=proven, searched=searched)
