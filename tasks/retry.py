"""Retries of a unit of work: ONE Prefect task per unit, retried on transient storage errors,
whose final failure is returned as a value (a failed row) instead of failing the flow.

Inside the task body, :func:`reraise_for_retry` decides for a caught exception: re-raise it
(Prefect retries the task: a :class:`~otaudit.errors.StorageError` with attempts left), or
let the task turn it into its failure value (bad input, a solver error, or the last attempt).
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from otaudit import config
from otaudit.errors import StorageError

__all__ = ["RETRIED", "is_transient", "reraise_for_retry", "attempts_left"]


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only storage errors (network, throttling).

    Bad input (InputError) or a solver failure is deterministic and is not retried.
    """
    try:
        state.result()
    except StorageError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final; Prefect records it
        return False
    return False


#: The retry policy of a unit of work, for ``@task(name=..., **RETRIED)``: ``TASK_RETRIES``
#: retries ``TASK_RETRY_DELAY_S`` apart on storage errors only, no result caching.
RETRIED: dict[str, Any] = {
    "retries": config.TASK_RETRIES,
    "retry_delay_seconds": config.TASK_RETRY_DELAY_S,
    "retry_condition_fn": is_transient,
    "cache_policy": NO_CACHE,
}


def attempts_left() -> int:
    """Retries this task run still has (0 on its last attempt, or outside a task run)."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return 0
    retries = ctx.task.retries or 0
    return max(0, retries + 1 - int(ctx.task_run.run_count))


def reraise_for_retry(error: BaseException) -> bool:
    """Whether the task should re-raise ``error`` so that Prefect retries it."""
    return isinstance(error, StorageError) and attempts_left() > 0
