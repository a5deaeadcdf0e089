"""Per-dataset work (one coarse Prefect task per dataset): fingerprint, embed, statistics.

Everything heavy is cached content-addressed under ``<output>/_cache/`` (keyed by the
dataset fingerprint, the embedder id and the code version), and the task returns a small
:class:`DatasetRef` — references (cache keys, fingerprints), never arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit import config

from .plan import AuditPlan

__all__ = [
    "DatasetRef",
    "DatasetFailure",
    "prepare_dataset",
    "prepare_dataset_attempt",
    "open_cache",
    "is_transient",
    "stats_inner",
    "failed_dataset_row",
    "describe_error",
]


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only storage errors (network, throttling).

    Bad input (InputError) or a solver failure is deterministic and is not retried.
    """
    from otaudit.errors import StorageError

    try:
        state.result()
    except StorageError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final; Prefect records it
        return False
    return False


def open_cache(plan: AuditPlan) -> Any:
    """The content-addressed cache of this audit's output store (``<output>/_cache``)."""
    from otaudit.data.cache import Cache
    from otaudit.data.storage import Store

    return Cache(Store(plan.output, plan.storage_options or None))


def stats_inner(plan: AuditPlan) -> tuple[str, bool]:
    """Which label costs the per-dataset statistics must prepare, and whether the
    within-dataset label tables are needed (only when OTDD is computed)."""
    otdd = plan.manifest.measures.otdd
    if otdd is None:
        return "exact", False
    return otdd.inner, True


@dataclass(frozen=True)
class DatasetRef:
    """The outcome of one dataset's preparation: metadata and cache keys (no arrays)."""

    name: str
    uri: str
    fingerprint: str
    embedder: str
    n_rows: int
    n_classes: int
    dim: int
    labeled: bool
    emb_key: str
    stats_key: str
    cache_hit: bool
    read_seconds: float
    embed_seconds: float
    stats_seconds: float
    seconds: float

    def to_row(self, run_id: str) -> dict[str, Any]:
        """The ``datasets.parquet`` row of a prepared dataset."""
        return {
            "run_id": run_id,
            "dataset": self.name,
            "uri": self.uri,
            "fingerprint": self.fingerprint,
            "n_rows": self.n_rows,
            "n_classes": self.n_classes,
            "dim": self.dim,
            "embedder": self.embedder,
            "seconds": self.seconds,
            "status": "ok",
            "error": None,
            "cache_hit": self.cache_hit,
            "embed_seconds": self.embed_seconds,
            "stats_seconds": self.stats_seconds,
            "labeled": self.labeled,
        }


def _labels(parts: list[Any]) -> np.ndarray | None:
    """Concatenate label shards into a NumPy array the cache can store without pickle."""
    if any(p is None for p in parts):
        return None
    y = np.concatenate([np.asarray(p) for p in parts])
    if y.dtype == object:
        kinds = {type(v) for v in y.tolist()}
        if kinds <= {str}:
            y = y.astype(str)
        elif kinds <= {int, np.int64, np.int32, bool}:
            y = y.astype(np.int64)
        else:
            y = np.asarray([repr(v) for v in y.tolist()])
    return y


def _embed(
    spec: Any, storage_options: dict[str, Any], n_shards: int, shard_rows: int
) -> tuple[np.ndarray, np.ndarray | None, float, float]:
    """Read the dataset shard by shard and embed each shard; returns (X, y, read_s, embed_s).

    A ``pca`` embedder is first fitted on the whole dataset in one streaming pass over the
    shards (so PCA datasets are read twice; no shard is kept in memory by the fit).
    """
    from otaudit.data.embedders import make_embedder
    from otaudit.data.readers import read_shard
    from otaudit.tasks.devices import worker_device

    worker_device("auto")  # on a CUDA worker: its own GPU becomes current (device: auto)

    def shard(k: int) -> tuple[Any, Any]:
        return read_shard(spec, storage_options, k, shard_rows=shard_rows)

    t0 = time.perf_counter()
    fit = (shard(k)[0] for k in range(n_shards)) if spec.embedder.kind == "pca" else None
    embedder = make_embedder(spec.embedder, fit_data=fit, dataset=spec.name)
    embed_s = time.perf_counter() - t0
    read_s = 0.0
    xs: list[np.ndarray] = []
    ys: list[Any] = []
    for k in range(n_shards):
        t0 = time.perf_counter()
        feats, labels = shard(k)
        t1 = time.perf_counter()
        xs.append(np.asarray(embedder.embed(feats)))
        ys.append(labels)
        read_s += t1 - t0
        embed_s += time.perf_counter() - t1
    X = np.concatenate(xs, axis=0) if xs else np.zeros((0, 0), dtype=np.float32)
    return X, _labels(ys), read_s, embed_s


