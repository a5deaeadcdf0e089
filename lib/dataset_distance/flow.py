"""Explain a dataset distance: OTDD gradient flows, class correspondence and what moved.

Alvarez-Melis & Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
Dataset ``A = {(x_i, c_i)}`` (``n`` points, uniform weights ``a_i = 1/n``) is moved toward
``B = {(y_j, c'_j)}`` (``m`` points, ``b_j = 1/m``) along the OTDD geometry. A's class
memberships ``c_i`` stay fixed; its class statistics (the label table
``W_2^2(alpha_c, beta_c')``) are recomputed from the moved points at every step. With the
current OTDD plan ``pi`` (see :mod:`otaudit.dataset_distance.api`), the barycentric target of
``x_i`` and one step of size ``tau in (0, 1]`` are

.. math::

    T_\\pi(x_i) = \\frac{\\sum_j \\pi_{ij} y_j}{\\sum_j \\pi_{ij}}, \\qquad
    x_i \\leftarrow x_i - \\tau\\,(x_i - T_\\pi(x_i)).

``mode="flow"`` re-solves the plan at every step; ``mode="geodesic"`` moves along the first
plan ``pi_0`` (fixed targets, so ``x_k = T + (1-tau)^k (x_0 - T)``) and re-solves only to
report OTDD²_k and to check whether the plan is still optimal (``plan_changed``). The step
does not depend on ``lambda_x`` (rescaling the feature term rescales time, not the path).
The step is the feature part's gradient step under the plan; the label term is not
differentiated (class statistics are recomputed instead), so OTDD²_k need not decrease
monotonically once classes must split: on the demo's missing-classes pair it reaches its
minimum after 3 steps of 0.5 (0.476 OTDD²_0) and then rises to 0.485 OTDD²_0 as the
class clouds of A contract onto mixtures of B's classes.

Every step reports certified bounds: an exact LP (``lower = value = upper``) for pairs with
``n*m <= config.EXACT_MAX_ENTRIES`` under ``solver="auto"``, else the sparse exact route
(anytime to ``config.TARGET_GAP``; its certified feasible plan, the one behind its upper
bound, is the one the points follow), or the certified mini-batch bounds and their plan
where not even the sparse route fits (``solver="minibatch"`` forces them). The reference code
(microsoft/otdd ``flows.py``) subsamples, resets the particles and, in one variant, counts
the label-term gradient twice; none of that happens here.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from .. import config
from ..core.arrays import as_points, check_pair, device_of
from ..core.minibatch import minibatch_bounds
from ..core.routes import choose_route
from ..errors import InputError
from .api import _check_common, _mixed_labels_error
from .flow_step import (
    FlowSetup,
    Solved,
    barycentric,
    class_plan,
    plan_cost,
    plan_parts,
    solve_at,
    step_toward,
)
from .stats import dataset_stats

__all__ = ["FlowResult", "otdd_flow", "MODES", "FLOW_SOLVERS"]

MODES = ("flow", "geodesic")
FLOW_SOLVERS = ("auto", "exact", "sparse", "minibatch")
_EXACT_OPTIONS = frozenset({"max_iter"})
_SPARSE_OPTIONS = frozenset({"target_gap", "time_limit", "max_rounds"})


def _minibatch_options() -> frozenset[str]:
    names = set(inspect.signature(minibatch_bounds).parameters)
    return frozenset(names - {"cost", "a", "b", "plan_out"})


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FlowResult:
    """What moved when dataset A flows toward B (immutable; arrays other than ``X`` and
    ``trajectory`` are read-only).

    Attributes:
        values: ``[steps + 1]`` OTDD² of ``A_k`` vs ``B`` for ``k = 0..steps`` (the same
            quantity as ``otdd(X_k, y1, X2, y2).value``).
        lower, upper: ``[steps + 1]`` certified bounds on ``values`` (in geodesic mode the
            upper bound is also at most the cost of ``pi_0`` at ``x_k``).
        X: ``[n, d]`` A's final points (float64 numpy; like ``trajectory`` a copy owned by
            the result and, unlike the other arrays, writable, so it can be passed on to
            torch without a warning).
        class_table: columns (read-only numpy arrays) ``class_a, class_b, mass, frac_a,
            frac_b, feature_cost, label_cost, cost_share`` of the initial plan ``pi_0``,
            aggregated by class pair (pairs with mass > 0): ``mass`` the plan mass from class
            ``class_a`` of A to class ``class_b`` of B, ``frac_a`` / ``frac_b`` that mass as a
            fraction of the class's mass in A / in B, ``feature_cost`` =
            ``lambda_x sum pi_ij ||x_i - y_j||^2`` and ``label_cost`` =
            ``lambda_y sum pi_ij W(c_i, c'_j)`` over the pair, ``cost_share`` their sum over
            OTDD²_0 as the plan's cost (shares sum to 1; by mass when OTDD²_0 = 0).
        feature_share: ``[d]`` the exact split of the feature part of ``pi_0``'s cost over the
            dimensions (the squared Euclidean cost is separable:
            ``sum_e pi_e (x_e - y_e)_t^2 / sum_e pi_e ||x_e - y_e||^2``); sums to 1
            (``1/d`` each when the feature part is 0).
        residual: the share of OTDD²_0 that moving features with fixed classes cannot
            remove: ``min(R(pi_0), R(pi_cls))`` with ``R(pi) = OTDD²(T_pi(A), B) / OTDD²_0``,
            where every point of A is moved all the way (``tau = 1``) to its barycentric
            target under ``pi``, classes fixed. ``pi_0`` is the OTDD plan (``R(pi_0)`` is the
            limit of the geodesic, ``mode="geodesic"``, ``k -> inf``); ``pi_cls`` the
            class-respecting plan: the class-level coupling ``gamma`` = exact OT between A's
            and B's class proportions with cost ``W(c, c')`` (the label table), glued with
            the inner OT plans ``P_cc'`` between the class clouds,
            ``pi_cls = sum_cc' gamma_cc' P_cc'`` (feasible: row ``i`` of class ``c`` gets
            ``sum_c' gamma_cc' / n_c = 1/n``). If the classes correspond one to one with
            equal proportions, ``T_{pi_cls}(A)`` is B class by class and ``R = 0``; classes
            that must split, merge or change proportion leave ``R > 0``. So 0 for a pure
            covariate shift (e.g. B an affine image of A, or a mirrored A, with the same
            classes), > 0 for a change of class structure; 0 when OTDD²_0 = 0.
        residual_plan: which plan gave ``residual``: ``"otdd"`` (``pi_0``) or ``"class"``.
        residuals: ``{"otdd": R(pi_0), "class": R(pi_cls)}`` (``"class"`` only when labels
            are used and OTDD²_0 > 0).
        residual_bounds: ``(lower, upper)`` certified bounds on ``residual``.
        plan_changed: ``[steps + 1]`` bool; ``k >= 1``: the plan solved at ``x_k`` differs
            from the one at ``x_{k-1}`` (flow) or from ``pi_0`` (geodesic). ``[0]`` is False.
        plan_cost, feature_part, label_part: ``[steps + 1]`` cost at ``x_k`` of the plan the
            points follow (flow: ``pi_k``; geodesic: ``pi_0``) and its feature and label parts
            (``plan_cost = feature_part + label_part``; a certified upper bound on OTDD²_k).
        plan: ``(rows, cols, mass)`` of ``pi_0`` (numpy; a feasible plan of ``U(a, b)``).
        trajectory: ``[steps + 1, s, d]`` positions of the sampled points of A.
        trajectory_index: ``[s]`` their row indices in A; ``trajectory_labels``: their labels.
        mode, steps, step_size, certified, method, n_solves, seconds, params: as named.
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    X: np.ndarray
    class_table: Mapping[str, np.ndarray]
    feature_share: np.ndarray
    residual: float
    residual_bounds: tuple[float, float]
    residual_plan: str
    residuals: Mapping[str, float]
    plan_changed: np.ndarray
    plan_cost: np.ndarray
    feature_part: np.ndarray
    label_part: np.ndarray
    plan: tuple[np.ndarray, np.ndarray, np.ndarray]
    trajectory: np.ndarray
    trajectory_index: np.ndarray
    trajectory_labels: np.ndarray
    mode: str
    steps: int
    step_size: float
    certified: bool
    method: str
    n_solves: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> np.ndarray:
        """``values / values[0]`` (OTDD²_k / OTDD²_0; ones when OTDD²_0 = 0)."""
        v0 = float(self.values[0])
        return self.values / v0 if v0 > 0 else np.ones_like(self.values)

    @property
    def feature_fraction(self) -> float:
        """Share of ``pi_0``'s cost in the feature term (the rest is the label term)."""
        f = float(np.sum(self.class_table["feature_cost"]))
        t = f + float(np.sum(self.class_table["label_cost"]))
        return f / t if t > 0 else 0.0

    def top_features(self, k: int = config.FLOW_TOP_FEATURES) -> list[tuple[int, float]]:
        """The ``k`` dimensions carrying most of the feature part, ``(index, share)``."""
        order = np.argsort(-self.feature_share, kind="stable")[: max(0, int(k))]
        return [(int(i), float(self.feature_share[i])) for i in order]

    def to_frames(self) -> dict[str, dict[str, np.ndarray]]:
        """Columnar tables (``pyarrow.table(cols)``-ready): ``flow_steps``, ``flow_classes``,
        ``flow_features``."""
        k = np.arange(self.steps + 1, dtype=np.int64)
        steps = {
            "step": k,
            "value": np.asarray(self.values),
            "lower": np.asarray(self.lower),
            "upper": np.asarray(self.upper),
            "ratio": self.ratios,
            "plan_cost": np.asarray(self.plan_cost),
            "feature_part": np.asarray(self.feature_part),
            "label_part": np.asarray(self.label_part),
            "plan_changed": np.asarray(self.plan_changed),
        }
        classes = {name: np.asarray(col) for name, col in self.class_table.items()}
        d = self.feature_share.shape[0]
        fcost = float(np.sum(self.class_table["feature_cost"]))
        features = {
            "feature": np.arange(d, dtype=np.int64),
            "share": np.asarray(self.feature_share),
            "cost": np.asarray(self.feature_share) * fcost,
        }
        return {"flow_steps": steps, "flow_classes": classes, "flow_features": features}


