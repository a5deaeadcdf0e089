"""Optimal Transport Dataset Distance (OTDD).

Alvarez-Melis & Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.
A dataset ``D = {(x_i, y_i)}`` (uniform weights) is a distribution over labeled points; the
ground cost between two labeled points is

.. math::

    c((x, y), (x', y')) = \\lambda_x \\|x - x'\\|^2 + \\lambda_y W_2^2(\\alpha_y, \\alpha_{y'})

where ``alpha_y`` is the empirical distribution of the features with label ``y``, and

.. math::

    \\mathrm{OTDD}^2(D_1, D_2) = \\min_{\\pi \\in U(a, b)} \\langle \\pi, c \\rangle .

The label-to-label term ``W_2^2(alpha_y, alpha_y')`` ("label table") is computed either
``inner="exact"`` (exact OT between the two class point clouds, squared-Euclidean cost; beyond
``config.OTDD_INNER_EXACT_MAX`` points per side certified bounds from :func:`solve_ot`) or
``inner="gaussian"`` (``||mu - mu'||^2 + Bures^2(S, S')`` with unbiased class covariances,
see :mod:`otaudit.gaussian`).

Per-dataset work (validation, class statistics, covariance roots, the within-dataset label
table) lives in :class:`DatasetStats`, computed once per dataset by :func:`dataset_stats`;
per-pair work (the cross label table and the outer OT problem) in :func:`otdd_from_stats`.
:func:`otdd_matrix` computes a registry's matrix from N dataset passes plus N(N-1)/2 pairs.

Certification: OT is monotone in the ground cost, so when the label table is only bounded
(``lower <= W <= upper`` entry-wise), solving the outer problem with the lower table and
taking its certified lower bound gives a certified lower bound on OTDD², and likewise for the
upper table.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import config
from ..core.arrays import check_dims, check_pair
from ..core.result import OTResult, distance_of
from ..core.settings import check_solver
from ..core.solve import applied_options, solve_ot
from ..errors import InputError
from .cost import OTDDCost, label_costs
from .labels import LabelTable
from .stats import DatasetStats, dataset_stats

INNER_METHODS = ("exact", "gaussian")
STATS_INNER = ("exact", "gaussian", "both")


def _check_common(inner: str, solver: str, lambda_x: float, lambda_y: float) -> None:
    if inner not in INNER_METHODS:
        raise InputError(
            f"unknown inner {inner!r}", field="inner", fix="use inner='exact' or inner='gaussian'"
        )
    check_solver(solver)
    for nm, v in (("lambda_x", lambda_x), ("lambda_y", lambda_y)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise InputError(
                f"{nm}={v!r} must be a finite number >= 0", field=nm, fix=f"pass e.g. {nm}=1.0"
            )


def _base_params(inner: str, solver: str, lambda_x: float, lambda_y: float) -> dict[str, Any]:
    return {
        "inner": inner,
        "solver": solver,
        "lambda_x": float(lambda_x),
        "lambda_y": float(lambda_y),
    }


def _mixed_labels_error(unlabeled: str) -> InputError:
    return InputError(
        "one dataset is labeled and the other is not",
        dataset=unlabeled,
        field="labels",
        fix="pass labels for both, y=None for both, "
        "or pseudo_labels=k to label the unlabeled one by k-means",
    )


def _identical_result(inner: str, params: dict[str, Any], seconds: float = 0.0) -> OTResult:
    """OTDD² of a dataset with itself: exactly 0 (identity coupling, ``c >= 0``), no solve."""
    return OTResult(
        value=0.0,
        lower=0.0,
        upper=0.0,
        certified=True,
        method=f"otdd[{inner}]:identical-datasets",
        n_solves=0,
        seconds=seconds,
        params=params,
        converged=True,
        extra={"inner_solves": 0, "outer_solves": 0},
    )


def otdd_from_stats(
    sa: DatasetStats,
    sb: DatasetStats,
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    inner_options: dict[str, Any] | None = None,
    class_cache: dict[tuple[str, str, str], tuple[float, float, float, float]] | None = None,
    executor: Any = None,
    progress: Any = None,
    **solver_options: Any,
) -> OTResult:
    """OTDD² between two datasets given their cached :class:`DatasetStats` (per-pair work).

    Computes the cross label table (``Ka x Kb`` inner costs) and solves the outer OT problem
    with :func:`otaudit.solve_ot` (``solver``, ``**solver_options`` passed through). Returns
    an :class:`OTResult` with ``value`` = OTDD², certified ``lower``/``upper``,
    ``distance`` = OTDD. The result is exactly symmetric in (sa, sb), and exactly 0 for
    identical datasets (same fingerprint: the identity coupling has cost 0 and ``c >= 0``).

    Unlabeled statistics (``labeled=False``, both sides): the label term is dropped, so the
    value is plain ``lambda_x * W_2^2``. One labeled and one unlabeled side is an error.

    ``executor``: passed to :func:`otaudit.solve_ot` for the outer problem(s) (mini-batch
    and sparse routes; :mod:`otaudit.core.parallel`); same numbers to the bit, not in
    ``params``.

    ``progress``: ``progress(round, lower, upper)`` after every round of the outer anytime
    solve (sparse or mini-batch routes), the running certified interval on OTDD². With a
    bracketed label table (two outer solves) the first solve reports ``(lower, inf)`` and
    the second ``(the first's final lower, upper)``, so the interval never widens.
    """
    t0 = time.perf_counter()
    _check_common(inner, solver, lambda_x, lambda_y)
    check_dims(sa.d, sb.d, sa.name, sb.name)
    if sa.labeled != sb.labeled:
        raise _mixed_labels_error(sb.name if sa.labeled else sa.name)
    labeled = sa.labeled
    use_labels = labeled and lambda_y > 0
    if use_labels:
        for s in (sa, sb):
            if not s.has_inner(inner):
                raise InputError(
                    "statistics have no class covariances",
                    dataset=s.name,
                    field="inner",
                    fix="compute them with dataset_stats(..., inner='gaussian' or 'both')",
                )
    params: dict[str, Any] = {
        **_base_params(inner, solver, lambda_x, lambda_y),
        "labels": "labeled" if labeled else "unlabeled",
        "n_a": sa.n,
        "n_b": sb.n,
        "classes_a": sa.n_classes if labeled else 0,
        "classes_b": sb.n_classes if labeled else 0,
        "dataset_a": sa.name,
        "dataset_b": sb.name,
    }
    for key, s in (("pseudo_labels_a", sa), ("pseudo_labels_b", sb)):
        if "pseudo_labels" in s.params:
            params[key] = s.params["pseudo_labels"]
    d_outer = sa.d * (2 if use_labels else 1)  # OTDDCost's partition coordinates
    # "auto" ignores some; the OTDD cost has no float32 fast block (fast=False)
    applied = applied_options(solver, sa.n, sb.n, solver_options, d_outer, fast=False)
    if applied:
        params["solver_options"] = {
            k: v for k, v in applied.items() if isinstance(v, (int, float, str, bool, type(None)))
        }
    if sa.fingerprint == sb.fingerprint:
        return _identical_result(inner, params, time.perf_counter() - t0)
    # canonical order -> bitwise-identical results for (a, b) and (b, a)
    if sb.fingerprint < sa.fingerprint:
        sa, sb = sb, sa
    if class_cache is None:  # still dedupe mirrored class pairs within this pair
        class_cache = {}
    if use_labels:
        table = label_costs(
            sa, sb, inner=inner, inner_options=inner_options, class_cache=class_cache
        )
    else:
        z = torch.zeros((sa.n_classes, sb.n_classes), dtype=torch.float64, device=sa.device)
        table = LabelTable(z, z, z, "none")
    ly = float(lambda_y) if use_labels else 0.0

    err = table.error if ly > 0 else None

    def outer(tab: torch.Tensor, report: Any = None) -> OTResult:
        # the table's float margins enter every certificate (OTDDCost.max_abs_error/pair_cost)
        cost = OTDDCost(sa, sb, tab, lambda_x, ly, label_error=err)
        return solve_ot(cost, solver=solver, executor=executor, progress=report, **solver_options)

    if table.exact:
        r = outer(table.value, progress)
        value, lower, upper, outer_results = r.value, r.lower, r.upper, [r]
    else:  # monotonicity of OT in the ground cost carries the inner bounds through
        rounds = [0]

        def first(rnd: int, lo: float, up: float) -> None:  # bounds OTDD² from below only
            rounds[0] = rnd
            progress(rnd, lo, math.inf)

        r_lo = outer(table.lower, first if progress is not None else None)

        def second(rnd: int, lo: float, up: float) -> None:
            progress(rounds[0] + rnd, r_lo.lower, up)

        r_hi = outer(table.upper, second if progress is not None else None)
        outer_results = [r_lo, r_hi]
        if torch.equal(table.value, table.upper):
            r_val = r_hi
        else:
            r_val = outer(table.value)
            outer_results.append(r_val)
        lower, upper = r_lo.lower, r_hi.upper
        value = min(max(r_val.value, lower), upper)
    lower_certified = all(r.lower_certified for r in outer_results)
    upper_certified = all(r.upper_certified for r in outer_results)
    if lower_certified:
        lower = max(lower, 0.0)  # the OTDD cost is non-negative
        value = max(value, lower)
    outer_method = outer_results[0].method
    return OTResult(
        value=float(value),
        lower=float(lower),
        upper=float(upper),
        certified=lower_certified and upper_certified,
        lower_certified=lower_certified,
        upper_certified=upper_certified,
        method=f"otdd[{inner}:{table.method}] outer={outer_method}",
        n_solves=table.n_solves + sum(r.n_solves for r in outer_results),
        seconds=time.perf_counter() - t0,
        params=params,
        converged=table.converged and all(r.converged for r in outer_results),
        extra={
            "inner_solves": table.n_solves,
            "outer_solves": len(outer_results),
            "inner_exact": table.exact,
            "outer": [r.to_dict() for r in outer_results],
        },
    )


def otdd(
    X1: Any,
    y1: Any,
    X2: Any,
    y2: Any,
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    pseudo_labels: int | None = None,
    names: tuple[str, str] = ("D1", "D2"),
    inner_options: dict[str, Any] | None = None,
    executor: Any = None,
    progress: Any = None,
    **solver_options: Any,
) -> OTResult:
    """Optimal Transport Dataset Distance between ``(X1, y1)`` and ``(X2, y2)``.

    Args:
        X1, X2: ``[n, d]`` and ``[m, d]`` features (numpy or torch, CPU/CUDA, float32/64).
        y1, y2: ``[n]``, ``[m]`` labels of any hashable type (label sets may differ), or both
            None (unlabeled: plain ``lambda_x * W_2^2``; or ``pseudo_labels=k`` k-means labels).
        inner: label-to-label cost, ``"exact"`` (OT between class clouds) or ``"gaussian"``.
        solver: outer OT solver for :func:`otaudit.solve_ot` (``"auto"``: the cost model of
            :func:`otaudit.core.routes.choose_route`: dense exact LP, sparse exact route, or
            certified mini-batch bounds when neither fits ``config.EXACT_MEMORY_BYTES``).
        lambda_x, lambda_y: weights of the feature and label terms.
        names: dataset names used in error messages and ``params``.
        inner_options: see :func:`label_costs`.
        executor: any :class:`concurrent.futures.Executor` (thread/process pool, Dask's
            ``client.get_executor()``) for the outer solve's independent work
            (``solver="minibatch"`` or the sparse route); None: in process. Same result to
            the bit either way.
        progress: ``progress(round, lower, upper)`` after every round of the outer anytime
            solve: the running certified interval on OTDD² (:func:`otdd_from_stats`).
        **solver_options: passed to the outer solver (e.g. ``reg``, ``batch_size``).

    Returns:
        :class:`OTResult`: ``value`` = OTDD² (squared), ``lower``/``upper`` certified,
        ``distance`` = OTDD.
    """
    t0 = time.perf_counter()
    _check_common(inner, solver, lambda_x, lambda_y)
    if (y1 is None) != (y2 is None) and pseudo_labels is None:
        raise _mixed_labels_error(names[0] if y1 is None else names[1])
    stats = []
    for X, y, nm in ((X1, y1, names[0]), (X2, y2, names[1])):
        stats.append(
            dataset_stats(
                X,
                y,
                name=nm,
                inner=inner,
                self_tables=False,
                pseudo_labels=pseudo_labels if y is None else None,
            )
        )
    check_pair(stats[0].features, stats[1].features, names[0], names[1])
    r = otdd_from_stats(
        stats[0],
        stats[1],
        inner=inner,
        solver=solver,
        lambda_x=lambda_x,
        lambda_y=lambda_y,
        inner_options=inner_options,
        executor=executor,
        progress=progress,
        **solver_options,
    )
    return r.replace(seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# registry matrices
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OTDDMatrix:
    """An OTDD matrix over a registry of datasets.

    Attributes:
        names: the N dataset names (row/column order).
        fingerprints: their content fingerprints (used to reuse entries incrementally).
        values: ``[N, N]`` float64 OTDD² (symmetric, zero diagonal).
        lower, upper: ``[N, N]`` certified bounds on ``values``.
        results: ``results[i][j]`` the :class:`OTResult` of the pair (same object for
            ``[i][j]`` and ``[j][i]``; an exact zero result on the diagonal).
        params: inner, solver, lambdas and solver options shared by every entry.
        computed: the pairs ``(i, j)``, ``i < j``, computed in this call (others reused).
    """

    names: tuple[str, ...]
    fingerprints: tuple[str, ...]
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    results: tuple[tuple[OTResult, ...], ...]
    params: dict[str, Any]
    computed: tuple[tuple[int, int], ...] = ()

    @property
    def distances(self) -> np.ndarray:
        """``[N, N]`` OTDD = sqrt(OTDD²)."""
        return distance_of(self.values)


def otdd_matrix(
    datasets: Sequence[tuple[str, Any, Any] | DatasetStats],
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    existing: OTDDMatrix | None = None,
    inner_options: dict[str, Any] | None = None,
    **solver_options: Any,
) -> OTDDMatrix:
    """The N x N OTDD² matrix of a registry: N dataset passes + N(N-1)/2 pairs.

    Args:
        datasets: ``(name, X, y)`` tuples and/or precomputed :class:`DatasetStats`.
        existing: a previous :class:`OTDDMatrix` with the same parameters: pairs whose two
            datasets have the same fingerprints there are reused, so adding one dataset
            computes only its new row.
        other arguments: as :func:`otdd`.
    """
    _check_common(inner, solver, lambda_x, lambda_y)
    stats: list[DatasetStats] = []
    for item in datasets:
        if isinstance(item, DatasetStats):
            stats.append(item)
        else:
            nm, X, y = item
            stats.append(dataset_stats(X, y, name=nm, inner=inner, self_tables=False))
    names = tuple(s.name for s in stats)
    if len(set(names)) != len(names):
        dup = next(nm for nm in names if names.count(nm) > 1)
        raise InputError(
            "dataset names must be unique",
            dataset=dup,
            field="name",
            fix="give every dataset its own name",
        )
    params: dict[str, Any] = {
        **_base_params(inner, solver, lambda_x, lambda_y),
        "solver_options": json.dumps(solver_options, sort_keys=True, default=str),
        "inner_options": json.dumps(inner_options or {}, sort_keys=True, default=str),
    }
    old: dict[tuple[str, str], OTResult] = {}
    if existing is not None:
        if existing.params != params:
            raise InputError(
                f"existing matrix was computed with {existing.params}, not {params}",
                field="existing",
                fix="recompute from scratch or pass the same parameters",
            )
        for i, fi in enumerate(existing.fingerprints):
            for j, fj in enumerate(existing.fingerprints):
                if i != j:
                    old[(fi, fj)] = existing.results[i][j]
    N = len(stats)
    # exact inner costs per pair of class clouds, shared by all pairs of this registry
    class_cache: dict[tuple[str, str, str], tuple[float, float, float, float]] = {}
    res: list[list[OTResult | None]] = [[None] * N for _ in range(N)]
    computed = []
    for i in range(N):
        res[i][i] = _identical_result(
            inner, {"inner": inner, "dataset_a": names[i], "dataset_b": names[i]}
        )
        for j in range(i + 1, N):
            key = (stats[i].fingerprint, stats[j].fingerprint)
            r = old.get(key)
            if r is None:
                r = otdd_from_stats(
                    stats[i],
                    stats[j],
                    inner=inner,
                    solver=solver,
                    lambda_x=lambda_x,
                    lambda_y=lambda_y,
                    inner_options=inner_options,
                    class_cache=class_cache,
                    **solver_options,
                )
                computed.append((i, j))
            res[i][j] = res[j][i] = r
    vals = np.array([[r.value for r in row] for row in res], dtype=np.float64)
    lo = np.array([[r.lower for r in row] for row in res], dtype=np.float64)
    up = np.array([[r.upper for r in row] for row in res], dtype=np.float64)
    return OTDDMatrix(
        names=names,
        fingerprints=tuple(s.fingerprint for s in stats),
        values=vals,
        lower=lo,
        upper=up,
        results=tuple(tuple(row) for row in res),  # type: ignore[arg-type]
        params=params,
        computed=tuple(computed),
    )
