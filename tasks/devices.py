"""Which device a task computes on (:func:`otaudit.data.devices.select_device`), given the
name of the Dask worker it runs on. The runtime (:mod:`otaudit.flows.runtime`) uses
:func:`local_gpu_count` to advertise GPU resources."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from otaudit.data.devices import gpu_index_for, local_gpu_count, select_device

__all__ = [
    "cluster_executor",
    "local_gpu_count",
    "gpu_index_for",
    "worker_device",
    "worker_name",
]


def worker_name() -> Any:
    """The name of the Dask worker running this task; 0 outside a Dask worker (e.g. a flow
    run without the Dask runner)."""
    try:
        from distributed import get_worker

        return get_worker().name
    except ValueError:  # not inside a Dask worker
        return 0


def worker_device(preference: str = "auto") -> Any:
    """The torch device this task computes on, and on a CUDA worker its own GPU.

    ``preference`` (``Settings.pair_device`` for pair work): ``"cpu"`` or ``"auto"``, see
    :func:`otaudit.data.devices.select_device`.
    """
    return select_device(preference, worker_name() if preference == "auto" else 0)


@contextlib.contextmanager
def cluster_executor() -> Iterator[Any]:
    """The Dask cluster's ``concurrent.futures`` executor for one large pair (issue 14), or
    None outside a Dask worker.

    The pair's task leaves the worker's thread pool while the cluster runs the pair's work
    (``distributed.worker_client``: ``secede`` on entry, ``rejoin`` on exit), so even a
    cluster of 1-thread workers cannot deadlock on the pair waiting for its own tasks."""
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker: the pair runs in place
        yield None
        return
    with worker_client() as client:
        yield client.get_executor()