# --------------------------------------------------------------------------------------
# explanation of the initial plan
# --------------------------------------------------------------------------------------
def _class_table(
    X: torch.Tensor, s0: Solved, setup: FlowSetup
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    sa, sb, plan = s0.stats, setup.sb, s0.plan
    feat, lab, per_dim = plan_parts(X, sa, setup, plan, s0.table.value)
    Ka, Kb = sa.n_classes, sb.n_classes
    key = (sa.codes[plan.rows] * Kb + sb.codes[plan.cols]).cpu()
    m = plan.mass.cpu()
    mass = torch.zeros(Ka * Kb, dtype=torch.float64).index_add_(0, key, m)
    fc = torch.zeros(Ka * Kb, dtype=torch.float64).index_add_(0, key, m * feat.cpu())
    lc = torch.zeros(Ka * Kb, dtype=torch.float64).index_add_(0, key, m * lab.cpu())
    keep = (mass > 0).nonzero().flatten().numpy()
    ka, kb = keep // Kb, keep % Kb
    mass_np, fc_np, lc_np = mass.numpy()[keep], fc.numpy()[keep], lc.numpy()[keep]
    total = float(fc_np.sum() + lc_np.sum())
    share = (fc_np + lc_np) / total if total > 0 else mass_np / mass_np.sum()
    wa = sa.counts / sa.n
    wb = sb.counts / sb.n
    order = np.lexsort((-mass_np, ka))
    cols = {
        "class_a": np.array([sa.classes[i] for i in ka[order]], dtype=object),
        "class_b": np.array([sb.classes[j] for j in kb[order]], dtype=object),
        "mass": mass_np[order],
        "frac_a": mass_np[order] / wa[ka[order]],
        "frac_b": mass_np[order] / wb[kb[order]],
        "feature_cost": fc_np[order],
        "label_cost": lc_np[order],
        "cost_share": share[order],
    }
    pd_np = per_dim.cpu().numpy()
    ftot = float(pd_np.sum())
    fshare = pd_np / ftot if ftot > 0 else np.full(pd_np.shape, 1.0 / max(1, pd_np.shape[0]))
    return {k: _readonly(v) for k, v in cols.items()}, fshare


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------
def _check_flow_args(steps: Any, step_size: Any, mode: Any, solver: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(
            f"steps must be an integer >= 0, got {steps!r}", field="steps", fix="pass e.g. steps=10"
        )
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, (int, float, np.floating, np.integer))
        or not math.isfinite(float(step_size))
        or not 0.0 < float(step_size) <= 1.0
    ):
        raise InputError(
            f"step_size must be a number in (0, 1], got {step_size!r}",
            field="step_size",
            fix="pass e.g. step_size=0.5 (the fraction of the way to the target per step)",
        )
    if mode not in MODES:
        raise InputError(
            f"unknown mode {mode!r}", field="mode", fix="use mode='flow' or mode='geodesic'"
        )
    if solver not in FLOW_SOLVERS:
        raise InputError(
            f"solver {solver!r} gives no sparse feasible plan for the flow to follow",
            field="solver",
            fix="use solver='auto', 'exact', 'sparse' or 'minibatch'",
        )


