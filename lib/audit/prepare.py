"""One dataset's preparation: fingerprint, embed (shard by shard), summarise — through the
content-addressed cache — and its ``datasets.parquet`` row.

:func:`prepare_dataset` returns a small :class:`DatasetRef` (metadata and cache keys, never
arrays); the per-dataset task (:mod:`otaudit.tasks.datasets`) only calls it and turns a final
failure into a :class:`DatasetFailure`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.secrets import redact, redact_uri
from .plan import AuditPlan

__all__ = [
    "reprepare",
    "DatasetRef",
    "DatasetFailure",
    "prepare_dataset",
    "stats_inner",
    "dataset_rows",
    "failed_dataset_row",
]


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
    #: Where the dataset was embedded (``cpu``, ``cuda:0``; None: cached by an older version).
    device: str | None = None

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
            "device": self.device,
        }


@dataclass(frozen=True)
class DatasetFailure:
    """A dataset whose preparation failed: its name and the one-line reason."""

    name: str
    error: str


def prepare_dataset(
    spec: Any,
    plan: AuditPlan,
    *,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
    shard_pool: Callable[[], Any] | None = None,
) -> DatasetRef:
    """Fingerprint, embed (shard by shard) and summarise ONE dataset, through the cache.

    A cache hit on the statistics skips reading and embedding entirely; a hit on the
    embeddings skips reading and embedding. Otherwise every shard is one unit of work
    (:func:`otaudit.data.embedding.embed_dataset_sharded`): submitted to ``executor`` (the
    Dask cluster's, from the per-dataset task) or run in this process when None — the same
    bytes either way — each cached on its own, so a re-run re-embeds only changed shards.
    ``progress(done, total)`` is called as shards finish. ``shard_pool``: instead of
    ``executor``, a factory of a context manager yielding one (the per-dataset task's
    :func:`otaudit.tasks.datasets.shard_executor`), entered only when the whole embedding is
    not cached and the dataset has at least two shards (some may still be cached shard by
    shard): a cache hit or a one-shard dataset never secedes its task nor queues a Dask
    future behind the other datasets' work. The per-class counts, means and
    co-moment matrices are merged from the shards' partial moments (stored with the
    statistics as ``moment_*``); :class:`DatasetStats` keeps its order-free means and
    covariances from the gathered points, which the OT needs whole anyway.
    Raises InputError/StorageError for a bad dataset or a failing store.
    """
    from ..data.cache import embedding_key, stats_key
    from ..data.embedding import embed_dataset_sharded
    from ..data.readers import inspect_dataset
    from ..dataset_distance import dataset_stats
    from ..dataset_distance.stats import merge_moments, moments_arrays, shard_moments

    t_start = time.perf_counter()
    so = plan.manifest.dataset_storage_options(spec)
    info = inspect_dataset(spec, so, shard_rows=plan.manifest.shard_rows)
    cache = plan.cache()
    embedder_id = spec.embedder.id
    inner, self_tables = stats_inner(plan)
    emb_key = embedding_key(cache, info.fingerprint, embedder_id)
    s_key = stats_key(cache, emb_key, inner, self_tables)
    meta = _cached_meta(cache, plan, emb_key, s_key)
    read_s = embed_s = stats_s = 0.0
    hit = meta is not None
    if meta is None:
        arrays = cache.get_arrays("emb", emb_key, check_emb) if plan.use_cache else None
        device = None
        if arrays is None:
            pooled = shard_pool is not None and len(info.shard_sizes) >= 2
            with shard_pool() if pooled else contextlib.nullcontext(executor) as ex:
                e = embed_dataset_sharded(
                    spec,
                    so,
                    plan.manifest.shard_rows,
                    cache,
                    embedder_id,
                    info.fingerprint,
                    executor=ex,
                    progress=progress,
                    use_cache=plan.use_cache,
                )
            X, y, read_s, embed_s, device = e.X, e.y, e.read_seconds, e.embed_seconds, e.device
            moments = e.moments
            payload = {"X": X} if y is None else {"X": X, "y": y}
            if device is not None:
                payload["device"] = device
            cache.put_arrays("emb", emb_key, payload)
        else:
            X, y = arrays["X"], arrays.get("y")
            device = str(arrays["device"]) if "device" in arrays else None
            bounds = np.cumsum((0, *info.shard_sizes))
            moments = merge_moments(
                [
                    shard_moments(X[a:b], None if y is None else y[a:b])
                    for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                ]
            )
        t0 = time.perf_counter()
        stats = dataset_stats(X, y, name=spec.name, inner=inner, self_tables=self_tables)
        stats_s = time.perf_counter() - t0
        merged = moments_arrays(moments, stats.classes)
        if not np.array_equal(merged["moment_counts"], stats.counts):
            raise RuntimeError(f"{spec.name}: merged shard counts differ from the class counts")
        cache.put_arrays("stats", s_key, {**stats.to_arrays(), **merged})
        meta = {
            "n_rows": int(stats.n),
            "n_classes": int(stats.n_classes) if stats.labeled else 0,
            "dim": int(stats.d),
            "labeled": bool(stats.labeled),
            "device": device,
        }
        cache.put_json("stats_meta", s_key, meta)
    return DatasetRef(
        name=spec.name,
        uri=str(redact(spec.uri)),
        fingerprint=info.fingerprint,
        embedder=embedder_id,
        n_rows=int(meta["n_rows"]),
        n_classes=int(meta["n_classes"]),
        dim=int(meta["dim"]),
        labeled=bool(meta["labeled"]),
        emb_key=emb_key,
        stats_key=s_key,
        cache_hit=hit,
        read_seconds=read_s,
        embed_seconds=embed_s,
        stats_seconds=stats_s,
        seconds=time.perf_counter() - t_start,
        device=meta.get("device"),
    )


# --- cache reads (issue 16: a bad or vanished entry is recomputed, never trusted) ----------


def check_emb(arrays: dict[str, Any]) -> str | None:
    """Why a cached embeddings entry is unusable (None: usable)."""
    X = arrays.get("X")
    if X is None or getattr(X, "ndim", 0) != 2 or X.dtype.kind != "f":
        return "embeddings entry has no 2-D float array 'X'"
    y = arrays.get("y")
    if y is not None and (y.ndim != 1 or len(y) != X.shape[0]):
        return "embeddings entry has labels of the wrong length"
    return None


def check_stats(arrays: dict[str, Any]) -> str | None:
    """Why a cached statistics entry is unusable (None: usable)."""
    missing = [k for k in ("meta_json", "features", "codes", "counts", "means") if k not in arrays]
    if missing:
        return f"statistics entry lacks {', '.join(missing)}"
    if arrays["features"].ndim != 2 or len(arrays["codes"]) != arrays["features"].shape[0]:
        return "statistics entry has inconsistent features/codes"
    return None


def check_meta(meta: Any) -> str | None:
    """Why a cached ``stats_meta`` entry is unusable (None: usable)."""
    if not isinstance(meta, dict):
        return "stats_meta is not an object"
    for k in ("n_rows", "n_classes", "dim"):
        v = meta.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return f"stats_meta field {k!r} is not a count"
    if not isinstance(meta.get("labeled"), bool) or meta["n_rows"] == 0:
        return "stats_meta is inconsistent"
    return None


def _cached_meta(cache: Any, plan: AuditPlan, emb_key: str, s_key: str) -> dict | None:
    """The cached ``stats_meta`` of a dataset, when it and every entry the pair phase
    reads are present (a vanished statistics/embeddings entry makes it a miss, so the
    preparation recomputes what is missing)."""
    if not plan.use_cache:
        return None
    meta = cache.get_json("stats_meta", s_key, check_meta)
    if meta is None or not cache.exists("stats", s_key):
        return None
    if {"ot_bounds", "w2"} & set(plan.measures) and not cache.exists("emb", emb_key):
        return None
    return meta


def reprepare(plan: AuditPlan, name: str) -> DatasetRef:
    """Prepare dataset ``name`` again (in a pair worker whose cached statistics or
    embeddings vanished or were bad): recomputes only the entries that are missing."""
    spec = next(s for s in plan.manifest.datasets if s.name == name)
    return prepare_dataset(spec, plan)


def failed_dataset_row(run_id: str, spec: Any, failure: DatasetFailure) -> dict[str, Any]:
    """The ``datasets.parquet`` row of a dataset whose preparation failed."""
    return {
        "run_id": run_id,
        "dataset": spec.name,
        "uri": str(redact(spec.uri)),
        "fingerprint": None,
        "n_rows": None,
        "n_classes": None,
        "dim": None,
        "embedder": spec.embedder.kind,
        "seconds": None,
        "status": "failed",
        "error": redact_uri(failure.error),
        "cache_hit": False,
        "embed_seconds": None,
        "stats_seconds": None,
        "labeled": None,
        "device": None,
    }


def dataset_rows(plan: AuditPlan, outcomes: list[DatasetRef | DatasetFailure]) -> list[dict]:
    """The ``datasets.parquet`` rows, in manifest order, of every dataset's outcome."""
    return [
        ref.to_row(plan.run_id)
        if isinstance(ref, DatasetRef)
        else failed_dataset_row(plan.run_id, spec, ref)
        for spec, ref in zip(plan.manifest.datasets, outcomes, strict=True)
    ]
