"""The mini-batch bounds (:func:`minibatch_bounds`): the stages — partition
(:func:`otaudit.core.partition.make_blocks`), block solves (:class:`.blocks.BlockSolves`),
block coupling (:func:`.coupling.block_coupling`), glue and refinement (:mod:`.refine`) and
the certified lower bound (:func:`.lower.lower_bound`) — composed."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ... import config
from .. import parallel
from ..arrays import as_weights
from ..certify import certified_upper_support
from ..costs import GroundCost
from ..partition import make_blocks
from ..result import OTResult
from ..settings import COUPLINGS, PARTITIONS, MinibatchSettings, check_knobs
from .blocks import BlockSolves, Ledger, resolve_block_solver
from .coupling import block_coupling
from .lower import lower_bound
from .refine import block_duals, glue_plan, refine_rounds

__all__ = ["COUPLINGS", "PARTITIONS", "check_knobs", "minibatch_bounds", "run_minibatch"]


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
    plan_out: list | None = None,
    executor: Any = None,
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
            over the n x m costs) or ``"none"``: no lower bound is computed, ``lower =
            -inf`` (``lower_certified=False``) and ``value`` is the upper bound.
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
        plan_out: a list to receive the final sparse plan ``(px, qy, mass)`` (the feasible
            plan whose cost is ``upper``; used by :func:`otaudit.otdd_flow`), or None.
        executor: a :class:`concurrent.futures.Executor` for the independent work of each
            stage (:mod:`otaudit.core.parallel`); None: in process. Same result either way.
    Returns:
        OTResult with ``value = (lower + upper) / 2`` (the midpoint minimises the worst-case
        error; the upper bound with ``lower="none"``), ``n_solves`` the mini-batch solves
        done, ``converged`` True when every block solve reached its tolerance (always for
        the exact LP; the batched Sinkhorn launches' own flags), ``extra`` holding
        ``bytes_moved``, the upper bounds before refinement, etc.
    """
    settings = MinibatchSettings(
        batch_size=batch_size,
        budget=budget,
        partition=partition,
        coupling=coupling,
        seed=seed,
        refine=refine,
        n_permutations=n_permutations,
        lower=lower,
        lower_rounds=lower_rounds,
        lower_sinkhorn=lower_sinkhorn,
        block_solver=block_solver,
    )
    return run_minibatch(cost, a, b, settings, plan_out=plan_out, executor=executor)


def run_minibatch(
    cost: GroundCost,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    s: MinibatchSettings,
    *,
    plan_out: list | None = None,
    executor: Any = None,
) -> OTResult:
    """:func:`minibatch_bounds` with typed settings: the stages composed (``executor``: see
    :mod:`otaudit.core.parallel`)."""
    with parallel.using(executor):
        return _run_minibatch(cost, a, b, s, plan_out)


def _run_minibatch(
    cost: GroundCost,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    s: MinibatchSettings,
    plan_out: list | None,
) -> OTResult:
    t0 = time.perf_counter()
    s = s.checked()
    block_solver = resolve_block_solver(s.block_solver, cost.device)
    a = as_weights(a, cost.n, dataset="a", device=cost.device)
    b = as_weights(b, cost.m, dataset="b", device=cost.device)
    gen = torch.Generator().manual_seed(int(s.seed))
    ledger = Ledger(budget=math.inf if s.budget is None else float(s.budget))
    Zx, Zy = cost.features_x.to(torch.float64), cost.features_y.to(torch.float64)
    BX, BY = make_blocks(Zx, a, Zy, b, s.partition, s.batch_size, gen)
    store = BlockSolves(cost, BX, BY, block_solver, ledger)
    cp = block_coupling(store, s.partition, s.coupling, s.n_permutations, gen)
    single = store.kx == 1 and store.ky == 1  # one block pair: already the exact plan
    searching = s.coupling in ("optimal", "colgen")
    rounds = s.refine if not single and (not searching or cp.proven) else 0
    ref = refine_rounds(
        store, glue_plan(store, cp.G), cp.upper, block_duals(store, cp.G), Zx, a, Zy, b,
        rounds=rounds, batch_size=s.batch_size, gen=gen,
    )  # fmt: skip
    # the plan's float64 cost, made rigorous (evaluation and marginal round-off; issue 13)
    ub = certified_upper_support(cost, ref.plan.px, ref.plan.qy, ref.plan.mass, a, b, ref.upper)
    if plan_out is not None:
        plan_out.append((ref.plan.px, ref.plan.qy, ref.plan.mass))
    if s.lower == "none":
        lo = None
    else:
        d = ref.duals
        lo = lower_bound(
            cost, a, b, d.f, d.g, d.lab_x, d.lab_y, upper=ub, rounds=s.lower_rounds,
            sinkhorn_iters=s.lower_sinkhorn, batch_size=s.batch_size, features=(Zx, Zy),
            gen=gen, single_block=single,
        )  # fmt: skip
    # Ground costs are non-negative (GroundCost protocol), so OT >= 0 is itself certified;
    # never report lower > upper from round-off (both remain valid)
    lb = -math.inf if lo is None else min(max(lo.lower, 0.0), ub)
    extra = {
        "blocks": [store.kx, store.ky],
        "upper_base": cp.upper_base,
        "upper_coupling": cp.upper,
        "upper_history": ref.history,
        **({"coupling_optimal_proven": cp.proven} if cp.searched else {}),
        **({} if lo is None else lo.extra),
        "solves_budget": s.budget,
        "bytes_moved": ledger.bytes_moved,
    }
    return OTResult(
        value=ub if lo is None else 0.5 * (lb + ub),
        lower=lb,
        upper=ub,
        certified=lo is not None,
        lower_certified=lo is not None,
        upper_certified=True,
        method=f"minibatch[{s.partition},{s.coupling}]",
        n_solves=ledger.n_solves,
        seconds=time.perf_counter() - t0,
        params={  # the options applied (refinement rounds and dual ascent as run)
            "batch_size": int(s.batch_size),
            "budget": s.budget,
            "partition": s.partition,
            "coupling": s.coupling,
            "seed": int(s.seed),
            "refine": int(rounds),
            "block_solver": block_solver,
            "lower": s.lower,
            **({"n_permutations": int(s.n_permutations)} if s.coupling == "union" else {}),
            **({} if lo is None else {"lower_rounds": int(s.lower_rounds)}),
            **({} if lo is None else {"lower_sinkhorn": lo.ascent_iters}),
        },
        converged=ledger.converged,
        extra=extra,
    )
