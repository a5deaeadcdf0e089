"""Exact OT far beyond dense-LP sizes: a sparse min-cost flow with a dual certificate.

The transport problem ``min <P, C>`` over couplings of ``a [n]`` and ``b [m]`` is restricted
to a sparse candidate set of edges ``E`` (each point's nearest neighbours in *reduced cost*
``c(x, y) - f(x) - g(y)`` under starting potentials, plus a north-west-corner backbone that
makes the restricted problem feasible). That problem is solved **exactly** as an integer
min-cost flow with OR-Tools' ``SimpleMinCostFlow`` (costs scaled to int64), then:

* **upper bound**: the returned plan is feasible for the true weights; its cost re-evaluated
  in float64 on the true costs (plus a float-summation allowance) is a certified upper bound;
* **duals**: OR-Tools does not expose potentials, so they are recovered exactly, in integer
  arithmetic, as shortest-path distances on the residual graph of the optimal flow
  (Bellman-Ford from a virtual source; the flow is optimal, so the residual graph has no
  negative cycle): ``f = -dist(x) / s``, ``g = dist(y) / s`` satisfy
  ``f_i + g_j <= c_ij`` on every edge of ``E`` (integer costs) with equality on the plan;
* **pricing**: the edges left out are priced blockwise with the c-transform
  ``g^c(y) = min_x c(x, y) - f(x)`` over *all* x (:func:`otaudit.core.costs.c_transform`);
  ``<f, a> + <f^c, b>`` (minus a float allowance) is a certified lower bound, always. When
  ``f^c(y) >= g(y) - tol`` for every y, no excluded edge has a negative reduced cost
  (beyond the integer cost resolution): the plan is optimal and the interval closes to the
  resolution of the integer costs (relative ~1e-9 or below). Otherwise the most negative
  edges of every violating column are added and the problem is solved again
  (column generation; the sparse "shielding" route of Schmitzer 2016).

Weights: the flow needs integer supplies. Uniform weights, and weights proportional to
integer counts (e.g. duplicates collapsed into counts; detected up to a common multiplier
``<= 12``), get exact integer supplies (``n == m`` uniform: unit supplies), so the plan is the
exact optimum of the restricted problem. Other weights are rounded to ``S = 2^30`` units with
sums kept exact (largest remainders); the plan is then *repaired* to the true marginals (rows
and columns over their weight are scaled down, the small residual masses are matched by a
north-west corner along a 1-d ordering), so it stays feasible and its cost stays a certified
upper bound; the interval then closes only to ~``(n + m) / S`` relative (said in ``extra``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import config
from ..errors import InputError, SolverError
from . import parallel
from .arrays import as_weights
from .candidates import first_pass, smallest_reduced, transform_neighbours
from .certify import U64, abs_error_mass, gamma
from .costs import GroundCost, SqEuclidean, c_transform, chunk_size, row_chunks

__all__ = [
    "SparseOT",
    "SparseRound",
    "initial_potentials",
    "coarse_potentials",
    "integer_supplies",
]


# ----------------------------------------------------------------------------------------
# weights -> integer supplies
# ----------------------------------------------------------------------------------------
def _counts(w: np.ndarray) -> np.ndarray | None:
    """Integer counts proportional to ``w`` (zeros allowed) if ``w`` is such a vector up to a
    common multiplier ``q <= 12`` of ``w / min w>0`` (relative tolerance 1e-9), else None."""
    pos = w[w > 0]
    if pos.size == 0:
        return None
    t = w / pos.min()
    for q in range(1, 13):
        tq = t * q
        r = np.rint(tq)
        if np.all(np.abs(tq - r) <= 1e-9 * np.maximum(tq, 1.0)) and r.sum() < 2**40:
            return r.astype(np.int64)
    return None


def _largest_remainder(w: np.ndarray, S: int) -> np.ndarray:
    """Integers ``>= 0`` summing exactly to ``S``, each within 1 of ``w * S / sum w``."""
    x = w / w.sum() * S
    base = np.floor(x).astype(np.int64)
    short = int(S - base.sum())
    if short > 0:
        base[np.argsort(-(x - base), kind="stable")[:short]] += 1
    elif short < 0:  # only from round-off in w / w.sum()
        base[np.argsort(x - base, kind="stable")[:-short]] -= 1
    return base


def integer_supplies(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """``(A, B, S, exact)``: integer supplies with ``A.sum() == B.sum() == S``; ``exact`` when
    ``A / S == a`` and ``B / S == b`` as rationals (uniform or integer-count weights)."""
    ca, cb = _counts(a), _counts(b)
    if ca is not None and cb is not None:
        sa, sb = int(ca.sum()), int(cb.sum())
        S = sa * sb // math.gcd(sa, sb)
        if S <= config.SPARSE_SUPPLY_UNITS_MAX:
            return ca * (S // sa), cb * (S // sb), S, True
    S = config.SPARSE_SUPPLY_UNITS
    return _largest_remainder(a, S), _largest_remainder(b, S), S, False


def _northwest(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """North-west corner coupling of non-negative ``A [n]``, ``B [m]`` with equal sums
    (float or int), vectorised: ``(rows, cols, mass)`` with at most ``n + m - 1`` entries."""
    ca = np.cumsum(A)
    cb = np.cumsum(B)
    pts = np.union1d(ca, cb)
    pts = pts[pts > 0]
    lo = np.concatenate([[0], pts[:-1]])
    mass = pts - lo
    keep = mass > 0
    lo, mass = lo[keep], mass[keep]
    rows = np.minimum(np.searchsorted(ca, lo, side="right"), len(A) - 1)
    cols = np.minimum(np.searchsorted(cb, lo, side="right"), len(B) - 1)
    return rows, cols, mass


def _order(Z: torch.Tensor, w: torch.Tensor, direction: torch.Tensor) -> np.ndarray:
    return torch.argsort((Z.to(torch.float64) @ direction).cpu(), stable=True).numpy()


def _principal_direction(Zx: torch.Tensor, Zy: torch.Tensor) -> torch.Tensor:
    """Leading principal direction of the pooled features (a few power iterations)."""
    Z = torch.cat([Zx.to(torch.float64), Zy.to(torch.float64)], 0)
    Z = Z - Z.mean(0)
    v = torch.ones(Z.shape[1], dtype=torch.float64, device=Z.device)
    for _ in range(8):
        v = Z.T @ (Z @ v)
        nv = float(v.norm())
        if not math.isfinite(nv) or nv == 0:
            return torch.ones(Z.shape[1], dtype=torch.float64, device=Z.device)
        v = v / nv
    return v


# ----------------------------------------------------------------------------------------
# candidate edges
# ----------------------------------------------------------------------------------------
def edge_costs(cost: GroundCost, I: np.ndarray, J: np.ndarray) -> np.ndarray:
    """``c(x_I[e], y_J[e])`` in float64 for an edge list, each within the cost's
    ``max_abs_error`` of the real cost: the cost's own ``edge_values`` where it has one
    (direct differences: :class:`SqEuclidean`, the OTDD cost), else row blocks of
    ``cost.block`` (a whole ``n x m`` pass per call)."""
    out = np.empty(len(I), dtype=np.float64)
    if len(I) == 0:
        return out
    edge_values = getattr(cost, "edge_values", None)
    if callable(edge_values):
        dev = cost.device
        vals = edge_values(torch.from_numpy(I).to(dev), torch.from_numpy(J).to(dev))
        return vals.to(torch.float64).cpu().numpy()
    order = np.argsort(I, kind="stable")
    Is, Js = I[order], J[order]
    rows = chunk_size(cost.m)
    vals = np.empty(len(I), dtype=np.float64)
    for R in row_chunks(cost.n, rows):
        lo, hi = np.searchsorted(Is, [R.start, R.stop])
        if hi <= lo:
            continue
        Cb = cost.block(R, None).to(torch.float64).cpu().numpy()
        vals[lo:hi] = Cb[Is[lo:hi] - R.start, Js[lo:hi]]
    out[order] = vals
    return out


def _sq_euclidean_upper(
    cost: SqEuclidean, I: np.ndarray, J: np.ndarray, P: np.ndarray, c: np.ndarray, total: float
) -> float:
    """A rigorous bound on the real cost of the plan ``(I, J, P)`` from its float64 value
    ``total`` (summation already allowed for) of direct-difference costs ``c``: each entry errs
    by at most ``gamma_{d+1}`` relative (the slack ``2^-20`` covers the subnormal floor of
    entries >= 2^-900), and an entry below 2^-900 by the floor ``(d+2) 2^-1074`` unless its
    two points are equal (then its cost is exactly 0), so W(D, D) stays 0."""
    rho = gamma(int(cost.X.shape[1]) + 1) * (1.0 + 2.0**-20)
    out = total * (1.0 + rho) * (1.0 + 2 * U64)
    tiny = np.flatnonzero(c < 2.0**-900)
    if len(tiny):
        X = cost.X[torch.from_numpy(I[tiny]).to(cost.X.device)]
        Y = cost.Y[torch.from_numpy(J[tiny]).to(cost.Y.device)]
        differ = (~(X == Y).all(1)).cpu().numpy()
        mass = float(P[tiny][differ].sum()) * (1.0 + (len(tiny) + 4) * U64)
        out += cost.abs_error() * mass * (1.0 + 2.0**-20)
    return out


def initial_potentials(cost: GroundCost, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Starting potential ``f [n]`` on X. For :class:`SqEuclidean`: the dual potential of the
    Gaussian (affine Brenier) approximation, ``f(x) = |x|^2 - 2 psi(x)`` with
    ``psi(x) = x^T A x / 2 + beta . x``, ``A`` the Bures map between the weighted covariances
    (ridge ``1e-6`` of the mean variance), ``beta = mu_y - A mu_x``; then ``c - f - f^c`` is
    small around ``y = A x + beta``. Other costs, or a non-finite result: zeros."""
    zeros = torch.zeros(cost.n, dtype=torch.float64, device=cost.device)
    if not isinstance(cost, SqEuclidean):
        return zeros
    from .gaussian import sqrtm_psd

    X = cost.X.to(torch.float64)
    Y = cost.Y.to(torch.float64)
    d = X.shape[1]
    mx = a @ X
    my = b @ Y
    Xc = X - mx
    Yc = Y - my
    Sx = (Xc * a[:, None]).T @ Xc
    Sy = (Yc * b[:, None]).T @ Yc
    ridge = 1e-6 * float(torch.trace(Sx) + torch.trace(Sy)) / (2 * d) + 1e-300
    eye = torch.eye(d, dtype=torch.float64, device=X.device)
    Sx = Sx + ridge * eye
    Sy = Sy + ridge * eye
    try:
        Rx = sqrtm_psd(Sx)
        w, V = torch.linalg.eigh(Sx)
        Rx_inv = (V / w.clamp(min=ridge).sqrt()) @ V.T
        M = sqrtm_psd(Rx @ Sy @ Rx)
        A = Rx_inv @ M @ Rx_inv
        A = 0.5 * (A + A.T)
    except Exception:  # noqa: BLE001 - any linear-algebra failure: fall back to zeros
        return zeros
    beta = my - A @ mx
    psi = 0.5 * ((X @ A) * X).sum(1) + X @ beta
    f = (X * X).sum(1) - 2.0 * psi
    return f if bool(torch.isfinite(f).all()) else zeros


