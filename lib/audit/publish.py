"""Publishing one audit: the report's tables, summary and heatmap from the rows of every
dataset and pair, written atomically under ``<output>/<name>/run=<run_id>/`` (``_SUCCESS``
last), and the outcome a scheduler acts on (status, exit code, flagged pairs).

The publishing task (:mod:`otaudit.tasks.report`) calls :func:`publish` and adds the
Prefect artifacts (:func:`artifact_rows` is their table).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.secrets import redact_uri
from .heatmap import distance
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

__all__ = ["publish", "artifact_rows"]


def artifact_rows(pair_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pairs as the Prefect table artifact shows them (with ``distance = sqrt(value)``)."""
    out = []
    for r in pair_rows:
        v = r["value"]
        out.append(
            {
                "dataset_a": r["dataset_a"],
                "dataset_b": r["dataset_b"],
                "measure": r["measure"],
                "distance": None if v is None else round(distance(v), 6),
                "value": v,
                "lower": r["lower"],
                "upper": r["upper"],
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
) -> dict[str, Any]:
    """Write ``pairs.parquet``, ``datasets.parquet``, ``summary.md``, ``heatmap.png`` and
    return the outcome: ``uri``, ``run_id``, ``status``, ``exit_code`` (see
    :mod:`otaudit.audit.report`), ``failed_datasets`` ([name, reason]), ``n_failed_pairs``,
    ``flagged`` and the ``summary`` text.

    ``screening``: the outcome of the screening pass (stated in the summary).
    ``explanation``: the outcome of :func:`otaudit.audit.explain_run.explain_run` (its
    ``section`` ends the summary, its ``files`` — ``flow_*.parquet``, plots — join the report).
    """
    m = plan.manifest
    summary = render_summary(
        name=m.name,
        run_id=plan.run_id,
        pair_rows=pair_rows,
        dataset_rows=dataset_rows,
        thresholds=m.thresholds,
        wall_seconds=time.time() - plan.started_at,
        screening=screening,
    )
    if explanation:
        summary = summary.rstrip("\n") + "\n\n" + explanation["section"]
    png = render_heatmap(
        pair_rows=pair_rows, names=plan.names, title=f"{m.name} — run {plan.run_id}"
    )
    files = report_files(
        pairs=build_pairs_table(pair_rows),
        datasets=build_datasets_table(dataset_rows),
        summary=summary,
        heatmap_png=png,
    )
    if explanation:
        files.update(explanation["files"])
    uri = write_report(plan.store(), m.name, plan.run_id, files)
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
    }
