"""Ground costs evaluated in blocks (never an n x m matrix beyond a memory budget).

A ground cost is an object with ``n``, ``m`` and ``block(I, J) -> [len(I), len(J)]`` (float64
torch tensor on the cost's device). Every OT machine of otaudit (exact LP, Sinkhorn,
mini-batch bounds, c-transforms) takes such an object, so the OTDD cost (features plus a
label-to-label table) goes through exactly the same code as the plain squared-Euclidean one.

``features_x`` / ``features_y`` are the coordinates used to build partitions (for OTDD: the
features scaled by ``sqrt(lambda_x)``).

A cost may also offer ``lower_block(I, J, p, q) -> (B, margin)`` (:class:`SqEuclidean` does):
a fast, low-precision block ``B`` (float32, one matmul) and a float64 scalar ``margin`` such
that, rigorously, ``B[i, j] - margin <= C[I_i, J_j] - p_i - q_j`` for every entry, whatever the
float32 round-off. Lower bounds (c-transforms, block minima) built from it stay certified;
upper bounds are always evaluated with :meth:`block` (float64) on a plan's support.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from .. import config
from . import parallel
from .certify import U64, gamma
from .topk import smallest_k

__all__ = [
    "GroundCost",
    "SqEuclidean",
    "sq_euclidean",
    "row_chunks",
    "c_transform",
    "chunk_size",
    "has_lower_block",
    "matmul_unit_roundoff",
]


#: entries of the expansion below ``FIXUP_REL * (|x~|^2 + |y~|^2)`` (centred norms) are
#: recomputed by direct differences (see :func:`sq_euclidean` and :func:`sq_euclidean_rel_error`)
FIXUP_REL = 2.0**-14


def sq_euclidean_rel_error(d: int) -> float:
    """Rigorous relative error ``rho`` of every entry of :func:`sq_euclidean` in ``d``
    dimensions: ``|C~_ij - C_ij| <= rho C_ij + (d + 2) eta`` (real ``C`` of the float inputs;
    ``eta = 2^-1074`` covers subnormal underflow of the squares).

    * Direct-difference entries: ``fl(sum_k fl(x_k - y_k)^2)``, relative ``gamma_{d+1}``.
    * Expansion entries (kept only when ``C~ >= tau (|x~|^2 + |y~|^2)``, ``tau = FIXUP_REL``,
      on coordinates centred at a common float vector ``mu``): the matmul, the two norms and
      the two additions err by at most ``gamma_{d+2} (|x~|^2 + |y~|^2 + 2 |x~||y~|) <=
      2 gamma_{d+2} S`` with ``S = |x~|^2 + |y~|^2``, and ``C >= C~ - 2 gamma S >= (tau -
      2 gamma) S``, so the relative error is ``<= 2 gamma / (tau - 2 gamma)``. The centring
      rounds each coordinate once: the difference vector moves by at most
      ``delta <= u (|x~| + |y~|) (1 + u) <= 1.5 u sqrt(S)``, the cost by
      ``2 |x - y| delta + delta^2``, relative ``<= 3 u / sqrt(tau') + (1.5 u)^2 / tau'``
      with ``tau' = tau - 2 gamma``.
    """
    g = gamma(d + 2)
    tau = FIXUP_REL - 2.0 * g
    rho_exp = 2.0 * g / tau + 3.0 * U64 / math.sqrt(tau) + (1.5 * U64) ** 2 / tau
    return max(rho_exp, gamma(d + 1)) * (1.0 + 2.0**-20)


def pair_sq_diffs(X: torch.Tensor, Y: torch.Tensor, I: Any, J: Any) -> torch.Tensor:
    """``||x_{I_k} - y_{J_k}||^2 [K]`` in float64 by direct differences, in chunks of
    ``config.COST_BLOCK_BYTES`` (a dense plan's support can hold ``n m`` pairs: gathering
    all their coordinates at once took ``2 n m d x 8`` bytes, 8.9 GB at 6 000 x 6 000 x 32).
    Each entry is the same sum of the same squares whatever the chunking (bit-identical)."""
    I = torch.as_tensor(I)
    J = torch.as_tensor(J)
    K = int(I.numel())
    d = max(1, int(X.shape[1]))
    out = torch.empty(K, dtype=torch.float64, device=X.device)
    step = max(1, int(config.COST_BLOCK_BYTES // (8 * 3 * d)))
    for s in range(0, K, step):
        ii, jj = I[s : s + step], J[s : s + step]
        out[s : s + step] = ((X[ii].to(torch.float64) - Y[jj].to(torch.float64)) ** 2).sum(1)
    return out


def sq_euclidean(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||^2`` for all pairs, float64, exact zeros for identical rows.

    Both clouds are first centred at a common point (``(mean X + mean Y) / 2``; OT costs
    are translation invariant when both clouds move together, and each entry here is), so
    that a large common offset does not cancel in the expansion ``|x|^2 + |y|^2 - 2 x.y``
    (one matmul; issue 13: up to 2.3e-7 relative error at large offsets without it). Entries
    below ``FIXUP_REL`` of ``|x~|^2 + |y~|^2`` — where the expansion loses relative accuracy —
    are recomputed by direct differences of the original coordinates. So ``C(x, x) == 0``
    exactly, small costs are accurate to float64 round-off (which d(D, D) = 0 relies on), and
    every entry has relative error at most :func:`sq_euclidean_rel_error`.

    The fix-up is only looked for in rows that can hold such an entry: row ``i`` can only if
    ``min_j C_ij <= tau (|x_i|^2 + max_j |y_j|^2)`` (one row reduction instead of three
    full-size temporaries); the selected entries are exactly those of the full test.
    """
    X = X.to(torch.float64)
    Y = Y.to(torch.float64)
    Xc, Yc = X, Y
    nx = (X * X).sum(1)
    ny = (Y * Y).sum(1)
    if X.shape[0] and Y.shape[0]:
        # centre only where it matters (a common offset beyond 1/8 of the largest norm):
        # zero-mean data skip the extra copies; the error bounds (rel_error, max_abs_error)
        # hold for either choice
        mu = 0.5 * (X.mean(0) + Y.mean(0))
        if float(mu @ mu) > 2.0**-6 * max(float(nx.max()), float(ny.max())):
            Xc, Yc = X - mu, Y - mu
            nx = (Xc * Xc).sum(1)
            ny = (Yc * Yc).sum(1)
    C = Xc @ Yc.T
    C.mul_(-2.0).add_(nx[:, None]).add_(ny[None, :]).clamp_(min=0.0)
    if C.numel() == 0:
        return C
    cand = (C.amin(1) <= FIXUP_REL * (nx + ny.max())).nonzero().flatten()
    if cand.numel():
        Cs = C[cand]
        small = Cs <= FIXUP_REL * (nx[cand, None] + ny[None, :])
        if bool(small.any()):
            ii, jj = small.nonzero(as_tuple=True)
            C[cand[ii], jj] = ((X[cand[ii]] - Y[jj]) ** 2).sum(1)
    return C


def matmul_unit_roundoff(device: torch.device) -> float:
    """Unit round-off ``u`` to assume for a float32 matmul on ``device`` under torch's current
    settings: ``2^-24`` for IEEE float32; ``2^-8`` (bfloat16, the coarsest torch may use) when
    ``torch.get_float32_matmul_precision() != "highest"`` or, on CUDA, TF32 is allowed."""
    lowered = torch.get_float32_matmul_precision() != "highest"
    if torch.device(device).type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        lowered = True
    return 2.0**-8 if lowered else 2.0**-24


def has_lower_block(cost: object) -> bool:
    """Whether ``cost`` offers the certified fast ``lower_block`` (see module docstring)."""
    return callable(getattr(cost, "lower_block", None))


@runtime_checkable
class GroundCost(Protocol):
    """What the OT machines need from a ground cost. Costs must be non-negative (the bound
    families use ``OT >= 0`` as a certificate of last resort)."""

    n: int
    m: int

    @property
    def device(self) -> torch.device: ...

    @property
    def features_x(self) -> torch.Tensor: ...

    @property
    def features_y(self) -> torch.Tensor: ...

    def block(
        self, I: torch.Tensor | slice | None, J: torch.Tensor | slice | None
    ) -> torch.Tensor: ...


class _Centred32:
    """float32 copies of X and Y centred at a common point, with a rigorous bound on what the
    centring and the rounding changed.

    ``mu = (mean X + mean Y) / 2``; ``x~ = fl32(fl64(x - mu))`` (a float32 number, used
    exactly from then on). The residual ``r_x = (x - mu) - x~`` has norm at most
    ``e_x = ||fl64(fl64(x - mu) - x~)|| (1 + 2^-40) + u64 (||x|| + ||mu||) (1 + 2^-40)``: the
    first float64 subtraction errs by at most ``u64 |x_k - mu_k| <= u64 (|x_k| + |mu_k|)`` per
    coordinate, the second is exact (a double minus its float32 rounding is a double), the
    norm's own float64 round-off is covered by the ``2^-40`` factor (d < 2^12). Then, for
    real numbers, ``||x - y|| >= ||x~ - y~|| - (e_x + e_y)``, hence
    ``||x - y||^2 >= ||x~ - y~||^2 - 2 (||x~|| + ||y~||)(e_x + e_y) >= ||x~ - y~||^2 - E``
    and likewise ``||x - y||^2 <= ||x~ - y~||^2 + E``, with the scalar
    ``E = 2 (max ||x~|| + max ||y~||)(max e_x + max e_y) + (max e_x + max e_y)^2``.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor):
        X = X.to(torch.float64)
        Y = Y.to(torch.float64)
        mu = 0.5 * (X.mean(0) + Y.mean(0)) if X.numel() and Y.numel() else X.new_zeros(0)
        tight = 1.0 + 2.0**-40
        nmu = float(mu.norm()) if mu.numel() else 0.0

        def prep(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
            Zc = Z - mu
            Z32 = Zc.to(torch.float32)
            z64 = Z32.to(torch.float64)
            e = ((Zc - z64).norm(dim=1) * tight + U64 * (Z.norm(dim=1) + nmu) * tight).max()
            nz = (z64 * z64).sum(1)  # ||z~||^2, float64 (error <= d u64 relative)
            return (
                Z32,
                nz,
                float(e) if Z.shape[0] else 0.0,
                float(nz.max().sqrt()) if Z.shape[0] else 0.0,
            )

        self.X32, self.nx, ex, rx = prep(X)
        self.Y32, self.ny, ey, ry = prep(Y)
        self.E = (2.0 * (rx + ry) * (ex + ey) + (ex + ey) ** 2) * tight
        self.d = X.shape[1]
        # the float32 analysis needs normal float32 numbers well away from under/overflow
        r = max(rx, ry)
        self.safe = (r == 0.0 or 2.0**-40 <= r <= 2.0**40) and math.isfinite(self.E)


@dataclass(frozen=True)
class LowerOperands:
    """Augmented float32 operands of :meth:`SqEuclidean.lower_block` (``xa [n', d + 2]``,
    ``ya [m', d + 2]``) and the certified ``margin`` of every entry of ``xa @ ya.T``."""

    xa: torch.Tensor
    ya: torch.Tensor
    margin: float

    def block(self, R=None, K=None, *, transposed: bool = False) -> torch.Tensor:
        """Rows ``R`` of the x-side against rows ``K`` of the y-side (None: all):
        ``[|R|, |K|]``, or ``[|K|, |R|]`` computed directly with ``transposed=True``."""
        xa = self.xa if R is None else self.xa[R]
        ya = self.ya if K is None else self.ya[K]
        return ya @ xa.T if transposed else xa @ ya.T


class SqEuclidean:
    """Squared Euclidean cost ``c(x, y) = ||x - y||^2`` between ``X [n, d]`` and ``Y [m, d]``."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor):
        self.X = X
        self.Y = Y
        self.n = X.shape[0]
        self.m = Y.shape[0]
        self._c32: _Centred32 | None = None
        self._cmax: float | None = None
        self._rmax: float | None = None

    @property
    def device(self) -> torch.device:
        return self.X.device

    @property
    def features_x(self) -> torch.Tensor:
        return self.X

    @property
    def features_y(self) -> torch.Tensor:
        return self.Y

    def block(self, I=None, J=None) -> torch.Tensor:
        Xi = self.X if I is None else self.X[I]
        Yj = self.Y if J is None else self.Y[J]
        return sq_euclidean(Xi, Yj)

    def transpose(self) -> SqEuclidean:
        return SqEuclidean(self.Y, self.X)

    def sub(self, I: torch.Tensor, J: torch.Tensor) -> SqEuclidean:
        """The cost between the points ``X[I]`` and ``Y[J]`` only (what a block solve sent
        to another worker carries): ``sub(I, J).block(None, None) == block(I, J)``."""
        return SqEuclidean(self.X[I], self.Y[J])

    def pair_cost(self, I: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(||x_{I_k} - y_{J_k}||^2 [K], rho)`` by direct differences, float64, with
        relative error at most ``rho = gamma_{d+1}`` (plus subnormal underflow, ``(d + 2)
        eta`` absolute, which :meth:`abs_error` states)."""
        d = int(self.X.shape[1])
        return pair_sq_diffs(self.X, self.Y, I, J), gamma(d + 1) * (1.0 + 2.0**-20)

    def edge_values(self, I: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """``||x_{I_k} - y_{J_k}||^2 [K]`` by direct differences (:func:`pair_sq_diffs`),
        within :meth:`max_abs_error` of the real cost: what the sparse route prices its
        edges with."""
        return pair_sq_diffs(self.X, self.Y, I, J)

    def rel_error(self) -> float:
        """Relative error bound of :meth:`block` entries (:func:`sq_euclidean_rel_error`)."""
        return sq_euclidean_rel_error(int(self.X.shape[1]))

    def max_abs_error(self) -> float:
        """A bound on ``|C~_ij - C_ij|`` over all entries of :meth:`block` (absolute): the
        expansion errs by ``gamma_{d+2} (|x~| + |y~|)^2 <= gamma_{d+2} R`` (``R`` the larger
        of :meth:`max_cost` and the uncentred ``(max |x| + max |y|)^2``: a block may or may
        not have been centred) and the centring by ``2 |x - y| delta + delta^2 <= 3 u
        max_cost``; direct differences by
        ``gamma_{d+1} C``; plus the underflow floor. Tighter than ``rel_error * max_cost``
        (whose ``1/tau`` factor only matters relative to small entries)."""
        d = int(self.X.shape[1])
        if self._rmax is None:  # uncentred radius, for blocks :func:`sq_euclidean` kept so
            rx = float(self.X.to(torch.float64).norm(dim=1).max()) if self.n else 0.0
            ry = float(self.Y.to(torch.float64).norm(dim=1).max()) if self.m else 0.0
            self._rmax = ((rx + ry) * (1.0 + (d + 4) * U64)) ** 2
        big = max(self.max_cost(), self._rmax)
        return (2.0 * gamma(d + 2) + 4.0 * U64) * big * (1 + 2.0**-20) + self.abs_error()

    def abs_error(self) -> float:
        """Absolute error floor of :meth:`block` entries (subnormal underflow)."""
        return (int(self.X.shape[1]) + 2) * 2.0**-1074

    def max_cost(self) -> float:
        """A rigorous upper bound on every ``||x_i - y_j||^2`` (real arithmetic):
        ``(max |x - mu| + max |y - mu|)^2`` for any ``mu``, each norm inflated for its own
        round-off (``(d + 2) u``) and for the rounding of ``x - mu`` (``u |x - mu|``)."""
        if self._cmax is None:
            X = self.X.to(torch.float64)
            Y = self.Y.to(torch.float64)
            if X.numel() == 0 or Y.numel() == 0:
                self._cmax = 0.0
            else:
                mu = 0.5 * (X.mean(0) + Y.mean(0))
                r = float((X - mu).norm(dim=1).max()) + float((Y - mu).norm(dim=1).max())
                d = int(X.shape[1])
                self._cmax = (r * (1.0 + (d + 4) * U64)) ** 2 * (1.0 + 4 * U64)
        return self._cmax

    def lower_block(
        self,
        I: torch.Tensor | slice | None = None,
        J: torch.Tensor | slice | None = None,
        p: torch.Tensor | None = None,
        q: torch.Tensor | None = None,
        *,
        transposed: bool = False,
    ) -> tuple[torch.Tensor, float]:
        """Certified fast block: returns ``(B [|I|, |J|] float32, margin)`` (``[|J|, |I|]``,
        i.e. ``B^T`` computed directly, with ``transposed=True``) with
        ``|B_ij - (||x_i - y_j||^2 - p_i - q_j)| <= margin`` rigorously (real arithmetic),
        where ``p [|I|]``, ``q [|J|]`` are float64 potentials (None: zero). So ``B - margin``
        is a certified lower bound of the residual and ``B + margin`` an upper one.

        One float32 matmul of augmented vectors: with a power of two ``s`` and a shift
        ``t``, ``hx_i = fl64(|x~_i|^2 - p_i + t)``, ``hy_j = fl64(|y~_j|^2 - q_j - t)``,
        ``xa_i = [-2 x~_i, fl32(hx_i / s), s]``, ``ya_j = [y~_j, s, fl32(hy_j / s)]``, so that
        in real arithmetic ``xa_i . ya_j = ||x~_i - y~_j||^2 - p_i - q_j + dx_i + dy_j`` with
        ``dx_i = fl32(hx_i) - hx_i^true`` (``s`` scales exactly). Error terms, all bounded:

        * matmul: ``|fl(xa . ya) - xa . ya| <= gamma_k |xa| . |ya| <= gamma_k ||xa|| ||ya||``,
          ``k = d + 2``, ``gamma_k = k u / (1 - k u)`` (Higham, Thm 3.1; any summation order,
          FMA or not), ``u`` from :func:`matmul_unit_roundoff`;
        * ``|dx_i| <= |hx_i - s fl32(hx_i / s)| + (d + 3) u64 (|x~_i|^2 + |p_i| + |t|)`` (the
          first term is computed exactly in float64; the second covers the float64 sums,
          ``|x~_i|^2`` included);
        * the centring/rounding of the points: ``E`` (see :class:`_Centred32`).

        ``margin`` = the sum of the maxima of these terms over the block, times 2 (covers the
        round-off of computing the margin itself and of ``float64(B) - margin``).
        """
        ops = self.lower_operands(I, J, p, q)
        if ops is None:
            return self._lower_block64(I, J, p, q, transposed)
        return ops.block(transposed=transposed), ops.margin

    def lower_operands(
        self,
        I: torch.Tensor | slice | None = None,
        J: torch.Tensor | slice | None = None,
        p: torch.Tensor | None = None,
        q: torch.Tensor | None = None,
    ) -> LowerOperands | None:
        """The augmented float32 operands of :meth:`lower_block` for ``X[I]`` and ``Y[J]``,
        made once: ``ops.block(R, K)`` is the fast block of rows ``R`` of ``X[I]`` and ``K`` of
        ``Y[J]`` and ``ops.margin`` holds for every entry of every such block (it is computed
        from maxima over all of ``X[I]`` and ``Y[J]``). A pass over many blocks against a
        large other side then prepares that side once, not once per block.
        ``lower_block(I, J, p, q)`` is exactly ``ops.block(), ops.margin``. None where the
        float32 analysis does not apply (then :meth:`lower_block` computes in float64)."""
        if self._c32 is None:
            self._c32 = _Centred32(self.X, self.Y)
        c = self._c32
        if not c.safe:
            return None
        X32 = c.X32 if I is None else c.X32[I]
        Y32 = c.Y32 if J is None else c.Y32[J]
        nx = c.nx if I is None else c.nx[I]
        ny = c.ny if J is None else c.ny[J]
        dev = X32.device
        p = torch.zeros_like(nx) if p is None else p.to(torch.float64).to(dev)
        q = torch.zeros_like(ny) if q is None else q.to(torch.float64).to(dev)
        d2 = c.d + 2
        if nx.numel() == 0 or ny.numel() == 0:
            return LowerOperands(X32.new_zeros(nx.numel(), d2), Y32.new_zeros(ny.numel(), d2), 0.0)
        hx0 = nx - p
        hy0 = ny - q
        t = 0.5 * (float(hy0.median()) - float(hx0.median()))  # balances |hx| and |hy|
        hx = hx0 + t
        hy = hy0 - t
        H = max(float(hx.abs().max()), float(hy.abs().max()), 1e-300)
        if not (2.0**-100 <= H <= 2.0**100):  # float32 range: underflow / overflow
            return None
        s = 2.0 ** round(0.5 * math.log2(H))  # power of two: scaling by s is exact
        hx32 = (hx / s).to(torch.float32)
        hy32 = (hy / s).to(torch.float32)
        dx = float((hx - hx32.to(torch.float64) * s).abs().max()) + (c.d + 3) * U64 * float(
            (nx + p.abs()).max() + abs(t)
        )
        dy = float((hy - hy32.to(torch.float64) * s).abs().max()) + (c.d + 3) * U64 * float(
            (ny + q.abs()).max() + abs(t)
        )
        ones_x = torch.full((X32.shape[0], 1), s, dtype=torch.float32, device=dev)
        ones_y = torch.full((Y32.shape[0], 1), s, dtype=torch.float32, device=dev)
        xa = torch.cat([-2.0 * X32, hx32[:, None], ones_x], 1)
        ya = torch.cat([Y32, ones_y, hy32[:, None]], 1)
        k = d2
        u = matmul_unit_roundoff(dev)
        gamma = k * u / (1.0 - k * u)
        na = float(xa.to(torch.float64).norm(dim=1).max())
        nb = float(ya.to(torch.float64).norm(dim=1).max())
        # float32 underflow: each of the k products and k additions may lose up to the
        # smallest subnormal 2^-149 (absolute), beyond the relative model above
        under = 2.0 * (k + 2) * 2.0**-149
        margin = 2.0 * (gamma * na * nb + dx + dy + c.E + under) + 4 * U64 * float(H) * 2
        # no overflow is possible here: |x~| <= 2^40 and H <= 2^100 bound every product by
        # 2^100 and every sum of k of them far below the float32 maximum 2^128
        if not math.isfinite(margin):
            return None
        return LowerOperands(xa, ya, margin)

    def _lower_block64(self, I, J, p, q, transposed: bool) -> tuple[torch.Tensor, float]:
        """float64 fallback of :meth:`lower_block` for data outside the safe float32 range
        (largest centred norm outside ``[2^-40, 2^40]``, or potentials that push the
        augmented entries out of ``[2^-100, 2^100]``): ``B = C~ - p - q`` in float64 with
        ``|C~ - C| <= rho C + abs`` (:meth:`rel_error`, :meth:`abs_error`) and two float64
        subtractions (``<= 2 u (C + |p| + |q|)``), all maxima bounded by :meth:`max_cost`."""
        C = self.block(I, J)
        dev = C.device
        p = torch.zeros(C.shape[0], dtype=torch.float64, device=dev) if p is None else p
        q = torch.zeros(C.shape[1], dtype=torch.float64, device=dev) if q is None else q
        p = p.to(torch.float64).to(dev)
        q = q.to(torch.float64).to(dev)
        B = C - p[:, None] - q[None, :]
        cm = self.max_cost()
        pm = float(p.abs().max()) if p.numel() else 0.0
        qm = float(q.abs().max()) if q.numel() else 0.0
        margin = (self.max_abs_error() + 3 * U64 * (cm + pm + qm)) * (1 + 2.0**-20)
        return (B.T.contiguous() if transposed else B), margin


def chunk_size(other: int, budget_bytes: int | None = None, itemsize: int = 8) -> int:
    """Rows per chunk so that a ``[rows, other]`` block fits the memory budget."""
    budget = config.COST_BLOCK_BYTES if budget_bytes is None else budget_bytes
    return max(1, int(budget // max(1, other * itemsize * 3)))  # x3: cost + temporaries


def row_chunks(n: int, rows: int) -> Iterator[slice]:
    for s in range(0, n, rows):
        yield slice(s, min(n, s + rows))


def _exact_candidates(
    B: torch.Tensor,
    margin: float,
    pot: torch.Tensor,
    P_out: torch.Tensor,
    P_cand: torch.Tensor,
    order: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Exact ``min_k ||P_out[r] - P_cand[k]||^2 - pot[k]`` for every row ``r`` of a fast block
    ``B [n_out, n_cand]`` with ``|B - (C - pot)| <= margin``: the arg-min lies among the
    entries with ``B <= min B + 2 margin`` (``B_{k*} <= R* + margin <= B_min + 2 margin``);
    those are recomputed in float64 by direct differences (exact zeros for identical
    points). Reductions run along the contiguous dimension. ``order [n_out, >= 2]``: each
    row's columns in ascending order of ``B`` (:func:`otaudit.core.topk.smallest_k`), when
    the caller has them; B is not modified. Returns None when the candidates are too many
    (more than 32 per output); the caller then uses the float64 block."""
    n_out, n_cand = B.shape
    if order is None or order.shape[1] < min(2, n_cand):
        order = smallest_k(B, 2)
    arg1 = order[:, 0]
    bmin = B.gather(1, arg1[:, None]).squeeze(1)  # smallest, then second smallest per row
    thr = (bmin.to(torch.float64) + 2.0 * margin) * (1 + 2.0**-20) + 2.0**-100
    thr32 = thr.to(torch.float32)
    thr32 = torch.nextafter(thr32, torch.full_like(thr32, math.inf))
    if n_cand >= 2:
        amb = B.gather(1, order[:, 1:2]).squeeze(1) <= thr32  # second smallest within reach
    else:
        amb = torch.zeros(n_out, dtype=torch.bool, device=B.device)
    rows = torch.arange(n_out, device=B.device)
    keep = ~amb
    r_l, k_l = [rows[keep]], [arg1[keep]]
    amb_idx = amb.nonzero().flatten()
    if amb_idx.numel():
        count = 0
        if order.shape[1] > 2:  # rows whose candidates all lie among their known smallest
            oa = order[amb_idx]
            inside = B.gather(1, order)[amb_idx] <= thr32[amb_idx, None]
            few = ~inside[:, -1]
            a_, j_ = inside[few].nonzero(as_tuple=True)
            r_l.append(amb_idx[few][a_])
            k_l.append(oa[few][a_, j_])
            count += int(a_.numel())
            amb_idx = amb_idx[~few]
        mask = B[amb_idx] <= thr32[amb_idx, None]
        if count + int(mask.count_nonzero()) > 32 * n_out:
            return None
        a_, k_ = mask.nonzero(as_tuple=True)
        r_l.append(amb_idx[a_])
        k_l.append(k_)
    rr, kk = torch.cat(r_l), torch.cat(k_l)
    val = ((P_out[rr].to(torch.float64) - P_cand[kk].to(torch.float64)) ** 2).sum(1) - pot[kk]
    out = torch.full((n_out,), math.inf, dtype=torch.float64, device=B.device)
    return out.scatter_reduce_(0, rr, val, reduce="amin")


def c_transform(
    cost: GroundCost,
    f: torch.Tensor,
    *,
    side: str = "x",
    budget_bytes: int | None = None,
    fast: bool = False,
    executor: Any = None,
) -> torch.Tensor:
    """Exact c-transform, blockwise.

    ``side="x"``: given ``f`` on X returns ``g(y) = min_x c(x, y) - f(x)`` on Y.
    ``side="y"``: given ``g`` on Y returns ``f(x) = min_y c(x, y) - g(y)`` on X.
    The pair (f, f^c) is dual-feasible: ``f(x) + f^c(y) <= c(x, y)`` for every x, y, up to
    float64 round-off of the cost itself. Memory: one ``[rows, n or m]`` block at a time.

    ``fast=True`` (costs with ``lower_block``, e.g. :class:`SqEuclidean`; ignored otherwise):
    each block is one float32 matmul with a rigorous error ``margin``; the entries within
    ``2 margin`` of the block minimum (which contain the exact arg-min) are recomputed in
    float64 by direct differences, so the result is the same exact c-transform (float64
    round-off of the cost only) at float32 matmul speed. A block with too many candidates
    is computed in float64 instead.

    ``executor`` (or the one installed by :func:`otaudit.core.parallel.using`): the output
    row tiles are submitted in contiguous chunks (the cost shared once when the executor
    can share); each tile is computed exactly as in process, so the result is the same to
    the bit. A CUDA cost always runs in process.
    """
    f = f.to(torch.float64)
    fast = fast and has_lower_block(cost)
    if side not in ("x", "y"):
        raise ValueError(f"side must be 'x' or 'y', got {side!r}")
    n_out, n_other = (cost.m, cost.n) if side == "x" else (cost.n, cost.m)
    out = torch.full((n_out,), math.inf, dtype=torch.float64, device=f.device)
    rows, cols = transform_tiles(n_out, n_other, budget_bytes, fast)
    tiles = list(row_chunks(n_out, rows))
    with parallel.using(executor) as pool:
        if pool is None or cost.device.type != "cpu" or len(tiles) < 2:
            ops = _transform_operands(cost, f, side, fast)
            for R in tiles:
                out[R] = _c_transform_rows(cost, f, side, fast, cols, R, ops)
            return out
        if fast:  # the float32 copies, made once here rather than once per task
            cost.lower_block(slice(0, 1), slice(0, 1))  # type: ignore[attr-defined]
        chunks = parallel.chunked(tiles, pool.n_chunks(len(tiles)))
        res = pool.map(_c_transform_chunk, chunks, pool.share(cost), f, side, fast, cols)
    for R, r in zip(tiles, res, strict=True):
        out[R] = r
    return out


def _transform_operands(cost: GroundCost, f: torch.Tensor, side: str, fast: bool) -> Any:
    """The fast path's operands for a whole c-transform (potential ``f`` on the ``side``
    being minimised over), made once; None: per-block :meth:`lower_block` (float64 data)."""
    if not fast:
        return None
    if side == "x":
        return cost.lower_operands(None, None, f, None)  # type: ignore[attr-defined]
    return cost.lower_operands(None, None, None, f)  # type: ignore[attr-defined]


def _c_transform_chunk(
    cost: GroundCost, f: torch.Tensor, side: str, fast: bool, cols: int, tiles: list[slice]
) -> list[torch.Tensor]:
    """One submitted task of :func:`c_transform`: its row tiles, in order."""
    ops = _transform_operands(cost, f, side, fast)
    return [_c_transform_rows(cost, f, side, fast, cols, R, ops) for R in tiles]


def c_transform_tile(
    cost: GroundCost,
    f: torch.Tensor,
    side: str,
    fast: bool,
    R: slice,
    K: slice,
    KK,
    ops,
    k: int = 2,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(min over K of c - f for the outputs R, the fast block, its order)``: the minimum is
    exact in both branches; the block ``B [|R|, |K|]`` (float32, within its operands'
    margin of ``c - f``, unchanged by this call) and the columns of each row's ``k >= 2``
    smallest entries of ``B`` in ascending order are None where the float64 path ran."""
    res = None
    B = None
    order = None
    if fast:
        if side == "x":
            if ops is not None:
                B, margin = ops.block(K, R, transposed=True), ops.margin
            else:
                B, margin = cost.lower_block(KK, R, f[K], None, transposed=True)  # type: ignore[attr-defined]
            order = smallest_k(B, max(2, k))
            res = _exact_candidates(B, margin, f[K], cost.Y[R], cost.X[K], order)  # type: ignore[attr-defined]
        else:
            if ops is not None:
                B, margin = ops.block(R, K), ops.margin
            else:
                B, margin = cost.lower_block(R, KK, None, f[K])  # type: ignore[attr-defined]
            order = smallest_k(B, max(2, k))
            res = _exact_candidates(B, margin, f[K], cost.X[R], cost.Y[K], order)  # type: ignore[attr-defined]
    if res is None:
        if side == "x":
            res = (cost.block(KK, R) - f[K][:, None]).min(dim=0).values
        else:
            res = (cost.block(R, KK) - f[K][None, :]).min(dim=1).values
    return res, B, order


def _c_transform_rows(
    cost: GroundCost, f: torch.Tensor, side: str, fast: bool, cols: int, R: slice, ops=None
) -> torch.Tensor:
    """The c-transform on the output rows ``R``: the running minimum over the column tiles
    of the other side (the whole side at once when it fits)."""
    n_other = cost.n if side == "x" else cost.m
    out = torch.full((R.stop - R.start,), math.inf, dtype=torch.float64, device=f.device)
    for K in row_chunks(n_other, cols):
        K_all = cols >= n_other  # whole other side: no indexing copies
        KK = None if K_all else K
        res, _, _ = c_transform_tile(cost, f, side, fast, R, K, KK, ops)
        out = res if K_all else torch.minimum(out, res)
    return out


def transform_tiles(
    n_out: int, n_other: int, budget_bytes: int | None, fast: bool
) -> tuple[int, int]:
    """Tiles ``(rows, cols)`` of a c-transform (:func:`_tiles`); on the fast path, whole rows
    are also capped at ``config.FAST_BLOCK_BYTES`` of float32 block: a block that stays in
    the cache is reduced ~3x faster (measured at 50 000 columns: matmul 1.52 s per 2.5e9
    entries at 96 rows, 5.26 s at 223)."""
    rows, cols = _tiles(n_out, n_other, budget_bytes, itemsize=2 if fast else 8)
    if fast and cols >= n_other and budget_bytes is None:
        rows = min(rows, max(8, config.FAST_BLOCK_BYTES // max(1, 4 * n_other)))
    return rows, cols


def _tiles(n_out: int, n_other: int, budget_bytes: int | None, itemsize: int) -> tuple[int, int]:
    """Tile ``(rows of the output, columns of the other side)`` for c-transforms.

    Whole rows (``cols = n_other``) while at least ``C_TRANSFORM_MIN_ROWS`` of them fit the
    budget (the previous behaviour); beyond, the other side is cut into column tiles with a
    running minimum, so that per-tile set-up (the augmented float32 operands of the fast
    path: ``(rows + cols) x (d + 2)``) stays small next to the tile's ``rows x cols`` entries.
    Without this, 5 000 x 1 000 000 cut into 10-row chunks rebuilt a 1M-row operand 500 times
    (247.9 s; 58.8 s with tiles).
    """
    budget = config.COST_BLOCK_BYTES if budget_bytes is None else budget_bytes
    rows = chunk_size(n_other, budget_bytes, itemsize)
    min_rows = min(n_out, config.C_TRANSFORM_MIN_ROWS)
    if rows >= min_rows:
        return rows, n_other
    cols = max(1, int(budget // max(1, min_rows * itemsize * 3)))
    return min_rows, min(n_other, cols)


class DenseCost:
    """A ground cost evaluated once and held in memory (``[n, m]`` float64).

    Iterative solvers (Sinkhorn) touch every entry at every iteration; when the matrix fits
    the memory budget, evaluating it once instead of per iteration is the cheap choice.
    Wraps any :class:`GroundCost` and keeps its partition features.
    """

    def __getattr__(self, name: str):
        # the error statements of the wrapped cost hold for its evaluated entries
        if name in ("rel_error", "abs_error", "max_abs_error", "max_cost", "pair_cost"):
            return getattr(self.base, name)
        raise AttributeError(name)

    def __init__(self, cost: GroundCost):
        self.base = cost
        self.n = cost.n
        self.m = cost.m
        self.C = cost.block(None, None).to(torch.float64)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def features_x(self) -> torch.Tensor:
        return self.base.features_x

    @property
    def features_y(self) -> torch.Tensor:
        return self.base.features_y

    def block(self, I=None, J=None) -> torch.Tensor:
        C = self.C if I is None else self.C[I]
        return C if J is None else C[:, J]
