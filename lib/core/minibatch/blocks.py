"""Block problems of the mini-batch bounds: one solve per block pair (POT's LP one by one, or
batched Sinkhorn launches on the cost's device), the solve ledger, the store of solved block
pairs (:class:`BlockSolves`, the one mutable state the stages share) and the exact outer OT
between block masses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ... import config
from ...errors import InputError
from .. import parallel
from ..costs import (
    GroundCost,
)
from ..exact import emd
from ..partition import Blocks
from ..settings import BLOCK_SOLVERS
from ..sinkhorn import batched_plans, sparsify_plan


@dataclass(frozen=True)
class OuterOT:
    """Exact OT between block masses: ``cost``, the block coupling ``G [kx, ky]`` and the LP
    duals ``u [kx]``, ``v [ky]``."""

    cost: float
    G: torch.Tensor
    u: np.ndarray
    v: np.ndarray

    def __iter__(self):  # backward compatible with the former (cost, G, u, v) tuple
        return iter((self.cost, self.G, self.u, self.v))


def outer_ot(
    alpha: torch.Tensor, beta: torch.Tensor, W: torch.Tensor, allowed: torch.Tensor | None = None
) -> OuterOT:
    """Exact OT between block masses; pairs outside ``allowed`` get a prohibitive cost and
    the returned coupling is checked to avoid them."""
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
    return OuterOT(cost=cost, G=G, u=sol.f, v=sol.g)


@dataclass
class BlockSolve:
    W: float
    f: torch.Tensor  # [|I|] duals on the block's points
    g: torch.Tensor  # [|J|]
    pi: torch.Tensor  # [nnz] normalised plan entries
    pp: torch.Tensor  # [nnz] positions in the X block
    qq: torch.Tensor  # [nnz] positions in the Y block
    exact: bool = True  # counts as solved (False: the independent coupling, not a solve)
    converged: bool = True  # the solver reached its tolerance (the exact LP always does)


@dataclass
class Ledger:
    """Counts mini-batch solves against the budget (and whether every one converged)."""

    budget: float
    n_solves: int = 0
    bytes_moved: int = 0
    converged: bool = True

    def record(self, sizes: list[tuple[int, int]], sols: list[BlockSolve]) -> None:
        """Count the solves of blocks of ``sizes`` ``(|I|, |J|)`` and their convergence."""
        for (ni, mj), s in zip(sizes, sols, strict=True):
            self.n_solves += 1
            self.bytes_moved += 8 * ni * mj
            self.converged = self.converged and s.converged

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
    counts as solved (the coupling search treats ``W`` as the block's cost); ``converged``
    is the launch's own per-problem convergence (warnings are off, the flag is not).
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
                    converged=bool(r.state.converged[t]),
                )
            )
        del C, r
    return out


def solve_blocks(
    cost: GroundCost,
    problems: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    block_solver: str,
) -> list[BlockSolve]:
    """Solve block problems ``(I, J, wa, wb)``: POT's LP one by one, or batched Sinkhorn.

    With an executor installed (:mod:`otaudit.core.parallel`), a CPU cost and at least two
    problems, the LP solves are submitted in contiguous chunks: with an executor that shares
    by reference (Dask: the cost scattered once per worker, the same copy the c-transform
    passes use; a thread pool) each task carries only its blocks' indices and weights; with
    a process pool, its blocks' own points (``sub(I, J)``, the cost restricted to them:
    ``sub(I, J).block(None, None) == block(I, J)`` to the bit; a cost without ``sub`` is
    solved in place). Results come back in order, identical to the serial loop (POT's
    network simplex releases the GIL, so a thread pool runs them side by side too)."""
    if block_solver == "sinkhorn":
        return sinkhorn_blocks(cost, problems)
    pool = parallel.current()
    sub = getattr(cost, "sub", None)
    if pool is None or cost.device.type != "cpu" or len(problems) < 2:
        return [exact_block(cost, I, J, wa, wb) for I, J, wa, wb in problems]
    if pool.by_reference:  # the cost once per worker (shared with the passes); indices per task
        chunks = parallel.chunked(problems, pool.n_chunks(len(problems)))
        return pool.map(_exact_chunk_shared, chunks, pool.share(cost))
    if sub is None:
        return [exact_block(cost, I, J, wa, wb) for I, J, wa, wb in problems]
    items = [(sub(I, J), wa, wb) for I, J, wa, wb in problems]
    return pool.map(_exact_chunk, parallel.chunked(items, pool.n_chunks(len(items))))


def _exact_chunk(items: list[tuple[GroundCost, torch.Tensor, torch.Tensor]]) -> list[BlockSolve]:
    """One submitted task: the exact solves of a chunk of restricted block costs."""
    return [exact_block(c, None, None, wa, wb) for c, wa, wb in items]


def _exact_chunk_shared(
    cost: GroundCost,
    items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[BlockSolve]:
    """One submitted task: the exact solves of a chunk of blocks ``(I, J, wa, wb)`` of the
    worker's copy of the shared cost (the serial loop's very calls)."""
    return [exact_block(cost, I, J, wa, wb) for I, J, wa, wb in items]


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


@dataclass
class BlockSolves:
    """The solved block pairs of one mini-batch run: ``solved[(i, j)]`` for the pairs of
    blocks ``BX``, ``BY`` solved (or given their independent coupling), and the ledger of
    solves. The stages (coupling, refinement) receive it explicitly; it is the only state
    they share."""

    cost: GroundCost
    BX: Blocks
    BY: Blocks
    block_solver: str
    ledger: Ledger
    solved: dict[tuple[int, int], BlockSolve] = field(default_factory=dict)
    alpha: torch.Tensor = field(init=False)  # block masses of X
    beta: torch.Tensor = field(init=False)  # block masses of Y

    def __post_init__(self) -> None:
        self.alpha = self.BX.mass
        self.beta = self.BY.mass

    @property
    def kx(self) -> int:
        return len(self.BX)

    @property
    def ky(self) -> int:
        return len(self.BY)

    def solve(self, pairs: list[tuple[int, int]], allow_product: bool = False) -> None:
        """Solve the block pairs not solved yet, in order, while the budget lasts (one
        batched launch for the sinkhorn block solver); the rest get their independent
        coupling if ``allow_product``."""
        BX, BY = self.BX, self.BY
        todo = [p for p in dict.fromkeys(pairs) if p not in self.solved]
        n_run = self.ledger.room(len(todo))
        run = todo[:n_run]
        problems = [(BX.idx[i], BY.idx[j], BX.w[i], BY.w[j]) for i, j in run]
        sols = solve_blocks(self.cost, problems, self.block_solver)
        self.ledger.record([(p[0].numel(), p[1].numel()) for p in problems], sols)
        self.solved.update(zip(run, sols, strict=True))
        if allow_product:
            for i, j in todo[n_run:]:
                self.solved[(i, j)] = product_block(
                    self.cost, BX.idx[i], BY.idx[j], BX.w[i], BY.w[j]
                )

    def forget(self, pairs: list[tuple[int, int]]) -> None:
        """Drop pairs (e.g. independent couplings about to be solved for real)."""
        for p in pairs:
            self.solved.pop(p, None)

    def costs(self, fill: torch.Tensor | None = None, exact_only: bool = False) -> torch.Tensor:
        """``W [kx, ky]`` (float64, CPU): the solved pairs' costs, ``fill`` (default +inf)
        elsewhere; ``exact_only``: only the pairs actually solved."""
        if fill is None:
            W = torch.full((self.kx, self.ky), math.inf, dtype=torch.float64)
        else:
            W = fill.clone()
        for (i, j), s in self.solved.items():
            if s.exact or not exact_only:
                W[i, j] = s.W
        return W
