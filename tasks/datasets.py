"""Per-dataset work: ONE Prefect task per dataset (retried on storage errors) that calls
:func:`otaudit.audit.prepare.prepare_dataset` — fingerprint, embed, statistics, all through
the content-addressed cache under ``<output>/_cache/`` — and returns a small
:class:`DatasetRef` (references, never arrays), or the :class:`DatasetFailure` of a dataset
whose preparation failed for good, so the flow goes on and only this dataset's pairs fail.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit import config
from otaudit.audit.prepare import (
    DatasetFailure,
    DatasetRef,
    failed_dataset_row,
    stats_inner,
)
from otaudit.audit.prepare import prepare_dataset as _prepare
from otaudit.errors import describe_error

from .devices import worker_device
from .plan import AuditPlan
from .retry import is_transient, reraise_for_retry

__all__ = [
    "DatasetRef",
    "DatasetFailure",
    "prepare_dataset",
    "open_cache",
    "is_transient",
    "stats_inner",
    "failed_dataset_row",
    "describe_error",
]


def open_cache(plan: AuditPlan) -> Any:
    """The content-addressed cache of this audit's output store (``<output>/_cache``)."""
    return plan.cache()


@task(
    name="prepare-dataset",
    task_run_name="prepare-{spec.name}",
    retries=config.TASK_RETRIES,
    retry_delay_seconds=config.TASK_RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)
def prepare_dataset(spec: Any, plan: AuditPlan) -> DatasetRef | DatasetFailure:
    """Prepare ONE dataset; storage errors are retried (``config.TASK_RETRIES``), a final
    failure is returned as a :class:`DatasetFailure` — never raised."""
    try:
        worker_device("auto")  # on a CUDA worker: its own GPU becomes current (device: auto)
        return _prepare(spec, plan)
    except Exception as e:  # noqa: BLE001 - recorded in the report with its reason
        if reraise_for_retry(e):
            raise
        return DatasetFailure(name=spec.name, error=describe_error(e))
