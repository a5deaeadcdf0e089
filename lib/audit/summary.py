"""The Markdown summary of a report (``summary.md``) and what a run means for a scheduler.

Every number the summary shows says what it is:

- distance tables show **distances** (``sqrt`` of the squared cost, clamped at 0): OTDD for
  ``otdd``, W2 for ``ot_bounds``/``w2``, the sliced screening estimate for ``sliced``, in the
  units of the embedded features; a bracketed result is shown as its certified interval
  ``[lower, upper]`` (the midpoint only where it is labelled "midpoint"), an estimate as
  ``≈ x``;
- "Certified widths" shows the **squared** bounds (``W2²``, ``OTDD²``) and the **relative**
  gap ``(upper − lower) / upper``;
- every displayed value is rounded to ``config.DISPLAY_DIGITS`` significant digits (the
  Parquet tables keep full precision).

Exit codes of an audit (:func:`assess`): ``0`` all pairs computed, none above a threshold;
``3`` a pair's distance exceeds its measure's threshold (drift); ``2`` partial: at least one
dataset or pair failed, the rest completed; ``1`` total failure (no pair could be computed,
or the run could not start: bad manifest, unreachable storage). Precedence: 1 > 2 > 3 > 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import config
from .heatmap import distance, distance_matrix, measure_label, measures_of

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_PARTIAL",
    "EXIT_DRIFT",
    "Assessment",
    "assess",
    "fmt",
    "squared_label",
    "distance_text",
    "row_params",
    "render_summary",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_DRIFT = 3


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
    if pair_rows and not ok or (not pair_rows and failed_ds):
        status, code = "failed", EXIT_FAILED
    elif failed_pairs or failed_ds:
        status, code = "partial", EXIT_PARTIAL
    elif flagged:
        status, code = "drift", EXIT_DRIFT
    else:
        status, code = "ok", EXIT_OK
    return Assessment(status, code, flagged, failed_ds, failed_pairs, len(ok))


# --------------------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int = config.DISPLAY_DIGITS) -> str:
    """A display value: ``digits`` significant digits, ``—`` for missing/non-finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{float(x):.{digits}g}"


def squared_label(measure: str) -> str:
    """The name of a measure's squared value: ``OTDD²``, ``W2²``, ``sliced²``."""
    return {"otdd": "OTDD²", "sliced": "sliced²"}.get(measure, "W2²")