def _split_options(solver: str, auto: bool, opts: dict[str, Any]) -> dict[str, Any]:
    mb = _minibatch_options()
    takes = {"exact": _EXACT_OPTIONS, "sparse": _SPARSE_OPTIONS}.get(solver, mb)
    every = mb | _EXACT_OPTIONS | _SPARSE_OPTIONS
    out: dict[str, Any] = {}
    for k, v in opts.items():
        if k in takes:
            out[k] = v
        elif auto and k in every:
            continue  # a knob of the solver auto did not pick
        else:
            known = ", ".join(sorted(every))
            raise InputError(
                f"option {k!r} does not apply to the flow's solver={solver!r}",
                field=k,
                fix=f"drop {k!r}; options: {known}",
            )
    return out


# --------------------------------------------------------------------------------------
# the stages of otdd_flow: setup, the step loop, the residual analysis
# --------------------------------------------------------------------------------------
def _setup(
    X1: Any,
    y1: Any,
    X2: Any,
    y2: Any,
    steps: Any,
    step_size: Any,
    mode: Any,
    inner: str,
    solver: str,
    lambda_x: float,
    lambda_y: float,
    names: tuple[str, str],
    inner_options: dict[str, Any] | None,
    solver_options: dict[str, Any],
) -> tuple[FlowSetup, torch.Tensor]:
    """Check the arguments, compute B's statistics and pick the solver: (setup, A's points)."""
    _check_flow_args(steps, step_size, mode, solver)
    _check_common(inner, solver, lambda_x, lambda_y)
    if (y1 is None) != (y2 is None):
        raise _mixed_labels_error(names[0] if y1 is None else names[1])
    dev = device_of(X1, X2)
    XA = as_points(X1, dataset=names[0], device=dev)
    sb = dataset_stats(X2, y2, name=names[1], inner=inner, self_tables=False)
    check_pair(XA, sb.features, names[0], names[1])
    auto = solver == "auto"
    kind = solver
    if auto:
        kind = "exact" if XA.shape[0] * sb.n <= config.EXACT_MAX_ENTRIES else "sparse"
        d_route = 2 * XA.shape[1]  # OTDDCost's partition coordinates; float64 passes
        if kind == "sparse" and choose_route(XA.shape[0], sb.n, d_route, fast=False) == "minibatch":
            kind = "minibatch"  # not even the sparse route's edges fit the memory budget
    setup = FlowSetup(
        sb=sb,
        y1=y1,
        name_a=names[0],
        inner=inner,
        solver=kind,
        lambda_x=float(lambda_x),
        lambda_y=float(lambda_y) if (y1 is not None and lambda_y > 0) else 0.0,
        use_labels=y1 is not None and lambda_y > 0,
        inner_options=inner_options,
        options=_split_options(kind, auto, dict(solver_options)),
    )
    return setup, XA


