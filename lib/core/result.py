"""The immutable result object returned by every solver of otaudit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["OTResult"]


@dataclass(frozen=True)
class OTResult:
    """Result of an OT or OTDD computation.

    Attributes:
        value: best estimate of the OT cost (OTDD² for :func:`otaudit.otdd`, W2² for
            :func:`otaudit.ot_bounds`).
        lower: certified lower bound on the exact cost (a feasible dual's objective);
            equals ``value`` for an exact solve. ``-inf`` if no certificate is available.
        upper: certified upper bound (a feasible plan's cost); equals ``value`` for an
            exact solve. ``+inf`` if no certificate is available.
        certified: True when ``lower``/``upper`` are certified bounds (always True for the
            bound families; False only for estimates such as the sliced screening).
        method: a short string naming the solver and its options.
        n_solves: number of OT solves used (mini-batch solves for the bound families).
        seconds: wall time.
        params: the parameters used (JSON-serialisable).
        converged: whether every iterative solve reached its tolerance.
        extra: solver-specific diagnostics (JSON-serialisable), e.g. bytes moved.
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

    @property
    def distance(self) -> float:
        """``sqrt(value)`` (OTDD or W2), clipped at 0 against round-off."""
        return math.sqrt(max(self.value, 0.0))

    @property
    def gap(self) -> float:
        """``upper - lower`` (absolute width of the certified interval)."""
        return self.upper - self.lower

    @property
    def gap_rel(self) -> float:
        """``(upper - lower) / upper``; 0 for an exact solve, 0 when both are 0."""
        if self.upper == self.lower:
            return 0.0
        if not math.isfinite(self.upper) or self.upper <= 0:
            return math.inf
        return (self.upper - self.lower) / self.upper

    def replace(self, **changes: Any) -> OTResult:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "gap_rel": self.gap_rel,
            "certified": self.certified,
            "method": self.method,
            "n_solves": self.n_solves,
            "seconds": self.seconds,
            "params": dict(self.params),
            "converged": self.converged,
            "extra": dict(self.extra),
        }

    def __post_init__(self) -> None:
        if self.certified and not (self.lower <= self.upper + 1e-12 * max(1.0, abs(self.upper))):
            raise ValueError(f"OTResult: lower {self.lower!r} > upper {self.upper!r}")
