"""Dataset readers: Parquet (file or directory), .npy, .npz, CSV — all through :class:`Store`.

Shards
    Parquet: one shard per row group of every file (files in sorted path order).
    .npy/.npz/CSV: consecutive row ranges of ``shard_rows`` (default ``config.SHARD_ROWS``).
    A .npy shard reads only its byte range; .npz and CSV files are parsed whole (once per
    process, memoised by fingerprint) — use Parquet for large data.

Features
    Parquet/CSV: ``features`` names one list / fixed-size-list column (``[n, d]``), one
    numeric column (``[n, 1]``) or a list of numeric columns (stacked).  For a
    sentence-transformers embedder it names the text column and shards return ``list[str]``.
    .npz: ``features`` / ``label`` are array names (defaults ``features``; label optional).
    .npy: one 2-D numeric array; no labels (use .npz or Parquet for labelled data).

Fingerprint
    sha256 over (format, features, label, shard_rows for non-Parquet, and per file: relative
    path, size, ETag/checksum or mtime, and the Parquet row-group metadata/statistics).
    Only metadata is read; it is stable across runs and changes when a file is rewritten.

Every bad input gives one line naming the dataset, the field and ``fix:``.

Deviations from pipeline_api.md: ``inspect_dataset``, ``read_shard`` and ``read_dataset``
take an extra keyword ``shard_rows=None`` (pass ``manifest.shard_rows``); ``DatasetInfo``
has extra fields with defaults: ``shard_sizes`` (rows per shard), ``dim`` (None when unknown
before reading, e.g. text or variable lists) and ``text`` (features are raw text).
Addition: ``write_dataset_parquet`` (for ``otaudit demo`` and tests).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import config
from ..errors import InputError, StorageError
from .manifest import DatasetSpec, redact
from .storage import Store, storage_errors

__all__ = [
    "DatasetInfo",
    "inspect_dataset",
    "read_shard",
    "read_dataset",
    "iter_shards",
    "write_dataset_parquet",
]

_EXT = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz", ".csv": "csv"}
_ETAG_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "crc32c",
    "checksum",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
)


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one dataset (no feature data read)."""

    name: str
    uri: str
    format: str
    fingerprint: str
    n_rows: int
    n_shards: int
    columns: list[str]
    shard_sizes: tuple[int, ...] = field(default=())
    dim: int | None = None
    text: bool = False


# --- helpers ---------------------------------------------------------------------------


def _is_text(spec: DatasetSpec) -> bool:
    return spec.embedder.kind == "sentence-transformers"


@contextlib.contextmanager
def _dataset_storage(spec: DatasetSpec) -> Iterator[None]:
    """Turn I/O failures into a StorageError prefixed with the dataset and field."""
    proto = spec.uri.split("://")[0] if "://" in spec.uri else "file"
    try:
        with storage_errors(spec.uri, "read", proto):
            yield
    except StorageError as e:
        msg = str(e)
        if msg.startswith("dataset "):
            raise
        raise StorageError(f"dataset {spec.name!r}, field 'uri': {msg}") from e.__cause__


def _store(spec: DatasetSpec, storage_options: dict[str, Any] | None) -> Store:
    opts = {**(storage_options or {}), **(spec.storage_options or {})}
    with _dataset_storage(spec):
        return Store(spec.uri, opts)


def _format_of(spec: DatasetSpec, store: Store) -> str:
    if spec.format != "auto":
        return spec.format
    leaf = store.root.rstrip("/").rpartition("/")[2].lower()
    for ext, fmt in _EXT.items():
        if leaf.endswith(ext):
            return fmt
    with _dataset_storage(spec):
        is_dir = store.fs.isdir(store.root)
    if is_dir:
        return "parquet"
    with _dataset_storage(spec):
        if not store.exists():
            raise StorageError(
                f"storage {redact(spec.uri)!r} not found; fix: check the uri "
                "(path, bucket) and storage_options / credentials"
            )
    raise InputError(
        f"cannot tell the format of {redact(spec.uri)!r} from its name",
        dataset=spec.name,
        field="format",
        fix="set format: parquet, npy, npz or csv",
    )


