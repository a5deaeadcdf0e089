"""Anytime certified bounds, to a target width: a warm start (the mini-batch bounds, or
nothing) then rounds of the sparse exact route (:class:`otaudit.core.sparse.SparseOT`) until
``gap_rel <= target_gap``, the time limit or the round budget is spent.

Every round yields a certified interval; the one returned is the running intersection
(``lower`` = max of the lowers, ``upper`` = min of the uppers), so it never widens between
rounds. ``extra["history"]`` lists ``(seconds, lower, upper)`` after each round (the running
interval), and ``progress(round, lower, upper)`` is called with the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import config
from ..errors import InputError
from . import parallel
from .arrays import as_weights
from .costs import GroundCost
from .result import OTResult, relative_gap
from .sparse import SparseOT

__all__ = ["anytime_bounds", "check_anytime_knobs", "sparse_ot", "STARTS"]

STARTS = ("sparse", "minibatch")
#: relative width at or below which an interval counts as closed (exact, certified optimal):
#: the integer-cost resolution of the sparse route is ~1e-12 of the cost range.
CLOSED_REL = 1e-9


def check_anytime_knobs(target_gap: Any, time_limit: Any, progress: Any) -> None:
    """One-line :class:`InputError` for bad anytime knobs."""
    if isinstance(target_gap, bool) or not isinstance(target_gap, (int, float)):
        raise InputError(
            f"target_gap must be a number >= 0, got {target_gap!r}",
            field="target_gap",
            fix="pass a relative width such as target_gap=0.01 (1 %), or 0 for exact",
        )
    if not (target_gap >= 0) or math.isnan(target_gap):
        raise InputError(
            f"target_gap must be >= 0, got {target_gap!r}",
            field="target_gap",
            fix="pass a relative width such as target_gap=0.01 (1 %), or 0 for exact",
        )
    if time_limit is not None and (
        isinstance(time_limit, bool)
        or not isinstance(time_limit, (int, float))
        or not time_limit > 0
        or math.isnan(time_limit)
    ):
        raise InputError(
            f"time_limit must be None or a number of seconds > 0, got {time_limit!r}",
            field="time_limit",
            fix="pass e.g. time_limit=60, or None for no limit",
        )
    if progress is not None and not callable(progress):
        raise InputError(
            f"progress must be None or a callable (round, lower, upper), got {progress!r}",
            field="progress",
            fix="pass a function such as lambda r, lo, up: print(r, lo, up)",
        )


def _round_info(r: Any) -> dict[str, Any]:
    """What ``extra["sparse_rounds"]`` records of one sparse round."""
    keep = ("lower", "upper", "optimal", "n_edges", "n_violating", "seconds")
    return {**{k: getattr(r, k) for k in keep}, **r.info}


def _minibatch_only(mb: OTResult, history: list, target_gap: float, reached: bool) -> OTResult:
    """The mini-batch result itself when no sparse round ran (its ``lower="none"`` and its
    block solves' convergence stand); whether the target was met goes into ``extra``."""
    return mb.replace(
        params={**mb.params, "target_gap": target_gap},
        extra={**mb.extra, "history": history, "target_gap": target_gap, "target_reached": reached},
    )


def anytime_bounds(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    start: str = "sparse",
    target_gap: float = config.TARGET_GAP,
    time_limit: float | None = None,
    max_rounds: int = config.SPARSE_MAX_ROUNDS,
    progress: Callable[[int, float, float], None] | None = None,
    minibatch_options: dict[str, Any] | None = None,
    f0: torch.Tensor | None = None,
    k: int = config.SPARSE_KNN,
    k_add: int = config.SPARSE_ADD_PER_COLUMN,
    executor: Any = None,
    plan_out: list | None = None,
) -> OTResult:
    """Certified bounds on ``OT(a, b)`` improved until ``gap_rel <= target_gap``.

    Args:
        cost: any :class:`otaudit.core.costs.GroundCost` (non-negative).
        a, b: weights ``[n]``, ``[m]`` (None: uniform).
        start: ``"sparse"`` (round 1 is the sparse exact route from reduced-cost nearest
            neighbours) or ``"minibatch"`` (round 0 is :func:`minibatch_bounds` with
            ``minibatch_options``; the sparse rounds follow only while the target is not met).
        target_gap: relative width ``(upper - lower) / upper`` to stop at (0: run to the
            certified optimum, i.e. ``gap_rel <= 1e-9``).
        time_limit: seconds (None: no limit). Checked before each round: a round is started
            only if the time spent plus the last round's duration fits, so the limit is
            exceeded by at most one round (the first round always runs).
        max_rounds: sparse rounds at most (the solve budget of the sparse route); with
            ``start="minibatch"`` and a mini-batch ``budget``, each sparse round counts as one
            solve against that budget too.
        progress: called as ``progress(round, lower, upper)`` after every round.
        executor: a :class:`concurrent.futures.Executor` for the independent work of the
            rounds (:mod:`otaudit.core.parallel`); None: in process. Same result either way.
        plan_out: a list; when given and a sparse round ran, ``(rows, cols, mass)`` (torch,
            on the cost's device) of the feasible plan whose cost is the returned ``upper``
            (the round that set it) is appended: what :func:`otaudit.otdd_flow` follows.
    Returns:
        OTResult with the running certified interval; ``converged`` = target reached;
        ``extra["history"]`` = ``[(seconds, lower, upper), ...]``; ``method`` names the
        route(s) that ran (``"sparse"``, ``"minibatch[...]"``, ``"minibatch[...]+sparse"``).
    """
    with parallel.using(executor):
        t0 = time.perf_counter()
        check_anytime_knobs(target_gap, time_limit, progress)
        _check_start(start, max_rounds)
        dev = cost.device
        a = as_weights(a, cost.n, dataset="a", device=dev)
        b = as_weights(b, cost.m, dataset="b", device=dev)
        target = max(float(target_gap), CLOSED_REL)
        lo, up = 0.0, math.inf  # costs are non-negative: OT >= 0 is certified
        history: list[tuple[float, float, float]] = []
        rounds_info: list[dict[str, Any]] = []
        extra: dict[str, Any] = {}
        params: dict[str, Any] = {}
        methods: list[str] = []
        n_solves = 0
        last = 0.0
        rnd = 0

        def record(r_lo: float, r_up: float) -> None:
            nonlocal lo, up
            lo, up = max(lo, r_lo), min(up, r_up)
            lo = min(lo, up)  # round-off only; both stay valid
            history.append((time.perf_counter() - t0, lo, up))
            if progress is not None:
                progress(rnd, lo, up)

        def time_left() -> bool:
            if time_limit is None:
                return True
            spent = time.perf_counter() - t0
            return spent + last <= time_limit

        if start == "minibatch":
            from .minibatch import minibatch_bounds

            t_r = time.perf_counter()
            mb = minibatch_bounds(cost, a, b, **(minibatch_options or {}))
            last = time.perf_counter() - t_r
            methods.append(mb.method)
            extra.update(mb.extra)
            params.update(mb.params)
            n_solves += mb.n_solves
            record(mb.lower, mb.upper)
            budget = (minibatch_options or {}).get("budget")
            if budget is not None:  # the solve budget covers the sparse rounds too (one each)
                max_rounds = min(max_rounds, max(0, int(budget) - mb.n_solves))
        sp: SparseOT | None = None
        best_plan: tuple | None = None
        optimal = False
        while relative_gap(lo, up) > target and rnd < max_rounds and (rnd == 0 or time_left()):
            if start == "minibatch" and not time_left():
                break
            if sp is None:
                sp = SparseOT(cost, a, b, f0=f0, k=k, k_add=k_add)
            rnd += 1
            r = sp.round()
            last = r.seconds
            n_solves += 1
            rounds_info.append(_round_info(r))
            if plan_out is not None and r.upper < up:  # this round's plan sets the upper
                best_plan = sp.plan
            record(r.lower, r.upper)
            if r.optimal:
                optimal = True
                break
        if start == "minibatch" and sp is None:
            # no sparse round ran: the mini-batch result itself (its ``lower="none"`` and its
            # block solves' convergence stand); whether the target was met is in ``extra``
            return _minibatch_only(mb, history, float(target_gap), relative_gap(lo, up) <= target)
        if sp is not None:
            methods.append("sparse")
        if plan_out is not None and best_plan is not None:
            plan_out.append(_plan_tensors(best_plan, dev))
        gap = relative_gap(lo, up)
        converged = gap <= target
        extra.update(
            history=history,
            sparse_rounds=rounds_info,
            certified_optimal=bool(gap <= CLOSED_REL),
            restricted_optimal=optimal,
            target_gap=float(target_gap),
        )
        params.update(
            {
                "target_gap": float(target_gap),
                "time_limit": time_limit,
                "start": start,
                "max_rounds": int(max_rounds),
            }
        )
        return OTResult(
            value=up if gap <= CLOSED_REL else 0.5 * (lo + up),
            lower=lo,
            upper=up,
            certified=True,
            method="+".join(methods),
            n_solves=n_solves,
            seconds=time.perf_counter() - t0,
            params=params,
            converged=bool(converged),
            extra=extra,
        )


def _check_start(start: Any, max_rounds: Any) -> None:
    if start not in STARTS:
        raise InputError(
            f"unknown start {start!r}", field="start", fix=f"use one of {', '.join(STARTS)}"
        )
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 0:
        raise InputError(
            f"max_rounds must be an integer >= 0, got {max_rounds!r}",
            field="max_rounds",
            fix="pass e.g. max_rounds=30",
        )


def _plan_tensors(plan: tuple, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """A sparse round's ``(rows, cols, mass)`` (numpy) as torch tensors on ``dev``."""
    Ip, Jp, P = plan
    return (
        torch.from_numpy(np.ascontiguousarray(Ip, dtype=np.int64)).to(dev),
        torch.from_numpy(np.ascontiguousarray(Jp, dtype=np.int64)).to(dev),
        torch.from_numpy(np.ascontiguousarray(P, dtype=np.float64)).to(dev),
    )


def sparse_ot(
    cost: GroundCost,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    target_gap: float = 0.0,
    time_limit: float | None = None,
    max_rounds: int = config.SPARSE_MAX_ROUNDS,
    progress: Callable[[int, float, float], None] | None = None,
    f0: torch.Tensor | None = None,
    k: int = config.SPARSE_KNN,
    k_add: int = config.SPARSE_ADD_PER_COLUMN,
) -> OTResult:
    """The sparse exact route alone, run until optimal (``target_gap=0``), or until
    ``gap_rel <= target_gap``, ``time_limit`` seconds or ``max_rounds`` rounds. See
    :func:`otaudit.core.anytime.anytime_bounds` for the warm-started anytime driver."""
    return anytime_bounds(
        cost,
        a,
        b,
        start="sparse",
        target_gap=target_gap,
        time_limit=time_limit,
        max_rounds=max_rounds,
        progress=progress,
        f0=f0,
        k=k,
        k_add=k_add,
    )
