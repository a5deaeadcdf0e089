"""otaudit — dataset audits with optimal transport.

Certified OT bounds (:func:`ot_bounds`) and the label-aware Optimal Transport Dataset
Distance (:func:`otdd`, :func:`otdd_matrix`), with a Prefect/Dask pipeline on top.

Imports are lazy (PEP 562): ``import otaudit`` loads only the errors and the version, so
that the command line starts in well under a second; the numerical names (which need torch
and POT) are imported on first access, e.g. ``otaudit.otdd``. ``from otaudit import otdd``
and ``dir(otaudit)`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ConvergenceWarning,
    FallbackWarning,
    InputError,
    OTAuditError,
    OTAuditWarning,
    SolverError,
    StorageError,
)
from .version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .core.result import OTResult
    from .core.sliced import sliced_matrix, sliced_otdd
    from .core.solve import ot_bounds, solve_ot
    from .dataset_distance import (
        DatasetStats,
        dataset_stats,
        otdd,
        otdd_from_stats,
        otdd_matrix,
    )
    from .dataset_distance.flow import FlowResult, otdd_flow

#: public name -> module (relative to this package) that defines it, imported on first use
_LAZY: dict[str, str] = {
    "OTResult": ".core.result",
    "ot_bounds": ".core.solve",
    "solve_ot": ".core.solve",
    "sliced_otdd": ".core.sliced",
    "sliced_matrix": ".core.sliced",
    "otdd": ".dataset_distance",
    "otdd_matrix": ".dataset_distance",
    "otdd_from_stats": ".dataset_distance",
    "dataset_stats": ".dataset_distance",
    "DatasetStats": ".dataset_distance",
    "otdd_flow": ".dataset_distance.flow",
    "FlowResult": ".dataset_distance.flow",
}

#: subpackages/modules reachable as attributes (``otaudit.config.SEED``) without an import
_SUBMODULES = frozenset(
    {"config", "core", "dataset_distance", "data", "audit", "app", "flows", "tasks"}
)

__all__ = [
    "OTResult",
    "ot_bounds",
    "solve_ot",
    "otdd",
    "otdd_matrix",
    "otdd_from_stats",
    "otdd_flow",
    "FlowResult",
    "sliced_otdd",
    "sliced_matrix",
    "dataset_stats",
    "DatasetStats",
    "InputError",
    "OTAuditError",
    "SolverError",
    "StorageError",
    "OTAuditWarning",
    "ConvergenceWarning",
    "FallbackWarning",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a subpackage) on first access and keep it (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