def _version_tag(info: dict[str, Any]) -> str:
    for k in _ETAG_KEYS:
        if info.get(k) is not None:
            return f"{k}={info[k]}"
    return ""


def _file_entry(store: Store, key: str, info: dict[str, Any]) -> dict[str, Any]:
    rel = key[len(store.root) :].lstrip("/") if key.startswith(store.root) else key
    tag = _version_tag(info)
    if not tag or store.protocol == "memory":  # no change marker: hash the bytes
        tag = "sha256=" + hashlib.sha256(store.fs.cat_file(key)).hexdigest()
    return {"path": rel, "size": int(info.get("size") or 0), "version": tag}


def _shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)] or []


def _missing_column(spec: DatasetSpec, col: str, fld: str, available: Sequence[str]) -> InputError:
    avail = ", ".join(available) or "(none)"
    return InputError(
        f"unknown column {col!r} (available: {avail})",
        dataset=spec.name,
        field=fld,
        fix=f"set {fld} to one of the available columns",
    )


# --- Parquet layout -------------------------------------------------------------------


@dataclass(frozen=True)
class _PqFile:
    key: str
    entry: dict[str, Any]
    row_groups: tuple[int, ...]  # rows per row group
    schema: pa.Schema
    rg_meta: tuple[Any, ...]


@functools.lru_cache(maxsize=256)
def _footer(
    fs: Any, key: str, size: int, version: str
) -> tuple[pa.Schema, tuple[int, ...], tuple[Any, ...]]:
    """Parse a Parquet footer (memoised on the file's size and version tag)."""
    with fs.open(key, "rb") as f:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        schema = pf.schema_arrow
        rows = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
        meta = []
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            cols = []
            for j in range(rg.num_columns):
                c = rg.column(j)
                st = c.statistics
                stats = None
                if st is not None and st.has_min_max:
                    stats = [str(st.min), str(st.max), st.null_count]
                cols.append([c.path_in_schema, c.total_compressed_size, c.file_offset, stats])
            meta.append([rg.num_rows, rg.total_byte_size, cols])
    return schema, rows, tuple(json.dumps(m, sort_keys=True, default=str) for m in meta)


def _parquet_files(spec: DatasetSpec, store: Store) -> list[_PqFile]:
    fs, root = store.fs, store.root
    with _dataset_storage(spec):
        if not store.is_local:
            fs.invalidate_cache(root)
        try:
            is_dir = fs.isdir(root)
        except FileNotFoundError:
            is_dir = False
        if is_dir:
            found = fs.find(root, detail=True)
            infos = {
                k: v
                for k, v in sorted(found.items())
                if v.get("type", "file") == "file"
                and not any(p.startswith(("_", ".")) for p in k[len(root) :].split("/") if p)
            }
            if not infos:
                raise InputError(
                    f"no Parquet files under {redact(spec.uri)!r}",
                    dataset=spec.name,
                    field="uri",
                    fix="point uri at a Parquet file or a directory of them",
                )
        else:
            with _dataset_storage(spec):
                infos = {root: store.info()}
    out = []
    for key, info in infos.items():
        with _dataset_storage(spec):
            entry = _file_entry(store, key, info)
            try:
                schema, rows, meta = _footer(fs, key, entry["size"], entry["version"])
            except pa.ArrowInvalid as e:
                raise InputError(
                    f"{redact(store._uri_of(key))!r} is corrupt or not Parquet "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                    dataset=spec.name,
                    field="uri",
                    fix="rewrite the file, or set format: to the file's real format",
                ) from None
        out.append(_PqFile(key, entry, rows, schema, meta))
    schemas = {str(f.schema) for f in out}
    if len(schemas) > 1:
        raise InputError(
            f"the Parquet files under {redact(spec.uri)!r} have different schemas",
            dataset=spec.name,
            field="uri",
            fix="write every file with the same columns and types",
        )
    return out


