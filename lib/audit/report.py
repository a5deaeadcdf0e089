"""The audit report: versioned Parquet tables, the Markdown summary, the heatmap.

Layout (SPEC.md section 3) under ``<output>/<name>/run=<run_id>/``::

    pairs.parquet      one row per pair per measure
    datasets.parquet   one row per dataset
    summary.md         what a person reads first
    heatmap.png        the N x N distance matrix per measure, annotated
    _SUCCESS           written last by :meth:`otaudit.data.storage.Store.publish_dir`

Schema versions (stored in the Parquet metadata under ``otaudit.schema_version``):

- ``0``: exactly the contract columns of SPEC.md section 3.
- ``1``: additive columns. ``pairs``: ``status`` (``"ok"``/``"failed"``), ``error`` (the
  one-line reason of a failed pair, else null), ``cached`` (the pair result came from the
  cache). ``datasets``: ``status``, ``error``, ``cache_hit`` (embeddings and statistics were
  read from the cache), ``embed_seconds``, ``stats_seconds``, ``labeled``.
- ``3``: additive columns. ``pairs``: ``distance``, ``distance_lower``, ``distance_upper``:
  ``sqrt`` of ``value``/``lower``/``upper`` clamped at 0 (OTDD or W2, in the units of the
  features; null where the squared column is null).
- ``2``: additive columns. ``pairs``: ``lower_certified`` / ``upper_certified`` (each bound is
  a certificate: a feasible dual below, a feasible plan above; the sliced rows' ``lower`` is
  certified while their ``value`` is an estimate) and ``kind`` (``exact`` | ``bracketed`` |
  ``estimate``). ``datasets``: ``device`` (where the dataset was embedded: ``cpu``,
  ``cuda:0``, ...).

:func:`read_report` reads every version and upgrades older tables to the current schema
(missing additive columns get their neutral value: ``status="ok"``, nulls, ``False``; a
version-1 table's certificate columns are derived from its ``certified`` column).

``_SUCCESS`` lists every file with its size and sha256; :func:`read_report` verifies them
and raises ``StorageError("incomplete or corrupt run: <file> (size/hash mismatch); re-run the
audit")`` when one does not match. Exit codes and the summary: :mod:`otaudit.audit.summary`.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..data.parquet import arrow_owned
from ..data.secrets import redact_uri
from ..data.storage import SUCCESS
from ..errors import StorageError
from .heatmap import render_heatmap
from .summary import (
    EXIT_DRIFT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    Assessment,
    assess,
    render_summary,
)
from .tables import (
    DATASETS_CONTRACT,
    DATASETS_SCHEMA,
    DISTANCE_COLUMNS,
    PAIRS_CONTRACT,
    PAIRS_SCHEMA,
    SCHEMA_VERSION,
    build_datasets_table,
    build_pairs_table,
    parquet_bytes,
    result_kind,
    schema_version,
    upgrade,
    with_distances,
)

__all__ = [
    "SCHEMA_VERSION",
    "DISTANCE_COLUMNS",
    "PAIRS_SCHEMA",
    "DATASETS_SCHEMA",
    "PAIRS_CONTRACT",
    "DATASETS_CONTRACT",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_PARTIAL",
    "EXIT_DRIFT",
    "Assessment",
    "Report",
    "new_run_id",
    "pair_row",
    "result_record",
    "result_kind",
    "failed_pair_row",
    "build_pairs_table",
    "build_datasets_table",
    "assess",
    "render_summary",
    "render_heatmap",
    "report_files",
    "write_report",
    "read_report",
    "verify_run",
    "read_run",
    "latest_run",
]


def new_run_id(now: datetime | None = None) -> str:
    """A sortable run id: UTC timestamp to the millisecond plus 6 random hex digits.

    Example: ``20261123T092250.123Z-a1b2c3``. Lexicographic order = chronological order.
    """
    now = now or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def pair_row(
    *,
    run_id: str,
    dataset_a: str,
    dataset_b: str,
    measure: str,
    result: Any,
    n_a: int,
    n_b: int,
    code_version: str,
    cached: bool = False,
) -> dict[str, Any]:
    """One ``pairs.parquet`` row from an :class:`~otaudit.OTResult` (or its ``to_dict()``).

    Non-finite bounds (no certificate) are stored as null; ``params`` as a JSON string.
    """
    r = result if isinstance(result, Mapping) else result_record(result)
    lower, upper = _finite_or_none(r["lower"]), _finite_or_none(r["upper"])
    certified = bool(r["certified"])
    lower_cert = bool(r.get("lower_certified", certified)) and lower is not None
    upper_cert = bool(r.get("upper_certified", certified)) and upper is not None
    row = {
        "run_id": run_id,
        "dataset_a": dataset_a,
        "dataset_b": dataset_b,
        "measure": measure,
        "value": float(r["value"]),
        "lower": lower,
        "upper": upper,
        "gap_rel": _finite_or_none(r["gap_rel"]),
        "certified": certified,
        "method": str(r["method"]),
        "n_a": int(n_a),
        "n_b": int(n_b),
        "n_solves": int(r["n_solves"]),
        "seconds": float(r["seconds"]),
        "params": json.dumps(r.get("params", {}), sort_keys=True, default=str),
        "code_version": code_version,
        "status": "ok",
        "error": None,
        "cached": bool(cached),
        "lower_certified": lower_cert,
        "upper_certified": upper_cert,
        "kind": r.get("kind") or result_kind(lower_cert, upper_cert, lower, upper),
    }
    return with_distances(row)


def result_record(res: Any) -> dict[str, Any]:
    """An :class:`~otaudit.OTResult` as the plain-JSON dict the pair cache stores and
    :func:`pair_row` reads: ``to_dict()`` without ``extra``, plus per-bound certificates.

    Written for both shapes of ``OTResult``: one with ``lower_certified`` /
    ``upper_certified`` / ``kind`` attributes, and one with only ``certified`` (then a
    sliced result's ``extra["lower_is_certified"]`` says that its lower bound is certified).
    """
    d = {k: v for k, v in res.to_dict().items() if k != "extra"}
    extra = getattr(res, "extra", None) or {}
    certified = bool(res.certified)
    lower_cert = getattr(res, "lower_certified", certified or bool(extra.get("lower_is_certified")))
    d["lower_certified"] = bool(lower_cert)
    d["upper_certified"] = bool(getattr(res, "upper_certified", certified))
    kind = getattr(res, "kind", None)
    if kind is not None:
        d["kind"] = str(kind)
    return json.loads(json.dumps(d, default=str))


def failed_pair_row(
    *,
    run_id: str,
    dataset_a: str,
    dataset_b: str,
    measure: str,
    error: str,
    code_version: str,
    params: Mapping[str, Any] | None = None,
    n_a: int | None = None,
    n_b: int | None = None,
) -> dict[str, Any]:
    """A ``pairs.parquet`` row for a pair that could not be computed (``status="failed"``)."""
    return {
        "run_id": run_id,
        "dataset_a": dataset_a,
        "dataset_b": dataset_b,
        "measure": measure,
        "value": None,
        "lower": None,
        "upper": None,
        "gap_rel": None,
        "certified": None,
        "method": None,
        "n_a": n_a,
        "n_b": n_b,
        "n_solves": 0,
        "seconds": 0.0,
        "params": json.dumps(dict(params or {}), sort_keys=True, default=str),
        "code_version": code_version,
        "status": "failed",
        "error": redact_uri(" ".join(str(error).split())),
        "cached": False,
        "lower_certified": None,
        "upper_certified": None,
        "kind": None,
        "distance": None,
        "distance_lower": None,
        "distance_upper": None,
    }


# --------------------------------------------------------------------------- I/O


def report_files(
    *,
    pairs: pa.Table,
    datasets: pa.Table,
    summary: str,
    heatmap_png: bytes | None,
) -> dict[str, bytes]:
    """The files of one report run (without ``_SUCCESS``: ``publish_dir`` writes it last)."""
    files = {
        "pairs.parquet": parquet_bytes(pairs),
        "datasets.parquet": parquet_bytes(datasets),
        "summary.md": summary.encode("utf-8"),
    }
    if heatmap_png is not None:
        files["heatmap.png"] = heatmap_png
    return files


def write_report(store: Any, name: str, run_id: str, files: Mapping[str, bytes]) -> str:
    """Publish a report atomically under ``<store>/<name>/run=<run_id>/``; returns its URI."""
    return store.publish_dir(dict(files), name, f"run={run_id}")


@dataclass(frozen=True)
class Report:
    """A report read back from storage (tables upgraded to the current schema)."""

    uri: str
    run_id: str
    schema_version: int
    pairs: pa.Table
    datasets: pa.Table
    summary: str

    def pair_rows(self) -> list[dict[str, Any]]:
        """``pairs.parquet`` as a list of dicts."""
        return self.pairs.to_pylist()

    def dataset_rows(self) -> list[dict[str, Any]]:
        """``datasets.parquet`` as a list of dicts."""
        return self.datasets.to_pylist()

    def value(self, a: str, b: str, measure: str) -> float | None:
        """The ``value`` of the (unordered) pair ``a``, ``b`` for ``measure`` (None if failed)."""
        for r in self.pair_rows():
            if r["measure"] == measure and {r["dataset_a"], r["dataset_b"]} == {a, b}:
                return r["value"]
        raise KeyError(f"no {measure} row for pair ({a!r}, {b!r}) in {redact_uri(self.uri)}")


def latest_run(store: Any, before: str | None = None) -> str | None:
    """Name (``run=<id>``) of the newest *complete* run under an audit prefix, or None;
    with ``before``, the newest older than run id ``before``."""
    try:
        entries = store.ls()
    except (FileNotFoundError, StorageError):
        return None
    runs = sorted(
        base
        for base in (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        if base.startswith("run=") and (before is None or base < f"run={before}")
    )
    for run in reversed(runs):
        if store.exists(run, SUCCESS):
            return run
    return None


def _corrupt(name: str, why: str) -> StorageError:
    return StorageError(f"incomplete or corrupt run: {name} ({why}); re-run the audit")


def verify_run(store: Any) -> dict[str, Any]:
    """Check every file the run's ``_SUCCESS`` lists against its size and sha256.

    Returns the marker (``{}`` for a marker of an older writer that lists nothing). A marker
    of the size-only writer (``{"files": {name: size}}``) is checked on sizes.

    Raises:
        StorageError: ``incomplete or corrupt run: <file> (size/hash mismatch); re-run the
            audit`` (also for a missing file or an unreadable marker).
    """
    return _verified_files(store)[0]


def _verified_files(store: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """:func:`verify_run`'s marker, and the bytes of every file it verified (read once:
    :func:`read_run` parses these instead of fetching them again)."""
    try:
        marker = json.loads(store.read_bytes(SUCCESS) or b"{}")
    except ValueError:
        raise _corrupt(SUCCESS, "unreadable marker") from None
    files = marker.get("files", {}) if isinstance(marker, dict) else {}
    read: dict[str, bytes] = {}
    for name, spec in sorted(files.items()):
        size, digest = (
            (spec, None) if isinstance(spec, int) else (spec.get("size"), spec.get("sha256"))
        )
        try:
            data = store.read_bytes(name)
        except (FileNotFoundError, StorageError):
            raise _corrupt(name, "missing") from None
        if size is not None and len(data) != int(size):
            raise _corrupt(name, f"size mismatch: {len(data)} bytes, {SUCCESS} says {size}")
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise _corrupt(name, "hash mismatch")
        read[name] = data
    return (marker if isinstance(marker, dict) else {}), read


def read_report(uri: str, storage_options: Mapping[str, Any] | None = None) -> Report:
    """Read a report: ``uri`` is a run directory, or an audit prefix (→ latest complete run).

    The files are verified against ``_SUCCESS`` first (:func:`verify_run`).

    Raises:
        StorageError: no complete report at ``uri`` (a run without ``_SUCCESS`` is ignored),
            or a file of the run does not match its size/sha256 in ``_SUCCESS``.
    """
    from ..data.storage import Store

    store = Store(uri, dict(storage_options) if storage_options else None)
    if not store.exists(SUCCESS):
        run = latest_run(store)
        if run is None:
            raise StorageError(
                f"no complete otaudit report at {redact_uri(uri)!r} (no {SUCCESS} marker and no complete "
                "run=... below it); fix: pass the URI of a run directory or of an audit "
                "prefix <output>/<name> that holds a finished run"
            )
        store = store.child(run)
    return read_run(store)


def _read_parquet_bytes(data: bytes) -> pa.Table:
    """One Parquet file held in memory, as a table (read from Arrow-owned memory:
    :func:`otaudit.data.parquet.arrow_owned` says why)."""
    return pq.ParquetFile(pa.BufferReader(arrow_owned(data))).read()


def read_run(store: Any) -> Report:
    """Read the complete run at ``store`` (a :class:`~otaudit.data.storage.Store` of a
    ``run=<id>`` prefix), verified against its ``_SUCCESS`` (:func:`verify_run`)."""
    if not store.exists(SUCCESS):
        raise StorageError(
            f"no complete otaudit report at {store.uri!r} (no {SUCCESS} marker); fix: pass a "
            "finished run"
        )
    verified = _verified_files(store)[1]

    def data(name: str) -> bytes:  # a marker of an older writer lists no files
        return verified[name] if name in verified else store.read_bytes(name)

    pairs_raw = _read_parquet_bytes(data("pairs.parquet"))
    ds_raw = _read_parquet_bytes(data("datasets.parquet"))
    version = schema_version(pairs_raw)
    pairs = upgrade(pairs_raw, PAIRS_SCHEMA)
    datasets = upgrade(ds_raw, DATASETS_SCHEMA)
    summary = data("summary.md").decode("utf-8")
    base = store.uri.rstrip("/").rsplit("/", 1)[-1]
    run_id = base[len("run=") :] if base.startswith("run=") else base
    return Report(
        uri=store.uri,
        run_id=run_id,
        schema_version=version,
        pairs=pairs,
        datasets=datasets,
        summary=summary,
    )
