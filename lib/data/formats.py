"""Per-format helpers of the dataset readers (:mod:`otaudit.data.readers`): Parquet layout
(footers, row groups, column checks), whole-file formats (.npy header, .npz, CSV), feature and
label conversion with their one-line errors. All I/O goes through :class:`Store`.

The names are private to the data layer (readers imports them); nothing here is public API.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import config
from ..errors import InputError, StorageError
from .manifest import DatasetSpec
from .parquet import arrow_owned
from .secrets import redact
from .storage import Store, storage_errors

_EXT = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz", ".csv": "csv"}
#: fsspec ``info()`` fields that identify an object's *content* (s3: ETag; gcs: md5Hash /
#: crc32c; az: etag / content_md5). mtime-like fields are not used: a rewrite can restore them.
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "checksum", "content_md5")


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
        is_dir = store.isdir()
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
        v = info.get(k)
        if isinstance(v, dict):  # az: content_settings.content_md5 may be nested
            v = v.get("content_md5")
        if v not in (None, "", b""):
            return f"{k}={v.hex() if isinstance(v, bytes | bytearray) else v}"
    return ""


@functools.lru_cache(maxsize=1024)
def _content_hash(store: Store, rel: str, size: int, stamp: str) -> str:
    """A content hash of one file (no store checksum available), memoised per process on
    the file's (size, mtime, ctime, inode) ``stamp`` so that shard reads do not re-hash.

    Up to ``config.CONTENT_HASH_FULL_BYTES``: sha256 of all bytes (streamed). Bigger: sha256
    of the size, the first and last ``config.CONTENT_HASH_EDGE_BYTES`` and, for Parquet, the
    footer (row-group offsets, sizes and statistics) — a cheap hash that a same-size rewrite
    changes unless it keeps the head, the tail and every row group's statistics.
    """
    h = hashlib.sha256(str(size).encode())
    edge = config.CONTENT_HASH_EDGE_BYTES
    with store.open(rel) as f:
        if size <= config.CONTENT_HASH_FULL_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return "sha256=" + h.hexdigest()
        h.update(f.read(edge))
        f.seek(max(0, size - edge))
        h.update(f.read(edge))
        if size >= 12:
            f.seek(size - 8)
            tail = f.read(8)
            if tail[4:] == b"PAR1":  # Parquet footer: [metadata][len: 4 bytes LE]["PAR1"]
                n = int.from_bytes(tail[:4], "little")
                if 0 < n <= size - 12:
                    f.seek(size - 8 - n)
                    h.update(f.read(n))
    return "sha256-edges=" + h.hexdigest()


def _file_entry(store: Store, rel: str, info: dict[str, Any]) -> dict[str, Any]:
    """``rel``: the file's path below the store ("" for the store's own file).

    ``version``: the store's content checksum (ETag, md5Hash, ...) when ``info`` has one,
    else :func:`_content_hash` — never size + mtime alone (a rewrite can restore both)."""
    size = int(info.get("size") or 0)
    tag = _version_tag(info)
    if not tag or store.protocol == "memory":
        stamp = "|".join(
            str(info.get(k)) for k in ("mtime", "created", "ino", "LastModified", "updated")
        )
        tag = _content_hash(store, rel, size, stamp)
    return {"path": rel, "size": size, "version": tag}


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
    rel: str  # path below the dataset's store ("" when the uri is the file itself)
    entry: dict[str, Any]
    row_groups: tuple[int, ...]  # rows per row group
    schema: pa.Schema
    rg_meta: tuple[Any, ...]


@functools.lru_cache(maxsize=256)
def _footer(
    store: Store, rel: str, size: int, version: str
) -> tuple[pa.Schema, tuple[int, ...], tuple[Any, ...]]:
    """Parse a Parquet footer (memoised on the store, the file's size and version tag)."""
    with store.open(rel) as f:
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
    with _dataset_storage(spec):
        store.refresh()  # see files written by other processes
        if store.isdir():
            found = store.find()
            infos = {
                rel: v
                for rel, v in sorted(found.items())
                if not any(p.startswith(("_", ".")) for p in rel.split("/") if p)
            }
            if not infos:
                raise InputError(
                    f"no Parquet files under {redact(spec.uri)!r}",
                    dataset=spec.name,
                    field="uri",
                    fix="point uri at a Parquet file or a directory of them",
                )
        else:
            infos = {"": store.info()}
    out = []
    for rel, info in infos.items():
        with _dataset_storage(spec):
            entry = _file_entry(store, rel, info)
            try:
                schema, rows, meta = _footer(store, rel, entry["size"], entry["version"])
            except pa.ArrowInvalid as e:
                raise InputError(
                    f"{redact(store.path(rel))!r} is corrupt or not Parquet "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                    dataset=spec.name,
                    field="uri",
                    fix="rewrite the file, or set format: to the file's real format",
                ) from None
        out.append(_PqFile(rel, entry, rows, schema, meta))
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
    if arr.dtype != np.float32:  # embeddings are float32: a larger value would become inf
        big = np.abs(arr).max(axis=1) > np.finfo(np.float32).max
        if big.any():
            bad = np.flatnonzero(big)
            raise InputError(
                f"{bad.size} rows hold values beyond the float32 range (|x| > 3.4e38) in "
                f"shard {shard} (first at row {row0 + int(bad[0])}: "
                f"{float(np.abs(arr[bad[0]]).max()):.3g}); they would overflow to inf",
                dataset=spec.name,
                field="features",
                fix="rescale the features (e.g. divide by a constant) or drop those rows",
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
                fix="drop unlabeled rows, or remove `label` for unlabeled mode",
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
                fix="drop unlabeled rows",
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
        return _file_entry(store, "", info)


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
def _load_whole(store: Store, fmt: str, version: str) -> Any:
    """Parse a whole .npz / CSV file (memoised on the store and its version tag)."""
    data = store.read_bytes()
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return pacsv.read_csv(pa.BufferReader(arrow_owned(data)))  # not BytesIO: arrow_owned says why


def _whole(spec: DatasetSpec, store: Store, fmt: str, entry: dict[str, Any]) -> Any:
    with _dataset_storage(spec):
        try:
            return _load_whole(store, fmt, entry["version"] + str(entry["size"]))
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
    if table.num_rows == 0:  # a header-only CSV: pyarrow types every column `null`
        raise InputError(
            f"the CSV file has a header ({', '.join(table.schema.names)[:120]}) but no rows",
            dataset=spec.name,
            field="uri",
            fix="write the data rows, or point uri at the right file",
        )
    return _check_parquet_columns(spec, table.schema)