def coarse_potentials(
    cost: GroundCost, a: torch.Tensor, b: torch.Tensor, k: int = 0, seed: int = 0
) -> torch.Tensor | None:
    """Starting potential ``f [n]`` from a coarse exact problem (multiscale warm start):
    weighted k-means of X and of Y (``k`` clusters each; 0: ``min(n, m) /
    config.SPARSE_COARSE_RATIO``), the OT problem between the cluster measures solved by POT's
    exact LP when both sides have at most ``config.SPARSE_COARSE_POINTS`` clusters (costs
    rescaled by a power of two), else by this sparse route itself (recursively: its own start
    is a coarser problem; at most ``config.SPARSE_COARSE_ROUNDS`` rounds); then the coarse
    Y-duals ``v`` extended to every x by the c-transform ``f(x) = min_j |x - c_j|^2 - v_j``.
    Captures non-affine maps at the clusters' resolution. :class:`SqEuclidean` only (None
    otherwise)."""
    if not isinstance(cost, SqEuclidean):
        return None
    from .exact import emd
    from .partition import kmeans

    k = k or max(1, min(cost.n, cost.m) // config.SPARSE_COARSE_RATIO)
    k = max(1, min(k, cost.n // 2, cost.m // 2))
    gen = torch.Generator().manual_seed(int(seed))
    X = cost.X.to(torch.float64)
    Y = cost.Y.to(torch.float64)
    near = "kdtree" if X.shape[1] <= 16 else "matmul"  # measured: see kmeans(nearest=)
    lx, cx = kmeans(X, a, k, gen, n_iter=4, nearest=near)
    ly, cy = kmeans(Y, b, k, gen, n_iter=4, nearest=near)
    alpha = torch.zeros(cx.shape[0], dtype=torch.float64, device=X.device).index_add_(0, lx, a)
    beta = torch.zeros(cy.shape[0], dtype=torch.float64, device=X.device).index_add_(0, ly, b)
    if max(cx.shape[0], cy.shape[0]) > config.SPARSE_COARSE_POINTS:
        sp = SparseOT(SqEuclidean(cx, cy), alpha, beta)
        for _ in range(config.SPARSE_COARSE_ROUNDS):
            if sp.round().optimal:
                break
        assert sp.g is not None
        f = c_transform(SqEuclidean(X, cy), sp.g, side="y", fast=True)
        return f if bool(torch.isfinite(f).all()) else None
    C = SqEuclidean(cx, cy).block(None, None)
    cm = float(C.max())
    if not (cm > 0 and math.isfinite(cm)):
        return None
    sc = 2.0 ** -math.floor(math.log2(cm))  # POT's pivot tolerance is absolute
    try:
        sol = emd(alpha, beta, C * sc)
    except SolverError:
        return None
    v = torch.from_numpy(sol.g / sc).to(X.device)
    f = c_transform(SqEuclidean(X, cy), v, side="y", fast=True)
    return f if bool(torch.isfinite(f).all()) else None


# ----------------------------------------------------------------------------------------
# integer min-cost flow and its duals
# ----------------------------------------------------------------------------------------
def solve_mcf(
    n: int, m: int, I: np.ndarray, J: np.ndarray, cint: np.ndarray, A: np.ndarray, B: np.ndarray
) -> np.ndarray:
    """Exact min-cost flow (OR-Tools ``SimpleMinCostFlow``) of supplies ``A`` on X-nodes to
    demands ``B`` on Y-nodes over arcs ``I -> J`` with int64 unit costs ``cint``; arc
    capacities ``min(A_i, B_j)`` (never binding in a transport problem). Returns the flows."""
    from ortools.graph.python import min_cost_flow

    mcf = min_cost_flow.SimpleMinCostFlow()
    cap = np.minimum(A[I], B[J]).astype(np.int64)
    mcf.add_arcs_with_capacity_and_unit_cost(
        I.astype(np.int64), (J + n).astype(np.int64), cap, cint.astype(np.int64)
    )
    mcf.set_nodes_supplies(
        np.arange(n + m, dtype=np.int64), np.concatenate([A, -B]).astype(np.int64)
    )
    status = mcf.solve()
    if status != mcf.OPTIMAL:
        raise SolverError(
            f"sparse min-cost flow ({n}x{m}, {len(I)} arcs) ended with status {status!r}; "
            "use solver='minibatch' or solver='exact'"
        )
    return np.asarray(mcf.flows(np.arange(len(I), dtype=np.int64)), dtype=np.int64)


def residual_potentials(
    n: int,
    m: int,
    I: np.ndarray,
    J: np.ndarray,
    cint: np.ndarray,
    flow: np.ndarray,
    max_rounds: int | None = None,
    d0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Integer potentials of an optimal flow: shortest-path distances ``d`` from a virtual
    source (0-arcs to every node) on the residual graph — arcs ``x_i -> y_j`` of cost
    ``c_ij`` for every edge (the transport LP has no capacities) and ``y_j -> x_i`` of cost
    ``-c_ij`` where the flow is positive. Bellman-Ford with an active set, vectorised, exact in
    int64. Returns ``(f, g, ok)`` with ``f = -d_x``, ``g = d_y`` (so ``f_i + g_j <= c_ij`` on
    every edge, ``=`` where the flow is positive); ``ok`` False if ``max_rounds`` ran out
    (then ``(f, g)`` are not dual-feasible; callers only use them through a c-transform).

    ``d0 [n + m]`` (int64, optional): weights of the virtual source's arcs instead of 0 —
    any values give valid potentials (shortest paths from a virtual source always satisfy
    every arc), and values that already nearly do (the previous round's potentials) make the
    search short and keep the duals close to those of the full problem."""
    N = n + m
    pos = flow > 0
    tail = np.concatenate([I, J[pos] + n])
    head = np.concatenate([J + n, I[pos]])
    w = np.concatenate([cint, -cint[pos]]).astype(np.int64)
    order = np.argsort(tail, kind="stable")
    tail, head, w = tail[order], head[order], w[order]
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.add.at(indptr, tail + 1, 1)
    indptr = np.cumsum(indptr)
    if d0 is None:
        d = np.zeros(N, dtype=np.int64)
        active = np.unique(J[pos] + n)  # only negative arcs can improve the all-zero start
    else:
        d = np.asarray(d0, dtype=np.int64).copy()
        active = np.arange(N, dtype=np.int64)
    rounds = 0
    mark = np.zeros(N, dtype=bool)
    max_rounds = N + 1 if max_rounds is None else max_rounds
    while active.size:
        rounds += 1
        if rounds > max_rounds:
            return -d[:n], d[n:], False
        starts = indptr[active]
        lens = indptr[active + 1] - starts
        tot = int(lens.sum())
        if tot == 0:
            break
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        e = offs + np.arange(tot, dtype=np.int64)
        cand = d[tail[e]] + w[e]
        hd = head[e]
        better = cand < d[hd]
        if not better.any():
            break
        hd, cand = hd[better], cand[better]
        np.minimum.at(d, hd, cand)
        mark[hd] = True  # the improved nodes, in increasing order (as np.unique, no hashing)
        active = np.flatnonzero(mark)
        mark[active] = False
    return -d[:n], d[n:], True


# ----------------------------------------------------------------------------------------
# the sparse exact route, one round at a time
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparseRound:
    """One round of the sparse route: certified ``lower``/``upper`` and diagnostics."""

    lower: float
    upper: float
    optimal: bool  # no excluded edge has a negative reduced cost (to the integer resolution)
    n_edges: int
    n_violating: int
    seconds: float
    info: dict[str, Any]


class SparseOT:
    """The sparse exact route as a resumable object: each :meth:`round` solves the current
    restricted problem exactly, certifies an upper bound (its plan) and a lower bound (its
    duals, c-transformed over all points), then adds the violating edges for the next round.

    Args:
        cost: any :class:`GroundCost` (:class:`SqEuclidean` uses float32 certified blocks).
        a, b: weights (normalised; None = uniform).
        f0: starting potentials on X (None: :func:`initial_potentials`, and in dimension
            ``<= config.SPARSE_COARSE_MAX_DIM`` the better, by certified dual objective, of it
            and :func:`coarse_potentials`), used to pick the first
            candidate edges (reduced-cost nearest neighbours) and to warm-start the duals.
        k: neighbours per point and side in the first candidate set.
        k_add: edges added per violating column in later rounds.
    """

    def __init__(
        self,
        cost: GroundCost,
        a: torch.Tensor | None = None,
        b: torch.Tensor | None = None,
        *,
        f0: torch.Tensor | None = None,
        k: int = config.SPARSE_KNN,
        k_add: int = config.SPARSE_ADD_PER_COLUMN,
    ):
        for name, v in (("k", k), ("k_add", k_add)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(
                    f"{name} must be an integer >= 1, got {v!r}", field=name, fix=f"pass {name}=8"
                )
        self.cost = cost
        dev = cost.device
        self.a = as_weights(a, cost.n, dataset="a", device=dev)
        self.b = as_weights(b, cost.m, dataset="b", device=dev)
        self.k, self.k_add = int(k), int(k_add)
        a_np = self.a.cpu().numpy()
        b_np = self.b.cpu().numpy()
        self.A, self.B, self.S, self.exact_supplies = integer_supplies(a_np, b_np)
        self.f0 = f0
        self.keys = np.zeros(0, dtype=np.int64)  # edge keys i * m + j, sorted, unique
        self.c = np.zeros(0, dtype=np.float64)  # their float64 costs
        self.n_rounds = 0
        # after a round: f, its c-transform g (the certified lower bound's potentials), the
        # restricted problem's own duals g_sparse, and the cost scale (units per cost unit)
        self.f: torch.Tensor | None = None
        self.g: torch.Tensor | None = None
        self.g_sparse: torch.Tensor | None = None
        self.scale = 1.0
        self._direction: torch.Tensor | None = None
        self.plan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.start_lower = -math.inf
        # low dimension: the multiscale start is tried from the first round; otherwise only
        # after a first round whose width exceeds config.SPARSE_COARSE_RETRY_GAP
        self._low_d = int(cost.features_x.shape[1]) <= config.SPARSE_COARSE_MAX_DIM
        self._retry_coarse = False

    # -- edges --
    def _add_edges(self, I: np.ndarray, J: np.ndarray) -> int:
        new = np.unique(I.astype(np.int64) * self.cost.m + J.astype(np.int64))
        if self.keys.size:  # drop the edges already held (self.keys is sorted)
            pos = np.searchsorted(self.keys, new).clip(max=self.keys.size - 1)
            new = new[self.keys[pos] != new]
        if new.size == 0:
            return 0
        cn = edge_costs(self.cost, new // self.cost.m, new % self.cost.m)
        keys = np.concatenate([self.keys, new])
        c = np.concatenate([self.c, cn])
        order = np.argsort(keys, kind="stable")
        self.keys, self.c = keys[order], c[order]
        return int(new.size)

    def _coarse_edges(self) -> None:
        """The multiscale start after a poor first round: its certified dual objective and
        its reduced-cost neighbours join the current ones (one extra pass)."""
        self._retry_coarse = False
        fc = coarse_potentials(self.cost, self.a, self.b)
        if fc is None:
            return
        fc = fc.to(torch.float64).to(self.cost.device)
        g, I, J = first_pass(self.cost, fc, self.k)
        self.start_lower = max(self.start_lower, self._certified_dual(fc, g))
        self._add_edges(I, J)

    def _first_edges(self) -> None:
        cost, dev = self.cost, self.cost.device
        if self.f0 is not None:
            starts = [self.f0]
        else:  # affine (Gaussian) and coarse-LP potentials: keep the higher dual objective
            starts = [initial_potentials(cost, self.a, self.b)]
            fc = coarse_potentials(cost, self.a, self.b) if self._low_d else None
            if fc is not None:
                starts.append(fc)
        best = -math.inf
        for f_try in starts:  # one pass each: f^c and both sides' reduced-cost neighbours
            f_try = f_try.to(torch.float64).to(dev)
            g_try, I_try, J_try = first_pass(cost, f_try, self.k)
            val = self._certified_dual(f_try, g_try)
            if val > best:
                best, f, g, I, J = val, f_try, g_try, I_try, J_try
        self.start_lower = best  # certified dual objective of the start
        self.f, self.g = f, g  # warm start of the first round's dual search
        self._add_edges(I, J)
        # backbone: a north-west corner plan along the leading principal direction keeps the
        # restricted problem feasible whatever the neighbour graph
        self._direction = _principal_direction(cost.features_x, cost.features_y)
        ox = _order(cost.features_x, self.a, self._direction)
        oy = _order(cost.features_y, self.b, self._direction)
        r, c_, _ = _northwest(self.A[ox], self.B[oy])
        self._add_edges(ox[r], oy[c_])

    def _certified_dual(self, f: torch.Tensor, g: torch.Tensor) -> float:
        """``<f, a> + <g, b>`` minus a float allowance, for ``g = f^c`` (a feasible pair):
        the sums' round-off (``(n + m + 4) u`` of the absolute terms) and, for
        :class:`SqEuclidean`, the float64 round-off of the cost values the c-transform took
        its minima over (``4 (d + 4) u max(|x|^2 + |y|^2)`` per unit of mass); clipped at 0
        (costs are non-negative)."""
        cost = self.cost
        val = float((f * self.a).sum() + (g * self.b).sum())
        allowance = (
            (cost.n + cost.m + 4) * U64 * float((f.abs() * self.a).sum() + (g.abs() * self.b).sum())
        )
        if isinstance(cost, SqEuclidean):
            d = cost.X.shape[1]
            r2 = float((cost.X.to(torch.float64) ** 2).sum(1).max()) + float(
                (cost.Y.to(torch.float64) ** 2).sum(1).max()
            )
            allowance += 4 * (d + 4) * U64 * r2
        else:
            allowance += abs_error_mass(cost, self.a)
        return max(val - allowance, 0.0) if math.isfinite(val) else 0.0

    # -- plan repair for rounded supplies --
    def _repair(
        self, I: np.ndarray, J: np.ndarray, P: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.a.cpu().numpy()
        b = self.b.cpu().numpy()
        n, m = self.cost.n, self.cost.m
        rs = np.bincount(I, weights=P, minlength=n)
        sc = np.where(rs > a, a / np.where(rs > 0, rs, 1.0), 1.0)
        P = P * sc[I]
        cs = np.bincount(J, weights=P, minlength=m)
        sc = np.where(cs > b, b / np.where(cs > 0, cs, 1.0), 1.0)
        P = P * sc[J]
        ra = np.clip(a - np.bincount(I, weights=P, minlength=n), 0.0, None)
        rb = np.clip(b - np.bincount(J, weights=P, minlength=m), 0.0, None)
        if ra.sum() <= 0 or rb.sum() <= 0:
            return I, J, P
        rb = rb * (ra.sum() / rb.sum())  # equal totals (they agree up to round-off)
        assert self._direction is not None
        ox = _order(self.cost.features_x, self.a, self._direction)
        oy = _order(self.cost.features_y, self.b, self._direction)
        r, c_, mass = _northwest(ra[ox], rb[oy])
        return (
            np.concatenate([I, ox[r]]),
            np.concatenate([J, oy[c_]]),
            np.concatenate([P, mass]),
        )

    def round(self) -> SparseRound:
        """Solve the current restricted problem, certify, and add the violating edges."""
        t0 = time.perf_counter()
        cost = self.cost
        n, m = cost.n, cost.m
        dev = cost.device
        if self.n_rounds == 0:
            self._first_edges()
        elif self._retry_coarse:
            self._coarse_edges()
        self.n_rounds += 1
        I = self.keys // m
        J = self.keys % m
        # int64 costs: K units over the edges' cost range; K keeps N * K (potentials, OR-Tools'
        # internal cost scaling) and S * K (total cost) inside int64
        cmax = float(self.c.max()) if self.c.size else 0.0
        K = min(
            config.SPARSE_COST_UNITS,
            2**60 // (n + m + 2),
            2**61 // max(1, int(self.S)),
        )
        s = K / cmax if cmax > 0 else 1.0
        cint = np.rint(self.c * s).astype(np.int64)
        t_solve = time.perf_counter()
        flow = solve_mcf(n, m, I, J, cint, self.A, self.B)
        t_solve = time.perf_counter() - t_solve
        # --- certified upper bound: the plan's float64 cost on the true costs ---
        pos = flow > 0
        Ip, Jp = I[pos], J[pos]
        P = flow[pos].astype(np.float64) / float(self.S)
        cp = self.c[pos]
        if not self.exact_supplies:
            Ip, Jp, P = self._repair(Ip, Jp, P)
            cp = edge_costs(cost, Ip, Jp)
        self.plan = (Ip, Jp, P)
        terms = P * cp
        upper = float(terms.sum()) * (1.0 + (len(terms) + 4) * U64)
        if isinstance(cost, SqEuclidean):
            upper = _sq_euclidean_upper(cost, Ip, Jp, P, cp, upper)
        else:
            upper += abs_error_mass(cost, self.a)
        # --- duals: exact integer potentials of the restricted problem ---
        t_dual = time.perf_counter()
        d0 = None
        if self.f is not None and self.g is not None:
            # previous potentials (c-transform pair: every forward arc already feasible),
            # in the new integer units; the search then only repairs the plan's arcs
            fx = self.f.cpu().numpy() * s
            gy = self.g.cpu().numpy() * s
            if (
                np.isfinite(fx).all()
                and np.isfinite(gy).all()
                and max(np.abs(fx).max(initial=0), np.abs(gy).max(initial=0)) < 2.0**61
            ):
                d0 = np.concatenate([np.ceil(-fx), np.floor(gy)]).astype(np.int64)
        fi, gi, ok = residual_potentials(n, m, I, J, cint, flow, d0=d0)
        t_dual = time.perf_counter() - t_dual
        f = torch.from_numpy(fi.astype(np.float64) / s).to(dev)
        g_s = torch.from_numpy(gi.astype(np.float64) / s).to(dev)
        # --- pricing of every edge: c-transform over all x ---
        t_price = time.perf_counter()
        near = None
        if parallel.current() is None:  # one pass: pricing and the violating columns' edges
            g_c, near = transform_neighbours(cost, f, self.k_add)
        else:  # the installed executor runs the pricing; the few new edges stay in process
            g_c = c_transform(cost, f, side="x", fast=True)
        lower = self._certified_dual(f, g_c)
        # the starts' own pairs (f0, f0^c) are dual feasible too: keep the better objective
        lower = max(lower, self.start_lower)
        tol = 2.0 / s + 1e-13 * float(g_c.abs().max() if g_c.numel() else 0.0)
        viol = ((g_c < g_s - tol) & (self.b > 0)).nonzero().flatten()
        added = 0
        if viol.numel():
            if near is not None:  # the ranking of smallest_reduced(..., subset=viol)
                Iv = near[viol].reshape(-1).cpu().numpy()
                Jv = viol.cpu().numpy().repeat(near.shape[1])
            else:
                Iv, Jv = smallest_reduced(cost, f, g_s, self.k_add, side="y", subset=viol)
            added = self._add_edges(Iv, Jv)
        t_price = time.perf_counter() - t_price
        self.f, self.g, self.g_sparse = f, g_c, g_s
        self.scale = s
        optimal = viol.numel() == 0 and ok
        # a first round far from closing under the affine start (a map that is not close to
        # affine, e.g. mass moving between clusters) gets the multiscale start too, once
        self._retry_coarse = (
            self.n_rounds == 1
            and not optimal
            and self.f0 is None
            and not self._low_d
            and upper - lower > config.SPARSE_COARSE_RETRY_GAP * upper
        )
        return SparseRound(
            lower=min(lower, upper),
            upper=upper,
            optimal=optimal,
            n_edges=int(self.keys.size),
            n_violating=int(viol.numel()),
            seconds=time.perf_counter() - t0,
            info={
                "edges_added": added,
                "cost_units": int(K),
                "supplies_exact": bool(self.exact_supplies),
                "supply_units": int(self.S),
                "duals_exact": bool(ok),
                "t_mcf": t_solve,
                "t_duals": t_dual,
                "t_pricing": t_price,
            },
        )
