"""The one Parquet writer of otaudit: a table to Parquet bytes (:func:`table_bytes`, used by
the report and by :func:`write_dataset_parquet`), and a dataset ``[n, d]`` (+ labels) as a
Parquet file through :class:`~otaudit.data.storage.Store` (atomic); and
:func:`arrow_owned`, how in-memory bytes are handed to Arrow's readers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import config
from ..errors import InputError
from .storage import Store

__all__ = ["arrow_owned", "dataset_table", "table_bytes", "write_dataset_parquet"]


def arrow_owned(data: bytes) -> pa.Buffer:
    """``data`` copied into Arrow-owned memory, for Arrow's readers (Parquet, CSV).

    Read straight from a Python ``bytes`` (or a ``BytesIO``), the last reference to it can
    be dropped by an Arrow pool thread after the read returns; if the interpreter is
    finalizing by then, that thread's GIL request ends it with ``pthread_exit`` inside a
    ``noexcept`` destructor and the process aborts at exit (SIGABRT, "terminate called
    without an active exception"; pyarrow 26, seen in ~3 % of ``otaudit report`` runs on a
    loaded machine; the core dump shows ``arrow::py::PyBuffer::~PyBuffer`` on a pool
    thread). An Arrow-owned buffer needs no GIL to free.
    """
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def table_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """``table`` as the bytes of one Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def dataset_table(name: str, X: Any, y: Any = None) -> pa.Table:
    """``X`` (``[n, d]``) and optional labels ``y`` as a table with a ``features``
    (fixed-size list of float32/float64) and a ``label`` column, as otaudit reads them."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(
            f"expected a non-empty [n, d] array, got shape {X.shape}",
            dataset=name,
            field="features",
            fix="pass a 2-D array",
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    values = pa.array(np.ascontiguousarray(X).reshape(-1))
    cols = {"features": pa.FixedSizeListArray.from_arrays(values, d)}
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,):
            raise InputError(
                f"{y.shape} labels for {n} rows",
                dataset=name,
                field="label",
                fix="pass one label per row",
            )
        cols["label"] = pa.array(y.tolist() if y.dtype == object else y)
    return pa.table(cols)


def write_dataset_parquet(
    store_uri: str,
    name: str,
    X: Any,
    y: Any = None,
    *,
    storage_options: dict[str, Any] | None = None,
    row_group_size: int | None = None,
) -> str:
    """Write ``X`` (``[n, d]``) and optional labels ``y`` as ``<store_uri>/<name>.parquet``.

    Columns: ``features`` (fixed-size list of float32/float64) and ``label`` (when ``y`` is
    given).  The write is atomic.  Returns the file's URI (use ``features: features`` and
    ``label: label`` in the manifest).
    """
    table = dataset_table(name, X, y)
    store = Store(store_uri, storage_options)
    data = table_bytes(table, row_group_size=row_group_size or config.SHARD_ROWS)
    store.write_bytes(data, f"{name}.parquet")
    return store.path(f"{name}.parquet")