def _trajectory_index(n: int, trajectory_sample: int | None) -> np.ndarray:
    """Sorted row indices of the points of A whose trajectories are kept."""
    if trajectory_sample is None or trajectory_sample >= n:
        return np.arange(n, dtype=np.int64)
    if isinstance(trajectory_sample, bool) or int(trajectory_sample) < 0:
        raise InputError(
            f"trajectory_sample must be None or an integer >= 0, got {trajectory_sample!r}",
            field="trajectory_sample",
            fix="pass e.g. trajectory_sample=256",
        )
    rng = np.random.default_rng(config.SEED)
    return np.sort(rng.choice(n, int(trajectory_sample), replace=False)).astype(np.int64)


@dataclass
class _Track:
    """Per-step series of :func:`otdd_flow` (``k = 0..steps``) and the final points."""

    X: torch.Tensor
    values: list[float] = field(default_factory=list)
    lowers: list[float] = field(default_factory=list)
    uppers: list[float] = field(default_factory=list)
    pcost: list[float] = field(default_factory=list)
    fpart: list[float] = field(default_factory=list)
    lpart: list[float] = field(default_factory=list)
    changed: list[bool] = field(default_factory=list)
    traj: list[np.ndarray] = field(default_factory=list)
    n_solves: int = 0  # solves after the first one (``s0``)

    def record(
        self,
        value: float,
        lower: float,
        upper: float,
        fk: float,
        lk: float,
        changed: bool,
        idx_t: torch.Tensor,
    ) -> None:
        self.values.append(value)
        self.lowers.append(lower)
        self.uppers.append(upper)
        self.pcost.append(fk + lk)
        self.fpart.append(fk)
        self.lpart.append(lk)
        self.changed.append(changed)
        self.traj.append(self.X[idx_t].cpu().numpy())


