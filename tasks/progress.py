"""Where a pair's long certified solve shows its progress while the run goes on: a Prefect
**progress artifact** of the pair-block task run (created at the first publication,
updated in place after), and one task-run **log line** per publication (the history, in
the UI's logs). Both go through the Prefect API from whichever Dask worker process runs
the task, so the CLI (:class:`otaudit.app.cli._Progress`, which polls the API) and the
UI see them while the task is still running.

The artifact's ``data`` is :attr:`ProgressRecord.percent` (``100 * lower / upper``) and
its description the record's line (``pair a~b ot_bounds  W2² in [lo, up]  gap 0.8 %  12 s
(round 3)``). What is published and when (after ``OTAUDIT_PROGRESS_AFTER_S`` seconds, at
most every ``OTAUDIT_PROGRESS_EVERY_S``) is :class:`otaudit.audit.progress.SolveProgress`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from otaudit.audit.progress import ProgressRecord, SolveProgress

__all__ = ["LOG_PREFIX", "ArtifactPublisher", "prefect_progress"]

#: First words of the task-run log line of every publication.
LOG_PREFIX = "solve progress:"


class ArtifactPublisher:
    """``publish(record)`` of one pair's solve: a progress artifact (created once, then
    updated in place) and a log line with the exact bounds."""

    def __init__(self) -> None:
        self.artifact_id: UUID | None = None

    def __call__(self, record: ProgressRecord) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact
        from prefect.logging import get_run_logger

        line = record.line()
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(record.percent, description=line)
        else:
            update_progress_artifact(self.artifact_id, record.percent, description=line)
        get_run_logger().info(
            "%s %s; lower=%r upper=%r", LOG_PREFIX, line, record.lower, record.upper
        )


def prefect_progress(settings: Any) -> Callable[[str, str], SolveProgress]:
    """The ``progress`` factory of :func:`otaudit.audit.measures.compute_pairs` for a task
    run: ``(pair, measure) -> SolveProgress`` publishing through :class:`ArtifactPublisher`,
    throttled by ``settings.progress_after_s`` / ``settings.progress_every_s``."""

    def make(pair: str, measure: str) -> SolveProgress:
        return SolveProgress(
            pair,
            measure,
            ArtifactPublisher(),
            after_s=settings.progress_after_s,
            every_s=settings.progress_every_s,
        )

    return make
