"""Ground costs evaluated in blocks (never an n x m matrix beyond a memory budget).

A ground cost is an object with ``n``, ``m`` and ``block(I, J) -> [len(I), len(J)]`` (float64
torch tensor on the cost's device). Every OT machine of otaudit (exact LP, Sinkhorn,
mini-batch bounds, c-transforms) takes such an object, so the OTDD cost (features plus a
label-to-label table) goes through exactly the same code as the plain squared-Euclidean one.

``features_x`` / ``features_y`` are the coordinates used to build partitions (for OTDD: the
features scaled by ``sqrt(lambda_x)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from . import config

__all__ = [
    "GroundCost",
    "SqEuclidean",
    "sq_euclidean",
    "row_chunks",
    "c_transform",
    "chunk_size",
]


def sq_euclidean(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||^2`` for all pairs, float64, exact zeros for identical rows.

    Uses the expansion ``|x|^2 + |y|^2 - 2 x.y`` (one matmul), then recomputes by direct
    differences the entries whose value is below 1e-9 of ``|x|^2 + |y|^2`` — where the
    expansion loses its relative accuracy. So ``C(x, x) == 0`` exactly and small costs
    are accurate to float64 round-off, which d(D, D) = 0 relies on.
    """
    X = X.to(torch.float64)
    Y = Y.to(torch.float64)
    nx = (X * X).sum(1)
    ny = (Y * Y).sum(1)
    C = nx[:, None] + ny[None, :] - 2.0 * (X @ Y.T)
    C.clamp_(min=0.0)
    scale = nx[:, None] + ny[None, :]
    small = C <= 1e-9 * scale
    if bool(small.any()):
        ii, jj = small.nonzero(as_tuple=True)
        C[ii, jj] = ((X[ii] - Y[jj]) ** 2).sum(1)
    return C


@runtime_checkable
class GroundCost(Protocol):
    """What the OT machines need from a ground cost."""

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


class SqEuclidean:
    """Squared Euclidean cost ``c(x, y) = ||x - y||^2`` between ``X [n, d]`` and ``Y [m, d]``."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor):
        self.X = X
        self.Y = Y
        self.n = X.shape[0]
        self.m = Y.shape[0]

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


def chunk_size(other: int, budget_bytes: int | None = None, itemsize: int = 8) -> int:
    """Rows per chunk so that a ``[rows, other]`` block fits the memory budget."""
    budget = config.COST_BLOCK_BYTES if budget_bytes is None else budget_bytes
    return max(1, int(budget // max(1, other * itemsize * 3)))  # x3: cost + temporaries


def row_chunks(n: int, rows: int) -> Iterator[slice]:
    for s in range(0, n, rows):
        yield slice(s, min(n, s + rows))


def c_transform(
    cost: GroundCost, f: torch.Tensor, *, side: str = "x", budget_bytes: int | None = None
) -> torch.Tensor:
    """Exact c-transform, blockwise.

    ``side="x"``: given ``f`` on X returns ``g(y) = min_x c(x, y) - f(x)`` on Y.
    ``side="y"``: given ``g`` on Y returns ``f(x) = min_y c(x, y) - g(y)`` on X.
    The pair (f, f^c) is dual-feasible: ``f(x) + f^c(y) <= c(x, y)`` for every x, y, up to
    float64 round-off of the cost itself. Memory: one ``[rows, n or m]`` block at a time.
    """
    f = f.to(torch.float64)
    if side == "x":
        out = torch.empty(cost.m, dtype=torch.float64, device=f.device)
        rows = chunk_size(cost.n, budget_bytes)
        for J in row_chunks(cost.m, rows):
            C = cost.block(None, J)  # [n, |J|]
            out[J] = (C - f[:, None]).min(dim=0).values
        return out
    if side == "y":
        out = torch.empty(cost.n, dtype=torch.float64, device=f.device)
        rows = chunk_size(cost.m, budget_bytes)
        for I in row_chunks(cost.n, rows):
            C = cost.block(I, None)  # [|I|, m]
            out[I] = (C - f[None, :]).min(dim=1).values
        return out
    raise ValueError(f"side must be 'x' or 'y', got {side!r}")
