"""The one dispatcher :func:`solve_ot` (exact LP, full-problem Sinkhorn, mini-batch bounds)
and :func:`ot_bounds`, the squared-Euclidean entry point."""

from __future__ import annotations

import time
from typing import Any

import torch

from .. import config
from . import parallel
from .anytime import anytime_bounds, check_anytime_knobs
from .arrays import as_points, as_weights, check_pair, device_of
from .certify import exact_interval, scale_points, unscale_result
from .costs import GroundCost, SqEuclidean, has_lower_block
from .exact import emd
from .result import OTResult
from .routes import choose_route, dense_fits
from .settings import (
    SOLVERS,
    ExactSettings,
    Settings,
    SinkhornSettings,
    SparseSettings,
    check_knobs,
    check_solver,
    options_of,
    solver_settings,
)
from .sinkhorn import sinkhorn_bounds

__all__ = ["solve_ot", "exact_ot", "ot_bounds", "pick_solver", "applied_options", "SOLVERS"]


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
    sol = emd(a, b, cost.block(None, None), max_iter=max_iter, overwrite=True)
    lo, up = exact_interval(cost, sol, a, b)  # issue 13: verified, for the real cost
    value = min(max(sol.cost, lo), up)
    # SPEC: an exact solve reports lower == upper == value. The LP was verified optimal
    # (plan feasible, duals feasible, duality gap checked on the rescaled cost), so the
    # rigorous interval differs from the value only by float64 evaluation round-off; it is
    # kept in ``extra["rigorous_interval"]``. A verification that leaves more than
    # ``config.EXACT_ROUNDOFF_REL`` of width reports that interval instead (kind "bracketed").
    exact = up - lo <= config.EXACT_ROUNDOFF_REL * max(up, 0.0)
    return OTResult(
        value=value,
        lower=value if exact else lo,
        upper=value if exact else up,
        certified=True,
        method="exact",
        n_solves=1,
        seconds=time.perf_counter() - t0,
        params={"solver": "exact", **({} if max_iter is None else {"max_iter": int(max_iter)})},
        converged=True,  # the network simplex reached optimality (emd raises otherwise)
        extra={"bytes_moved": 8 * cost.n * cost.m, "rigorous_interval": [lo, up]},
    )


# ----------------------------------------------------------------------------------------
# dispatcher and public entry point
# ----------------------------------------------------------------------------------------
def run_settings(
    cost: GroundCost,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    settings: Settings,
    anytime: dict[str, Any] | None = None,
) -> OTResult:
    """Run the solver that ``settings`` are for; the mini-batch and sparse routes are
    anytime (:func:`otaudit.core.anytime.anytime_bounds` with the knobs ``anytime``:
    ``target_gap``, ``time_limit``, ``progress``)."""
    if isinstance(settings, ExactSettings):
        return exact_ot(cost, a, b, **settings.options())
    if isinstance(settings, SinkhornSettings):
        return sinkhorn_bounds(cost, a, b, **settings.options())
    anytime = anytime or {}
    if isinstance(settings, SparseSettings):
        return anytime_bounds(cost, a, b, start="sparse", **anytime)
    settings.checked()
    return anytime_bounds(
        cost, a, b, start="minibatch", minibatch_options=settings.options(), **anytime
    )


