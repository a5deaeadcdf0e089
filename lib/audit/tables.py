"""The report's tables: the versioned Parquet schemas of ``pairs.parquet`` and
``datasets.parquet`` (see :mod:`otaudit.audit.report` for what each version added), building
them from rows, and upgrading an older table to the current schema when it is read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from .. import config
from ..data.parquet import table_bytes as parquet_bytes
from ..errors import InputError

__all__ = [
    "SCHEMA_VERSION",
    "PAIRS_SCHEMA",
    "DATASETS_SCHEMA",
    "PAIRS_CONTRACT",
    "DATASETS_CONTRACT",
    "build_pairs_table",
    "build_datasets_table",
    "parquet_bytes",
    "schema_version",
    "upgrade",
    "result_kind",
    "DISTANCE_COLUMNS",
    "with_distances",
]

SCHEMA_VERSION: int = config.REPORT_SCHEMA_VERSION
_META_KEY = b"otaudit.schema_version"

#: SPEC.md section 3 columns, in order (schema version 0).
PAIRS_CONTRACT: tuple[str, ...] = (
    "run_id", "dataset_a", "dataset_b", "measure", "value", "lower", "upper", "gap_rel",
    "certified", "method", "n_a", "n_b", "n_solves", "seconds", "params", "code_version",
)  # fmt: skip
DATASETS_CONTRACT: tuple[str, ...] = (
    "run_id", "dataset", "uri", "fingerprint", "n_rows", "n_classes", "dim", "embedder",
    "seconds",
)  # fmt: skip

PAIRS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("dataset_a", pa.string()),
        ("dataset_b", pa.string()),
        ("measure", pa.string()),
        ("value", pa.float64()),
        ("lower", pa.float64()),
        ("upper", pa.float64()),
        ("gap_rel", pa.float64()),
        ("certified", pa.bool_()),
        ("method", pa.string()),
        ("n_a", pa.int64()),
        ("n_b", pa.int64()),
        ("n_solves", pa.int64()),
        ("seconds", pa.float64()),
        ("params", pa.string()),
        ("code_version", pa.string()),
        # --- version 1 (additive) ---
        ("status", pa.string()),
        ("error", pa.string()),
        ("cached", pa.bool_()),
        # --- version 2 (additive) ---
        ("lower_certified", pa.bool_()),
        ("upper_certified", pa.bool_()),
        ("kind", pa.string()),
        # --- version 3 (additive) ---
        ("distance", pa.float64()),
        ("distance_lower", pa.float64()),
        ("distance_upper", pa.float64()),
    ]
)
#: Version-3 columns derived from a squared column: ``sqrt(max(x, 0))`` (null stays null).
DISTANCE_COLUMNS: dict[str, str] = {
    "distance": "value",
    "distance_lower": "lower",
    "distance_upper": "upper",
}
DATASETS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("fingerprint", pa.string()),
        ("n_rows", pa.int64()),
        ("n_classes", pa.int64()),
        ("dim", pa.int64()),
        ("embedder", pa.string()),
        ("seconds", pa.float64()),
        # --- version 1 (additive) ---
        ("status", pa.string()),
        ("error", pa.string()),
        ("cache_hit", pa.bool_()),
        ("embed_seconds", pa.float64()),
        ("stats_seconds", pa.float64()),
        ("labeled", pa.bool_()),
        # --- version 2 (additive) ---
        ("device", pa.string()),
    ]
)
#: Neutral values of the additive columns when reading an older table.
_UPGRADE_DEFAULTS: dict[str, Any] = {"status": "ok", "cached": False, "cache_hit": False}


def result_kind(
    lower_certified: bool, upper_certified: bool, lower: float | None, upper: float | None
) -> str:
    """``exact`` (both bounds certified and equal), ``bracketed`` (both certified) or
    ``estimate`` (at most one bound is a certificate)."""
    if lower_certified and upper_certified:
        return "exact" if lower == upper else "bracketed"
    return "estimate"


def _sqrt_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return math.sqrt(max(x, 0.0)) if math.isfinite(x) else None


def with_distances(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with the version-3 distance columns (sqrt of the clamped squared values)."""
    out = dict(row)
    for dcol, sq in DISTANCE_COLUMNS.items():
        out[dcol] = _sqrt_or_none(row.get(sq))
    return out


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, what: str) -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in schema}
    for i, row in enumerate(rows):
        extra = set(row) - set(cols)
        if extra:
            raise InputError(
                f"row {i} has unknown columns {sorted(extra)}",
                field=what,
                fix=f"add them to the {what} schema (a versioned, additive change)",
            )
        for name in cols:
            cols[name].append(row.get(name))
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema]
    meta = {_META_KEY: str(SCHEMA_VERSION).encode()}
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(meta))


def build_pairs_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``pairs.parquet`` as a pyarrow Table (current schema, version in the metadata)."""
    return _table([with_distances(r) for r in rows], PAIRS_SCHEMA, "pairs")


def build_datasets_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``datasets.parquet`` as a pyarrow Table (current schema, version in the metadata)."""
    return _table(rows, DATASETS_SCHEMA, "datasets")


def schema_version(table: pa.Table) -> int:
    meta = table.schema.metadata or {}
    raw = meta.get(_META_KEY)
    return int(raw.decode()) if raw is not None else 0


def upgrade(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add the additive columns an older table lacks (neutral values), current order first."""
    n = table.num_rows
    cols, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col.cast(f.type) if col.type != f.type else col)
        elif f.name in ("lower_certified", "upper_certified") and "certified" in table.column_names:
            cols.append(table.column("certified").cast(f.type))  # version 1: one flag for both
        elif f.name == "kind" and "certified" in table.column_names:
            cols_in = [
                c for c in ("certified", "lower", "upper", "status") if c in table.column_names
            ]
            rows = table.select(cols_in).to_pylist()
            kinds = [
                None
                if r.get("status") not in (None, "ok")
                else result_kind(
                    bool(r["certified"]), bool(r["certified"]), r.get("lower"), r.get("upper")
                )
                for r in rows
            ]
            cols.append(pa.array(kinds, type=f.type))
        elif f.name in DISTANCE_COLUMNS and DISTANCE_COLUMNS[f.name] in table.column_names:
            sq = table.column(DISTANCE_COLUMNS[f.name]).to_pylist()  # versions 0-2
            cols.append(pa.array([_sqrt_or_none(x) for x in sq], type=f.type))
        else:
            default = _UPGRADE_DEFAULTS.get(f.name)
            cols.append(pa.array([default] * n, type=f.type))
        fields.append(f)
    for name in table.column_names:  # columns of a newer writer are kept, not dropped
        if name not in schema.names:
            cols.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata))
