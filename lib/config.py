"""All defaults of otaudit live here; the CLI, flows, deployments and the numerical core
read them from this module and never copy them.

Numerical defaults are plain constants (importing this module reads no environment).
The pipeline's environment (object store, Dask address, Prefect API) is read by
:func:`load_settings` only, when a pipeline entry point asks for it.
"""

from __future__ import annotations

# --- numerical core ------------------------------------------------------------------
#: Largest n*m for which ``solver="auto"`` solves OT exactly with POT's network simplex.
#: Measured on 2 cores: 2000x2000 takes ~1-3 s and 64 MB for the cost matrix.
EXACT_MAX_ENTRIES: int = 2500 * 2500
#: POT's default ``numItermax`` (1e5) silently stops early above ~1000 points; we scale it.
EMD_MAX_ITER_PER_ENTRY: int = 50
EMD_MIN_MAX_ITER: int = 1_000_000
#: Memory budget (bytes) for one block of a cost matrix or a log-sum-exp reduction.
COST_BLOCK_BYTES: int = 64 * 2**20
#: Sinkhorn: entropic regularisation relative to the mean ground cost, iterations, tolerance.
SINKHORN_REG_REL: float = 1e-3
SINKHORN_MAX_ITER: int = 2000
SINKHORN_TOL: float = 1e-6
#: Mini-batch bounds.
BATCH_SIZE: int = 256
BUDGET: int | None = None  # None: as many solves as the coupling needs
PARTITION: str = "aligned"
COUPLING: str = "optimal"
SEED: int = 0
#: OTDD.
OTDD_INNER: str = "exact"
OTDD_SOLVER: str = "auto"
LAMBDA_X: float = 1.0
LAMBDA_Y: float = 1.0
#: Class point clouds up to this many points per side use the exact LP for W(alpha_y, alpha_y').
OTDD_INNER_EXACT_MAX: int = 2000
#: Gaussian inner cost: covariance shrinkage added to the diagonal, relative to the trace/d.
GAUSSIAN_COV_RIDGE: float = 0.0
