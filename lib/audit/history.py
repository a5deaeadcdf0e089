"""History across runs: what changed since the previous complete run, and the table of all
runs' pairs.

- :func:`compare_rows` compares two runs' rows: **moved** pairs (the certified intervals
  ``[lower, upper]`` of the two runs are disjoint: the distance changed by more than either
  run's uncertainty; an exact result is the interval ``[value, value]``; estimates, which have
  no upper bound, are never called moved), **crossed** pairs (the distance ``sqrt(value)`` is
  above the measure's threshold in one run and not in the other), **new** / **removed**
  datasets, and **changed** datasets (same name, other fingerprint).
- :func:`history_section` is the summary's "Changed since the previous complete run" section;
  ``otaudit report URI --compare RUN_ID`` prints the same for any two runs
  (:func:`compare_runs`).
- ``<output>/<name>/history/run=<run_id>/pairs.parquet``: each published run adds one file
  (the run's ``pairs.parquet`` rows, schema version 3), written atomically after the run's
  ``_SUCCESS``; no file is ever rewritten, so concurrent runs cannot lose each other's rows
  (a single ``history.parquet`` would need a read-modify-write). Read it directly::

      duckdb: SELECT * FROM read_parquet('<output>/<name>/history/*/pairs.parquet',
                                         hive_partitioning = true)
      pandas: pd.read_parquet('<output>/<name>/history')   # 'run' column from the folder
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .. import config
from ..errors import StorageError
from .heatmap import distance
from .summary import fmt

__all__ = [
    "compare_rows",
    "history_section",
    "previous_run",
    "write_history",
    "compare_runs",
    "drift_payload",
    "drifted",
    "compare_with_previous",
]


def _ok(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, frozenset[str]], Mapping[str, Any]]:
    return {
        (r["measure"], frozenset((r["dataset_a"], r["dataset_b"]))): r
        for r in rows
        if r.get("status", "ok") == "ok" and r.get("value") is not None
    }


def _interval(r: Mapping[str, Any]) -> tuple[float, float] | None:
    """The certified interval of a row's squared value, or None for an estimate."""
    if r.get("certified") is False:
        return None
    lo, hi = r.get("lower"), r.get("upper")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return float(lo), float(hi)