def _run_steps(
    setup: FlowSetup,
    XA: torch.Tensor,
    s0: Solved,
    T0: torch.Tensor,
    steps: int,
    tau: float,
    mode: str,
    idx_t: torch.Tensor,
) -> _Track:
    """Step 0 (``s0`` at A) and ``steps`` steps toward the barycentric targets, each
    re-solved and bounded (geodesic: the upper bound also by ``pi_0``'s cost at ``x_k``)."""
    track = _Track(XA)
    f0, l0 = plan_cost(XA, s0.stats, setup, s0.plan, s0.table.value)
    track.record(s0.value, s0.lower, s0.upper, f0, l0, False, idx_t)
    X, prev = XA, s0
    for _ in range(steps):
        T = T0 if mode == "geodesic" else barycentric(X, setup.sb.features, prev.plan)
        X = step_toward(X, T, tau)
        s = solve_at(setup, X)
        track.n_solves += s.n_solves
        if mode == "geodesic":
            fk, lk = plan_cost(X, s.stats, setup, s0.plan, s.table.value)
            up = s.upper
            if s.table.exact:
                up = min(up, fk + lk)
            else:
                up = min(up, sum(plan_cost(X, s.stats, setup, s0.plan, s.table.upper)))
            changed = not s.plan.same_as(s0.plan, setup.sb.n)
        else:
            fk, lk = plan_cost(X, s.stats, setup, s.plan, s.table.value)
            up = s.upper
            changed = not s.plan.same_as(prev.plan, setup.sb.n)
        up = max(up, s.lower)  # pi_0's cost below the LP optimum is round-off only
        track.X = X
        track.record(min(max(s.value, s.lower), up), s.lower, up, fk, lk, changed, idx_t)
        prev = s
    return track


