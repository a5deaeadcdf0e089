"""The immutable result object returned by every solver of otaudit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["OTResult", "KINDS", "distance_of", "relative_gap"]

KINDS = ("exact", "bracketed", "estimate")


def distance_of(value: Any) -> Any:
    """``sqrt(value)`` clipped at 0 against round-off: the distance (OTDD, W2) of a squared
    cost, for a number (a float back) or an array (elementwise). The one home of that
    conversion (:attr:`OTResult.distance`, :attr:`otaudit.dataset_distance.OTDDMatrix.distances`)."""
    if isinstance(value, np.ndarray):
        return np.sqrt(np.maximum(value, 0.0))
    return math.sqrt(max(float(value), 0.0))


def relative_gap(lower: float, upper: float) -> float:
    """``(upper - lower) / upper`` of an interval: 0 when its ends are equal (also both 0),
    inf when ``upper`` is not a positive finite number (:attr:`OTResult.gap_rel`)."""
    if upper == lower:
        return 0.0
    if not math.isfinite(upper) or upper <= 0:
        return math.inf
    return (upper - lower) / upper


@dataclass(frozen=True)
class OTResult:
    """Result of an OT or OTDD computation: what is known, and how.

    Attributes:
        value: best estimate of the OT cost (OTDD² for :func:`otaudit.otdd`, W2² for
            :func:`otaudit.ot_bounds`): the exact value, the midpoint of a certified
            interval, the upper bound when no lower bound was computed (mini-batch
            ``lower="none"``), or an uncertified estimate (sliced screening).
        lower: lower bound on the exact cost; certified (a feasible dual's objective) when
            ``lower_certified``; ``-inf`` if none was computed.
        upper: upper bound (a feasible plan's cost) when ``upper_certified``; ``+inf`` if
            none is available.
        certified: ``lower_certified and upper_certified`` (kept for compatibility; passing
            it alone sets both per-bound flags).
        method: a short string naming the solver and its options.
        n_solves: number of OT solves used (mini-batch solves for the bound families).
        seconds: wall time.
        params: the parameters applied (JSON-serialisable).
        converged: whether every iterative solve reached its tolerance (computed by each
            solver; True for the exact LP).
        extra: solver-specific diagnostics (JSON-serialisable), e.g. bytes moved.
        lower_certified, upper_certified: per-bound certificates (default: ``certified``).
    """

    value: float
    lower: float
    upper: float
    certified: bool
    method: str
    n_solves: int = 1
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    converged: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    lower_certified: bool | None = None
    upper_certified: bool | None = None

    @property
    def kind(self) -> str:
        """``"exact"`` (certified lower == certified upper), ``"bracketed"`` (both bounds
        certified) or ``"estimate"`` (at most one bound certified)."""
        if self.lower_certified and self.upper_certified:
            return "exact" if self.lower == self.upper else "bracketed"
        return "estimate"

    @property
    def distance(self) -> float:
        """``sqrt(value)`` (OTDD or W2), clipped at 0 against round-off."""
        return distance_of(self.value)

    @property
    def gap(self) -> float:
        """``upper - lower`` (absolute width of the interval)."""
        return self.upper - self.lower

    @property
    def gap_rel(self) -> float:
        """``(upper - lower) / upper``; 0 for an exact solve, 0 when both are 0."""
        return relative_gap(self.lower, self.upper)

    def replace(self, **changes: Any) -> OTResult:
        if "certified" in changes and not {"lower_certified", "upper_certified"} & set(changes):
            changes = {
                **changes,
                "lower_certified": changes["certified"],
                "upper_certified": changes["certified"],
            }
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "gap_rel": self.gap_rel,
            "certified": self.certified,
            "lower_certified": self.lower_certified,
            "upper_certified": self.upper_certified,
            "kind": self.kind,
            "method": self.method,
            "n_solves": self.n_solves,
            "seconds": self.seconds,
            "params": dict(self.params),
            "converged": self.converged,
            "extra": dict(self.extra),
        }

    def __post_init__(self) -> None:
        lc = self.certified if self.lower_certified is None else bool(self.lower_certified)
        uc = self.certified if self.upper_certified is None else bool(self.upper_certified)
        if bool(self.certified) != (lc and uc):
            raise ValueError(
                f"OTResult: certified={self.certified!r} but lower_certified={lc!r}, "
                f"upper_certified={uc!r} (certified means both)"
            )
        object.__setattr__(self, "lower_certified", bool(lc))
        object.__setattr__(self, "upper_certified", bool(uc))
        object.__setattr__(self, "certified", bool(lc and uc))
        if lc and uc and not (self.lower <= self.upper + 1e-12 * max(1.0, abs(self.upper))):
            raise ValueError(f"OTResult: lower {self.lower!r} > upper {self.upper!r}")
