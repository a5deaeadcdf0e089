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
- ``2``: additive columns. ``pairs``: ``lower_certified`` / ``upper_certified`` (each bound is
  a certificate: a feasible dual below, a feasible plan above; the sliced rows' ``lower`` is
  certified while their ``value`` is an estimate) and ``kind`` (``exact`` | ``bracketed`` |
  ``estimate``). ``datasets``: ``device`` (where the dataset was embedded: ``cpu``,
  ``cuda:0``, ...).

:func:`read_report` reads every version and upgrades older tables to the current schema
(missing additive columns get their neutral value: ``status="ok"``, nulls, ``False``; a
version-1 table's certificate columns are derived from its ``certified`` column).

Exit codes of an audit (:func:`assess`): ``0`` all pairs computed, none above a threshold;
``3`` a pair's distance exceeds its measure's threshold (drift); ``2`` partial: at least one
dataset or pair failed, the rest completed; ``1`` total failure (no pair could be computed,
or the run could not start: bad manifest, unreachable storage). Precedence: 1 > 2 > 3 > 0.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import config
from ..data.storage import SUCCESS
from ..errors import StorageError
from .heatmap import distance, distance_matrix, measure_label, measures_of, render_heatmap
from .tables import (
    DATASETS_CONTRACT,
    DATASETS_SCHEMA,
    PAIRS_CONTRACT,
    PAIRS_SCHEMA,
    SCHEMA_VERSION,
    build_datasets_table,
    build_pairs_table,
    parquet_bytes,
    result_kind,
    schema_version,
    upgrade,
)

__all__ = [
    "SCHEMA_VERSION",
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
    "latest_run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_DRIFT = 3


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
    return {
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
        "error": " ".join(str(error).split()),
        "cached": False,
        "lower_certified": None,
        "upper_certified": None,
        "kind": None,
    }


# --------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class Assessment:
    """What the run means for a scheduler: status, exit code and the rows behind it."""

    status: str  # "ok" | "drift" | "partial" | "failed"
    exit_code: int
    flagged: list[dict[str, Any]] = field(default_factory=list)
    failed_datasets: list[dict[str, Any]] = field(default_factory=list)
    failed_pairs: list[dict[str, Any]] = field(default_factory=list)
    n_pairs_ok: int = 0


def assess(
    pair_rows: Sequence[Mapping[str, Any]],
    dataset_rows: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None = None,
) -> Assessment:
    """Classify a run; thresholds compare the *distance* ``sqrt(value)`` per measure."""
    thresholds = dict(thresholds or {})
    ok = [r for r in pair_rows if r.get("status", "ok") == "ok"]
    failed_pairs = [dict(r) for r in pair_rows if r.get("status", "ok") != "ok"]
    failed_ds = [dict(r) for r in dataset_rows if r.get("status", "ok") != "ok"]
    flagged = []
    for r in ok:
        lim = thresholds.get(r["measure"])
        d = distance(r["value"])
        if lim is not None and d is not None and d > lim:
            flagged.append({**r, "distance": d, "threshold": float(lim)})
    internal = any(str(r.get("error") or "").startswith("internal error:") for r in failed_pairs)
    if pair_rows and not ok or (not pair_rows and failed_ds) or internal:
        status, code = "failed", EXIT_FAILED  # a programming error is never "partial/drift"
    elif failed_pairs or failed_ds:
        status, code = "partial", EXIT_PARTIAL
    elif flagged:
        status, code = "drift", EXIT_DRIFT
    else:
        status, code = "ok", EXIT_OK
    return Assessment(status, code, flagged, failed_ds, failed_pairs, len(ok))


# --------------------------------------------------------------------------- summary


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}"


def _screening_lines(
    screening: Mapping[str, Any], pair_rows: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The summary's screening section: how many pairs were screened, which were kept."""
    measure = str(screening.get("measure", "sliced"))
    kept = [tuple(p) for p in screening.get("kept", [])]
    keep, order = int(screening["keep"]), str(screening["order"])
    estimate = {
        (r["dataset_a"], r["dataset_b"]): r["value"]
        for r in pair_rows
        if r["measure"] == measure and r.get("status", "ok") == "ok"
    }
    line = (
        f"Screened {screening['n_pairs']} pairs by {measure} estimate, certified measures "
        f"on the {len(kept)} {order} (`screen: {{keep: {keep}, order: {order}}}`)"
    )
    if len(kept) < keep:
        line += f"; only {len(kept)} pair(s) had an estimate"
    out = ["## Screening", "", line + ".", ""]
    out.append(
        f"The {measure} estimate ranks pairs; it is not a bound (`certified=False`). "
        "Pairs not kept have only their estimate. Kept pairs, best first "
        "(estimated distance, sqrt of value):"
    )
    out.append("")
    for a, b in kept:
        out.append(f"- `{a}` – `{b}` ({_fmt(distance(estimate.get((a, b))), 3)})")
    if not kept:
        out.append("- none")
    out.append("")
    return out


def _gaussian_inner(row: Mapping[str, Any]) -> bool:
    """Whether an OTDD row used the Gaussian (Bures-Wasserstein) label cost."""
    if row.get("measure") != "otdd":
        return False
    try:
        params = json.loads(row.get("params") or "{}")
    except ValueError:
        params = {}
    return params.get("inner") == "gaussian" or "gaussian" in str(row.get("method", ""))


def render_summary(
    *,
    name: str,
    run_id: str,
    pair_rows: Sequence[Mapping[str, Any]],
    dataset_rows: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None = None,
    wall_seconds: float | None = None,
    near_duplicate_fraction: float = config.NEAR_DUPLICATE_FRACTION,
    screening: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown summary: status, screening, distance tables, neighbours, flags,
    failures, certified widths and estimates, timings.

    Distances are ``sqrt(value)`` (OTDD, W2 for ``ot_bounds``/``w2``, the sliced screening
    estimate for ``sliced``). ``screening``: ``{"measure", "keep", "order", "n_pairs",
    "kept"}`` when the pairs were screened (see :mod:`otaudit.audit.screen`).
    """
    a = assess(pair_rows, dataset_rows, thresholds)
    names = [r["dataset"] for r in dataset_rows]
    out: list[str] = [f"# otaudit report `{name}` — run `{run_id}`", ""]
    n_pairs = len(pair_rows)
    out.append(
        f"**Status: {a.status}** (exit code {a.exit_code}) — {a.n_pairs_ok}/{n_pairs} pair "
        f"results computed, {len(a.failed_datasets)} dataset(s) failed, "
        f"{len(a.flagged)} pair(s) above a threshold."
    )
    out.append("")
    if screening is not None:
        out += _screening_lines(screening, pair_rows)
    for m in measures_of(pair_rows):
        M = distance_matrix(pair_rows, names, m)
        if m == "sliced":
            out += [f"## {m}: sliced estimate of the distance (sqrt of value; not a bound)", ""]
        else:
            out += [f"## {m}: {measure_label(m)} distance (sqrt of value)", ""]
        out.append("| | " + " | ".join(f"`{n}`" for n in names) + " |")
        out.append("|---" * (len(names) + 1) + "|")
        for i, n in enumerate(names):
            out.append(f"| `{n}` | " + " | ".join(_fmt(v, 3) for v in M[i]) + " |")
        out.append("")
        off = M[~np.eye(len(names), dtype=bool)]
        off = off[np.isfinite(off)]
        med = float(np.median(off)) if off.size else math.nan
        out += [f"### Nearest neighbours ({m})", ""]
        for i, n in enumerate(names):
            row = M[i].copy()
            row[i] = np.nan
            if not np.isfinite(row).any():
                continue
            order = np.argsort(np.where(np.isfinite(row), row, np.inf))
            nbrs = [k for k in order[: config.SUMMARY_NEIGHBOURS] if np.isfinite(row[k])]
            parts = []
            for k in nbrs:
                tag = ""
                if math.isfinite(med) and med > 0 and row[k] < near_duplicate_fraction * med:
                    tag = " **near-duplicate**"
                parts.append(f"`{names[k]}` ({_fmt(float(row[k]), 3)}){tag}")
            out.append(f"- `{n}` → " + ", ".join(parts))
        out.append("")
        if math.isfinite(med):
            out.append(
                f"Near-duplicate: distance < {near_duplicate_fraction:g} × median "
                f"pair distance ({_fmt(med, 3)})."
            )
            out.append("")
    out += ["## Flagged by thresholds", ""]
    if a.flagged:
        out += ["| measure | pair | distance | threshold |", "|---|---|---|---|"]
        for r in a.flagged:
            out.append(
                f"| {r['measure']} | `{r['dataset_a']}` – `{r['dataset_b']}` | "
                f"{_fmt(r['distance'])} | {_fmt(r['threshold'])} |"
            )
    else:
        out.append("none" if thresholds else "no thresholds set")
    out.append("")
    out += ["## Failed datasets and pairs", ""]
    if not a.failed_datasets and not a.failed_pairs:
        out.append("none")
    for r in a.failed_datasets:
        out.append(f"- dataset `{r['dataset']}`: {r.get('error')}")
    if a.failed_pairs:
        out.append(f"- {len(a.failed_pairs)} pair result(s) failed:")
        for r in a.failed_pairs:
            out.append(
                f"  - {r['measure']} `{r['dataset_a']}` – `{r['dataset_b']}`: {r.get('error')}"
            )
    out.append("")
    out += ["## Certified widths", ""]
    ok_rows = [r for r in pair_rows if r.get("status", "ok") == "ok"]
    estimates = [r for r in ok_rows if r.get("certified") is False]
    certified = [r for r in ok_rows if r.get("certified") is not False]
    widths = [r for r in certified if r.get("gap_rel") not in (None, 0.0)]
    if widths:
        out += ["| measure | pair | lower | value | upper | gap_rel | method |", "|---" * 7 + "|"]
        for r in widths:
            out.append(
                f"| {r['measure']} | `{r['dataset_a']}` – `{r['dataset_b']}` | "
                f"{_fmt(r['lower'])} | {_fmt(r['value'])} | {_fmt(r['upper'])} | "
                f"{_fmt(r['gap_rel'], 3)} | {r['method']} |"
            )
    elif certified or not estimates:
        gauss = [r for r in certified if _gaussian_inner(r)]
        plain = [r for r in certified if not _gaussian_inner(r)]
        if plain or not gauss:
            ok_methods = sorted({str(r["method"]) for r in plain if r.get("status") == "ok"})
            out.append(
                f"every computed value{' other than those below' if gauss else ''} is exact "
                "(lower = value = upper; methods: " + (", ".join(ok_methods) or "—") + ")"
            )
        if gauss:
            out.append(
                f"{len(gauss)} OTDD result(s) with `inner: gaussian` are exact for the Gaussian "
                "label cost (lower = value = upper for that cost: the label distance is the "
                "Bures-Wasserstein distance between per-class Gaussian fits, not the OT between "
                "the class point clouds)"
            )
    else:
        out.append("no certified measure was computed (only estimates, below)")
    out.append("")
    if estimates:
        est_measures = ", ".join(measures_of(estimates))
        est_methods = ", ".join(sorted({str(r["method"]) for r in estimates}))
        out += [
            "## Estimates (not bounds)",
            "",
            f"{len(estimates)} pair result(s) of {est_measures} are screening estimates "
            f"(`certified=False`, method {est_methods}): `value` is an estimate, not a bound; "
            "`lower` is a certified (loose) lower bound on OTDD² for the same lambdas; "
            "there is no upper bound (`upper` and `gap_rel` are null).",
            "",
        ]
    out += ["## Timings", ""]
    ds_ok = [r for r in dataset_rows if r.get("status", "ok") == "ok"]
    emb = sum(float(r.get("embed_seconds") or 0.0) for r in ds_ok)
    st = sum(float(r.get("stats_seconds") or 0.0) for r in ds_ok)
    pr = sum(float(r.get("seconds") or 0.0) for r in pair_rows if not r.get("cached"))
    hits = sum(bool(r.get("cache_hit")) for r in ds_ok)
    cached_pairs = sum(bool(r.get("cached")) for r in pair_rows)
    out.append(
        f"- datasets: {len(ds_ok)} prepared ({hits} from cache), embedding {emb:.2f} s, "
        f"statistics {st:.2f} s"
    )
    out.append(f"- pairs: {pr:.2f} s of solver time ({cached_pairs} results from cache)")
    if wall_seconds is not None:
        out.append(f"- wall time of the audit: {wall_seconds:.2f} s")
    out.append("")
    return "\n".join(out)


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
        raise KeyError(f"no {measure} row for pair ({a!r}, {b!r}) in {self.uri}")


def latest_run(store: Any) -> str | None:
    """Name (``run=<id>``) of the newest *complete* run under an audit prefix, or None."""
    try:
        entries = store.ls()
    except (FileNotFoundError, StorageError):
        return None
    runs = sorted(
        base
        for base in (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        if base.startswith("run=")
    )
    for run in reversed(runs):
        if store.exists(run, SUCCESS):
            return run
    return None


def read_report(uri: str, storage_options: Mapping[str, Any] | None = None) -> Report:
    """Read a report: ``uri`` is a run directory, or an audit prefix (→ latest complete run).

    Raises:
        StorageError: no complete report at ``uri`` (a run without ``_SUCCESS`` is ignored).
    """
    from ..data.storage import Store

    store = Store(uri, dict(storage_options) if storage_options else None)
    if not store.exists(SUCCESS):
        run = latest_run(store)
        if run is None:
            raise StorageError(
                f"no complete otaudit report at {uri!r} (no {SUCCESS} marker and no complete "
                "run=... below it); fix: pass the URI of a run directory or of an audit "
                "prefix <output>/<name> that holds a finished run"
            )
        store = store.child(run)
    pairs_raw = pq.read_table(pa.BufferReader(store.read_bytes("pairs.parquet")))
    ds_raw = pq.read_table(pa.BufferReader(store.read_bytes("datasets.parquet")))
    version = schema_version(pairs_raw)
    pairs = upgrade(pairs_raw, PAIRS_SCHEMA)
    datasets = upgrade(ds_raw, DATASETS_SCHEMA)
    summary = store.read_bytes("summary.md").decode("utf-8")
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
