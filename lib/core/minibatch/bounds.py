"""The mini-batch bounds: partition, block solves, coupling, refinement and the certified
lower bound composed (:func:`minibatch_bounds`)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from ... import config
from ...errors import InputError
from ..arrays import as_weights
from ..certify import certified_upper_support
from ..costs import (
    GroundCost,
    has_lower_block,
)
from ..partition import aligned_pieces, kmeans, random_blocks
from ..result import OTResult
from .blocks import (
    BlockSolve,
    Ledger,
    outer_ot,
    product_block,
    resolve_block_solver,
    solve_blocks,
)
from .coupling import northwest, proxy_lower
from .lower import certify_lower, sinkhorn_dual_ascent
from .refine import refine_plan

PARTITIONS = ("aligned", "random")
COUPLINGS = ("diagonal", "optimal", "independent", "union", "greedy", "colgen")


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
    check_knobs(batch_size, budget, partition, coupling, refine)
    dev = cost.device
    block_solver = resolve_block_solver(block_solver, dev)
    a = as_weights(a, cost.n, dataset="a", device=dev)
    b = as_weights(b, cost.m, dataset="b", device=dev)
    gen = torch.Generator().manual_seed(int(seed))
    ledger = Ledger(budget=math.inf if budget is None else float(budget))
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
    solved: dict[tuple[int, int], BlockSolve] = {}

    def solve_pairs(pairs: list[tuple[int, int]], allow_product: bool) -> None:
        """Solve the block pairs not solved yet, in order, while the budget lasts (one
        batched launch for the sinkhorn block solver); the rest get their independent
        coupling if ``allow_product``."""
        todo = [p for p in dict.fromkeys(pairs) if p not in solved]
        n_run = ledger.room(len(todo))
        run = todo[:n_run]
        problems = [(BX.idx[i], BY.idx[j], BX.w[i], BY.w[j]) for i, j in run]
        for (i, j), s in zip(run, solve_blocks(cost, problems, block_solver), strict=True):
            solved[(i, j)] = s
            ledger.n_solves += 1
            ledger.bytes_moved += 8 * BX.idx[i].numel() * BY.idx[j].numel()
        if allow_product:
            for i, j in todo[n_run:]:
                solved[(i, j)] = product_block(cost, BX.idx[i], BY.idx[j], BX.w[i], BY.w[j])

    # --- base support (always a feasible coupling) ---
    if partition == "aligned":
        base = [(k, k) for k in range(kx)]
    else:
        base = northwest(alpha, beta)
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
        cst, G, _, _ = outer_ot(
            alpha, beta, torch.where(allowed, Wm, torch.zeros_like(Wm)), allowed
        )
        return cst, G

    fixed = coupling if coupling in ("independent", "diagonal") else None
    ub, G = current_ub(fixed)
    extra["upper_base"] = ub
    # --- coupling growth ---
    proven = None
    if coupling in ("optimal", "colgen", "greedy") and ledger.can():
        L = proxy_lower(cost, BX, BY).cpu()
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
                _, Gp, _, _ = outer_ot(alpha, beta, Wm)
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
                [(i, (j + shift) % ky) for i, j in northwest(alpha, beta)],
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
                px, qy, mass, new_ub, d = refine_plan(
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
    ub = certified_upper_support(cost, px, qy, mass, a, b, ub)  # issue 13: float error
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


def check_knobs(
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
