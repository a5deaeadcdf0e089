"""The last task of an audit: publish the report (:func:`otaudit.audit.publish.publish`)
and the same summary and table as Prefect artifacts."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from otaudit.audit.prepare import dataset_rows
from otaudit.audit.publish import artifact_rows, publish

from .plan import AuditPlan
from .retry import RETRIED

__all__ = ["publish_report", "collect_rows", "artifact_key"]


def artifact_key(name: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"otaudit-{name}-{what}".lower()).strip("-")


def collect_rows(
    plan: AuditPlan, refs: list[Any], block_results: list[list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(pair_rows, dataset_rows)`` from the datasets' refs/failures and the blocks' rows."""
    return [row for rows in block_results for row in rows], dataset_rows(plan, refs)


@task(
    name="publish-report",
    **RETRIED,
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
    manifest screens pairs (stated in the summary); ``explanation``: the outcome of
    :func:`otaudit.tasks.explain.explain_pairs` (its section ends the summary, its files join
    the report). Returns the outcome of
    :func:`otaudit.audit.publish.publish`. A storage error still failing after the retries
    fails the run (there is no report to write it into).
    """
    pair_rows, ds_rows = collect_rows(plan, refs, block_results)
    outcome = publish(plan, ds_rows, pair_rows, screening, explanation)
    name = plan.manifest.name
    create_markdown_artifact(
        markdown=outcome["summary"] + f"\n\nReport: `{outcome['uri']}`\n",
        key=artifact_key(name, "summary"),
        description=f"otaudit summary of run {plan.run_id}",
    )
    create_table_artifact(
        table=artifact_rows(pair_rows),
        key=artifact_key(name, "pairs"),
        description=f"otaudit pairs of run {plan.run_id}",
    )
    return outcome
