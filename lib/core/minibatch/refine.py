"""Glue and refinement of the mini-batch upper bound: the glued plan of a block coupling,
the stitched block duals, and plan-restricted block coordinate descent (re-solve the glued
plan inside groups of its entries; the cost never increases and the marginals never
change)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..costs import GroundCost
from ..partition import heaviest_piece, kmeans
from .blocks import BlockSolves, Ledger, solve_blocks


@dataclass(frozen=True)
class Plan:
    """A sparse feasible plan of ``U(a, b)``: mass ``mass[t]`` on ``(px[t], qy[t])``."""

    px: torch.Tensor
    qy: torch.Tensor
    mass: torch.Tensor


@dataclass(frozen=True)
class Potentials:
    """Potentials ``f [n]``, ``g [m]`` on all points with disjoint labels ``lab_x``, ``lab_y``
    (the pieces they were stitched from), the start of the lower bound."""

    f: torch.Tensor
    g: torch.Tensor
    lab_x: torch.Tensor
    lab_y: torch.Tensor


def glue_plan(store: BlockSolves, G: torch.Tensor) -> Plan:
    """``pi = sum_ij G_ij P_ij`` (the block plans glued by the block coupling ``G``)."""
    px_l, qy_l, m_l = [], [], []
    for i, j in (G > 0).nonzero().tolist():
        s = store.solved[(i, j)]
        px_l.append(store.BX.idx[i][s.pp])
        qy_l.append(store.BY.idx[j][s.qq])
        m_l.append(s.pi * float(G[i, j]))
    return Plan(torch.cat(px_l), torch.cat(qy_l), torch.cat(m_l))


def block_duals(store: BlockSolves, G: torch.Tensor) -> Potentials:
    """The block solves' duals stitched into potentials on all points: each point keeps the
    dual of the used block pair holding most of its mass; labels are the partition's."""
    BX, BY, cost = store.BX, store.BY, store.cost
    used = [(i, j, store.solved[(i, j)]) for i, j in (G > 0).nonzero().tolist()]
    fx = heaviest_piece(
        cost.n,
        ((BX.idx[i], BX.w[i] * float(G[i, j]) / float(store.alpha[i]), 0, s.f) for i, j, s in used),
        cost.device,
    )
    gy = heaviest_piece(
        cost.m,
        ((BY.idx[j], BY.w[j] * float(G[i, j]) / float(store.beta[j]), 0, s.g) for i, j, s in used),
        cost.device,
    )
    return Potentials(fx.values, gy.values, BX.label, BY.label)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RefineStep:
    """One pass of :func:`refine_plan`: the new plan, its cost, and the stitched duals of the
    groups re-solved (``covered``: they cover every point, so they can seed the lower
    bound)."""

    plan: Plan
    upper: float
    duals: Potentials
    covered: bool


def refine_plan(
    cost: GroundCost,
    plan: Plan,
    group: torch.Tensor,
    by_x: bool,
    ledger: Ledger,
    max_group: int,
    block_solver: str = "exact",
) -> RefineStep:
    """Re-solve the plan inside each group of entries (grouped by the X label
    ``group[px]`` if ``by_x`` else by ``group[qy]``).

    The group's current entries are a feasible plan of its sub-problem, so an exact re-solve
    never raises the cost; a Sinkhorn re-solve (``block_solver="sinkhorn"``, all groups in
    batched launches) replaces a group's entries only where its feasible plan is cheaper."""
    key = group[plan.px] if by_x else group[plan.qy]
    order = torch.argsort(key, stable=True)
    px, qy, mass, key = plan.px[order], plan.qy[order], plan.mass[order], key[order]
    _, counts = torch.unique_consecutive(key, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    dev = mass.device
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
    sols = solve_blocks(cost, problems, block_solver)
    done = dict(zip(todo, zip(problems, sols, strict=True), strict=True))
    ledger.record([(p[0].numel(), p[1].numel()) for p in problems], sols)
    # pass 2: stitch
    new_p, new_q, new_m = [], [], []
    pieces_x, pieces_y = [], []
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
        pieces_x.append((up, wa, gid, sol.f))
        pieces_y.append((uq, wb, gid, sol.g))
    fx = heaviest_piece(cost.n, pieces_x, dev)
    gy = heaviest_piece(cost.m, pieces_y, dev)
    zero = torch.zeros
    duals = Potentials(
        fx.values if fx.values is not None else zero(cost.n, dtype=torch.float64, device=dev),
        gy.values if gy.values is not None else zero(cost.m, dtype=torch.float64, device=dev),
        fx.label,
        gy.label,
    )
    new = Plan(torch.cat(new_p), torch.cat(new_q), torch.cat(new_m))
    return RefineStep(new, total, duals, fx.covered and gy.covered)


@dataclass(frozen=True)
class Refined:
    """The refinement stage: the best upper bound, its history (the coupling's first) and
    the potentials to start the lower bound from."""

    upper: float
    history: list[float]
    duals: Potentials
    plan: Plan  # the feasible plan whose cost is ``upper``


def refine_rounds(
    store: BlockSolves,
    plan: Plan,
    upper: float,
    duals: Potentials,
    Zx: torch.Tensor,
    a: torch.Tensor,
    Zy: torch.Tensor,
    b: torch.Tensor,
    *,
    rounds: int,
    batch_size: int,
    gen: torch.Generator,
) -> Refined:
    """``rounds`` rounds of plan-restricted block coordinate descent, each regrouping the
    plan by fresh k-means clusters of X, then of Y (``k = ceil(max(n, m) / batch_size)``);
    an improved plan's re-solved duals replace ``duals`` when they cover every point."""
    cost, ledger = store.cost, store.ledger
    hist = [upper]
    if rounds <= 0:
        return Refined(upper, hist, duals, plan)
    best = plan
    k = max(1, math.ceil(max(cost.n, cost.m) / batch_size))
    max_group = (4 if store.block_solver == "exact" else 8) * batch_size
    for _ in range(rounds):
        for by_x in (True, False):
            Z, w = (Zx, a) if by_x else (Zy, b)
            lab, _ = kmeans(Z, w, k, gen, n_iter=4)  # drawn even when the budget is spent
            if not ledger.can():
                break
            step = refine_plan(
                cost, plan, lab, by_x, ledger, max_group=max_group, block_solver=store.block_solver
            )
            plan = step.plan
            if step.upper <= hist[-1]:
                hist.append(step.upper)
                best = plan
                if step.covered:
                    duals = step.duals
    return Refined(min(hist), hist, duals, best)
