"""Label tables: ``W_2^2`` between the class point clouds of two datasets (exact LP, or
certified bounds for big classes)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import config
from ..core.anytime import CLOSED_REL
from ..core.certify import U64, exact_interval
from ..core.costs import SqEuclidean, sq_euclidean
from ..core.exact import emd
from ..core.result import relative_gap
from ..core.routes import dense_fits, exact_route
from ..core.solve import solve_ot
from ..errors import InputError

log = logging.getLogger(__name__)


def check_table_budget(
    ka: int, kb: int, *, symmetric: bool, dataset: str | None = None, max_solves: int | None = None
) -> int:
    """The number of inner OT solves an exact label table of ``ka`` x ``kb`` classes needs
    (``K(K-1)/2`` when ``symmetric``); raises a one-line :class:`InputError` when it exceeds
    ``max_solves`` (default ``config.LABEL_TABLE_MAX_SOLVES``), before any solve."""
    n = ka * (ka - 1) // 2 if symmetric else ka * kb
    limit = int(config.LABEL_TABLE_MAX_SOLVES if max_solves is None else max_solves)
    if n > limit:
        size = f"{ka} classes" if symmetric else f"{ka} x {kb} classes"
        raise InputError(
            f"the exact label table of {size} needs {n} OT solves, over the budget of "
            f"{limit} (config.LABEL_TABLE_MAX_SOLVES)",
            dataset=dataset,
            field="label",
            fix="use otdd inner: gaussian (closed form, no solves), merge classes, or "
            "drop the otdd measure for this dataset",
        )
    return n


# --------------------------------------------------------------------------------------
# label tables
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelTable:
    """Label-to-label costs ``W_2^2(alpha_i, alpha_j)`` between the classes of two datasets.

    ``value``, ``lower``, ``upper``: ``[Ka, Kb]`` float64 tensors, the inner solver's bracket
    (all three equal for exact solves and for the Gaussian closed form). ``err``: ``[Ka, Kb]``
    rigorous floating-point margins (None: 0): the true label cost lies in
    ``[lower - err, upper + err]`` entry-wise (exact LP: the width of its verified
    :func:`otaudit.core.certify.exact_interval`; Gaussian:
    :func:`otaudit.core.gaussian_cert.table_error`; 0 for bounded big-class solves, whose
    bounds are already certified). The OTDD outer bounds subtract ``lambda_y err`` from the
    cost for the lower bound and add it for the upper one (:class:`OTDDCost`). Identical
    class clouds have ``value = err = 0`` exactly. ``n_solves`` counts inner OT solves (0 for
    Gaussian).
    """

    value: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    method: str
    n_solves: int = 0
    converged: bool = True
    err: torch.Tensor | None = None

    @property
    def exact(self) -> bool:
        """True when the inner solver's bracket is closed (``lower == upper``): one outer
        solve with ``value`` and the margins ``err`` suffices."""
        return bool(torch.equal(self.lower, self.upper))

    @property
    def error(self) -> torch.Tensor:
        """``err`` as a tensor (zeros when None)."""
        return torch.zeros_like(self.value) if self.err is None else self.err

    def transpose(self) -> LabelTable:
        return LabelTable(
            self.value.T.contiguous(),
            self.lower.T.contiguous(),
            self.upper.T.contiguous(),
            self.method,
            self.n_solves,
            self.converged,
            None if self.err is None else self.err.T.contiguous(),
        )


def exact_table(
    pts_a: list[torch.Tensor],
    hashes_a: Sequence[str],
    pts_b: list[torch.Tensor],
    hashes_b: Sequence[str],
    *,
    symmetric: bool,
    device: torch.device,
    inner_options: dict[str, Any],
    class_cache: dict[tuple[str, str, str], tuple[float, float, float, float]] | None = None,
    dataset: str | None = None,
) -> LabelTable:
    """Exact (or, for big classes, certified-bounded) ``W_2^2`` between class point clouds.

    ``symmetric=True`` (the same dataset on both sides): only ``i < j`` is solved and mirrored.
    Identical class clouds (equal content hashes) give exactly 0 without a solve.
    ``class_cache`` (shared across the pairs of a registry): ``(value, lower, upper, err)`` per
    unordered pair of class content hashes, so a class pair that appears in several dataset
    pairs (e.g. unchanged classes across dataset versions) is solved once. Each class pair is
    solved in a canonical orientation (by hash), so the cached value does not depend on
    which dataset pair asked first.

    Budget: more than ``config.LABEL_TABLE_MAX_SOLVES`` solves raises an InputError at once
    (:func:`check_table_budget`, ``dataset`` names it); a long table logs its progress
    (INFO) at most every ``config.LABEL_TABLE_PROGRESS_S`` seconds.
    """
    Ka, Kb = len(pts_a), len(pts_b)
    total = check_table_budget(Ka, Kb, symmetric=symmetric, dataset=dataset)
    t_start = t_last = time.monotonic()
    val = torch.zeros((Ka, Kb), dtype=torch.float64)
    lo = torch.zeros((Ka, Kb), dtype=torch.float64)
    up = torch.zeros((Ka, Kb), dtype=torch.float64)
    er = torch.zeros((Ka, Kb), dtype=torch.float64)
    n_solves = 0
    converged = True
    max_exact = int(inner_options.get("max_exact", config.OTDD_INNER_EXACT_MAX))
    large_solver = str(inner_options.get("solver", config.OTDD_INNER_LARGE_SOLVER))
    large_opts = dict(inner_options.get("options", {}))
    opt_key = json.dumps(inner_options, sort_keys=True, default=str)
    for i in range(Ka):
        now = time.monotonic()
        if now - t_last >= config.LABEL_TABLE_PROGRESS_S:
            t_last = now
            log.info(
                "label table %s: class row %d/%d, %d/%d solves, %.0f s",
                dataset or "", i, Ka, n_solves, total, now - t_start,
            )  # fmt: skip
        for j in range(i + 1 if symmetric else 0, Kb):
            if hashes_a[i] == hashes_b[j]:
                continue  # identical clouds: W(alpha, alpha) = 0 exactly
            A, B = pts_a[i], pts_b[j]
            if hashes_b[j] < hashes_a[i]:
                A, B = B, A
            key = (min(hashes_a[i], hashes_b[j]), max(hashes_a[i], hashes_b[j]), opt_key)
            if class_cache is not None and key in class_cache:
                v, l_, u, e = class_cache[key]
                val[i, j], lo[i, j], up[i, j], er[i, j] = v, l_, u, e
                if symmetric:
                    val[j, i], lo[j, i], up[j, i], er[j, i] = v, l_, u, e
                continue
            e = 0.0
            if max(A.shape[0], B.shape[0]) <= max_exact:
                v, e = _exact_inner(A, B)
                l_ = u = v
            else:
                r = solve_ot(SqEuclidean(A, B), solver=large_solver, **large_opts)
                v, l_, u, e = _entry(r)
                converged = converged and r.converged
            n_solves += 1
            if class_cache is not None:
                class_cache[key] = (v, l_, u, e)
            val[i, j], lo[i, j], up[i, j], er[i, j] = v, l_, u, e
            if symmetric:
                val[j, i], lo[j, i], up[j, i], er[j, i] = v, l_, u, e
    method = f"exact(<= {max_exact} pts/class) else {large_solver}"
    return LabelTable(
        val.to(device), lo.to(device), up.to(device), method, n_solves, converged, er.to(device)
    )


def _entry(r: Any) -> tuple[float, float, float, float]:
    """``(value, lower, upper, err)`` of a table entry from a :func:`solve_ot` result. A
    closed interval (an exact LP, the sparse route at certified optimality, or any
    certified interval of relative width ``<= CLOSED_REL = 1e-9``) becomes ``value = lower = upper`` with the rigorous width as ``err``
    (the table stays exact: one outer solve, the margins enter its certificates); a wider
    one is kept as bounds (OTDD then brackets by monotonicity, two or three outer solves)."""
    lo, up = max(float(r.lower), 0.0), float(r.upper)
    if relative_gap(lo, up) <= CLOSED_REL:  # exact, or certified optimal, or as tight
        rig = r.extra.get("rigorous_interval")
        if rig is not None:
            lo, up = min(lo, max(float(rig[0]), 0.0)), max(up, float(rig[1]))
        v = min(max(float(r.value), lo), up)
        return v, v, v, max(v - lo, up - v, 0.0) * (1.0 + 4 * U64)
    return float(r.value), lo, up, 0.0


def _exact_inner(A: torch.Tensor, B: torch.Tensor) -> tuple[float, float]:
    """``(value, err)`` with ``|value - W_2^2(A, B)| <= err`` by the cheaper exact route of
    :func:`otaudit.core.routes.exact_route`: the dense LP (:func:`_exact_pair`) or the sparse
    exact route run to certified optimality (``target_gap=0``; 5-7x faster than the dense LP
    on 2 000-point class clouds in 16-d, ``benchmarks/RESULTS_generalize.md``). A sparse
    interval ``[lo, up]`` that closed (``extra["certified_optimal"]``, relative width
    ``<= 1e-9``) becomes ``value = up`` with ``err = up - lo``: the table stays exact, its
    margins carry the width into every OTDD certificate (``OTDDCost.label_error``). One that
    did not close (round budget spent) falls back to the dense LP where it fits, else is
    kept as the value with ``err`` its whole width."""
    n, m, d = int(A.shape[0]), int(B.shape[0]), int(A.shape[1])
    if exact_route(n, m, d) == "exact":
        return _exact_pair(A, B)
    r = solve_ot(SqEuclidean(A, B), solver="sparse", target_gap=0.0)
    if not r.extra.get("certified_optimal") and dense_fits(n, m):
        return _exact_pair(A, B)
    v, lo, up, e = _entry(r)
    if lo != up:  # did not close: the value with its whole width as the margin
        v, e = up, max(up - lo, 0.0) * (1.0 + 4 * U64)
    return v, e


def _exact_pair(A: torch.Tensor, B: torch.Tensor) -> tuple[float, float]:
    """``(value, err)`` of the exact inner OT between two class clouds (uniform weights):
    ``value`` the verified LP's float64 cost, ``err`` the distance from it to the far end of
    a rigorous interval for the real squared-Euclidean cost, so ``|value - W_2^2| <= err``:
    the verified LP's dual side minus the cost's entry-wise evaluation error and its plan
    side plus that error times the plan's mass (O(1), no re-evaluation); where that margin
    exceeds ``2^-30 value`` (tiny or zero costs), :func:`otaudit.core.certify.exact_interval`
    (the plan's support re-evaluated by direct differences). Identical points matched to
    each other give ``value = err = 0``."""
    a = torch.full((A.shape[0],), 1.0 / A.shape[0], dtype=torch.float64, device=A.device)
    b = torch.full((B.shape[0],), 1.0 / B.shape[0], dtype=torch.float64, device=B.device)
    sol = emd(a, b, sq_euclidean(A, B), overwrite=True)
    v = float(sol.cost)
    # cheap and usually tight: |C~ - C| <= ev entry-wise, so the verified dual side loses ev
    # (the mass is 1) and the plan side gains at most ev times the plan's mass
    cost = SqEuclidean(A, B)
    ev = cost.max_abs_error() * (1.0 + 4 * U64)
    mass = float(np.sum(sol.plan)) * (1.0 + (sol.plan.size + 2) * U64)
    lo = max(float(sol.lower) - ev, 0.0) if math.isfinite(sol.lower) else 0.0
    up = float(sol.upper) + ev * mass
    e = max(v - lo, up - v, 0.0) * (1.0 + 4 * U64)
    if v > 0.0 and e <= 2.0**-30 * v:
        return v, e
    # small or zero costs (a permuted copy of a class: v = 0): re-evaluate the plan's
    # support by direct differences, exact zeros stay zero
    lo, up = exact_interval(cost, sol, a, b)
    e = max(v - lo, up - v, 0.0) * (1.0 + 4 * U64)
    return v, e
