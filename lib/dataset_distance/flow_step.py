"""One step of :func:`otaudit.otdd_flow`: the OTDD solve at the moved points with its
certified bounds and sparse plan, the plan's cost split into feature and label parts, the
barycentric map and the class-respecting plan (see :mod:`otaudit.dataset_distance.flow`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import config
from ..core.anytime import anytime_bounds
from ..core.exact import emd
from ..core.minibatch import minibatch_bounds
from .cost import OTDDCost, label_costs
from .labels import LabelTable
from .stats import DatasetStats, dataset_stats

__all__ = [
    "Plan",
    "Solved",
    "FlowSetup",
    "outer_solve",
    "plan_parts",
    "plan_cost",
    "solve_at",
    "barycentric",
    "step_toward",
    "class_plan",
]


@dataclass(frozen=True)
class Plan:
    rows: torch.Tensor  # [nnz] int64 rows of A
    cols: torch.Tensor  # [nnz] int64 rows of B
    mass: torch.Tensor  # [nnz] float64

    def same_as(self, other: Plan, m: int) -> bool:
        ka = self.rows * m + self.cols
        kb = other.rows * m + other.cols
        if ka.numel() != kb.numel():
            return False
        oa, ob = torch.argsort(ka), torch.argsort(kb)
        if not torch.equal(ka[oa], kb[ob]):
            return False
        scale = float(max(self.mass.abs().max(), other.mass.abs().max()))
        diff = float((self.mass[oa] - other.mass[ob]).abs().max())
        return diff <= config.FLOW_PLAN_RTOL * scale


@dataclass(frozen=True)
class Solved:
    value: float
    lower: float
    upper: float
    plan: Plan
    stats: DatasetStats
    table: LabelTable
    n_solves: int
    method: str


@dataclass(frozen=True)
class FlowSetup:
    sb: DatasetStats
    y1: Any
    name_a: str
    inner: str
    solver: str  # "exact" or "minibatch"
    lambda_x: float
    lambda_y: float  # 0 when labels are not used
    use_labels: bool
    inner_options: dict[str, Any] | None
    options: dict[str, Any]


def outer_solve(
    setup: FlowSetup, sa: DatasetStats, table: torch.Tensor, err: torch.Tensor | None = None
) -> tuple[float, float, float, Plan, str]:
    """Solve the outer OTDD problem with ``table`` (its margins ``err``, as :func:`otdd`
    passes them, enter the certificates): (value, lower, upper, plan, method). ``"sparse"``:
    the sparse exact route (anytime, ``setup.options``: ``target_gap``, ``time_limit``,
    ``max_rounds``) and the feasible plan whose cost is its certified upper bound."""
    ly = setup.lambda_y
    cost = OTDDCost(sa, setup.sb, table, setup.lambda_x, ly, label_error=err if ly else None)
    dev = sa.device
    if setup.solver == "sparse":
        out: list = []
        res = anytime_bounds(cost, start="sparse", plan_out=out, **setup.options)
        px, qy, mass = out[-1]
        plan = Plan(px.to(dev).long(), qy.to(dev).long(), mass.to(dev).to(torch.float64))
        return res.value, res.lower, res.upper, plan, res.method
    if setup.solver == "exact":
        a = torch.full((cost.n,), 1.0 / cost.n, dtype=torch.float64)
        b = torch.full((cost.m,), 1.0 / cost.m, dtype=torch.float64)
        sol = emd(a, b, cost.block(None, None), overwrite=True, **setup.options)
        r, c = np.nonzero(sol.plan)
        plan = Plan(
            torch.from_numpy(r.astype(np.int64)).to(dev),
            torch.from_numpy(c.astype(np.int64)).to(dev),
            torch.from_numpy(np.ascontiguousarray(sol.plan[r, c])).to(dev),
        )
        return sol.cost, sol.cost, sol.cost, plan, "exact"
    out: list = []
    res = minibatch_bounds(cost, plan_out=out, **setup.options)
    px, qy, mass = out[-1]
    plan = Plan(px.to(dev).long(), qy.to(dev).long(), mass.to(dev).to(torch.float64))
    return res.value, res.lower, res.upper, plan, res.method


def plan_parts(
    X: torch.Tensor,
    sa: DatasetStats,
    setup: FlowSetup,
    plan: Plan,
    table: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-entry feature cost ``lambda_x ||x_i - y_j||^2``, label cost ``lambda_y W`` and the
    per-dimension feature cost ``[d]`` (weighted by mass) of ``plan`` at points ``X``."""
    Y = setup.sb.features
    d = X.shape[1]
    per_dim = torch.zeros(d, dtype=torch.float64, device=X.device)
    feat = torch.empty(plan.rows.numel(), dtype=torch.float64, device=X.device)
    chunk = max(1, (32 * 2**20) // (8 * max(d, 1)))
    for s in range(0, plan.rows.numel(), chunk):
        sl = slice(s, s + chunk)
        diff2 = (X[plan.rows[sl]] - Y[plan.cols[sl]]) ** 2
        feat[sl] = diff2.sum(1)
        per_dim += (plan.mass[sl, None] * diff2).sum(0)
    feat = setup.lambda_x * feat
    per_dim = setup.lambda_x * per_dim
    if setup.lambda_y != 0.0:
        lab = setup.lambda_y * table.to(X.device)[sa.codes[plan.rows], setup.sb.codes[plan.cols]]
    else:
        lab = torch.zeros_like(feat)
    return feat, lab, per_dim


def plan_cost(
    X: torch.Tensor, sa: DatasetStats, setup: FlowSetup, plan: Plan, table: torch.Tensor
) -> tuple[float, float]:
    feat, lab, _ = plan_parts(X, sa, setup, plan, table)
    return float((plan.mass * feat).sum()), float((plan.mass * lab).sum())


def solve_at(setup: FlowSetup, X: torch.Tensor) -> Solved:
    """OTDD² of (X, y1) vs B with the plan: certified bounds, as :func:`otdd` computes them."""
    sa = dataset_stats(X, setup.y1, name=setup.name_a, inner=setup.inner, self_tables=False)
    if setup.use_labels:
        table = label_costs(sa, setup.sb, inner=setup.inner, inner_options=setup.inner_options)
    else:
        z = torch.zeros((sa.n_classes, setup.sb.n_classes), dtype=torch.float64, device=X.device)
        table = LabelTable(z, z, z, "none")
    value, lower, upper, plan, method = outer_solve(setup, sa, table.value, table.error)
    n_solves = table.n_solves + 1
    if not table.exact:
        # OT is monotone in the ground cost: the lower table's certified lower bound is a
        # lower bound on OTDD², and the plan's cost under the upper table an upper bound (the
        # bounds of the solve with the value table certify nothing about the true cost)
        lower = outer_solve(setup, sa, table.lower, table.error)[1]
        n_solves += 1
        upper = sum(plan_cost(X, sa, setup, plan, table.upper))
        value = min(max(value, lower), upper)
    lower = max(lower, 0.0)
    value = max(value, lower)
    return Solved(value, lower, upper, plan, sa, table, n_solves, method)


def barycentric(X: torch.Tensor, Y: torch.Tensor, plan: Plan) -> torch.Tensor:
    """``T_pi(x_i) = sum_j pi_ij y_j / sum_j pi_ij``; exactly ``y_j`` for one-entry rows."""
    n = X.shape[0]
    num = torch.zeros_like(X).index_add_(0, plan.rows, plan.mass[:, None] * Y[plan.cols])
    den = torch.zeros(n, dtype=torch.float64, device=X.device).index_add_(0, plan.rows, plan.mass)
    T = torch.where(den[:, None] > 0, num / den.clamp_min(1e-300)[:, None], X)
    cnt = torch.bincount(plan.rows, minlength=n)
    one = cnt[plan.rows] == 1
    T[plan.rows[one]] = Y[plan.cols[one]]
    return T


def step_toward(X: torch.Tensor, T: torch.Tensor, tau: float) -> torch.Tensor:
    return T.clone() if tau == 1.0 else X - tau * (X - T)


def class_plan(X: torch.Tensor, s0: Solved, setup: FlowSetup) -> Plan:
    """The class-respecting plan ``sum_cc' gamma_cc' P_cc'`` (see ``FlowResult.residual``):
    ``gamma`` exact OT between the class proportions with cost the label table, ``P_cc'``
    the OT plan between the class clouds (exact LP up to ``config.OTDD_INNER_EXACT_MAX``
    points per side, else the certified mini-batch plan)."""
    from ..core.costs import SqEuclidean, sq_euclidean

    sa, sb = s0.stats, setup.sb
    dev = X.device
    p = torch.as_tensor(sa.counts / sa.n, dtype=torch.float64)
    q = torch.as_tensor(sb.counts / sb.n, dtype=torch.float64)
    gamma = emd(p, q, s0.table.value.cpu()).plan
    rows, cols, mass = [], [], []
    for c, c2 in zip(*np.nonzero(gamma), strict=True):
        ia = (sa.codes == int(c)).nonzero().flatten()
        ib = (sb.codes == int(c2)).nonzero().flatten()
        A, B = X[ia], sb.features[ib]
        if max(len(ia), len(ib)) <= config.OTDD_INNER_EXACT_MAX:
            P = emd(
                torch.full((len(ia),), 1.0 / len(ia), dtype=torch.float64),
                torch.full((len(ib),), 1.0 / len(ib), dtype=torch.float64),
                sq_euclidean(A, B),
            ).plan
            r, k = np.nonzero(P)
            pr = torch.from_numpy(r.astype(np.int64)).to(dev)
            pk = torch.from_numpy(k.astype(np.int64)).to(dev)
            pm = torch.from_numpy(np.ascontiguousarray(P[r, k])).to(dev)
        else:
            out: list = []
            minibatch_bounds(SqEuclidean(A, B), plan_out=out)
            pr, pk, pm = (t.to(dev) for t in out[-1])
        rows.append(ia[pr])
        cols.append(ib[pk])
        mass.append(pm.to(torch.float64) * float(gamma[c, c2]))
    return Plan(torch.cat(rows).long(), torch.cat(cols).long(), torch.cat(mass))
