"""Which device a task computes on (:func:`otaudit.data.devices.select_device`), given the
name of the Dask worker it runs on. The runtime (:mod:`otaudit.flows.runtime`) uses
:func:`local_gpu_count` to advertise GPU resources."""

from __future__ import annotations

from typing import Any

from otaudit.data.devices import gpu_index_for, local_gpu_count, select_device

__all__ = ["local_gpu_count", "gpu_index_for", "worker_device", "worker_name"]


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
