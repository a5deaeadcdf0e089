"""Where the audit runs: the Prefect API and the Dask task runner (chosen here, from Settings).

The environment is read in exactly one place, :func:`otaudit.config.load_settings`; this
module turns the settings into a Prefect API (an existing server, or a temporary local one)
and a :class:`prefect_dask.DaskTaskRunner` (a LocalCluster, or an existing scheduler).

The Prefect/Dask trap (ECOSYSTEM.md): Dask worker processes that start without
``PREFECT_API_URL`` in their environment each spawn their own temporary Prefect server
("database is locked", 5x slower). :func:`prefect_api` therefore resolves ONE API URL
(starting a local server when none is configured) and exports it to ``os.environ`` *before*
the task runner starts its LocalCluster, whose worker processes inherit it; the runner also
passes it explicitly in the workers' ``env``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from otaudit.tasks.devices import local_gpu_count

__all__ = [
    "prefect_api",
    "make_task_runner",
    "SettingsDaskTaskRunner",
    "cluster_has_gpus",
    "cluster_threads",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _configured_api_url(settings: Any) -> str | None:
    """The API URL from the settings, the environment or the active Prefect context."""
    if getattr(settings, "prefect_api_url", None):
        return str(settings.prefect_api_url)
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextlib.contextmanager
def prefect_api(settings: Any, *, timeout_s: int | None = None) -> Iterator[str]:
    """Make sure a Prefect API is available and exported; yields its URL.

    Order: ``settings.prefect_api_url`` (``OTAUDIT_PREFECT_API_URL``), else the active
    Prefect setting ``PREFECT_API_URL`` (environment, profile, or a test harness), else a
    temporary local server started here (uvicorn subprocess on a free loopback port, the
    database under ``PREFECT_HOME``) and stopped on exit. In every case the URL is exported
    as ``PREFECT_API_URL`` for the Dask workers started inside the block.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from otaudit.tasks.settings import PREFECT_SERVER_START_TIMEOUT_S

    url = _configured_api_url(settings)
    server = None
    if url is None:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer(port=_free_port())
        server.start(timeout=timeout_s or PREFECT_SERVER_START_TIMEOUT_S)
        url = server.api_url
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        if server is not None:
            _drain_prefect_logs()
            server.stop()


def _drain_prefect_logs() -> None:
    """Flush Prefect's log and event workers before the server they talk to goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        import inspect

        with contextlib.suppress(RuntimeError):  # a worker that never started
            res = APILogWorker.instance().drain()
            if inspect.isawaitable(res):
                await res
        res = EventsWorker.drain_all()
        if inspect.isawaitable(res):
            await res

    run_coro_as_sync(drain())


def _cluster_kwargs(settings: Any) -> dict[str, Any]:
    """LocalCluster arguments from the settings (workers get PREFECT_API_URL explicitly).

    On a machine with CUDA, every worker advertises ``resources={"GPU": 1}`` so that the
    embedding tasks (annotated with that resource) run where a GPU is; each worker computes
    on its own GPU, round-robin by worker index (:func:`worker_device`), so a machine with
    g GPUs wants ``OTAUDIT_N_WORKERS`` = g (or a multiple of g).
    """
    env = {
        k: os.environ[k]
        for k in (
            "PREFECT_API_URL",
            "PREFECT_HOME",
            "PREFECT_SERVER_ANALYTICS_ENABLED",
            "DO_NOT_TRACK",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
        )
        if k in os.environ
    }
    kwargs: dict[str, Any] = {
        "n_workers": int(settings.n_workers),
        "threads_per_worker": int(settings.threads_per_worker),
        "processes": True,
        "dashboard_address": None,
        "env": env,
    }
    if local_gpu_count() > 0:
        kwargs["resources"] = {"GPU": 1}
    return kwargs


def make_task_runner(settings: Any, *, address: str | None = None) -> DaskTaskRunner:
    """The audit's task runner: an existing scheduler (``address`` or
    ``settings.dask_address``), else a LocalCluster sized by the settings.

    Call it inside :func:`prefect_api` so that the workers inherit the API URL. Use it with
    ``audit.with_options(task_runner=make_task_runner(settings))`` (never copy the flow).
    """
    address = address or settings.dask_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs=_cluster_kwargs(settings))


class SettingsDaskTaskRunner(DaskTaskRunner):
    """The flow's default runner: resolves :func:`otaudit.config.load_settings` when the
    flow starts (not at import), so deployments pick up ``OTAUDIT_*`` of the worker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._from_settings = not kwargs

    def __enter__(self) -> SettingsDaskTaskRunner:
        if self._from_settings and not self._started:
            from otaudit.tasks.settings import load_settings

            settings = load_settings()
            if settings.dask_address:
                self.address = settings.dask_address
            else:
                self.cluster_kwargs = _cluster_kwargs(settings)
        super().__enter__()
        return self

    def duplicate(self) -> SettingsDaskTaskRunner:
        if self._from_settings:
            return type(self)()
        return super().duplicate()  # type: ignore[return-value]


@task(name="cluster-has-gpus", cache_policy=NO_CACHE)
def cluster_has_gpus() -> bool:
    """True when at least one Dask worker of the running cluster advertises a ``GPU``
    resource (run as a task so that it asks the cluster the flow actually uses)."""
    from distributed import get_client

    info = get_client().scheduler_info(n_workers=-1)
    return any(
        float(w.get("resources", {}).get("GPU", 0)) > 0 for w in info.get("workers", {}).values()
    )


def cluster_threads(address: str) -> int:
    """Total worker threads of an existing Dask scheduler (sizes the pair blocks)."""
    from distributed import Client

    with Client(address, timeout="10s", set_as_default=False) as client:
        return max(1, sum(client.nthreads().values()))
