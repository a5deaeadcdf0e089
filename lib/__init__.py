"""otaudit — dataset audits with optimal transport.

Certified OT bounds (:func:`ot_bounds`) and the label-aware Optimal Transport Dataset
Distance (:func:`otdd`, :func:`otdd_matrix`), with a Prefect/Dask pipeline on top.
"""

from .core.result import OTResult
from .core.sliced import sliced_matrix, sliced_otdd
from .core.solve import ot_bounds, solve_ot
from .dataset_distance import DatasetStats, dataset_stats, otdd, otdd_from_stats, otdd_matrix
from .dataset_distance.flow import FlowResult, otdd_flow
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
