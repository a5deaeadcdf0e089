"""Typed settings of the solvers of :func:`otaudit.core.solve.solve_ot`: one small frozen
dataclass per solver (defaults from :mod:`otaudit.config`), built from keyword options by
:func:`solver_settings`, which is the one place options are routed and checked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .. import config
from ..errors import InputError

__all__ = [
    "BLOCK_SOLVERS",
    "COUPLINGS",
    "LOWER_METHODS",
    "PARTITIONS",
    "SOLVERS",
    "ExactSettings",
    "MinibatchSettings",
    "Settings",
    "SinkhornSettings",
    "check_knobs",
    "check_solver",
    "options_of",
    "solver_settings",
]

SOLVERS = ("auto", "exact", "sinkhorn", "minibatch", "sparse")
PARTITIONS = ("aligned", "random")
COUPLINGS = ("diagonal", "optimal", "independent", "union", "greedy", "colgen")
BLOCK_SOLVERS = ("auto", "exact", "sinkhorn")
LOWER_METHODS = ("lp+ctransform", "none")


@dataclass(frozen=True)
class ExactSettings:
    """POT's network simplex on the full cost (:func:`otaudit.core.solve.exact_ot`)."""

    max_iter: int | None = None

    def options(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SinkhornSettings:
    """Full-problem certified Sinkhorn (:func:`otaudit.core.sinkhorn.sinkhorn_bounds`);
    ``reg=None``: ``config.SINKHORN_REG_REL`` times the mean ground cost."""

    reg: float | None = None
    max_iter: int = config.SINKHORN_MAX_ITER
    tol: float = config.SINKHORN_TOL

    def options(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MinibatchSettings:
    """Mini-batch bounds (:func:`otaudit.core.minibatch.minibatch_bounds`, which documents
    each knob). :meth:`checked` validates them (one-line :class:`InputError`)."""

    batch_size: int = config.BATCH_SIZE
    budget: int | None = config.BUDGET
    partition: str = config.PARTITION
    coupling: str = config.COUPLING
    seed: int = config.SEED
    refine: int = config.BOUNDS_REFINE_ROUNDS
    n_permutations: int = 2
    lower: str = "lp+ctransform"
    lower_rounds: int = config.BOUNDS_LOWER_ROUNDS
    lower_sinkhorn: int | None = None
    block_solver: str = config.BOUNDS_BLOCK_SOLVER

    def options(self) -> dict[str, Any]:
        return asdict(self)

    def checked(self) -> MinibatchSettings:
        """These settings, validated."""
        check_knobs(self.batch_size, self.budget, self.partition, self.coupling, self.refine)
        _choice("block_solver", self.block_solver, BLOCK_SOLVERS)
        _choice("lower", self.lower, LOWER_METHODS)
        return self


@dataclass(frozen=True)
class SparseSettings:
    """The sparse exact route (:mod:`otaudit.core.sparse`): it takes only the anytime knobs
    (``target_gap``, ``time_limit``, ``progress``), which every route shares."""

    def options(self) -> dict[str, Any]:
        return asdict(self)


Settings = ExactSettings | SinkhornSettings | MinibatchSettings | SparseSettings
SETTINGS: dict[str, type] = {
    "exact": ExactSettings,
    "sinkhorn": SinkhornSettings,
    "minibatch": MinibatchSettings,
    "sparse": SparseSettings,
}


def options_of(solver: str) -> frozenset[str]:
    """The keyword options ``solver`` takes."""
    return frozenset(f.name for f in fields(SETTINGS[solver]))


def solver_settings(solver: str, opts: dict[str, Any], *, auto: bool = False) -> Settings:
    """The settings of ``solver`` from keyword options.

    With ``auto`` (the solver was picked by ``solve_ot(solver="auto")``) options of the
    other solvers are ignored; otherwise an option of another solver is an InputError naming
    that solver, and an option no solver takes one listing the valid options."""
    if solver not in SETTINGS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SETTINGS)}"
        )
    takes = {k: options_of(k) for k in SETTINGS}
    out: dict[str, Any] = {}
    for key, v in opts.items():
        if key in takes[solver]:
            out[key] = v
            continue
        owners = [k for k, names in takes.items() if key in names]
        if owners and auto:
            continue  # a knob of the solver auto did not pick
        raise InputError(
            f"option {key!r} does not apply to solver={solver!r}"
            + (f" (it is an option of solver={owners[0]!r})" if owners else ""),
            field=key,
            fix=f"use solver={owners[0]!r} or drop {key!r}"
            if owners
            else "options: " + ", ".join(sorted(set().union(*takes.values()))),
        )
    return SETTINGS[solver](**out)


def check_solver(solver: Any) -> None:
    """``solver`` must be one of :data:`SOLVERS` (one-line InputError otherwise)."""
    _choice("solver", solver, SOLVERS)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(
            f"unknown {name} {value!r}", field=name, fix=f"use one of {', '.join(allowed)}"
        )


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def check_knobs(
    batch_size: Any, budget: Any, partition: Any, coupling: Any, refine: Any = 0
) -> None:
    """Validate the mini-batch knobs (one-line InputError naming the field and the fix)."""
    if not _is_int(batch_size) or batch_size < 1:
        raise InputError(
            f"batch_size must be an integer >= 1, got {batch_size!r}",
            field="batch_size",
            fix="pass e.g. batch_size=256",
        )
    if budget is not None and (not _is_int(budget) or budget < 1):
        raise InputError(
            f"budget must be None or an integer >= 1, got {budget!r}",
            field="budget",
            fix="pass the number of mini-batch solves allowed",
        )
    _choice("partition", partition, PARTITIONS)
    _choice("coupling", coupling, COUPLINGS)
    if not _is_int(refine) or refine < 0:
        raise InputError(
            f"refine must be an integer >= 0, got {refine!r}",
            field="refine",
            fix="pass the number of refinement rounds, e.g. refine=2",
        )