def _check_parquet_columns(spec: DatasetSpec, schema: pa.Schema) -> int | None:
    """Validate the feature/label columns against the schema; returns d when known."""
    names = list(schema.names)
    for c in spec.feature_columns:
        if c not in names:
            raise _missing_column(spec, c, "features", names)
    if spec.label is not None and spec.label not in names:
        raise _missing_column(spec, spec.label, "label", names)
    if _is_text(spec):
        if len(spec.feature_columns) != 1:
            raise InputError(
                "a text embedder takes one text column",
                dataset=spec.name,
                field="features",
                fix="set features to the name of the text column",
            )
        t = schema.field(spec.feature_columns[0]).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise InputError(
                f"column {spec.feature_columns[0]!r} has type {t}, not text",
                dataset=spec.name,
                field="features",
                fix="point features at a string column, or use a numeric embedder",
            )
        return None
    cols = spec.feature_columns
    if len(cols) == 1:
        t = schema.field(cols[0]).type
        if pa.types.is_fixed_size_list(t):
            _check_numeric_type(spec, cols[0], t.value_type)
            return t.list_size
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            _check_numeric_type(spec, cols[0], t.value_type)
            return None
        _check_numeric_type(spec, cols[0], t)
        return 1
    for c in cols:
        _check_numeric_type(spec, c, schema.field(c).type)
    return len(cols)


def _check_numeric_type(spec: DatasetSpec, col: str, t: pa.DataType) -> None:
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    ):
        raise InputError(
            f"column {col!r} has type {t}, not numeric",
            dataset=spec.name,
            field="features",
            fix="use numeric or list-of-number columns, or embed text with "
            "embedder: {kind: sentence-transformers, path: ...}",
        )


# --- table-level conversion -----------------------------------------------------------


def _first_null(arr: pa.Array | pa.ChunkedArray) -> int:
    """Row (within ``arr``) of its first null value; call only when ``arr.null_count > 0``."""
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def _features_from_table(
    spec: DatasetSpec, table: pa.Table, row0: int, shard: int
) -> np.ndarray | list[str]:
    cols = spec.feature_columns
    if _is_text(spec):
        col = table.column(cols[0])
        if col.null_count:
            first = _first_null(col)
            raise InputError(
                f"{col.null_count} rows have no text (first at row {row0 + first})",
                dataset=spec.name,
                field="features",
                fix="drop or fill the empty rows",
            )
        return [str(s) for s in col.to_pylist()]
    if len(cols) == 1:
        col = table.column(cols[0]).combine_chunks()
        t = col.type
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
            if col.null_count:
                first = _first_null(col)
                raise InputError(
                    f"{col.null_count} rows have a null feature vector (first at "
                    f"row {row0 + first})",
                    dataset=spec.name,
                    field="features",
                    fix="drop or impute those rows",
                )
            if pa.types.is_fixed_size_list(t):
                d = t.list_size
            else:
                lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                d = int(lens[0]) if len(lens) else 0
                bad = np.flatnonzero(lens != d)
                if bad.size:
                    raise InputError(
                        f"ragged feature lists: row {row0 + int(bad[0])} has length "
                        f"{int(lens[bad[0]])}, row {row0} has {d}",
                        dataset=spec.name,
                        field="features",
                        fix="give every row the same number of features",
                    )
            values = col.flatten()
            if values.null_count:
                first = _first_null(values)
                raise InputError(
                    f"{values.null_count} null feature values (first at row "
                    f"{row0 + first // max(d, 1)})",
                    dataset=spec.name,
                    field="features",
                    fix="drop or impute those rows",
                )
            arr = _to_float(values).reshape(len(col), d)
        else:
            arr = _numeric_columns(spec, [col], row0).reshape(-1, 1)
    else:
        arr = _numeric_columns(spec, [table.column(c).combine_chunks() for c in cols], row0)
    _check_finite(spec, arr, row0, shard)
    return arr


