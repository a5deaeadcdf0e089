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
import math
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from otaudit.tasks.devices import local_gpu_count

__all__ = [
    "prefect_api",
    "local_cluster",
    "start_temporary_server",
    "stop_temporary_servers",
    "server_pids",
    "drain_prefect_logs",
    "cancel_flow_run",
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


#: The temporary servers started by :func:`prefect_api` that are still running (stopped on
#: exit of the block, or at once by :func:`stop_temporary_servers` on an interrupt).
_RUNNING: list[Any] = []


def _prctl() -> Any:
    """libc's ``prctl`` (Linux), resolved in the parent: the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(parent: int) -> Any:
    """``preexec_fn`` of the server: its own process group (a Ctrl-C in the terminal goes to
    the CLI, which stops the server in order) and, on Linux, ``PR_SET_PDEATHSIG`` = SIGTERM
    so the kernel stops it when the process that started it dies (even by ``kill -9``)."""
    prctl = _prctl()

    def setup() -> None:  # runs in the child between fork and exec: no imports, no locks
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def _server_class() -> type:
    """Prefect's :class:`~prefect.server.api.server.SubprocessASGIServer` with one hook
    changed, ``_run_uvicorn_command`` (the same command and environment as Prefect's):

    - the server runs in its own process group and dies with its parent (:func:`_child_setup`);
    - its stdout/stderr go to ``PREFECT_HOME/otaudit-server.log``, not the user's terminal
      (uvicorn's shutdown noise is not an error of the audit).
    """
    import subprocess

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class TemporaryServer(SubprocessASGIServer):
        log_path: str | None = None

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            self.log_path = _log_path("otaudit-server.log")
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                return subprocess.Popen(
                    args=[
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--app-dir",
                        str(prefect.__module_path__.parent),
                        "--factory",
                        "prefect.server.api.server:create_app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--log-level",
                        "error",
                        "--lifespan",
                        "on",
                    ],
                    env={
                        **os.environ,
                        "PREFECT_UI_ENABLED": "0",
                        "PREFECT__SERVER_EPHEMERAL": "1",
                        "PREFECT__SERVER_FINAL": "1",
                        **get_current_settings().to_environment_variables(exclude_unset=True),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_child_setup(os.getpid()),
                )
            finally:
                log.close()

    return TemporaryServer


def start_temporary_server(timeout_s: float | None = None) -> Any:
    """Start a temporary Prefect server on a free loopback port (see :func:`_server_class`);
    the caller stops it (``.stop()``). ``timeout_s``: default
    ``config.PREFECT_SERVER_START_TIMEOUT_S`` (the setting
    ``OTAUDIT_PREFECT_SERVER_START_TIMEOUT_S`` reaches it through :func:`prefect_api`)."""
    from otaudit.tasks.settings import PREFECT_SERVER_START_TIMEOUT_S

    server = _server_class()(port=_free_port())
    try:
        server.start(timeout=max(1, math.ceil(timeout_s or PREFECT_SERVER_START_TIMEOUT_S)))
    except Exception as e:  # say where the server's own output went
        server.stop()
        raise RuntimeError(f"{e} (server log: {server.log_path})") from e
    except BaseException:  # an interrupt: never leave it running
        server.stop()
        raise
    return server


def server_pids() -> list[int]:
    """Process ids of the temporary servers that :func:`prefect_api` is running now."""
    return [s.server_process.pid for s in _RUNNING if s.server_process is not None]


def stop_temporary_servers() -> None:
    """Stop every running temporary server now (SIGTERM, then SIGKILL after 2 s), without
    draining logs: for an interrupt whose orderly shutdown ran out of time."""
    for server in list(_RUNNING):
        proc = server.server_process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except Exception:  # noqa: BLE001 - TimeoutExpired: it did not stop
                proc.kill()
        with contextlib.suppress(ValueError):
            _RUNNING.remove(server)


@contextlib.contextmanager
def prefect_api(settings: Any, *, timeout_s: float | None = None) -> Iterator[str]:
    """Make sure a Prefect API is available and exported; yields its URL.

    Order: ``settings.prefect_api_url`` (``OTAUDIT_PREFECT_API_URL``), else the active
    Prefect setting ``PREFECT_API_URL`` (environment, profile, or a test harness), else a
    temporary local server started here (uvicorn subprocess on a free loopback port, the
    database under ``PREFECT_HOME``, its own process group, dying with this process) and
    stopped on exit. In every case the URL is exported as ``PREFECT_API_URL`` for the Dask
    workers started inside the block, and set in Prefect's settings context; ephemeral mode
    is switched off inside the block, so nothing (a log worker, a client in another thread)
    can start a second server.

    On exit Prefect's log and event workers are drained (bounded wait) while the URL is
    still set and the server still running; then the server stops.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
        temporary_settings,
    )

    url = _configured_api_url(settings)
    server = None
    if url is None:
        server = start_temporary_server(
            timeout_s or getattr(settings, "prefect_server_start_timeout_s", None)
        )
        _RUNNING.append(server)
        url = server.api_url
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(
            updates={PREFECT_API_URL: url, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}
        ):
            drain_s = 5.0
            try:
                yield url
            except BaseException:  # an interrupt or an error: wait less for the logs
                drain_s = 1.0
                raise
            finally:
                if server is not None and server in _RUNNING:
                    drain_prefect_logs(drain_s)
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        if server is not None:
            server.stop()
            with contextlib.suppress(ValueError):
                _RUNNING.remove(server)


def drain_prefect_logs(timeout_s: float = 5.0) -> None:
    """Flush Prefect's log and event workers that exist (none is created here), waiting at
    most ``timeout_s`` each: before the server they talk to goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # best effort: the run's outcome is known
            worker.drain_all(timeout=timeout_s)


def cancel_flow_run(flow_run_id: Any, message: str, timeout_s: float = 3.0) -> bool:
    """Set a flow run's state to Cancelled (forced: the engine may already have marked it
    Crashed on the interrupt). Call inside :func:`prefect_api`. True when the API took it."""
    if flow_run_id is None:
        return False
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True, httpx_settings={"timeout": timeout_s}) as client:
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
        return True
    except Exception:  # noqa: BLE001 - the API may be gone already; the exit says why
        return False


def _log_path(name: str) -> str:
    """``PREFECT_HOME/<name>`` (the folder is created)."""
    from prefect.settings import PREFECT_HOME

    home = str(PREFECT_HOME.value())
    os.makedirs(home, exist_ok=True)
    return os.path.join(home, name)


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (appending) inside the block: child processes
    started there inherit it; this process's stderr is restored on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


@contextlib.contextmanager
def local_cluster(settings: Any, *, close_timeout_s: float = 3.0) -> Iterator[str]:
    """A Dask LocalCluster sized by the settings (:func:`_cluster_kwargs`); yields its
    scheduler address. Call it inside :func:`prefect_api` (the workers inherit the URL).

    The worker processes (and multiprocessing's resource tracker) are started with their
    stderr on ``PREFECT_HOME/otaudit-dask.log`` instead of the terminal (file descriptor 2
    is pointed there while the cluster starts, then restored): a Ctrl-C reaches every
    process of the terminal's foreground group, and a worker's ``KeyboardInterrupt``
    traceback or its shutdown noise is not the user's business; the CLI decides what an
    interrupt does (cancel the run, close this cluster in order). Workers stop when this
    process exits or dies (distributed's parent-alive pipe). Failures of the work itself
    are in the report, with their reasons.
    """
    from distributed import LocalCluster
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        with _stderr_to(_log_path("otaudit-dask.log")):
            cluster = LocalCluster(**_cluster_kwargs(settings))
    except BaseException:  # interrupted while starting: its workers die with this process;
        for partial in set(SpecCluster._instances) - before:  # no close at exit (a traceback)
            partial.shutdown_on_close = False
        raise
    try:
        yield cluster.scheduler_address
    finally:
        with contextlib.suppress(Exception):  # closing is best effort; workers die with us
            cluster.close(timeout=close_timeout_s)


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
        # the scheduler's HTTP routes (health, metrics) on a free port, not 8787 (in use ->
        # a multi-line UserWarning on every run of a second audit on the machine)
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": ":0"},
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
