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
from .anytime import anytime_bounds, check_anytime_knobs  # issue 12 (sparse12)
from .arrays import as_points, as_weights, check_pair, device_of
from .costs import GroundCost, SqEuclidean
from .exact import emd
from .minibatch import check_knobs, minibatch_bounds
from .result import OTResult
from .routes import choose_route  # issue 12 (sparse12)
from .sinkhorn import sinkhorn_bounds

__all__ = ["solve_ot", "exact_ot", "ot_bounds", "SOLVERS"]

SOLVERS = ("auto", "exact", "sinkhorn", "minibatch", "sparse")


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
    return OTResult(
        value=sol.cost,
        lower=sol.cost,
        upper=sol.cost,
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
    out = {
        k: frozenset(inspect.signature(f).parameters) - {"cost", "a", "b"} for k, f in fns.items()
    }
    out["sparse"] = frozenset()  # issue 12: the sparse route takes only the anytime knobs
    return out


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
    target_gap: float = config.TARGET_GAP,
    time_limit: float | None = None,
    progress: Any = None,
    **opts: Any,
) -> OTResult:
    """Solve (or certifiably bound) OT for any ground cost.

    Anytime (issue 12): ``"minibatch"`` and ``"sparse"`` keep improving the certified interval
    until ``gap_rel <= target_gap``, ``time_limit`` seconds or the solve budget
    (:func:`otaudit.core.anytime.anytime_bounds`); ``"sparse"`` is the sparse exact route
    (:mod:`otaudit.core.sparse`); ``"auto"`` picks exact / sparse / minibatch with the measured
    cost model of :func:`otaudit.core.routes.choose_route`.

    ``solver``: ``"exact"`` (POT network simplex on the full cost; value = lower = upper),
    ``"sinkhorn"`` (:func:`sinkhorn_bounds`), ``"minibatch"`` (:func:`minibatch_bounds`), or
    ``"auto"``: :func:`otaudit.core.routes.choose_route` (exact LP, sparse exact route, or
    mini-batch when not even the sparse route fits).
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
    check_anytime_knobs(target_gap, time_limit, progress)
    if auto:
        solver = choose_route(cost.n, cost.m, int(cost.features_x.shape[1]))
    opts = _options_for(solver, opts, auto)
    if solver == "exact":
        return exact_ot(cost, a, b, **opts)
    if solver == "sinkhorn":
        return sinkhorn_bounds(cost, a, b, **opts)
    anytime = {"target_gap": target_gap, "time_limit": time_limit, "progress": progress}
    if solver == "sparse":
        return anytime_bounds(cost, a, b, start="sparse", **anytime)
    return anytime_bounds(cost, a, b, start="minibatch", minibatch_options=opts, **anytime)


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
    target_gap: float = config.TARGET_GAP,
    time_limit: float | None = None,
    progress: Any = None,
    **opts: Any,
) -> OTResult:
    """Certified bounds on ``W_2^2(X, Y)`` (squared Euclidean ground cost).

    Anytime (issue 12): keeps improving the certified interval until ``gap_rel <=
    target_gap`` (default ``config.TARGET_GAP``, 1 %), ``time_limit`` seconds or the solve
    budget; ``progress(round, lower, upper)`` is called after each round;
    ``extra["history"]`` lists ``(seconds, lower, upper)``. ``solver="auto"`` without mini-batch
    knobs picks the exact LP or the sparse exact route by the cost model of
    :func:`otaudit.core.routes.choose_route` (``method`` says which ran).

    ``X [n, d]``, ``Y [m, d]``: numpy arrays or torch tensors (CPU/CUDA, float32/float64;
    computed in float64 on the input's device). ``a``, ``b``: optional weights.

    With ``solver="auto"`` and none of ``batch_size``, ``budget``, ``partition``,
    ``coupling`` given, :func:`otaudit.core.routes.choose_route` picks the dense LP (exact,
    width 0) or the sparse exact route (rounds until ``gap_rel <= target_gap``; with
    ``target_gap=0`` until certified optimal, width ~1e-11 relative: the integer-cost
    resolution), whichever it predicts cheaper.
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
    cost = SqEuclidean(Xt, Yt)
    anytime = {"target_gap": target_gap, "time_limit": time_limit, "progress": progress}
    check_anytime_knobs(target_gap, time_limit, progress)
    if solver == "auto":
        solver = "minibatch" if forced else choose_route(cost.n, cost.m, int(Xt.shape[1]))
    if solver == "minibatch":
        mb = dict(batch_size=batch_size, budget=budget, partition=partition, coupling=coupling)
        res = anytime_bounds(
            cost, a, b, start="minibatch", minibatch_options={**mb, "seed": seed, **opts}, **anytime
        )
    else:
        res = solve_ot(cost, a, b, solver=solver, **anytime, **opts)
    return res.replace(
        params={**res.params, "solver": solver, "n": cost.n, "m": cost.m, "d": int(Xt.shape[1])}
    )
