"""Embedding one whole dataset, shard by shard: the data path from a manifest entry to the
``[n, d]`` matrix (and labels) that the cache stores.

Split from the per-dataset task so that the task only moves references: reading
(:mod:`otaudit.data.readers`), embedding (:mod:`otaudit.data.embedders`) and the label
coercion that makes labels storable without pickle live here, in the data layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .embedders import embedder_device, make_embedder
from .readers import read_shard

__all__ = ["Embedded", "embed_dataset", "concat_labels"]


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
