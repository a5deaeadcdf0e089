"""Embedding one whole dataset, shard by shard: the data path from a manifest entry to the
``[n, d]`` matrix (and labels) that the cache stores.

Split from the per-dataset task so that the task only moves references: reading
(:mod:`otaudit.data.readers`), embedding (:mod:`otaudit.data.embedders`) and the label
coercion that makes labels storable without pickle live here, in the data layer.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from .embedders import embedder_device, make_embedder
from .readers import _layout, read_shard

__all__ = [
    "Embedded",
    "embed_dataset",
    "concat_labels",
    "SHARD_KIND",
    "ShardOut",
    "ShardedEmbedding",
    "shard_fingerprints",
    "shard_keys",
    "embed_shard",
    "embed_dataset_sharded",
]


def concat_labels(parts: list[Any]) -> np.ndarray | None:
    """Concatenate label shards into a NumPy array the cache can store without pickle.

    ``None`` when any shard is unlabeled. Object arrays become ``str`` (all strings),
    ``int64`` (all integers or booleans) or the ``repr`` of each value (mixed types).
    """
    if not parts or any(p is None for p in parts):
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


@dataclass(frozen=True)
class Embedded:
    """One embedded dataset: features ``X`` ``[n, d]``, labels or None, timings, device."""

    X: np.ndarray
    y: np.ndarray | None
    read_seconds: float
    embed_seconds: float
    device: str


def embed_dataset(
    spec: Any, storage_options: dict[str, Any], n_shards: int, shard_rows: int
) -> Embedded:
    """Read the dataset shard by shard and embed each shard.

    A ``pca`` embedder is first fitted on the whole dataset in one streaming pass over the
    shards (so PCA datasets are read twice; no shard is kept in memory by the fit).
    """

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
    return Embedded(X, concat_labels(ys), read_s, embed_s, embedder_device(embedder))


# --------------------------------------------------------------------------------------
# shard-parallel embedding (issue 14)
# --------------------------------------------------------------------------------------
#: Cache kind of one shard's embedding (features ``X``, labels ``y`` when labelled).
SHARD_KIND = "emb_shard"

_EMBEDDERS: dict[str, Any] = {}  # per process: embedder id + spec -> built embedder


def shard_fingerprints(
    spec: Any, storage_options: dict[str, Any] | None, shard_rows: int | None
) -> tuple[str, ...]:
    """One content fingerprint per shard, from metadata only.

    Parquet: the shard's file entry (relative path, size, ETag/checksum or mtime) and its
    row group's metadata (rows, bytes, column chunk offsets and statistics), so rewriting
    one file changes only that file's shards. .npy/.npz/CSV (one file parsed whole): the
    dataset fingerprint and the row range. The features/label columns and the format are
    part of every fingerprint.
    """
    info, _store, layout = _layout(spec, storage_options, shard_rows)
    base = [info.format, spec.features, spec.label]
    parts: list[Any]
    if info.format == "parquet":
        files, shards = layout
        parts = [[*base, files[fi].entry, files[fi].rg_meta[rg], rg] for fi, rg in shards]
    else:
        parts = [[*base, info.fingerprint, list(r)] for r in layout[1]]
    return tuple(
        hashlib.sha256(json.dumps(p, sort_keys=True, default=str).encode()).hexdigest()
        for p in parts
    )


def shard_keys(
    cache: Any,
    spec: Any,
    storage_options: dict[str, Any] | None,
    shard_rows: int | None,
    embedder_id: str,
    fingerprint: str,
) -> tuple[str, ...]:
    """Cache keys of every shard's embedding: shard fingerprint + embedder id + the code
    fingerprint of reading/embedding. A ``pca`` embedder is fitted on the whole dataset, so
    its shard keys also carry the dataset ``fingerprint`` (any change re-embeds all)."""
    from .cache import code_fingerprint

    code = code_fingerprint("emb")
    whole = fingerprint if spec.embedder.kind == "pca" else ""
    return tuple(
        cache.key(SHARD_KIND, fp, embedder_id, whole, code)
        for fp in shard_fingerprints(spec, storage_options, shard_rows)
    )


@dataclass(frozen=True)
class ShardOut:
    """What one shard task returns (small: no features; they stay in the cache)."""

    index: int
    key: str
    rows: int
    written: bool
    read_seconds: float
    embed_seconds: float
    device: str | None
    moments: dict[str, Any]


def _embedder_for(spec: Any, embedder_id: str) -> Any:
    """The shard embedder, built once per process (a model is loaded once per worker)."""
    memo = f"{embedder_id}|{spec.embedder.model_dump_json()}|{spec.name}"
    if memo not in _EMBEDDERS:
        if len(_EMBEDDERS) >= 8:
            _EMBEDDERS.pop(next(iter(_EMBEDDERS)))
        _EMBEDDERS[memo] = make_embedder(spec.embedder, dataset=spec.name)
    return _EMBEDDERS[memo]


def embed_shard(
    spec: Any,
    storage_options: dict[str, Any] | None,
    shard_rows: int | None,
    index: int,
    cache: Any,
    key: str,
    embedder_id: str,
    use_cache: bool = True,
    fitted: Any = None,
) -> ShardOut:
    """Read, embed and cache ONE shard (a cache hit only reads the entry), and return its
    per-class partial moments. Runs in a Dask task or in process; same result either way.
    ``fitted``: an already fitted embedder (``pca``), else it is built here."""
    from ..dataset_distance.stats import shard_moments

    arrays = cache.get_arrays(SHARD_KIND, key) if use_cache else None
    read_s = embed_s = 0.0
    device = None
    written = arrays is None
    if arrays is None:
        t0 = time.perf_counter()
        feats, labels = read_shard(spec, storage_options, index, shard_rows=shard_rows)
        t1 = time.perf_counter()
        embedder = fitted if fitted is not None else _embedder_for(spec, embedder_id)
        X = np.ascontiguousarray(np.asarray(embedder.embed(feats)))
        embed_s = time.perf_counter() - t1
        read_s = t1 - t0
        device = embedder_device(embedder)
        y = concat_labels([labels])
        arrays = {"X": X} if y is None else {"X": X, "y": y}
        cache.put_arrays(SHARD_KIND, key, {**arrays, "device": device})
    else:
        device = str(arrays["device"]) if "device" in arrays else None
    y = arrays.get("y")
    moments = shard_moments(arrays["X"], y)
    n = int(arrays["X"].shape[0])
    return ShardOut(index, key, n, written, read_s, embed_s, device, moments)


@dataclass(frozen=True)
class ShardedEmbedding:
    """A dataset embedded shard by shard: the gathered ``X``/``y`` (identical to the
    serial path), the per-class moments merged in shard order, and what the run did."""

    X: np.ndarray
    y: np.ndarray | None
    read_seconds: float
    embed_seconds: float
    device: str
    moments: dict[str, Any]
    keys: tuple[str, ...]
    n_embedded: int


def embed_dataset_sharded(
    spec: Any,
    storage_options: dict[str, Any] | None,
    shard_rows: int | None,
    cache: Any,
    embedder_id: str,
    fingerprint: str,
    *,
    executor: Any = None,
    progress: Any = None,
    use_cache: bool = True,
) -> ShardedEmbedding:
    """Embed every shard as its own unit of work and gather the dataset.

    ``executor``: any ``concurrent.futures.Executor`` (Dask's ``client.get_executor()`` from
    inside a worker task, a thread pool) — each shard is one ``submit`` of
    :func:`embed_shard`, which reads, embeds and writes the shard's cache entry where it
    runs and returns only its key and partial moments. ``None``: the same function shard
    after shard in this process. Either way the gathered features are the shard entries
    concatenated in shard order, so the result is the same to the bit.
    ``progress(done, total)`` is called as shards finish.

    Gathered whole (needed by the algorithms downstream): the features and labels (OT points,
    label-cost self tables, k-means pseudo-labels). Merged, not gathered: per-class counts,
    means and co-moment matrices (:func:`otaudit.dataset_distance.stats.merge_moments`).
    """
    from ..dataset_distance.stats import merge_moments

    keys = shard_keys(cache, spec, storage_options, shard_rows, embedder_id, fingerprint)
    fitted = None
    if spec.embedder.kind == "pca":  # one streaming fit on the whole dataset, here
        fit = (
            read_shard(spec, storage_options, k, shard_rows=shard_rows)[0] for k in range(len(keys))
        )
        fitted = make_embedder(spec.embedder, fit_data=fit, dataset=spec.name)
    args = [
        (spec, storage_options, shard_rows, k, cache, keys[k], embedder_id, use_cache, fitted)
        for k in range(len(keys))
    ]
    outs: list[ShardOut] = []
    if executor is None:
        for a in args:
            outs.append(embed_shard(*a))
            if progress is not None:
                progress(len(outs), len(args))
    else:
        futures = [executor.submit(embed_shard, *a) for a in args]
        for fut in as_completed(futures):
            outs.append(fut.result())
            if progress is not None:
                progress(len(outs), len(args))
    outs.sort(key=lambda o: o.index)
    xs: list[np.ndarray] = []
    ys: list[Any] = []
    for o in outs:
        arrays = cache.get_arrays(SHARD_KIND, o.key)
        if arrays is None:  # vanished or corrupt between the write and the gather
            o = embed_shard(*args[o.index][:7], False, fitted)
            arrays = cache.get_arrays(SHARD_KIND, o.key)
        xs.append(arrays["X"])
        ys.append(arrays.get("y"))
    X = np.concatenate(xs, axis=0) if xs else np.zeros((0, 0), dtype=np.float32)
    devices = sorted({o.device for o in outs if o.device is not None})
    return ShardedEmbedding(
        X=X,
        y=concat_labels(ys),
        read_seconds=sum(o.read_seconds for o in outs),
        embed_seconds=sum(o.embed_seconds for o in outs),
        device=",".join(devices) if devices else "cpu",
        moments=merge_moments([o.moments for o in outs]),
        keys=keys,
        n_embedded=sum(o.written for o in outs),
    )