@dataclass(frozen=True)
class _Residual:
    which: str
    residual: float
    bounds: tuple[float, float]
    residuals: dict[str, float]
    n_solves: int


def _residual(setup: FlowSetup, XA: torch.Tensor, s0: Solved, T0: torch.Tensor) -> _Residual:
    """Move every point all the way along ``pi_0``, and along the class-respecting plan
    (classes fixed): what is left (see ``FlowResult.residual``)."""
    v0, lo0, up0 = s0.value, s0.lower, s0.upper
    cands = [("otdd", solve_at(setup, T0))]
    if setup.use_labels and v0 > 0:
        pc = class_plan(XA, s0, setup)
        cands.append(("class", solve_at(setup, barycentric(XA, setup.sb.features, pc))))
    n_solves = sum(c.n_solves for _, c in cands) + (len(cands) - 1)
    if v0 > 0:
        which, best = min(cands, key=lambda c: c[1].value)
        residual = best.value / v0
        rlo = min(c.lower for _, c in cands)
        rup = min(c.upper for _, c in cands)
        rb = (rlo / up0 if up0 > 0 else 0.0, rup / lo0 if lo0 > 0 else math.inf)
    else:
        which, residual, rb = "otdd", 0.0, (0.0, 0.0 if cands[0][1].upper == 0 else math.inf)
    residuals = {k: (float(c.value / v0) if v0 > 0 else 0.0) for k, c in cands}
    return _Residual(which, residual, rb, residuals, n_solves)


def _flow_params(
    setup: FlowSetup,
    mode: str,
    steps: int,
    tau: float,
    lambda_x: float,
    lambda_y: float,
    n: int,
    names: tuple[str, str],
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": mode,
        "steps": steps,
        "step_size": tau,
        "inner": setup.inner,
        "solver": setup.solver,
        "lambda_x": float(lambda_x),
        "lambda_y": float(lambda_y),
        "n_a": n,
        "n_b": setup.sb.n,
        "dataset_a": names[0],
        "dataset_b": names[1],
    }
    if setup.options:
        params["solver_options"] = {
            k: v for k, v in setup.options.items() if isinstance(v, (int, float, str, bool))
        }
    return params


