"""Publishing one audit: the report's tables, summary, heatmap and ``report.html`` from the
rows of every dataset and pair, written atomically under ``<output>/<name>/run=<run_id>/``
(``_SUCCESS`` last), the run's rows added to ``<output>/<name>/history/``, and the outcome a
scheduler acts on (status, exit code, flagged pairs, changes since the previous run).

Before the summary is written, near-duplicate OTDD pairs get their class correspondence
(:mod:`otaudit.audit.permuted`: "labels permuted") and the run is compared with the previous
complete run of the same audit (:mod:`otaudit.audit.history`).

The publishing task (:mod:`otaudit.tasks.report`) calls :func:`publish` and adds the
Prefect artifacts (:func:`artifact_rows` is their table).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..data.secrets import redact_uri
from ..errors import StorageError
from .heatmap import distance
from .history import compare_with_previous, history_section, write_history
from .html import render_html
from .permuted import annotate_permutations
from .plan import AuditPlan
from .report import (
    assess,
    build_datasets_table,
    build_pairs_table,
    render_heatmap,
    render_summary,
    report_files,
    write_report,
)
from .summary import fmt

__all__ = ["publish", "artifact_rows", "display", "stats_loader"]

log = logging.getLogger(__name__)


def display(x: float | None) -> float | None:
    """A number rounded for display (``config.DISPLAY_DIGITS`` significant digits)."""
    return None if x is None else float(fmt(x))


def stats_loader(plan: AuditPlan, refs: Sequence[Any]) -> Callable[[str], Any]:
    """``name -> DatasetStats`` (CPU) from the cache for the datasets that were prepared
    (None for a failed dataset or vanished statistics)."""
    from .prepare import DatasetRef

    by_name = {r.name: r for r in refs if isinstance(r, DatasetRef)}
    loaded: dict[str, Any] = {}

    def stats_of(name: str) -> Any:
        ref = by_name.get(name)
        if ref is None:
            return None
        if name not in loaded:
            from ..dataset_distance import DatasetStats

            arrays = plan.cache().get_arrays("stats", ref.stats_key)
            loaded[name] = None if arrays is None else DatasetStats.from_arrays(arrays)
        return loaded[name]

    return stats_of


def artifact_rows(pair_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pairs as the Prefect table artifact shows them: distances (``sqrt``) and the
    squared values, each rounded to ``config.DISPLAY_DIGITS`` significant digits."""
    out = []
    for r in pair_rows:
        v = r["value"]
        out.append(
            {
                "dataset_a": r["dataset_a"],
                "dataset_b": r["dataset_b"],
                "measure": r["measure"],
                "kind": r.get("kind"),
                "distance": None if v is None else display(distance(v)),
                "distance_lower": display(distance(r["lower"])),
                "distance_upper": display(distance(r["upper"])),
                "value (squared)": display(v),
                "lower (squared)": display(r["lower"]),
                "upper (squared)": display(r["upper"]),
                "status": r["status"],
                "error": r["error"],
            }
        )
    return out


def publish(
    plan: AuditPlan,
    dataset_rows: list[dict[str, Any]],
    pair_rows: list[dict[str, Any]],
    screening: dict[str, Any] | None = None,
    explanation: dict[str, Any] | None = None,
    stats_of: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Write ``pairs.parquet``, ``datasets.parquet``, ``summary.md``, ``heatmap.png``,
    ``report.html``, add the run to ``history/`` and return the outcome: ``uri``,
    ``run_id``, ``status``, ``exit_code`` (see :mod:`otaudit.audit.summary`),
    ``failed_datasets`` ([name, reason]), ``n_failed_pairs``, ``flagged``, ``summary``,
    ``previous_run`` (None for the first), ``changes`` (:func:`otaudit.audit.history.
    compare_rows`), ``history`` (the history file's URI, None if it could not be written)
    and ``heatmap_png``.

    ``screening``: the outcome of the screening pass (stated in the summary).
    ``explanation``: the outcome of :func:`otaudit.audit.explain_run.explain_run` (its
    ``section`` ends the summary, its ``files`` — ``flow_*.parquet``, plots — join the report).
    ``stats_of``: ``name -> DatasetStats`` (:func:`stats_loader`) for the "labels permuted"
    check of near-duplicate OTDD pairs (skipped when None).
    """
    m = plan.manifest
    if stats_of is not None:
        annotate_permutations(pair_rows, stats_of)
    audit_store = plan.store().child(m.name)
    prev_run, changes = compare_with_previous(
        audit_store, plan.run_id, pair_rows, dataset_rows, m.thresholds
    )
    summary = render_summary(
        name=m.name,
        run_id=plan.run_id,
        pair_rows=pair_rows,
        dataset_rows=dataset_rows,
        thresholds=m.thresholds,
        wall_seconds=time.time() - plan.started_at,
        screening=screening,
        history=history_section(changes, prev_run),
    )
    if explanation:
        summary = summary.rstrip("\n") + "\n\n" + explanation["section"]
    title = f"{m.name} — run {plan.run_id}"
    png = render_heatmap(pair_rows=pair_rows, names=plan.names, title=title)
    files = report_files(
        pairs=build_pairs_table(pair_rows),
        datasets=build_datasets_table(dataset_rows),
        summary=summary,
        heatmap_png=png,
    )
    if explanation:
        files.update(explanation["files"])
    plots = {n: d for n, d in files.items() if n.endswith(".png") and n != "heatmap.png"}
    page = render_html(
        title=f"otaudit report {title}", summary=summary, heatmap_png=png, plots=plots
    )
    files["report.html"] = page.encode("utf-8")
    uri = write_report(plan.store(), m.name, plan.run_id, files)
    try:
        history_uri: str | None = write_history(audit_store, plan.run_id, files["pairs.parquet"])
    except StorageError as e:  # the report is published; history is the convenience copy
        log.warning("history of run %s not written: %s", plan.run_id, e)
        history_uri = None
    a = assess(pair_rows, dataset_rows, m.thresholds)
    return {
        "uri": redact_uri(uri),
        "run_id": plan.run_id,
        "status": a.status,
        "exit_code": a.exit_code,
        "failed_datasets": [[r["dataset"], r["error"]] for r in a.failed_datasets],
        "n_failed_pairs": len(a.failed_pairs),
        "flagged": [
            [r["measure"], r["dataset_a"], r["dataset_b"], r["distance"], r["threshold"]]
            for r in a.flagged
        ],
        "summary": summary,
        "previous_run": prev_run,
        "changes": changes,
        "history": history_uri,
        "heatmap_png": png,
    }