def compare_rows(
    prev_pairs: Sequence[Mapping[str, Any]],
    prev_datasets: Sequence[Mapping[str, Any]],
    pairs: Sequence[Mapping[str, Any]],
    datasets: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """What changed from the previous run (``prev_*``) to this one (plain JSON lists)."""
    thresholds = dict(thresholds or {})
    before, after = _ok(prev_pairs), _ok(pairs)
    moved, crossed = [], []
    for key in sorted(set(before) & set(after), key=lambda k: (k[0], sorted(k[1]))):
        p, c = before[key], after[key]
        a, b = c["dataset_a"], c["dataset_b"]
        ip, ic = _interval(p), _interval(c)
        if ip is not None and ic is not None and (ic[0] > ip[1] or ic[1] < ip[0]):
            moved.append(
                {"measure": key[0], "pair": [a, b], "before": list(ip), "after": list(ic),
                 "distance_before": distance(p["value"]), "distance_after": distance(c["value"])}
            )  # fmt: skip
        lim = thresholds.get(key[0])
        if lim is not None:
            dp, dc = distance(p["value"]), distance(c["value"])
            if (dp > lim) != (dc > lim):
                crossed.append(
                    {"measure": key[0], "pair": [a, b], "threshold": float(lim),
                     "distance_before": dp, "distance_after": dc,
                     "direction": "above" if dc > lim else "below"}
                )  # fmt: skip
    fp_before = {r["dataset"]: r.get("fingerprint") for r in prev_datasets}
    fp_after = {r["dataset"]: r.get("fingerprint") for r in datasets}
    return {
        "moved": moved,
        "crossed": crossed,
        "new_datasets": sorted(set(fp_after) - set(fp_before)),
        "removed_datasets": sorted(set(fp_before) - set(fp_after)),
        "changed_datasets": sorted(
            n for n in set(fp_after) & set(fp_before) if fp_after[n] != fp_before[n]
        ),
    }


def drifted(changes: Mapping[str, Any]) -> bool:
    """Whether the changes call for a notification (a pair moved or crossed a threshold)."""
    return bool(changes.get("moved") or changes.get("crossed"))


def history_section(changes: Mapping[str, Any] | None, prev_run: str | None) -> str:
    """The summary's "Changed since the previous complete run" section (Markdown)."""
    out = ["## Changed since the previous complete run", ""]
    if prev_run is None:
        return "\n".join([*out, "no previous complete run: this is the first", ""])
    if changes is None or "error" in (changes or {}):
        why = (changes or {}).get("error", "unreadable")
        return "\n".join([*out, f"previous run `{prev_run}` could not be compared: {why}", ""])
    out += [f"Compared with run `{prev_run}`.", ""]
    for what, label in (
        ("new_datasets", "new datasets"),
        ("removed_datasets", "removed datasets"),
        ("changed_datasets", "changed datasets (same name, new content fingerprint)"),
    ):
        names = changes.get(what) or []
        out.append(f"- {label}: " + (", ".join(f"`{n}`" for n in names) or "none"))
    moved = changes.get("moved") or []
    out.append(
        f"- {len(moved)} pair result(s) moved beyond their certified intervals (the two "
        "runs' intervals of the squared value are disjoint)" + (":" if moved else "")
    )
    for m in moved:
        a, b = m["pair"]
        out.append(
            f"  - {m['measure']} `{a}` – `{b}`: distance {fmt(m['distance_before'])} → "
            f"{fmt(m['distance_after'])} (squared [{fmt(m['before'][0])}, "
            f"{fmt(m['before'][1])}] → [{fmt(m['after'][0])}, {fmt(m['after'][1])}])"
        )
    crossed = changes.get("crossed") or []
    out.append(f"- {len(crossed)} pair(s) crossed a threshold" + (":" if crossed else ""))
    for c in crossed:
        a, b = c["pair"]
        out.append(
            f"  - {c['measure']} `{a}` – `{b}`: distance {fmt(c['distance_before'])} → "
            f"{fmt(c['distance_after'])}, now {c['direction']} the threshold {fmt(c['threshold'])}"
        )
    out.append("")
    return "\n".join(out)


def previous_run(audit_store: Any, run_id: str) -> str | None:
    """The newest complete run (``run=<id>``) under an audit prefix older than ``run_id``."""
    from .report import latest_run  # report imports summary, which history imports

    return latest_run(audit_store, before=run_id)


def compare_with_previous(
    audit_store: Any,
    run_id: str,
    pairs: Sequence[Mapping[str, Any]],
    datasets: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """``(previous run id, changes)``; changes ``{"error": reason}`` when it is unreadable."""
    from .report import read_run

    prev = previous_run(audit_store, run_id)
    if prev is None:
        return None, None
    prev_id = prev[len("run=") :]
    try:
        rep = read_run(audit_store.child(prev))
    except StorageError as e:
        return prev_id, {"error": str(e)}
    return prev_id, compare_rows(rep.pair_rows(), rep.dataset_rows(), pairs, datasets, thresholds)


def write_history(audit_store: Any, run_id: str, pairs_parquet: bytes) -> str:
    """Add this run's ``pairs.parquet`` to ``history/run=<run_id>/`` (atomic, never rewritten)."""
    audit_store.write_bytes(pairs_parquet, config.HISTORY_DIR, f"run={run_id}", "pairs.parquet")
    return audit_store.path(config.HISTORY_DIR, f"run={run_id}", "pairs.parquet")


def drift_payload(name: str, run_id: str, outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The payload of the ``otaudit.drift`` Prefect event (plain JSON)."""
    changes = outcome.get("changes") or {}
    return {
        "audit": name,
        "run_id": run_id,
        "previous_run": outcome.get("previous_run"),
        "status": outcome.get("status"),
        "uri": outcome.get("uri"),
        "moved": changes.get("moved", []),
        "crossed": changes.get("crossed", []),
        "flagged": outcome.get("flagged", []),
    }


def compare_runs(uri: str, other_run: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The "changed since" section of the run at ``uri`` (a run, or an audit prefix: its
    latest complete run) against ``other_run`` (a run id, with or without ``run=``) of the
    same audit. Thresholds are not stored in a report, so only intervals and datasets are
    compared (no threshold crossings).

    Raises:
        StorageError: either run is missing, incomplete or corrupt.
    """
    from .report import read_report, read_run

    cur = read_report(uri, storage_options)
    from ..data.storage import Store

    parent_uri = cur.uri.rstrip("/").rsplit("/", 1)[0]
    parent = Store(parent_uri, dict(storage_options) if storage_options else None)
    other = other_run if other_run.startswith("run=") else f"run={other_run}"
    prev = read_run(parent.child(other))
    changes = compare_rows(
        prev.pair_rows(), prev.dataset_rows(), cur.pair_rows(), cur.dataset_rows()
    )
    text = history_section(changes, prev.run_id)
    return text.replace(
        "## Changed since the previous complete run",
        f"## Run `{cur.run_id}` compared with run `{prev.run_id}`",
        1,
    )