@dataclass(frozen=True)
class DatasetFailure:
    """A dataset whose preparation failed: its name and the one-line reason."""

    name: str
    error: str


@task(
    name="prepare-dataset",
    task_run_name="prepare-{spec.name}",
    cache_policy=NO_CACHE,
)
def prepare_dataset(spec: Any, plan: AuditPlan) -> DatasetRef | DatasetFailure:
    """Prepare ONE dataset (:func:`prepare_dataset_attempt`, retried on storage errors);
    a final failure is returned as a :class:`DatasetFailure` — never raised — so the flow
    goes on and only this dataset's pairs fail."""
    try:
        return prepare_dataset_attempt(spec, plan)
    except Exception as e:  # noqa: BLE001 - recorded in the report with its reason
        return DatasetFailure(name=spec.name, error=describe_error(e))


@task(
    name="prepare-dataset-attempt",
    task_run_name="attempt-{spec.name}",
    retries=config.TASK_RETRIES,
    retry_delay_seconds=config.TASK_RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)
def prepare_dataset_attempt(spec: Any, plan: AuditPlan) -> DatasetRef:
    """Fingerprint, embed (shard by shard) and summarise ONE dataset, through the cache.

    A cache hit on the statistics skips reading and embedding entirely; a hit on the
    embeddings skips reading and embedding. Raises InputError/StorageError for a bad
    dataset (storage errors are retried by the decorator).
    """
    from otaudit import dataset_stats
    from otaudit.data.readers import inspect_dataset

    t_start = time.perf_counter()
    so = plan.manifest.dataset_storage_options(spec)
    info = inspect_dataset(spec, so, shard_rows=plan.manifest.shard_rows)
    cache = open_cache(plan)
    embedder_id = spec.embedder.id
    inner, self_tables = stats_inner(plan)
    emb_key = cache.key("emb", info.fingerprint, embedder_id, plan.code_version)
    stats_key = cache.key("stats", emb_key, inner, str(self_tables))
    meta = cache.get_json("stats_meta", stats_key) if plan.use_cache else None
    read_s = embed_s = stats_s = 0.0
    hit = meta is not None
    if meta is None:
        arrays = cache.get_arrays("emb", emb_key) if plan.use_cache else None
        if arrays is None:
            X, y, read_s, embed_s = _embed(spec, so, info.n_shards, plan.manifest.shard_rows)
            payload = {"X": X} if y is None else {"X": X, "y": y}
            cache.put_arrays("emb", emb_key, payload)
        else:
            X, y = arrays["X"], arrays.get("y")
        t0 = time.perf_counter()
        stats = dataset_stats(X, y, name=spec.name, inner=inner, self_tables=self_tables)
        stats_s = time.perf_counter() - t0
        cache.put_arrays("stats", stats_key, stats.to_arrays())
        meta = {
            "n_rows": int(stats.n),
            "n_classes": int(stats.n_classes) if stats.labeled else 0,
            "dim": int(stats.d),
            "labeled": bool(stats.labeled),
        }
        cache.put_json("stats_meta", stats_key, meta)
    return DatasetRef(
        name=spec.name,
        uri=_redacted_uri(spec.uri),
        fingerprint=info.fingerprint,
        embedder=embedder_id,
        n_rows=int(meta["n_rows"]),
        n_classes=int(meta["n_classes"]),
        dim=int(meta["dim"]),
        labeled=bool(meta["labeled"]),
        emb_key=emb_key,
        stats_key=stats_key,
        cache_hit=hit,
        read_seconds=read_s,
        embed_seconds=embed_s,
        stats_seconds=stats_s,
        seconds=time.perf_counter() - t_start,
    )


def _redacted_uri(uri: str) -> str:
    from otaudit.data.manifest import redact

    return str(redact(uri))


def failed_dataset_row(run_id: str, spec: Any, failure: DatasetFailure) -> dict[str, Any]:
    """The ``datasets.parquet`` row of a dataset whose preparation failed."""
    return {
        "run_id": run_id,
        "dataset": spec.name,
        "uri": _redacted_uri(spec.uri),
        "fingerprint": None,
        "n_rows": None,
        "n_classes": None,
        "dim": None,
        "embedder": spec.embedder.kind,
        "seconds": None,
        "status": "failed",
        "error": failure.error,
        "cache_hit": False,
        "embed_seconds": None,
        "stats_seconds": None,
        "labeled": None,
    }


def describe_error(error: BaseException) -> str:
    """One line: our errors carry their own message; anything else gets its type name."""
    from otaudit.errors import OTAuditError

    msg = " ".join(str(error).split())
    if isinstance(error, OTAuditError):
        return msg
    return f"{type(error).__name__}: {msg}"
