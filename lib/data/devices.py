"""Which device a unit of work computes on: each Dask worker owns one GPU (round-robin by
worker index) when CUDA is present, the CPU otherwise.

The numerics of the choice (torch) live here; :mod:`otaudit.tasks.devices` only supplies the
Dask worker's name, and the runtime (:mod:`otaudit.flows.runtime`) uses
:func:`local_gpu_count` to advertise GPU resources.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..errors import InputError

__all__ = ["local_gpu_count", "gpu_index_for", "select_device"]


def local_gpu_count() -> int:
    """CUDA devices visible to this process (0 without torch CUDA)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def gpu_index_for(worker_name: Any, n_gpus: int) -> int:
    """The GPU that the Dask worker called ``worker_name`` owns on a machine with ``n_gpus``.

    A LocalCluster names its workers ``0, 1, ...`` and ``dask worker --nworkers k`` names
    them ``<name>-0 ... <name>-(k-1)``: the trailing number modulo ``n_gpus`` spreads them
    over the GPUs round-robin. Other names (e.g. an address) map through a stable hash.
    Workers started with their own ``CUDA_VISIBLE_DEVICES`` see one GPU and get 0.
    """
    if n_gpus <= 1:
        return 0
    s = str(worker_name)
    m = re.search(r"(\d+)$", s)
    k = int(m.group(1)) if m else int(hashlib.sha256(s.encode()).hexdigest()[:12], 16)
    return k % n_gpus


def select_device(preference: str, worker_name: Any = 0) -> Any:
    """The torch device for ``preference`` on the worker called ``worker_name``.

    ``"cpu"`` always computes on the CPU; ``"auto"`` uses the GPU this worker owns
    (:func:`gpu_index_for`) when CUDA is available — made the current CUDA device, so that
    embedders with ``device: auto`` land on the same GPU — and the CPU otherwise.
    """
    import torch

    if preference not in ("auto", "cpu"):
        raise InputError(
            f"unknown device preference {preference!r}",
            field="OTAUDIT_PAIR_DEVICE",
            fix="use 'auto' (the worker's own GPU when there is one) or 'cpu'",
        )
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    k = gpu_index_for(worker_name, torch.cuda.device_count())
    torch.cuda.set_device(k)
    return torch.device("cuda", k)
