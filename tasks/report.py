"""The last task of an audit: build the tables and summary, publish them atomically, and
publish the same summary and table as Prefect artifacts."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from otaudit import config

from .datasets import DatasetRef, failed_dataset_row, is_transient
from .plan import AuditPlan

__all__ = ["publish_report", "collect_rows", "artifact_key"]


def artifact_key(name: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"otaudit-{name}-{what}".lower()).strip("-")


def collect_rows(
    plan: AuditPlan, refs: list[Any], block_results: list[list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(pair_rows, dataset_rows)`` from the datasets' refs/failures and the blocks' rows."""
    dataset_rows = [
        ref.to_row(plan.run_id)
        if isinstance(ref, DatasetRef)
        else failed_dataset_row(plan.run_id, spec, ref)
        for spec, ref in zip(plan.manifest.datasets, refs, strict=True)
    ]
    pair_rows = [row for rows in block_results for row in rows]
    return pair_rows, dataset_rows


def _artifact_table(pair_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in pair_rows:
        v = r["value"]
        out.append(
            {
                "dataset_a": r["dataset_a"],
                "dataset_b": r["dataset_b"],
                "measure": r["measure"],
                "distance": None if v is None else round(math.sqrt(max(v, 0.0)), 6),
                "value": v,
                "lower": r["lower"],
                "upper": r["upper"],
                "status": r["status"],
                "error": r["error"],
            }
        )
    return out


@task(
    name="publish-report",
    retries=config.TASK_RETRIES,
    retry_delay_seconds=config.TASK_RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)
def publish_report(
    plan: AuditPlan,
    refs: list[Any],
    block_results: list[Any],
    screening: dict[str, Any] | None = None,
    explanation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``pairs.parquet``, ``datasets.parquet``, ``summary.md``, ``heatmap.png`` under
    ``<output>/<name>/run=<run_id>/`` (atomic, ``_SUCCESS`` last) and the Prefect artifacts.

    ``screening``: the outcome of :func:`otaudit.tasks.pairs.select_screened` when the
    manifest screens pairs (stated in the summary). ``explanation``: the outcome of
    :func:`otaudit.tasks.explain.explain_pairs` (its section ends the summary, its files —
    ``flow_*.parquet``, plots — join the report).

    Returns the outcome: ``uri``, ``run_id``, ``status``, ``exit_code`` (see
    :mod:`otaudit.audit.report`), ``failed_datasets`` ([name, reason]), ``n_failed_pairs``,
    ``flagged`` and the ``summary`` text.
    """
    from otaudit.audit.report import (
        assess,
        build_datasets_table,
        build_pairs_table,
        render_heatmap,
        render_summary,
        report_files,
        write_report,
    )
    from otaudit.data.storage import Store

    pair_rows, dataset_rows = collect_rows(plan, refs, block_results)
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
    uri = write_report(Store(plan.output, plan.storage_options or None), m.name, plan.run_id, files)
    create_markdown_artifact(
        markdown=summary + f"\n\nReport: `{uri}`\n",
        key=artifact_key(m.name, "summary"),
        description=f"otaudit summary of run {plan.run_id}",
    )
    create_table_artifact(
        table=_artifact_table(pair_rows),
        key=artifact_key(m.name, "pairs"),
        description=f"otaudit pairs of run {plan.run_id}",
    )
    a = assess(pair_rows, dataset_rows, m.thresholds)
    return {
        "uri": uri,
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
