"""Exact OT through POT's network simplex (``ot.emd``), with plan, cost and duals.

POT's default ``numItermax`` (1e5) silently returns a non-optimal plan above ~1000 points;
here the iteration cap scales with the problem and POT's warning is an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import ot
import torch

from .. import config
from ..errors import SolverError

__all__ = ["ExactSolution", "emd", "emd_cost"]


@dataclass(frozen=True)
class ExactSolution:
    """Exact OT solution. ``cost = <plan, C>``; ``f + g <= C`` (duals, certified LB)."""

    cost: float
    plan: np.ndarray  # [n, m] float64
    f: np.ndarray  # [n]
    g: np.ndarray  # [m]


def _as_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def emd(a, b, C, *, max_iter: int | None = None) -> ExactSolution:
    """Solve ``min <P, C>`` over couplings of ``a [n]`` and ``b [m]`` exactly.

    Raises SolverError if the network simplex stops before optimality (never returns a
    silently suboptimal "exact" value).
    """
    a = _as_np(a)
    b = _as_np(b)
    C = np.ascontiguousarray(_as_np(C))
    a = a / a.sum()
    b = b / b.sum()
    n, m = C.shape
    if max_iter is None:
        max_iter = max(config.EMD_MIN_MAX_ITER, config.EMD_MAX_ITER_PER_ENTRY * n * m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            P, log = ot.emd(a, b, C, numItermax=int(max_iter), log=True)
        except UserWarning as w:  # POT warns when it hits numItermax or is infeasible
            raise SolverError(
                f"exact OT ({n}x{m}) did not reach optimality: {w}; raise max_iter "
                f"(was {max_iter}) or use solver='sinkhorn'/'minibatch'"
            ) from None
    if log.get("warning"):
        raise SolverError(f"exact OT ({n}x{m}) failed: {log['warning']}")
    cost = float(np.sum(P * C))
    return ExactSolution(cost=cost, plan=P, f=np.asarray(log["u"]), g=np.asarray(log["v"]))


def emd_cost(a, b, C, *, max_iter: int | None = None) -> float:
    """Exact OT cost only."""
    return emd(a, b, C, max_iter=max_iter).cost
