"""The last task of an audit: publish the report (:func:`otaudit.audit.publish.publish`),
the same summary, table and heatmap as Prefect artifacts, and the ``otaudit.drift`` Prefect
event when the run drifted (docs/pipeline.md: an Automation can trigger on it)."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from otaudit import config
from otaudit.audit.history import drift_payload, drifted
from otaudit.audit.html import data_uri
from otaudit.audit.prepare import dataset_rows
from otaudit.audit.publish import artifact_rows, publish, stats_loader

from .plan import AuditPlan
from .retry import RETRIED

__all__ = ["publish_report", "collect_rows", "artifact_key", "emit_drift_event"]

log = logging.getLogger(__name__)


def artifact_key(name: str, what: str) -> str:
    """``otaudit-<name>-<what>``: unique per audit name within Prefect's key rules
    (lowercase letters, digits, dashes). When sanitising changes the name (``A_b`` and
    ``a-b`` would both become ``a-b``), 8 hex digits of the name's sha256 keep keys apart."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "audit"
    if slug != name:
        slug += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    what = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
    return f"otaudit-{slug}-{what}"


def emit_drift_event(name: str, run_id: str, outcome: dict[str, Any]) -> Any:
    """Emit ``otaudit.drift`` (resource ``otaudit.audit.<name>``) when the run drifted: a
    pair moved beyond its certified interval or crossed a threshold since the previous
    complete run, or a pair is above its threshold (status ``drift``). Returns the event
    (None when nothing drifted or no events client is configured)."""
    from prefect.events import emit_event

    if not (drifted(outcome.get("changes") or {}) or outcome.get("flagged")):
        return None
    return emit_event(
        event=config.DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"otaudit.audit.{name}",
            "prefect.resource.name": name,
            "otaudit.run_id": run_id,
        },
        payload=drift_payload(name, run_id, outcome),
    )


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
    """Write ``pairs.parquet``, ``datasets.parquet``, ``summary.md``, ``heatmap.png``,
    ``report.html`` under ``<output>/<name>/run=<run_id>/`` (atomic, ``_SUCCESS`` last), the
    history file, the Prefect artifacts (summary, pairs, heatmap; keys from
    :func:`artifact_key`) and, on drift, the ``otaudit.drift`` event.

    ``screening``: the outcome of :func:`otaudit.tasks.pairs.select_screened` when the
    manifest screens pairs (stated in the summary); ``explanation``: the outcome of
    :func:`otaudit.tasks.explain.explain_pairs` (its section ends the summary, its files join
    the report). Returns the outcome of
    :func:`otaudit.audit.publish.publish`. A storage error still failing after the retries
    fails the run (there is no report to write it into).
    """
    pair_rows, ds_rows = collect_rows(plan, refs, block_results)
    outcome = publish(plan, ds_rows, pair_rows, screening, explanation, stats_loader(plan, refs))
    png = outcome.pop("heatmap_png", None)
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
    if png is not None:  # image artifacts are by URL only: markdown with a data URI
        create_markdown_artifact(
            markdown=f"![distance heatmap of {name}]({data_uri(png)})\n",
            key=artifact_key(name, "heatmap"),
            description=f"otaudit distance heatmap of run {plan.run_id}",
        )
    try:
        emit_drift_event(name, plan.run_id, outcome)
    except Exception as e:  # noqa: BLE001 - a notification must not fail a published run
        log.warning("otaudit.drift event not emitted: %s", e)
    return outcome
