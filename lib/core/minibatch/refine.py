"""Plan-restricted block coordinate descent: re-solve the glued plan inside groups of its
entries; the cost never increases and the marginals never change."""

from __future__ import annotations

from typing import Any

import torch

from ..costs import (
    GroundCost,
)
from .blocks import Ledger, solve_blocks


# ----------------------------------------------------------------------------------------
# plan-restricted block coordinate descent
# ----------------------------------------------------------------------------------------
def refine_plan(
    cost: GroundCost,
    px: torch.Tensor,
    qy: torch.Tensor,
    mass: torch.Tensor,
    group: torch.Tensor,
    by_x: bool,
    ledger: Ledger,
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
    sols = solve_blocks(cost, problems, block_solver)
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
