"""Which exact route is cheapest: a measured cost model (``solver="auto"``).

* ``"exact"``: POT's dense network simplex (:func:`otaudit.core.solve.exact_ot`). Memory
  ``EXACT_BYTES_PER_ENTRY * n * m`` (the float64 cost matrix, POT's plan and its internal
  copies); time modelled as ``ROUTE_EXACT_C * (n m)^ROUTE_EXACT_P`` seconds.
* ``"sparse"``: the sparse exact route (:mod:`otaudit.core.sparse`): a few rounds, each
  dominated by one blockwise pricing pass over the ``n x m`` costs (float32 matmuls,
  ``~ n m d`` flops, plus top-k selections ``~ n m``) plus the min-cost flow on
  ``~ 2 k (n + m)`` edges; modelled as
  ``ROUTE_SPARSE_C0 + ROUTE_SPARSE_C1 * n m (d + ROUTE_SPARSE_D0) + ROUTE_SPARSE_C2 * (n + m)
  + ROUTE_SPARSE_C3 * d^3`` (the Gaussian start's eigendecompositions).
  Memory: its edges, ``~ 64 * 2 k (n + m)`` bytes, and one cost block.
* ``"minibatch"``: only when not even the sparse route's edges fit the budget.

The constants live in :mod:`otaudit.config` and were fitted to the timings recorded in
``benchmarks/RESULTS_generalize.md`` ("route model, session 9": 11 families, 1k-10k points
per side, 2-core Intel Xeon, 1 thread). The dense LP is kept unless the sparse route is
predicted ``config.ROUTE_SPARSE_SAFETY`` times cheaper. Wherever the dense LP fits, auto's
answer is exact on either route (:func:`otaudit.core.solve.auto_anytime`).
"""

from __future__ import annotations

from .. import config

__all__ = [
    "choose_route",
    "dense_fits",
    "exact_route",
    "predict_exact_seconds",
    "predict_sparse_seconds",
    "ROUTES",
]

ROUTES = ("exact", "sparse", "minibatch")


def predict_exact_seconds(n: int, m: int) -> float:
    """Predicted seconds of POT's dense network simplex on an ``n x m`` problem."""
    return config.ROUTE_EXACT_C * float(n * m) ** config.ROUTE_EXACT_P


def predict_sparse_seconds(n: int, m: int, d: int, fast: bool = True) -> float:
    """Predicted seconds of the sparse exact route to certified optimality; ``fast=False``
    for a cost without the certified float32 block (e.g. the OTDD cost): its passes run in
    float64, ``config.ROUTE_SPARSE_SLOW64`` times slower."""
    t = (
        config.ROUTE_SPARSE_C0
        + config.ROUTE_SPARSE_C1 * float(n * m) * (d + config.ROUTE_SPARSE_D0)
        + config.ROUTE_SPARSE_C2 * float(n + m)
        + config.ROUTE_SPARSE_C3 * float(d) ** 3
    )
    return t if fast else t * config.ROUTE_SPARSE_SLOW64


def dense_fits(n: int, m: int, memory_budget_bytes: int | None = None) -> bool:
    """Whether the dense exact LP of an ``n x m`` problem fits ``memory_budget_bytes``
    (default ``config.EXACT_MEMORY_BYTES``)."""
    budget = config.EXACT_MEMORY_BYTES if memory_budget_bytes is None else memory_budget_bytes
    return config.EXACT_BYTES_PER_ENTRY * n * m <= budget


def exact_route(
    n: int, m: int, d: int, memory_budget_bytes: int | None = None, fast: bool = True
) -> str:
    """The cheaper of the two routes to an exact answer: ``"exact"`` (the dense LP) while it
    fits and is predicted no slower than the sparse route run to certified optimality, else
    ``"sparse"`` (``fast``: as for :func:`predict_sparse_seconds`)."""
    if dense_fits(n, m, memory_budget_bytes) and predict_exact_seconds(
        n, m
    ) <= config.ROUTE_SPARSE_SAFETY * predict_sparse_seconds(n, m, d, fast):
        return "exact"
    return "sparse"


def choose_route(
    n: int, m: int, d: int, memory_budget_bytes: int | None = None, fast: bool = True
) -> str:
    """``"exact"`` while the dense LP fits ``memory_budget_bytes`` (default
    ``config.EXACT_MEMORY_BYTES``) and is predicted no slower than the sparse route, else
    ``"sparse"`` while its edges fit, else ``"minibatch"``. ``fast=False``: a cost without
    the certified float32 block (:func:`otaudit.core.costs.has_lower_block`)."""
    budget = config.EXACT_MEMORY_BYTES if memory_budget_bytes is None else memory_budget_bytes
    if exact_route(n, m, d, budget, fast) == "exact":
        return "exact"
    sparse_bytes = 64 * 2 * config.SPARSE_KNN * (n + m) + config.COST_BLOCK_BYTES
    return "sparse" if sparse_bytes <= budget else "minibatch"
