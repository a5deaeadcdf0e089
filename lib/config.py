"""All defaults of otaudit live here; the CLI, flows, deployments and the numerical core
read them from this module and never copy them.

Grouped by layer: numerics (``otaudit.core`` and ``otaudit.dataset_distance``: exact,
Sinkhorn, mini-batch bounds, OTDD, sliced), data (readers, embedders, cache), pipeline
(report, tasks, flows, CLI/demo) and the pipeline's environment (:func:`load_settings`).
Each section ends with a tuple naming its constants (``NUMERICS``, ``DATA``, ``PIPELINE``):
the cache keys an object on the values of the section(s) that determine it
(:mod:`otaudit.data.cache`), and a test checks that every constant is in exactly one.

Numerical defaults are plain constants (importing this module reads no environment).
The pipeline's environment (object store, Dask address, Prefect API) is read by
:func:`load_settings` only, when a pipeline entry point asks for it.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

# ======================================================================================
# Numerics (otaudit.core, otaudit.dataset_distance)
# ======================================================================================

# --- exact LP ---------------------------------------------------------------------------
#: Largest n*m for which :func:`otaudit.otdd_flow`'s ``solver="auto"`` solves each step
#: exactly with POT's network simplex (else the mini-batch plan). ``solve_ot``/``ot_bounds``/
#: ``otdd`` route ``"auto"`` with :func:`otaudit.core.routes.choose_route` instead.
#: Measured on 2 cores: 2000x2000 takes ~1-3 s and 64 MB for the cost matrix.
EXACT_MAX_ENTRIES: int = 2500 * 2500
#: POT's default ``numItermax`` (1e5) silently stops early above ~1000 points; we scale it.
EMD_MAX_ITER_PER_ENTRY: int = 50
EMD_MIN_MAX_ITER: int = 1_000_000
#: An exact LP solve (verified optimal) reports lower == upper == value when its rigorous
#: interval (float64 evaluation round-off of plan cost and duals) is at most this wide,
#: relative; its interval is kept in ``extra["rigorous_interval"]``.
EXACT_ROUNDOFF_REL: float = 1e-12

# --- costs ------------------------------------------------------------------------------
#: Memory budget (bytes) for one block of a cost matrix or a log-sum-exp reduction.
COST_BLOCK_BYTES: int = 64 * 2**20
#: c-transforms: fewest output rows per block; when fewer rows of the whole other side fit
#: COST_BLOCK_BYTES, the other side is cut into column tiles (running minimum) instead.
C_TRANSFORM_MIN_ROWS: int = 128
#: Fast (float32) c-transform blocks of whole rows are capped at this size, so that the block
#: is still in the cache when it is reduced (measured at 50 000 columns, one thread: the matmul
#: took 1.5 s per 2.5e9 entries up to 32 MB blocks and 5.3 s at 45 MB).
FAST_BLOCK_BYTES: int = 16 * 2**20

# --- Sinkhorn ---------------------------------------------------------------------------
#: Sinkhorn: entropic regularisation relative to the mean ground cost, iterations, tolerance.
SINKHORN_REG_REL: float = 1e-3
SINKHORN_MAX_ITER: int = 2000
SINKHORN_TOL: float = 1e-6
#: epsilon-scaling stages (x10 each) before the target reg in full-problem Sinkhorn.
SINKHORN_EPS_SCALING_STEPS: int = 3

# --- mini-batch bounds ------------------------------------------------------------------
#: Mini-batch bounds: block size (points per block), solve budget (a COUNT of block
#: solves; None: as many as the coupling needs), partition, coupling, seed.
BATCH_SIZE: int = 256
BUDGET: int | None = None
PARTITION: str = "aligned"
COUPLING: str = "optimal"
SEED: int = 0
#: Rounds of plan-restricted block coordinate descent after the block coupling (each round
#: re-solves the glued plan inside k-means groups of X, then of Y; never raises the UB).
BOUNDS_REFINE_ROUNDS: int = 4
#: Rounds of block-LP correction + c-transforms for the mini-batch lower bound (3 passes
#: over the n x m costs each; later rounds use k-means partitions, never lower the bound).
BOUNDS_LOWER_ROUNDS: int = 1
#: Full-problem Sinkhorn dual-ascent iterations per eps for the mini-batch lower bound
#: (``minibatch_bounds(lower_sinkhorn=...)``; 0 = off). Each iteration = 2 float32 passes.
BOUNDS_LOWER_SINKHORN_ITERS: int = 5
#: The eps schedule of that dual ascent, relative to the certified upper bound (measured on
#: gauss 10-d / digits 64-d: starting large matters more than ending small).
BOUNDS_LOWER_SINKHORN_REGS: tuple[float, ...] = (1e-1, 3e-2, 1e-2)
#: ``lower_sinkhorn=None`` runs the dual ascent only when ``n * m`` is at most this (each
#: iteration is 2 passes over the n x m costs; at 50k x 50k the LP correction alone is
#: already within 0.01 % on the benchmark, and 30 passes would not fit the time target).
BOUNDS_LOWER_SINKHORN_MAX_ENTRIES: int = 40_000_000

#: How ``minibatch_bounds`` solves its block problems: ``"exact"`` (POT's network simplex,
#: one block at a time on the CPU) or ``"sinkhorn"`` (every pending block of a stage in one
#: batched log-domain Sinkhorn launch on the cost's device, then rounded to a sparse feasible
#: plan; see ``minibatch_bounds``). ``"auto"`` = sinkhorn on CUDA, exact elsewhere.
BOUNDS_BLOCK_SOLVER: str = "exact"
#: Batched block Sinkhorn: eps relative to each block's mean cost under the independent
#: coupling, iterations in all (``eps_scaling`` warm-up stages of ``STAGE_ITERS`` each count
#: against them; measured on digits halves: 6 x 30 gave a base upper bound of +11.5 % against
#: +13.6 % for 4 x 10, the LP's being +9.6 %), entries dropped below
#: ``drop * min(a_i, b_j)`` before the sparse rounding, and bytes per batched launch
#: (padded ``[B, n, m]`` costs in float64 + float32 + the plan).
BOUNDS_BLOCK_SINKHORN_REG: float = 1e-3
BOUNDS_BLOCK_SINKHORN_ITERS: int = 300
BOUNDS_BLOCK_SINKHORN_EPS_SCALING: int = 6
BOUNDS_BLOCK_SINKHORN_STAGE_ITERS: int = 30
BOUNDS_BLOCK_SINKHORN_DROP: float = 1e-3
BOUNDS_BLOCK_BATCH_BYTES: int = 256 * 2**20

# --- OTDD -------------------------------------------------------------------------------
OTDD_INNER: str = "exact"
OTDD_SOLVER: str = "auto"
LAMBDA_X: float = 1.0
LAMBDA_Y: float = 1.0
#: Class point clouds up to this many points per side are solved exactly for W(alpha_y,
#: alpha_y') (the dense LP or the sparse route to certified optimality, whichever the route
#: model predicts cheaper; the flow's class-respecting plan uses the dense LP up to it).
OTDD_INNER_EXACT_MAX: int = 2000
#: Inner OT between classes bigger than OTDD_INNER_EXACT_MAX: solver of ``solve_ot`` whose
#: certified lower/upper bounds are carried into the label table (and then into OTDD²).
#: ``"auto"``: exact while the dense LP fits (~10k points per class, by the cheaper route),
#: then the sparse route to ``TARGET_GAP``; an interval that closed keeps the table exact.
OTDD_INNER_LARGE_SOLVER: str = "auto"
#: Lloyd iterations of the deterministic k-means used by ``pseudo_labels=k`` (unlabeled data).
OTDD_KMEANS_ITER: int = 50
#: Gaussian inner cost: covariance shrinkage added to the diagonal, relative to the trace/d.
GAUSSIAN_COV_RIDGE: float = 0.0
#: OTDD cost's partition coordinates [sqrt(lambda_x) x, w sqrt(lambda_y) mu_y]: the weight w.
#: w = 1 makes them a squared-Euclidean lower bound of the OTDD cost; w = 2 tightened the
#: mini-batch bounds on digits halves from -14 %/+8.8 % to -3.2 %/+0.3 % (noise, flips also
#: better; class subsets 0-5 vs 4-9 slightly worse: -8.2 %/+6.0 % instead of -6.5 %/+4.6 %).
OTDD_PARTITION_LABEL_WEIGHT: float = 2.0

# --- sliced -----------------------------------------------------------------------------
#: Sliced screening estimate (``sliced_otdd``, manifest measure ``sliced``): random directions
#: for the estimate, random orthonormal frames for its certified (loose) lower bound.
SLICED_N_PROJECTIONS: int = 256
SLICED_N_FRAMES: int = 4

# --- explanations: OTDD gradient flows (otaudit.otdd_flow) ----------------------------
#: Flow steps (the flow records OTDD² at k = 0..FLOW_STEPS).
FLOW_STEPS: int = 10
#: Step size tau in (0, 1]: every point moves this fraction of the way to its barycentric
#: target per step, so OTDD² decays like (1 - tau)^(2k) for a pure covariate shift.
FLOW_STEP: float = 0.5
#: Flow mode: "flow" (re-solve the plan every step) or "geodesic" (move along the first plan).
FLOW_MODE: str = "flow"
#: Points of A whose trajectories FlowResult keeps (for plots); None = all.
FLOW_TRAJECTORY_SAMPLE: int | None = 256
#: Two plans are "the same" when their supports agree and masses differ by at most this
#: (relative to the largest mass).
FLOW_PLAN_RTOL: float = 1e-9
#: How many top features the report names per explained pair.
FLOW_TOP_FEATURES: int = 3
#: Residual share at or below which the report calls a drift "a covariate shift" (above
#: it, class structure: classes that split, merge or change proportion).
FLOW_RESIDUAL_SHIFT: float = 0.1

# --- sparse exact route, anytime bounds, route choice ----------------------------------
#: Anytime bounds: relative width ``(upper - lower) / upper`` at which ``ot_bounds``,
#: ``solve_ot`` and ``otdd(solver="minibatch")`` stop improving the certified interval.
TARGET_GAP: float = 0.01
#: Sparse exact route: reduced-cost nearest neighbours per point and side in the first
#: candidate set, edges added per violating column and round, and rounds at most.
SPARSE_KNN: int = 8
SPARSE_ADD_PER_COLUMN: int = 4
SPARSE_MAX_ROUNDS: int = 30
#: Columns per group of the exact row-wise top-k (:func:`otaudit.core.topk.smallest_k`;
#: measured at 50 000 columns, k = 8: groups of 32 / 64 / 128 / 256 took 1.20 / 0.81 / 1.10 /
#: 1.39 s per 2.5e9 entries against 3.48 s for ``torch.topk``).
TOPK_GROUP: int = 64
#: Clusters per side (at most n / 10) of the coarse exact problem whose duals warm-start the
#: sparse route, used in dimension <= SPARSE_COARSE_MAX_DIM only (measured, 3k points: plane
#: 2-d gap 4.7e-3 % -> 1.6e-4 % after round 1, and 10k: exact in 17.9 s instead of 0.44 % in
#: 35.6 s; but +0.3-2 s with no gain on the 16-64-d families).
SPARSE_COARSE_POINTS: int = 1000
SPARSE_COARSE_MAX_DIM: int = 4
#: Above SPARSE_COARSE_MAX_DIM, the multiscale start is added once, after a first round whose
#: certified width exceeds this fraction (measured, 50k cluster_swap 16-d: 57.5 s in 10 rounds
#: to 0.99 % without; the coarse start alone closed to 0.62 % in one round; families whose
#: first round closes never pay for it: 50k softplus took 8.3 s without, 31 s with it).
SPARSE_COARSE_RETRY_GAP: float = 0.02
#: Coarse start: points per cluster (k = min(n, m) / ratio clusters per side); coarse problems
#: with more than SPARSE_COARSE_POINTS clusters are solved by the sparse route itself
#: (recursively, at most SPARSE_COARSE_ROUNDS rounds).
SPARSE_COARSE_RATIO: int = 10
SPARSE_COARSE_ROUNDS: int = 5
#: Integer cost resolution of the min-cost flow: the largest candidate edge cost becomes this
#: many units (lowered automatically so that potentials and totals stay inside int64).
SPARSE_COST_UNITS: int = 2**40
#: Supplies: exact integer supplies (uniform or integer-count weights) up to this total;
#: other weights are rounded to SPARSE_SUPPLY_UNITS units and the plan repaired.
SPARSE_SUPPLY_UNITS_MAX: int = 2**40
SPARSE_SUPPLY_UNITS: int = 2**30
#: ``solver="auto"`` route choice (lib/core/routes.py): memory budget of the dense exact LP,
#: its bytes per cost entry (cost matrix + POT's plan + internal copies: 4.3 GB at 10k x 10k),
#: and the fitted time models (seconds; benchmarks/RESULTS_generalize.md, "route model").
EXACT_MEMORY_BYTES: int = 4 * 2**30
EXACT_BYTES_PER_ENTRY: int = 40
#: exact: ``C (n m)^P`` through the *median* family's ``exact_ot`` times (what auto runs:
#: the verified LP) at 1k-10k points per side; sparse (to certified optimality):
#: ``C0 + C1 n m (d + D0) + C2 (n + m) + C3 d^3`` (C3: the Gaussian start's d x d
#: eigendecompositions, 0.35 s at 768-d), near the slower families' times; the sparse route
#: is taken only when predicted ``ROUTE_SPARSE_SAFETY`` times cheaper. Refitted 2026-12-03 on
#: the 2-core Xeon (benchmarks/RESULTS_generalize.md, "route model, session 9"): sparse from
#: ~1.5k points per side up to 256-d, from ~4k at 768-d; the 2026-11 fit (through the
#: fastest LP and the slowest sparse family, AMD EPYC) kept the LP to ~7k although the sparse
#: route was 2-10x faster from 2k on every family below 768-d.
ROUTE_EXACT_C: float = 2.8e-9
ROUTE_EXACT_P: float = 1.25
ROUTE_SPARSE_C0: float = 0.04
ROUTE_SPARSE_C1: float = 9.3e-11
ROUTE_SPARSE_D0: int = 200
ROUTE_SPARSE_C2: float = 0.0
ROUTE_SPARSE_C3: float = 7.7e-10
ROUTE_SPARSE_SAFETY: float = 1.5
#: the sparse route on a cost without the certified float32 block (the OTDD cost): its
#: passes run in float64 blocks, several times the fast path's time per entry. Chosen so
#: that the OTDD outer problem keeps the dense LP wherever it fits: without it, 2k x 2k
#: digits pairs took 0.6-2.5 s on the sparse route against 1.1-1.4 s on the LP (label
#: tables included) and the 45-pair Gaussian registry 58.3 s (RESULTS_otdd.md, session 9).
ROUTE_SPARSE_SLOW64: float = 8.0
#: Budget of one exact label table (otaudit.dataset_distance.labels.exact_table): at most
#: this many inner OT solves (K(K-1)/2 within a dataset of K classes, Ka*Kb across two).
#: Above it the table fails fast with an InputError naming the cheaper routes (inner:
#: gaussian, fewer classes) instead of running for hours (issue 16: 800 classes took 203 s).
LABEL_TABLE_MAX_SOLVES: int = 200_000
#: Progress of a long label table: one INFO line at most every this many seconds.
LABEL_TABLE_PROGRESS_S: float = 30.0

NUMERICS: tuple[str, ...] = (
    "EXACT_MAX_ENTRIES",
    "EMD_MAX_ITER_PER_ENTRY",
    "EMD_MIN_MAX_ITER",
    "EXACT_ROUNDOFF_REL",
    "COST_BLOCK_BYTES",
    "C_TRANSFORM_MIN_ROWS",
    "FAST_BLOCK_BYTES",
    "SINKHORN_REG_REL",
    "SINKHORN_MAX_ITER",
    "SINKHORN_TOL",
    "SINKHORN_EPS_SCALING_STEPS",
    "BATCH_SIZE",
    "BUDGET",
    "PARTITION",
    "COUPLING",
    "SEED",
    "BOUNDS_REFINE_ROUNDS",
    "BOUNDS_LOWER_ROUNDS",
    "BOUNDS_LOWER_SINKHORN_ITERS",
    "BOUNDS_LOWER_SINKHORN_REGS",
    "BOUNDS_LOWER_SINKHORN_MAX_ENTRIES",
    "BOUNDS_BLOCK_SOLVER",
    "BOUNDS_BLOCK_SINKHORN_REG",
    "BOUNDS_BLOCK_SINKHORN_ITERS",
    "BOUNDS_BLOCK_SINKHORN_EPS_SCALING",
    "BOUNDS_BLOCK_SINKHORN_STAGE_ITERS",
    "BOUNDS_BLOCK_SINKHORN_DROP",
    "BOUNDS_BLOCK_BATCH_BYTES",
    "OTDD_INNER",
    "OTDD_SOLVER",
    "LAMBDA_X",
    "LAMBDA_Y",
    "OTDD_INNER_EXACT_MAX",
    "OTDD_INNER_LARGE_SOLVER",
    "OTDD_KMEANS_ITER",
    "GAUSSIAN_COV_RIDGE",
    "OTDD_PARTITION_LABEL_WEIGHT",
    "SLICED_N_PROJECTIONS",
    "SLICED_N_FRAMES",
    "FLOW_STEPS",
    "FLOW_STEP",
    "FLOW_MODE",
    "FLOW_TRAJECTORY_SAMPLE",
    "FLOW_PLAN_RTOL",
    "FLOW_TOP_FEATURES",
    "FLOW_RESIDUAL_SHIFT",
    "TARGET_GAP",
    "SPARSE_KNN",
    "SPARSE_ADD_PER_COLUMN",
    "SPARSE_MAX_ROUNDS",
    "TOPK_GROUP",
    "SPARSE_COARSE_POINTS",
    "SPARSE_COARSE_MAX_DIM",
    "SPARSE_COARSE_RETRY_GAP",
    "SPARSE_COARSE_RATIO",
    "SPARSE_COARSE_ROUNDS",
    "SPARSE_COST_UNITS",
    "SPARSE_SUPPLY_UNITS_MAX",
    "SPARSE_SUPPLY_UNITS",
    "EXACT_MEMORY_BYTES",
    "EXACT_BYTES_PER_ENTRY",
    "ROUTE_EXACT_C",
    "ROUTE_EXACT_P",
    "ROUTE_SPARSE_C0",
    "ROUTE_SPARSE_C1",
    "ROUTE_SPARSE_D0",
    "ROUTE_SPARSE_C2",
    "ROUTE_SPARSE_C3",
    "ROUTE_SPARSE_SAFETY",
    "ROUTE_SPARSE_SLOW64",
    "LABEL_TABLE_MAX_SOLVES",
    "LABEL_TABLE_PROGRESS_S",
)

# ======================================================================================
# Data (otaudit.data: readers, embedders, cache)
# ======================================================================================

#: Rows per shard for formats without row groups (.npy/.npz/CSV); Parquet shards are row groups.
SHARD_ROWS: int = 50_000
#: Embedders: rows per forward pass (manifest ``embedder.rows_per_batch``; not to be
#: confused with BATCH_SIZE, the mini-batch block size).
EMBED_ROWS_PER_BATCH: int = 256
#: Version of the embedders' code; part of every embedder id, so bumping it re-embeds.
EMBEDDER_VERSION: int = 1
#: Version of the cached-array layout; part of every cache key (2: verified envelopes).
CACHE_VERSION: int = 2
#: Dataset fingerprints of files whose store gives no content checksum (local disk, ...):
#: sha256 of all bytes up to this size, else of the size, the first/last EDGE bytes and the
#: Parquet footer (otaudit.data.formats._content_hash).
CONTENT_HASH_FULL_BYTES: int = 256 * 2**20
CONTENT_HASH_EDGE_BYTES: int = 2**20
#: Schema tag in every cache entry's header (otaudit.data.cache); another tag is a bad entry.
CACHE_ENTRY_SCHEMA: int = 1

# --- manifest limits (issue 16: validated before any dataset is read) -------------------
#: Largest sizes a manifest may ask for; anything above is a one-line InputError naming the
#: limit (a ``sliced: {n_projections: 1e9}`` would otherwise exhaust memory in every block).
MANIFEST_MAX_BATCH_SIZE: int = 65_536
MANIFEST_MAX_BUDGET: int = 10_000_000
MANIFEST_MAX_ITER: int = 100_000_000
MANIFEST_MAX_ROUNDS: int = 1_000
MANIFEST_MAX_PROJECTIONS: int = 16_384
MANIFEST_MAX_FRAMES: int = 256
MANIFEST_MAX_FLOW_STEPS: int = 10_000
MANIFEST_MAX_SHARD_ROWS: int = 10_000_000
#: YAML: alias references allowed in one manifest, and nodes of the document once every
#: alias is expanded (a "billion laughs" manifest fails in milliseconds, not 67 s / 1.3 GB).
YAML_MAX_ALIASES: int = 100
YAML_MAX_NODES: int = 100_000

DATA: tuple[str, ...] = (
    "SHARD_ROWS",
    "EMBED_ROWS_PER_BATCH",
    "EMBEDDER_VERSION",
    "CACHE_VERSION",
    "MANIFEST_MAX_BATCH_SIZE",
    "MANIFEST_MAX_BUDGET",
    "MANIFEST_MAX_ITER",
    "MANIFEST_MAX_ROUNDS",
    "MANIFEST_MAX_PROJECTIONS",
    "MANIFEST_MAX_FRAMES",
    "MANIFEST_MAX_FLOW_STEPS",
    "MANIFEST_MAX_SHARD_ROWS",
    "YAML_MAX_ALIASES",
    "YAML_MAX_NODES",
    "CACHE_ENTRY_SCHEMA",
    "CONTENT_HASH_FULL_BYTES",
    "CONTENT_HASH_EDGE_BYTES",
)

# ======================================================================================
# Pipeline (otaudit.audit, tasks, flows, app)
# ======================================================================================

# --- report -----------------------------------------------------------------------------
#: Version of the report schema written in the Parquet file metadata (3: ``pairs.parquet``
#: has ``distance``/``distance_lower``/``distance_upper``; 2: ``datasets.parquet`` has a
#: ``device`` column and ``pairs.parquet`` per-bound certificates; 0-2 are still read).
REPORT_SCHEMA_VERSION: int = 3
#: Significant digits of every number the summary, report.html and artifact tables display.
DISPLAY_DIGITS: int = 4
#: Folder below ``<output>/<name>/`` of the hive-partitioned history of all complete runs
#: (``history/run=<id>/pairs.parquet``; one new file per run, never rewritten).
HISTORY_DIR: str = "history"
#: Prefect event emitted when a run drifted from the previous complete run (or from a
#: threshold); its resource is ``otaudit.audit.<name>``.
DRIFT_EVENT: str = "otaudit.drift"
#: Summary: a pair is a near-duplicate when its distance is below this fraction of the
#: median distance of the audit (per measure).
NEAR_DUPLICATE_FRACTION: float = 0.25
#: Nearest neighbours listed per dataset in the summary.
SUMMARY_NEIGHBOURS: int = 1
#: Manifest ``screen: {keep: K, order: ...}``: which end of the sliced ranking is kept.
SCREEN_ORDER: str = "nearest"

# --- tasks and flows --------------------------------------------------------------------
#: Largest number of pairs computed by one Prefect task (tasks must be coarse: ~150 ms of
#: Prefect overhead each through the DaskTaskRunner, ECOSYSTEM.md).
PAIR_BLOCK_MAX: int = 16
#: Pair blocks per Dask thread (a little over-decomposition balances uneven pairs).
PAIR_BLOCKS_PER_THREAD: int = 4
#: Task retries on transient storage errors (StorageError) and the delay between them.
TASK_RETRIES: int = 2
TASK_RETRY_DELAY_S: float = 1.0
#: Default cron schedule of the nightly deployment (02:00 UTC).
DEFAULT_CRON: str = "0 2 * * *"
#: Seconds to wait for a temporary local Prefect server to answer (the default of the
#: ``OTAUDIT_PREFECT_SERVER_START_TIMEOUT_S`` setting; a fresh database on a loaded machine
#: can take a minute to migrate).
PREFECT_SERVER_START_TIMEOUT_S: int = 120
#: CLI: seconds an interrupted audit (SIGINT/SIGTERM) may take to cancel its flow run and
#: stop its Dask cluster and Prefect server in order, before its child processes are killed
#: (the whole exit stays under 10 s).
INTERRUPT_GRACE_S: float = 5.0
#: Progress of a pair's long certified solve (``ot_bounds``, ``w2``; lib/audit/progress.py):
#: published (a Prefect progress artifact + a task-run log line, shown by the CLI's bars)
#: once the pair has run this many seconds, then at most every PROGRESS_EVERY_S seconds.
#: Overridden per environment by ``OTAUDIT_PROGRESS_AFTER_S`` / ``OTAUDIT_PROGRESS_EVERY_S``.
PROGRESS_AFTER_S: float = 2.0
PROGRESS_EVERY_S: float = 2.0

# --- CLI demo ---------------------------------------------------------------------------
#: ``otaudit demo``: random seed and additive noise (digits pixels are 0..16).
DEMO_SEED: int = 0
DEMO_NOISE_STD: float = 2.0
#: ``otaudit demo``: OTDD distance above which a vendor pair is flagged (on digits: two random
#: halves are ~31 apart, noise/missing classes ~37, mirrored images ~53).
DEMO_OTDD_THRESHOLD: float = 45.0


#: Executors (issue 14, :mod:`otaudit.core.parallel`): a stage's independent work (block
#: solves, c-transform row tiles, k-means assignment rows) is cut into at most this many
#: submitted chunks per worker (coarse tasks, some load balance). Does not change results.
EXECUTOR_CHUNKS_PER_WORKER: int = 4
#: Pairs with at least this many points (n_a + n_b) get the cluster's executor inside their
#: pair task (``ot_bounds``, ``w2``, ``otdd``), so one large pair uses every worker; smaller
#: pairs stay one task each. At 50k points the bounds take ~90 s on one core, far above the
#: ~1 ms per Dask task overhead.
PAIR_EXECUTOR_MIN_POINTS: int = 50_000


PIPELINE: tuple[str, ...] = (
    "REPORT_SCHEMA_VERSION",
    "DISPLAY_DIGITS",
    "HISTORY_DIR",
    "DRIFT_EVENT",
    "NEAR_DUPLICATE_FRACTION",
    "SUMMARY_NEIGHBOURS",
    "SCREEN_ORDER",
    "PAIR_BLOCK_MAX",
    "PAIR_BLOCKS_PER_THREAD",
    "TASK_RETRIES",
    "TASK_RETRY_DELAY_S",
    "DEFAULT_CRON",
    "PREFECT_SERVER_START_TIMEOUT_S",
    "INTERRUPT_GRACE_S",
    "PROGRESS_AFTER_S",
    "PROGRESS_EVERY_S",
    "DEMO_SEED",
    "DEMO_NOISE_STD",
    "DEMO_OTDD_THRESHOLD",
    "EXECUTOR_CHUNKS_PER_WORKER",
    "PAIR_EXECUTOR_MIN_POINTS",
)


def section_values(*sections: str) -> dict[str, Any]:
    """The current values of the constants of ``sections`` (``"NUMERICS"``, ``"DATA"``,
    ``"PIPELINE"``), read at call time (so a monkeypatched constant is seen)."""
    g = globals()
    return {name: g[name] for sec in sections for name in g[sec]}


# ======================================================================================
# The pipeline's environment (OTAUDIT_* variables)
# ======================================================================================
@functools.lru_cache(maxsize=1)
def _settings_class() -> type:
    """Build the Settings class lazily (once) so importing this module imports no pydantic-settings."""
    from pydantic import Field, SecretStr
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Settings(BaseSettings):
        """The pipeline's environment, read from ``OTAUDIT_*`` environment variables.

        Only :func:`load_settings` builds it; nothing else reads the environment.
        """

        model_config = SettingsConfigDict(env_prefix="OTAUDIT_", extra="ignore")

        #: Existing Dask scheduler (``tcp://host:8786``); None starts a LocalCluster.
        dask_address: str | None = None
        #: LocalCluster size when no address is given.
        n_workers: int = 2
        threads_per_worker: int = 1
        #: Default output URI (used by ``otaudit demo``).
        output: str = "./otaudit-demo"
        #: Prefect API; None starts a temporary local server (exported to Dask workers).
        prefect_api_url: str | None = None
        #: Use the content-addressed embedding/statistics cache under ``<output>/_cache``.
        cache: bool = True
        #: Where pair measures compute: ``auto`` = the Dask worker's own GPU when it has one
        #: (round-robin over the machine's GPUs by worker index), else CPU; ``cpu`` = never GPU.
        pair_device: Literal["auto", "cpu"] = "auto"
        #: Optional secret keying the cache entries' HMAC (otaudit.data.cache); unset:
        #: plain sha256 checksums (then the cache store must be trusted like the output).
        cache_secret: SecretStr | None = None
        #: Seconds to wait for the temporary local Prefect server to answer.
        prefect_server_start_timeout_s: float = Field(PREFECT_SERVER_START_TIMEOUT_S, gt=0)
        #: Seconds a pair's certified solve runs before its progress is published, and the
        #: least seconds between two publications (PROGRESS_AFTER_S, PROGRESS_EVERY_S).
        progress_after_s: float = Field(default=PROGRESS_AFTER_S, ge=0)
        progress_every_s: float = Field(default=PROGRESS_EVERY_S, ge=0)

    return Settings


def __getattr__(name: str):  # PEP 562: ``config.Settings`` without importing at module load
    if name == "Settings":
        return _settings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_settings(**overrides):
    """Read the pipeline settings from the environment (``OTAUDIT_*``) plus ``overrides``."""
    return _settings_class()(**overrides)
