"""otaudit — dataset audits with optimal transport.

Certified OT bounds (:func:`ot_bounds`) and the label-aware Optimal Transport Dataset
Distance (:func:`otdd`, :func:`otdd_matrix`), with a Prefect/Dask pipeline on top.
"""

from .errors import (
    ConvergenceWarning,
    FallbackWarning,
    InputError,
    OTAuditError,
    OTAuditWarning,
    SolverError,
    StorageError,
)
from .result import OTResult

__version__ = "0.1.0"

from .bounds import ot_bounds, solve_ot
from .otdd import DatasetStats, dataset_stats, otdd, otdd_from_stats, otdd_matrix
from .sliced import sliced_matrix, sliced_otdd

__all__ = [
    "OTResult",
    "ot_bounds",
    "solve_ot",
    "otdd",
    "otdd_matrix",
    "otdd_from_stats",
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