def _to_float(values: pa.Array) -> np.ndarray:
    if pa.types.is_float32(values.type):
        return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _numeric_columns(spec: DatasetSpec, cols: list[pa.Array], row0: int) -> np.ndarray:
    parts = []
    for c in cols:
        if c.null_count:
            first = _first_null(c)
            raise InputError(
                f"{c.null_count} null feature values (first at row {row0 + first})",
                dataset=spec.name,
                field="features",
                fix="drop or impute those rows",
            )
        parts.append(_to_float(c))
    dtype = np.float32 if all(p.dtype == np.float32 for p in parts) else np.float64
    return np.stack([p.astype(dtype, copy=False) for p in parts], axis=1)


def _check_finite(spec: DatasetSpec, arr: np.ndarray, row0: int, shard: int) -> None:
    if arr.size == 0:
        return
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"{bad.size} rows contain NaN or inf in shard {shard} (first at row "
            f"{row0 + int(bad[0])})",
            dataset=spec.name,
            field="features",
            fix="drop or impute those rows before the audit",
        )


def _labels_from_array(spec: DatasetSpec, arr: np.ndarray | pa.Array, row0: int) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray | pa.Array):
        a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        if a.null_count:
            first = _first_null(a)
            raise InputError(
                f"{a.null_count} rows have no label (first at row {row0 + first})",
                dataset=spec.name,
                field="label",
                fix="drop unlabelled rows, or remove `label` for unlabelled mode",
            )
        if pa.types.is_dictionary(a.type):
            a = a.cast(a.type.value_type)
        if pa.types.is_string(a.type) or pa.types.is_large_string(a.type):
            return np.asarray(a.to_pylist(), dtype=object)
        if pa.types.is_integer(a.type) or pa.types.is_boolean(a.type):
            return a.to_numpy(zero_copy_only=False).astype(np.int64)
        if pa.types.is_floating(a.type):
            out = a.to_numpy(zero_copy_only=False)
        else:
            raise InputError(
                f"label column has type {a.type}",
                dataset=spec.name,
                field="label",
                fix="use an integer or string label column",
            )
    else:
        out = np.asarray(arr)
        if out.ndim != 1:
            out = out.reshape(len(out), -1)
            if out.shape[1] != 1:
                raise InputError(
                    f"labels must be 1-D, got shape {arr.shape}",
                    dataset=spec.name,
                    field="label",
                    fix="store one label per row",
                )
            out = out[:, 0]
        if out.dtype.kind in "US":
            return out.astype(str).astype(object)
        if out.dtype.kind in "iub":
            return out.astype(np.int64)
    if out.dtype.kind == "f":
        nan = np.flatnonzero(~np.isfinite(out))
        if nan.size:
            raise InputError(
                f"{nan.size} labels are NaN/inf (first at row {row0 + int(nan[0])})",
                dataset=spec.name,
                field="label",
                fix="drop unlabelled rows",
            )
        return out
    if out.dtype == object:
        return out
    raise InputError(
        f"label array has dtype {out.dtype}",
        dataset=spec.name,
        field="label",
        fix="use integer or string labels",
    )


# --- whole-file formats (npy, npz, csv) ------------------------------------------------


def _single_file(spec: DatasetSpec, store: Store) -> dict[str, Any]:
    with _dataset_storage(spec):
        if not store.exists():
            raise StorageError(
                f"storage {redact(spec.uri)!r} not found; fix: check the uri "
                "(path, bucket) and storage_options / credentials"
            )
        info = store.info()
        if info.get("type") == "directory":
            raise InputError(
                f"{redact(spec.uri)!r} is a directory",
                dataset=spec.name,
                field="uri",
                fix="directories are read as Parquet: set "
                "format: parquet, or point uri at the file",
            )
        return _file_entry(store, store.root, info)


def _npy_header(spec: DatasetSpec, store: Store) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    with _dataset_storage(spec), store.open() as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise InputError(
                f"{redact(spec.uri)!r} is not a .npy file ({e})",
                dataset=spec.name,
                field="uri",
                fix="check the file, or set format: to its real format",
            ) from None
        offset = f.tell()
    return tuple(shape), np.dtype(dtype), bool(fortran), offset


