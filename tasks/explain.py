"""Explanations: ONE Prefect task runs the OTDD gradient flows of the pairs the manifest's
``explain:`` names (:func:`otaudit.audit.explain_run.explain_run`) and publishes the
section, with its plots, as a Prefect markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from otaudit.audit.explain_run import explain_run

from .plan import AuditPlan
from .report import artifact_key, collect_rows
from .retry import RETRIED

__all__ = ["explain_pairs"]


@task(
    name="explain-pairs",
    **RETRIED,
)
def explain_pairs(plan: AuditPlan, refs: list[Any], block_results: list[Any]) -> dict[str, Any]:
    """The explanation of the run (see :func:`otaudit.audit.explain_run.explain_run`):
    ``{"pairs", "section", "files"}``, ``{}`` without ``explain:`` in the manifest."""
    pair_rows, dataset_rows = collect_rows(plan, refs, block_results)
    out = explain_run(plan, refs, pair_rows, dataset_rows)
    if out:
        create_markdown_artifact(
            markdown=out["section"] + "\n" + "\n\n".join(out.pop("images")),
            key=artifact_key(plan.manifest.name, "explain"),
            description=f"otaudit explanations (OTDD gradient flows) of run {plan.run_id}",
        )
    return out