def row_params(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``params`` JSON as a dict (``{}`` when absent or unreadable)."""
    raw = row.get("params")
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        out = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _bracketed(row: Mapping[str, Any]) -> bool:
    lo, hi = row.get("lower"), row.get("upper")
    return (
        row.get("certified") is not False
        and lo is not None
        and hi is not None
        and math.isfinite(lo)
        and math.isfinite(hi)
        and lo != hi
    )


def distance_text(row: Mapping[str, Any], digits: int = config.DISPLAY_DIGITS) -> str:
    """A pair's distance as displayed: ``[lo, hi]`` (certified interval of the distance),
    ``≈ x`` (an estimate), or ``x`` (exact)."""
    if row.get("status", "ok") != "ok" or row.get("value") is None:
        return "—"
    if _bracketed(row):
        return f"[{fmt(distance(row['lower']), digits)}, {fmt(distance(row['upper']), digits)}]"
    d = fmt(distance(row["value"]), digits)
    return f"≈ {d}" if row.get("certified") is False else d


def _gaussian_inner(row: Mapping[str, Any]) -> bool:
    """Whether an OTDD row used the Gaussian (Bures-Wasserstein) label cost."""
    if row.get("measure") != "otdd":
        return False
    return row_params(row).get("inner") == "gaussian" or "gaussian" in str(row.get("method", ""))


def _permuted_text(row: Mapping[str, Any]) -> str:
    """`` **labels permuted** (`a`→`b`, ...)`` for an OTDD row whose class correspondence is
    not the identity on shared class names, else ``""``."""
    p = row_params(row)
    if not p.get("labels_permuted"):
        return ""
    moved = [(a, b) for a, b in p.get("class_correspondence", []) if a != b]
    shown = ", ".join(f"`{a}`→`{b}`" for a, b in moved[:6]) + (", …" if len(moved) > 6 else "")
    return (
        f" **labels permuted** (class of `{row['dataset_a']}` → class of "
        f"`{row['dataset_b']}`: {shown})"
    )


# --------------------------------------------------------------------------- sections


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
        out.append(f"- `{a}` – `{b}` (≈ {fmt(distance(estimate.get((a, b))))})")
    if not kept:
        out.append("- none")
    out.append("")
    return out


def _measure_lines(
    m: str, pair_rows: Sequence[Mapping[str, Any]], names: Sequence[str], near_fraction: float
) -> list[str]:
    """One measure's distance table, nearest neighbours and near-duplicates."""
    rows = {
        frozenset((r["dataset_a"], r["dataset_b"])): r
        for r in pair_rows
        if r["measure"] == m and r.get("status", "ok") == "ok"
    }
    M = distance_matrix(pair_rows, names, m)
    sq = squared_label(m)
    if m == "sliced":
        out = [f"## {m}: sliced estimate of the distance (≈ sqrt of {sq}; not a bound)", ""]
    else:
        what = (
            "certified interval [lower, upper] where bracketed"
            if any(_bracketed(r) for r in rows.values())
            else "exact"
        )
        out = [f"## {m}: {measure_label(m)} distance (sqrt of {sq}; {what})", ""]
    out.append("| | " + " | ".join(f"`{n}`" for n in names) + " |")
    out.append("|---" * (len(names) + 1) + "|")
    for i, n in enumerate(names):
        cells = []
        for j, o in enumerate(names):
            r = rows.get(frozenset((n, o)))
            cells.append("0" if i == j else (distance_text(r) if r else "—"))
        out.append(f"| `{n}` | " + " | ".join(cells) + " |")
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
            r = rows[frozenset((n, names[k]))]
            tag = ""
            if math.isfinite(med) and med > 0 and row[k] < near_fraction * med:
                tag = " **near-duplicate**" + _permuted_text(r)
            parts.append(f"`{names[k]}` ({distance_text(r)}){tag}")
        out.append(f"- `{n}` → " + ", ".join(parts))
    out.append("")
    if math.isfinite(med):
        out.append(
            f"Near-duplicate: distance < {near_fraction:g} × median pair distance "
            f"({fmt(med)}); pairs are ranked by sqrt(value) (ot_bounds: of the midpoint)."
        )
        out.append("")
    return out


def _width_lines(pair_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Certified widths (squared bounds, relative gap) and the estimates paragraph."""
    out = ["## Certified widths", ""]
    ok_rows = [r for r in pair_rows if r.get("status", "ok") == "ok"]
    estimates = [r for r in ok_rows if r.get("certified") is False]
    certified = [r for r in ok_rows if r.get("certified") is not False]
    widths = [r for r in certified if r.get("gap_rel") not in (None, 0.0)]
    if widths:
        out += [
            "Squared values (W2², OTDD²: the solvers' objective); `gap` is relative, "
            "(upper − lower) / upper; the distance interval is their square root.",
            "",
            "| measure | pair | kind | lower (squared) | upper (squared) | value (squared) "
            "| distance [lower, upper] | gap (relative) | method |",
            "|---" * 9 + "|",
        ]
        for r in widths:
            sq = squared_label(r["measure"])
            out.append(
                f"| {r['measure']} | `{r['dataset_a']}` – `{r['dataset_b']}` | "
                f"{r.get('kind') or 'bracketed'} | {sq} {fmt(r['lower'])} | {sq} {fmt(r['upper'])} "
                f"| {'midpoint ' if r['measure'] == 'ot_bounds' else ''}{sq} {fmt(r['value'])} | {distance_text(r)} | {fmt(r['gap_rel'])} "
                f"| {r['method']} |"
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
            f"(`certified=False`, method {est_methods}): `value` is an estimate (squared), "
            "not a bound; `lower` is a certified (loose) lower bound on OTDD² for the same "
            "lambdas; there is no upper bound (`upper` and `gap_rel` are null).",
            "",
        ]
    return out


def _timing_lines(
    pair_rows: Sequence[Mapping[str, Any]],
    dataset_rows: Sequence[Mapping[str, Any]],
    wall_seconds: float | None,
) -> list[str]:
    out = ["## Timings", ""]
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
    return out


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
    history: str | None = None,
) -> str:
    """The Markdown summary: status, screening, distance tables, neighbours, flags,
    failures, certified widths and estimates, changes since the previous run, timings.

    ``screening``: ``{"measure", "keep", "order", "n_pairs", "kept"}`` when the pairs were
    screened (see :mod:`otaudit.audit.screen`). ``history``: the "Changed since the previous
    complete run" section (:func:`otaudit.audit.history.history_section`).
    """
    a = assess(pair_rows, dataset_rows, thresholds)
    names = [r["dataset"] for r in dataset_rows]
    out: list[str] = [f"# otaudit report `{name}` — run `{run_id}`", ""]
    out.append(
        f"**Status: {a.status}** (exit code {a.exit_code}) — {a.n_pairs_ok}/{len(pair_rows)} "
        f"pair results computed, {len(a.failed_datasets)} dataset(s) failed, "
        f"{len(a.flagged)} pair(s) above a threshold."
    )
    out.append("")
    if screening is not None:
        out += _screening_lines(screening, pair_rows)
    for m in measures_of(pair_rows):
        out += _measure_lines(m, pair_rows, names, near_duplicate_fraction)
    out += ["## Flagged by thresholds", ""]
    if a.flagged:
        out += [
            "| measure | pair | distance (sqrt of value) | threshold (distance) |",
            "|---|---|---|---|",
        ]
        for r in a.flagged:
            out.append(
                f"| {r['measure']} | `{r['dataset_a']}` – `{r['dataset_b']}` | "
                f"{fmt(r['distance'])} | {fmt(r['threshold'])} |"
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
    out += _width_lines(pair_rows)
    if history:
        out += [history.rstrip("\n"), ""]
    out += _timing_lines(pair_rows, dataset_rows, wall_seconds)
    return "\n".join(out)