@functools.lru_cache(maxsize=4)
def _load_whole(fs: Any, key: str, fmt: str, version: str) -> Any:
    """Parse a whole .npz / CSV file (memoised on its version tag)."""
    with fs.open(key, "rb") as f:
        data = f.read()
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return pacsv.read_csv(io.BytesIO(data))


def _whole(spec: DatasetSpec, store: Store, fmt: str, entry: dict[str, Any]) -> Any:
    with _dataset_storage(spec):
        try:
            return _load_whole(store.fs, store.root, fmt, entry["version"] + str(entry["size"]))
        except (ValueError, EOFError, zipfile.BadZipFile, pa.ArrowInvalid) as e:
            what = ".npz" if fmt == "npz" else "CSV"
            raise InputError(
                f"{redact(spec.uri)!r} is corrupt or not {what} "
                f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                dataset=spec.name,
                field="uri",
                fix="rewrite the file, or set format: to its real format",
            ) from None


def _npz_arrays(
    spec: DatasetSpec, arrays: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(spec.features, list):
        raise InputError(
            "for .npz give one array name",
            dataset=spec.name,
            field="features",
            fix="set features to the name of the [n, d] array",
        )
    names = sorted(arrays)
    if spec.features not in arrays:
        raise _missing_column(spec, spec.features, "features", names)
    X = arrays[spec.features]
    y = None
    if spec.label is not None:
        if spec.label not in arrays:
            raise _missing_column(spec, spec.label, "label", names)
        y = arrays[spec.label]
        if len(y) != len(X):
            raise InputError(
                f"{len(y)} labels for {len(X)} rows",
                dataset=spec.name,
                field="label",
                fix="store exactly one label per row",
            )
    return X, y


def _check_array(spec: DatasetSpec, X: np.ndarray) -> None:
    if _is_text(spec):
        raise InputError(
            "text embedders need a text column",
            dataset=spec.name,
            field="embedder",
            fix="store text in Parquet or CSV",
        )
    if X.dtype.kind not in "iufb" or X.dtype.names is not None:
        raise InputError(
            f"features have dtype {X.dtype}, not numeric",
            dataset=spec.name,
            field="features",
            fix="store a numeric [n, d] array",
        )
    if X.ndim != 2:
        raise InputError(
            f"features must be a 2-D [n, d] array, got shape {X.shape}",
            dataset=spec.name,
            field="features",
            fix="reshape to [n, d] (use [n, 1] for 1-D data)",
        )


def _csv_check(spec: DatasetSpec, table: pa.Table) -> int | None:
    return _check_parquet_columns(spec, table.schema)


# --- public API -----------------------------------------------------------------------


def _fingerprint(
    spec: DatasetSpec, fmt: str, files: list[dict[str, Any]], extra: Any, shard_rows: int | None
) -> str:
    blob = json.dumps(
        {
            "format": fmt,
            "features": spec.features,
            "label": spec.label,
            "files": files,
            "extra": extra,
            "shard_rows": shard_rows,
        },
        sort_keys=True,
        default=str,
    ).encode()
    return hashlib.sha256(blob).hexdigest()


def _layout(
    spec: DatasetSpec, storage_options: dict[str, Any] | None, shard_rows: int | None
) -> tuple[DatasetInfo, Store, Any]:
    """Inspect and return (info, store, format-specific layout)."""
    rows_per = int(shard_rows or config.SHARD_ROWS)
    store = _store(spec, storage_options)
    fmt = _format_of(spec, store)
    text = _is_text(spec)
    if fmt == "parquet":
        files = _parquet_files(spec, store)
        schema = files[0].schema
        dim = _check_parquet_columns(spec, schema)
        shards = [(fi, rg) for fi, f in enumerate(files) for rg in range(len(f.row_groups))]
        sizes = tuple(files[fi].row_groups[rg] for fi, rg in shards)
        # drop empty row groups from the shard list but keep them in the fingerprint
        keep = [i for i, s in enumerate(sizes) if s > 0]
        shards = [shards[i] for i in keep]
        sizes = tuple(sizes[i] for i in keep)
        fp = _fingerprint(spec, fmt, [f.entry for f in files], [f.rg_meta for f in files], None)
        columns = list(schema.names)
        layout: Any = (files, shards)
    else:
        entry = _single_file(spec, store)
        if fmt == "npy":
            if spec.label is not None:
                raise InputError(
                    ".npy files hold features only",
                    dataset=spec.name,
                    field="label",
                    fix="use .npz with arrays `features` and "
                    "`label`, or Parquet; or remove `label`",
                )
            shape, dtype, fortran, offset = _npy_header(spec, store)
            _check_array(spec, np.empty((0,) * len(shape), dtype=dtype))
            n, dim = shape[0], (shape[1] if len(shape) == 2 else None)
            columns = ["features"]
            layout = (shape, dtype, fortran, offset)
        elif fmt == "npz":
            arrays = _whole(spec, store, fmt, entry)
            X, _ = _npz_arrays(spec, arrays)
            _check_array(spec, X)
            n, dim = X.shape[0], X.shape[1]
            columns = sorted(arrays)
            layout = arrays
        elif fmt == "csv":
            table = _whole(spec, store, fmt, entry)
            dim = _csv_check(spec, table)
            n, columns = table.num_rows, list(table.schema.names)
            layout = table
        else:  # pragma: no cover - Literal-validated
            raise InputError(
                f"unknown format {fmt!r}",
                dataset=spec.name,
                field="format",
                fix="use parquet, npy, npz or csv",
            )
        ranges = _shard_ranges(n, rows_per)
        shards = ranges
        sizes = tuple(b - a for a, b in ranges)
        fp = _fingerprint(spec, fmt, [entry], None, rows_per)
        layout = (layout, ranges)
    n_rows = int(sum(sizes))
    if n_rows == 0:
        raise InputError(
            f"the dataset is empty (0 rows at {redact(spec.uri)!r})",
            dataset=spec.name,
            field="uri",
            fix="check the path or the filter that produced the file",
        )
    info = DatasetInfo(
        name=spec.name,
        uri=redact(spec.uri),
        format=fmt,
        fingerprint=fp,
        n_rows=n_rows,
        n_shards=len(shards),
        columns=columns,
        shard_sizes=sizes,
        dim=None if text else dim,
        text=text,
    )
    return info, store, layout


def inspect_dataset(
    spec: DatasetSpec,
    storage_options: dict[str, Any] | None = None,
    *,
    shard_rows: int | None = None,
) -> DatasetInfo:
    """Metadata only: format, shards, row count, columns (validated) and fingerprint.

    ``storage_options`` are the manifest's; the dataset's own override them.
    """
    return _layout(spec, storage_options, shard_rows)[0]


def read_shard(
    spec: DatasetSpec,
    storage_options: dict[str, Any] | None,
    shard: int,
    *,
    shard_rows: int | None = None,
) -> tuple[np.ndarray | list[str], np.ndarray | None]:
    """Features ``[rows, d]`` (float32/float64; ``list[str]`` for text) and labels of a shard.

    Labels are int64 for integer columns, object arrays of ``str`` for strings, None when
    the spec has no label.
    """
    info, store, layout = _layout(spec, storage_options, shard_rows)
    if not 0 <= shard < info.n_shards:
        raise InputError(
            f"shard {shard} out of range (the dataset has {info.n_shards})",
            dataset=spec.name,
            field="shard",
            fix="use 0 <= shard < n_shards",
        )
    row0 = int(sum(info.shard_sizes[:shard]))
    if info.format == "parquet":
        files, shards = layout
        fi, rg = shards[shard]
        cols = list(dict.fromkeys(spec.feature_columns + ([spec.label] if spec.label else [])))
        with _dataset_storage(spec), store.fs.open(files[fi].key, "rb") as f:
            try:
                table = pq.ParquetFile(f).read_row_group(rg, columns=cols)
            except pa.ArrowInvalid as e:
                raise InputError(
                    f"row group {rg} of {redact(store._uri_of(files[fi].key))!r} is corrupt "
                    f"or not Parquet ({type(e).__name__})",
                    dataset=spec.name,
                    field="uri",
                    fix="rewrite the file",
                ) from None
        X = _features_from_table(spec, table, row0, shard)
        y = _labels_from_array(spec, table.column(spec.label), row0) if spec.label else None
        return X, y
    inner, ranges = layout
    a, b = ranges[shard]
    if info.format == "npy":
        shape, dtype, fortran, offset = inner
        if fortran and len(shape) > 1:
            X = _load_whole_npy(spec, store)[a:b]
        else:
            rowbytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            with _dataset_storage(spec), store.open() as f:
                f.seek(offset + a * rowbytes)
                buf = f.read((b - a) * rowbytes)
            X = np.frombuffer(buf, dtype=dtype).reshape((b - a, *shape[1:]))
        X = _as_float(np.asarray(X))
        _check_finite(spec, X, a, shard)
        return X, None
    if info.format == "npz":
        Xall, yall = _npz_arrays(spec, inner)
        X = _as_float(Xall[a:b])
        _check_finite(spec, X, a, shard)
        y = _labels_from_array(spec, yall[a:b], a) if yall is not None else None
        return X, y
    table = inner.slice(a, b - a)
    X = _features_from_table(spec, table, a, shard)
    y = _labels_from_array(spec, table.column(spec.label), a) if spec.label else None
    return X, y


def _load_whole_npy(spec: DatasetSpec, store: Store) -> np.ndarray:
    with _dataset_storage(spec):
        return np.load(io.BytesIO(store.read_bytes()), allow_pickle=False)


def _as_float(X: np.ndarray) -> np.ndarray:
    if X.dtype == np.float32 or X.dtype == np.float64:
        return np.ascontiguousarray(X)
    return np.ascontiguousarray(X, dtype=np.float64)


def iter_shards(
    spec: DatasetSpec,
    storage_options: dict[str, Any] | None = None,
    *,
    shard_rows: int | None = None,
) -> Iterator[tuple[np.ndarray | list[str], np.ndarray | None]]:
    """Yield every shard in order (one shard in memory at a time)."""
    info = inspect_dataset(spec, storage_options, shard_rows=shard_rows)
    for k in range(info.n_shards):
        yield read_shard(spec, storage_options, k, shard_rows=shard_rows)


def read_dataset(
    spec: DatasetSpec,
    storage_options: dict[str, Any] | None = None,
    *,
    shard_rows: int | None = None,
) -> tuple[np.ndarray | list[str], np.ndarray | None]:
    """All shards concatenated (features, labels)."""
    xs: list[Any] = []
    ys: list[np.ndarray] = []
    for X, y in iter_shards(spec, storage_options, shard_rows=shard_rows):
        xs.append(X)
        if y is not None:
            ys.append(y)
    if isinstance(xs[0], list):
        X_all: np.ndarray | list[str] = [s for x in xs for s in x]
    else:
        dims = {x.shape[1] for x in xs}
        if len(dims) > 1:
            raise InputError(
                f"shards have different feature dimensions {sorted(dims)}",
                dataset=spec.name,
                field="features",
                fix="give every row the same number of features",
            )
        X_all = np.concatenate(xs, axis=0)
    y_all = None
    if spec.label is not None:
        if any(y.dtype == object for y in ys):
            y_all = np.concatenate([y.astype(object) for y in ys])
        else:
            y_all = np.concatenate(ys)
    return X_all, y_all


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
    table = pa.table(cols)
    store = Store(store_uri, storage_options)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size or config.SHARD_ROWS)
    store.write_bytes(buf.getvalue(), f"{name}.parquet")
    return store.path(f"{name}.parquet")
