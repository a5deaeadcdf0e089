"""The one dispatcher :func:`solve_ot` (exact LP, full-problem Sinkhorn, mini-batch bounds)
and :func:`ot_bounds`, the squared-Euclidean entry point."""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

import torch

from .. import config
from ..errors import InputError
from .arrays import as_points, as_weights, check_pair, device_of
from .certify import exact_interval, scale_points, unscale_result
from .costs import GroundCost, SqEuclidean
from .exact import emd
from .minibatch import check_knobs, minibatch_bounds
from .result import OTResult
from .sinkhorn import sinkhorn_bounds

__all__ = ["solve_ot", "exact_ot", "ot_bounds", "SOLVERS"]

SOLVERS = ("auto", "exact", "sinkhorn", "minibatch")


def _weights(w: Any, n: int, device: torch.device, name: str) -> torch.Tensor:
    return as_weights(w, n, dataset=name, device=device)


def exact_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    max_iter: int | None = None,
) -> OTResult:
    """Exact OT with POT's network simplex on the full ``[n, m]`` float64 cost matrix."""
    t0 = time.perf_counter()
    a = _weights(a, cost.n, cost.device, "a")
    b = _weights(b, cost.m, cost.device, "b")
    sol = emd(a, b, cost.block(None, None), max_iter=max_iter)
    lo, up = exact_interval(cost, sol, a, b)  # issue 13: verified, for the real cost
    return OTResult(
        value=min(max(sol.cost, lo), up),
        lower=lo,
        upper=up,
        certified=True,
        method="exact",
        n_solves=1,
        seconds=time.perf_counter() - t0,
        params={"solver": "exact"},
        converged=True,
        extra={"bytes_moved": 8 * cost.n * cost.m},
    )


# ----------------------------------------------------------------------------------------
# dispatcher and public entry point
# ----------------------------------------------------------------------------------------
@functools.cache
def _solver_options() -> dict[str, frozenset[str]]:
    """The keyword options each solver of :func:`solve_ot` takes (from its signature)."""
    fns = {"exact": exact_ot, "sinkhorn": sinkhorn_bounds, "minibatch": minibatch_bounds}
    return {
        k: frozenset(inspect.signature(f).parameters) - {"cost", "a", "b"} for k, f in fns.items()
    }


def _options_for(solver: str, opts: dict[str, Any], auto: bool) -> dict[str, Any]:
    """The options of ``opts`` that ``solver`` takes (see :func:`solve_ot`)."""
    takes = _solver_options()
    out: dict[str, Any] = {}
    for key, v in opts.items():
        if key in takes[solver]:
            out[key] = v
            continue
        owners = [k for k, names in takes.items() if key in names]
        if owners and auto:
            continue  # a knob of the solver auto did not pick
        raise InputError(
            f"option {key!r} does not apply to solver={solver!r}"
            + (f" (it is an option of solver={owners[0]!r})" if owners else ""),
            field=key,
            fix=f"use solver={owners[0]!r} or drop {key!r}"
            if owners
            else "options: " + ", ".join(sorted(set().union(*takes.values()))),
        )
    return out


def solve_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    solver: str = "auto",
    **opts: Any,
) -> OTResult:
    """Solve (or certifiably bound) OT for any ground cost.

    ``solver``: ``"exact"`` (POT network simplex on the full cost; value = lower = upper),
    ``"sinkhorn"`` (:func:`sinkhorn_bounds`), ``"minibatch"`` (:func:`minibatch_bounds`), or
    ``"auto"``: exact when ``n*m <= config.EXACT_MAX_ENTRIES``, else mini-batch.
    ``opts`` go to the chosen solver; with ``"auto"``, options of the solvers it did not
    choose (e.g. ``batch_size`` or ``block_solver`` on a pair small enough for the exact LP)
    are ignored. An option no solver takes, or one the named solver does not take, is an
    :class:`InputError`.
    """
    if solver not in SOLVERS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SOLVERS)}"
        )
    auto = solver == "auto"
    if auto:
        solver = "exact" if cost.n * cost.m <= config.EXACT_MAX_ENTRIES else "minibatch"
    opts = _options_for(solver, opts, auto)
    if solver == "exact":
        return exact_ot(cost, a, b, **opts)
    if solver == "sinkhorn":
        return sinkhorn_bounds(cost, a, b, **opts)
    return minibatch_bounds(cost, a, b, **opts)


def ot_bounds(
    X: Any,
    Y: Any,
    *,
    batch_size: int | None = None,
    budget: int | None = None,
    partition: str | None = None,
    coupling: str | None = None,
    seed: int = config.SEED,
    a: Any = None,
    b: Any = None,
    solver: str = "auto",
    **opts: Any,
) -> OTResult:
    """Certified bounds on ``W_2^2(X, Y)`` (squared Euclidean ground cost).

    ``X [n, d]``, ``Y [m, d]``: numpy arrays or torch tensors (CPU/CUDA, float32/float64;
    computed in float64 on the input's device). ``a``, ``b``: optional weights.

    Exact by default when small: with ``solver="auto"`` and none of ``batch_size``,
    ``budget``, ``partition``, ``coupling`` given, problems with
    ``n*m <= config.EXACT_MAX_ENTRIES`` (2500 x 2500) are solved exactly (width 0).
    Giving any of those knobs (or another option of :func:`minibatch_bounds` such as
    ``refine`` or ``block_solver``), or ``solver="minibatch"``, runs the mini-batch bounds
    (:func:`minibatch_bounds`; defaults ``config.BATCH_SIZE``, ``config.BUDGET``,
    ``config.PARTITION``, ``config.COUPLING``). ``solver="sinkhorn"`` runs the certified
    full-problem Sinkhorn.

    Returns OTResult: ``lower``/``upper`` certified; ``value`` = their midpoint (exact
    value for an exact solve); ``n_solves`` = block OT solves done.
    """
    mb_only = _solver_options()["minibatch"] - _solver_options()["exact"]
    forced = any(v is not None for v in (batch_size, budget, partition, coupling)) or any(
        k in mb_only for k in opts
    )
    batch_size = config.BATCH_SIZE if batch_size is None else batch_size
    budget = config.BUDGET if budget is None else budget
    partition = config.PARTITION if partition is None else partition
    coupling = config.COUPLING if coupling is None else coupling
    check_knobs(batch_size, budget, partition, coupling, opts.get("refine", 0))
    if solver not in SOLVERS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SOLVERS)}"
        )
    dev = device_of(X, Y)
    Xt = as_points(X, name="X", device=dev)
    Yt = as_points(Y, name="Y", device=dev)
    check_pair(Xt, Yt)
    Xt, Yt, s2 = scale_points(Xt, Yt)  # issue 13: extreme scales, exact power of two
    cost = SqEuclidean(Xt, Yt)
    if solver == "auto":
        small = cost.n * cost.m <= config.EXACT_MAX_ENTRIES
        solver = "exact" if (small and not forced) else "minibatch"
    if solver == "minibatch":
        res = minibatch_bounds(
            cost,
            a,
            b,
            batch_size=batch_size,
            budget=budget,
            partition=partition,
            coupling=coupling,
            seed=seed,
            **opts,
        )
    else:
        res = solve_ot(cost, a, b, solver=solver, **opts)
    res = unscale_result(res, s2)
    return res.replace(
        params={**res.params, "solver": solver, "n": cost.n, "m": cost.m, "d": int(Xt.shape[1])}
    )