def otdd_flow(
    X1: Any,
    y1: Any,
    X2: Any,
    y2: Any,
    *,
    steps: int = config.FLOW_STEPS,
    step_size: float = config.FLOW_STEP,
    mode: str = config.FLOW_MODE,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    names: tuple[str, str] = ("D1", "D2"),
    inner_options: dict[str, Any] | None = None,
    trajectory_sample: int | None = config.FLOW_TRAJECTORY_SAMPLE,
    **solver_options: Any,
) -> FlowResult:
    """Flow dataset ``(X1, y1)`` toward ``(X2, y2)`` along the OTDD geometry and explain it.

    Args:
        X1, X2: ``[n, d]``, ``[m, d]`` features (numpy or torch, CPU/CUDA, float32/64).
        y1, y2: ``[n]``, ``[m]`` labels of any hashable type, or both None (unlabeled).
        steps: number of steps ``K`` (values are reported for ``k = 0..K``).
        step_size: ``tau in (0, 1]``, the fraction of the way to the barycentric target.
        mode: ``"flow"`` (re-solve the plan every step) or ``"geodesic"`` (follow ``pi_0``).
        inner, lambda_x, lambda_y, names, inner_options: as :func:`otaudit.otdd`.
        solver: ``"auto"`` (exact LP when ``n*m <= config.EXACT_MAX_ENTRIES``, else the
            sparse exact route's plan, else the certified mini-batch plan), ``"exact"``,
            ``"sparse"`` or ``"minibatch"``.
        trajectory_sample: how many points of A to keep trajectories of (None: all);
            a deterministic sample (seed ``config.SEED``).
        **solver_options: ``max_iter`` (exact), ``target_gap`` / ``time_limit`` /
            ``max_rounds`` (sparse) or options of
            :func:`otaudit.core.minibatch.minibatch_bounds` (``batch_size``, ``budget``, ...).

    Returns:
        :class:`FlowResult`. Cost: ``steps + 1`` OTDD solves (one per step) and, for
        ``residual``, one (unlabeled) or two more plus the class-level LP and the inner
        plans on its support (``<= Ka + Kb - 1`` class pairs); plus the barycentric maps
        (``O(nnz(pi) d)`` each).

    Raises:
        InputError: bad arguments (one line, with the fix).
    """
    t0 = time.perf_counter()
    setup, XA = _setup(
        X1,
        y1,
        X2,
        y2,
        steps,
        step_size,
        mode,
        inner,
        solver,
        lambda_x,
        lambda_y,
        names,
        inner_options,
        solver_options,
    )
    steps, tau = int(steps), float(step_size)
    idx = _trajectory_index(XA.shape[0], trajectory_sample)
    s0 = solve_at(setup, XA)
    T0 = barycentric(XA, setup.sb.features, s0.plan)
    track = _run_steps(setup, XA, s0, T0, steps, tau, mode, torch.from_numpy(idx).to(XA.device))
    res = _residual(setup, XA, s0, T0)
    table, fshare = _class_table(XA, s0, setup)
    cls = np.empty(s0.stats.n_classes, dtype=object)
    cls[:] = list(s0.stats.classes)
    labels = cls[s0.stats.codes.cpu().numpy()[idx]]
    return FlowResult(
        values=_readonly(np.asarray(track.values, dtype=np.float64)),
        lower=_readonly(np.asarray(track.lowers, dtype=np.float64)),
        upper=_readonly(np.asarray(track.uppers, dtype=np.float64)),
        X=np.array(track.X.cpu().numpy(), copy=True),
        class_table=MappingProxyType(table),
        feature_share=_readonly(fshare),
        residual=float(res.residual),
        residual_bounds=(float(max(res.bounds[0], 0.0)), float(res.bounds[1])),
        residual_plan=res.which,
        residuals=MappingProxyType(res.residuals),
        plan_changed=_readonly(np.asarray(track.changed, dtype=bool)),
        plan_cost=_readonly(np.asarray(track.pcost, dtype=np.float64)),
        feature_part=_readonly(np.asarray(track.fpart, dtype=np.float64)),
        label_part=_readonly(np.asarray(track.lpart, dtype=np.float64)),
        plan=(
            _readonly(s0.plan.rows.cpu().numpy()),
            _readonly(s0.plan.cols.cpu().numpy()),
            _readonly(s0.plan.mass.cpu().numpy()),
        ),
        trajectory=np.stack(track.traj),
        trajectory_index=_readonly(idx),
        trajectory_labels=_readonly(labels),
        mode=mode,
        steps=steps,
        step_size=tau,
        certified=True,  # exact LP and mini-batch bounds are both certified
        method=f"otdd_flow[{mode},{inner}] outer={s0.method}",
        n_solves=s0.n_solves + track.n_solves + res.n_solves,
        seconds=time.perf_counter() - t0,
        params=_flow_params(setup, mode, steps, tau, lambda_x, lambda_y, XA.shape[0], names),
    )