def solve_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    solver: str = "auto",
    target_gap: float = config.TARGET_GAP,
    time_limit: float | None = None,
    progress: Any = None,
    executor: Any = None,
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
    mini-batch when not even the sparse route fits); exact wherever the dense LP fits
    (:func:`auto_anytime`).
    ``opts`` go to the chosen solver; with ``"auto"``, options of the solvers it did not
    choose (e.g. ``batch_size`` or ``block_solver`` on a pair small enough for the exact LP)
    are ignored. An option no solver takes, or one the named solver does not take, is an
    :class:`InputError`.

    ``executor``: any :class:`concurrent.futures.Executor` (thread/process pool, Dask's
    ``client.get_executor()``) for the independent work of the mini-batch and sparse routes
    (block solves, c-transform tiles, k-means assignment; :mod:`otaudit.core.parallel`);
    None: in process. The result is the same to the bit either way.
    """
    check_solver(solver)
    auto = solver == "auto"
    check_anytime_knobs(target_gap, time_limit, progress)
    anytime = {"target_gap": target_gap, "time_limit": time_limit, "progress": progress}
    d = int(cost.features_x.shape[1])
    solver = pick_solver(solver, cost.n, cost.m, d, fast=has_lower_block(cost))
    if auto:
        anytime = auto_anytime(solver, cost.n, cost.m, anytime)
    with parallel.using(executor):
        return run_settings(cost, a, b, solver_settings(solver, opts, auto=auto), anytime)


def auto_anytime(route: str, n: int, m: int, anytime: dict[str, Any]) -> dict[str, Any]:
    """``solver="auto"`` answers exactly wherever the dense LP fits: when the cost model
    (:func:`otaudit.core.routes.exact_route`) predicts the sparse route cheaper there, that
    route runs to certified optimality (``target_gap=0``), so auto never trades the exact
    answer of a problem the LP could solve for speed."""
    if route == "sparse" and dense_fits(n, m):
        return {**anytime, "target_gap": 0.0}
    return anytime


def pick_solver(solver: str, n: int, m: int, d: int = 1, fast: bool = True) -> str:
    """The solver :func:`solve_ot` runs for ``solver`` on an ``n x m`` problem in ``d``
    dimensions (``"auto"``: :func:`otaudit.core.routes.choose_route`, the measured cost
    model: dense exact LP, sparse exact route, or mini-batch bounds; ``fast=False`` for a
    cost without the certified float32 block, whose sparse passes run in float64)."""
    if solver != "auto":
        return solver
    return choose_route(n, m, d, fast=fast)


def applied_options(
    solver: str, n: int, m: int, opts: dict[str, Any], d: int = 1, fast: bool = True
) -> dict[str, Any]:
    """The options of ``opts`` that :func:`solve_ot` applies on an ``n x m`` problem (with
    ``"auto"`` it ignores those of the solvers it does not pick)."""
    takes = options_of(pick_solver(solver, n, m, d, fast))
    return {k: v for k, v in opts.items() if k in takes}


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
    executor: Any = None,
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
    width 0) or the sparse exact route, whichever it predicts cheaper. Where the dense LP
    fits (``config.EXACT_MEMORY_BYTES``) the answer is exact either way: the sparse route
    then runs to certified optimality (width ~1e-11 relative: the integer-cost resolution;
    ``target_gap`` does not apply, :func:`auto_anytime`). Beyond, the sparse route rounds
    until ``gap_rel <= target_gap``.
    Giving any of those knobs (or another option of :func:`minibatch_bounds` such as
    ``refine`` or ``block_solver``), or ``solver="minibatch"``, runs the mini-batch bounds
    (:func:`minibatch_bounds`; defaults ``config.BATCH_SIZE``, ``config.BUDGET``,
    ``config.PARTITION``, ``config.COUPLING``). ``solver="sinkhorn"`` runs the certified
    full-problem Sinkhorn.

    ``executor``: as for :func:`solve_ot` (same numbers to the bit; not in ``params``).

    Returns OTResult: ``lower``/``upper`` certified; ``value`` = their midpoint (exact
    value for an exact solve); ``n_solves`` = block OT solves done.
    """
    mb_only = options_of("minibatch") - options_of("exact")
    forced = any(v is not None for v in (batch_size, budget, partition, coupling)) or any(
        k in mb_only for k in opts
    )
    batch_size = config.BATCH_SIZE if batch_size is None else batch_size
    budget = config.BUDGET if budget is None else budget
    partition = config.PARTITION if partition is None else partition
    coupling = config.COUPLING if coupling is None else coupling
    check_knobs(batch_size, budget, partition, coupling, opts.get("refine", 0))
    check_solver(solver)
    dev = device_of(X, Y)
    Xt = as_points(X, name="X", device=dev)
    Yt = as_points(Y, name="Y", device=dev)
    check_pair(Xt, Yt)
    Xt, Yt, s2 = scale_points(Xt, Yt)  # issue 13: extreme scales, exact power of two
    cost = SqEuclidean(Xt, Yt)
    check_anytime_knobs(target_gap, time_limit, progress)
    if progress is not None and s2 != 1.0:  # report the interval in the data's own units
        progress = _unscaled_progress(progress, s2)
    anytime = {"target_gap": target_gap, "time_limit": time_limit, "progress": progress}
    if solver == "auto":
        solver = "minibatch" if forced else choose_route(cost.n, cost.m, int(Xt.shape[1]))
        anytime = auto_anytime(solver, cost.n, cost.m, anytime)
    with parallel.using(executor):
        if solver == "minibatch":
            knobs = dict(
                batch_size=batch_size, budget=budget, partition=partition, coupling=coupling
            )
            settings = solver_settings("minibatch", {**opts, **knobs, "seed": seed})
            res = run_settings(cost, a, b, settings, anytime)
        else:
            res = solve_ot(cost, a, b, solver=solver, **anytime, **opts)
    res = unscale_result(res, s2)
    return res.replace(
        params={**res.params, "solver": solver, "n": cost.n, "m": cost.m, "d": int(Xt.shape[1])}
    )


def _unscaled_progress(progress: Any, s2: float) -> Any:
    """``progress`` seeing the interval of data scaled by ``s2`` (a power of two, see
    :func:`otaudit.core.certify.scale_points`) in the original units, as the result is."""

    def unscaled(rnd: int, lower: float, upper: float) -> None:
        lo, up = lower / s2, upper / s2
        progress(rnd, min(lo, up), up)

    return unscaled
