"""Block problems of the mini-batch bounds: one solve per block pair (POT's LP one by one, or
batched Sinkhorn launches on the cost's device), the solve ledger, and the exact outer OT
between block masses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ... import config
from ...errors import InputError
from ..costs import (
    GroundCost,
)
from ..exact import emd
from ..sinkhorn import batched_plans, sparsify_plan

BLOCK_SOLVERS = ("auto", "exact", "sinkhorn")


def outer_ot(
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
class BlockSolve:
    W: float
    f: torch.Tensor  # [|I|] duals on the block's points
    g: torch.Tensor  # [|J|]
    pi: torch.Tensor  # [nnz] normalised plan entries
    pp: torch.Tensor  # [nnz] positions in the X block
    qq: torch.Tensor  # [nnz] positions in the Y block
    exact: bool = True


@dataclass
class Ledger:
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


def exact_block(
    cost: GroundCost, I: torch.Tensor, J: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor
) -> BlockSolve:
    C = cost.block(I, J)
    sol = emd(wa / wa.sum(), wb / wb.sum(), C, verify=False)  # re-certified downstream
    P = torch.from_numpy(sol.plan).to(C.device)
    pp, qq = (P > 0).nonzero(as_tuple=True)
    return BlockSolve(
        W=sol.cost,
        f=torch.from_numpy(sol.f).to(C.device),
        g=torch.from_numpy(sol.g).to(C.device),
        pi=P[pp, qq],
        pp=pp,
        qq=qq,
    )


def sinkhorn_blocks(
    cost: GroundCost,
    problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[BlockSolve]:
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
    out: list[BlockSolve] = []
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
                BlockSolve(
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


def solve_blocks(
    cost: GroundCost,
    problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    block_solver: str,
) -> list[BlockSolve]:
    """Solve block problems ``(I, J, wa, wb)``: POT's LP one by one, or batched Sinkhorn."""
    if block_solver == "sinkhorn":
        return sinkhorn_blocks(cost, problems)
    return [exact_block(cost, I, J, wa, wb) for I, J, wa, wb in problems]


def resolve_block_solver(block_solver: Any, device: torch.device) -> str:
    if block_solver not in BLOCK_SOLVERS:
        raise InputError(
            f"unknown block_solver {block_solver!r}",
            field="block_solver",
            fix=f"use one of {', '.join(BLOCK_SOLVERS)}",
        )
    if block_solver == "auto":
        return "sinkhorn" if device.type == "cuda" else "exact"
    return block_solver


def product_block(
    cost: GroundCost, I: torch.Tensor, J: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor
) -> BlockSolve:
    """The independent coupling of two blocks (a cost evaluation, not a solve)."""
    C = cost.block(I, J)
    pa = wa / wa.sum()
    pb = wb / wb.sum()
    P = pa[:, None] * pb[None, :]
    pp, qq = (P > 0).nonzero(as_tuple=True)
    z_f = torch.zeros(I.numel(), dtype=torch.float64, device=C.device)
    z_g = torch.zeros(J.numel(), dtype=torch.float64, device=C.device)
    return BlockSolve(W=float((P * C).sum()), f=z_f, g=z_g, pi=P[pp, qq], pp=pp, qq=qq, exact=False)
