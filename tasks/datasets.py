"""Per-dataset work: ONE Prefect task per dataset (retried on storage errors) that calls
:func:`otaudit.audit.prepare.prepare_dataset` — fingerprint, embed (each shard one Dask
task through :func:`shard_executor`, never a Prefect task), statistics, all through
the content-addressed cache under ``<output>/_cache/`` — and returns a small
:class:`DatasetRef` (references, never arrays), or the :class:`DatasetFailure` of a dataset
whose preparation failed for good, so the flow goes on and only this dataset's pairs fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger, task

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
from .retry import RETRIED, is_transient, reraise_for_retry

__all__ = [
    "DatasetRef",
    "DatasetFailure",
    "prepare_dataset",
    "open_cache",
    "is_transient",
    "stats_inner",
    "failed_dataset_row",
    "describe_error",
    "shard_executor",
]


@contextlib.contextmanager
def shard_executor() -> Iterator[Any]:
    """The Dask cluster as a ``concurrent.futures.Executor`` for the shards of the dataset
    this task prepares, or None outside a Dask worker (then shards run in process).

    ``worker_client()`` secedes this task from its worker's thread pool while it waits
    (so a 1-thread worker runs shard tasks instead of deadlocking) and rejoins on exit.
    With GPU workers in the cluster, shard tasks are restricted to them by address
    (``workers=``, not ``resources=``: a seceded task keeps holding its ``GPU`` resource,
    so asking for the resource again could wait forever on a 1-GPU cluster).
    """
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        yield None
        return
    with worker_client() as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        gpus = sorted(a for a, w in workers.items() if (w.get("resources") or {}).get("GPU"))
        kwargs: dict[str, Any] = {"pure": False}
        if gpus:
            kwargs.update(workers=gpus, allow_other_workers=False)
        yield client.get_executor(**kwargs)


def _progress_logger(name: str) -> Any:
    """``progress(done, total)`` that logs shards done at about every 10 %."""
    log = get_run_logger()
    step: dict[str, int] = {"next": 0}

    def progress(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            log.info("%s: embedded %d/%d shards", name, done, total)
            step["next"] = done + max(1, total // 10)

    return progress


def open_cache(plan: AuditPlan) -> Any:
    """The content-addressed cache of this audit's output store (``<output>/_cache``)."""
    return plan.cache()


@task(name="prepare-dataset", task_run_name="prepare-{spec.name}", **RETRIED)
def prepare_dataset(spec: Any, plan: AuditPlan) -> DatasetRef | DatasetFailure:
    """Prepare ONE dataset; storage errors are retried (``config.TASK_RETRIES``), a final
    failure is returned as a :class:`DatasetFailure` — never raised."""
    try:
        worker_device("auto")  # on a CUDA worker: its own GPU becomes current (device: auto)
        progress = _progress_logger(spec.name)
        # shards as Dask tasks (not Prefect tasks), when there are >= 2 to embed
        return _prepare(spec, plan, shard_pool=shard_executor, progress=progress)
    except Exception as e:  # noqa: BLE001 - recorded in the report with its reason
        if reraise_for_retry(e):
            raise
        return DatasetFailure(name=spec.name, error=describe_error(e))
