"""Where work runs: each Dask worker owns one GPU (round-robin), CPU without CUDA.

The GPU branch cannot run on CI (no GPU); what runs here is the mapping from worker names
to GPUs (checked against the names a real LocalCluster gives its workers) and the CPU
fallback.
"""

from __future__ import annotations

import pytest
import torch

from otaudit.errors import InputError
from otaudit.tasks.devices import gpu_index_for, worker_device


def test_gpu_index_round_robin_over_worker_indices():
    assert [gpu_index_for(i, 4) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    # `dask worker --nworkers k --name node7` names workers node7-0 ... node7-(k-1)
    assert [gpu_index_for(f"node7-{i}", 2) for i in range(4)] == [0, 1, 0, 1]
    # one visible GPU (CUDA_VISIBLE_DEVICES per worker) or none: always 0
    assert gpu_index_for("tcp://10.0.0.3:4411", 1) == 0
    assert gpu_index_for(5, 0) == 0


def test_gpu_index_for_unnumbered_names_is_stable_and_in_range():
    names = ["alpha", "beta", "gamma", "tcp://10.0.0.3:abc"]
    first = [gpu_index_for(n, 3) for n in names]
    assert first == [gpu_index_for(n, 3) for n in names]
    assert all(0 <= k < 3 for k in first)


def test_worker_device_without_cuda_is_cpu():
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU fallback; a CUDA machine takes the GPU branch")
    assert worker_device("auto") == torch.device("cpu")
    assert worker_device("cpu") == torch.device("cpu")


def test_worker_device_rejects_unknown_preference():
    with pytest.raises(InputError, match="OTAUDIT_PAIR_DEVICE.*fix"):
        worker_device("gpu")


def test_local_cluster_workers_get_distinct_gpus(dask_cluster):
    """The names a real LocalCluster gives its workers spread them over the GPUs."""
    from distributed import Client, get_worker

    def probe() -> tuple[int, str]:  # runs as a task, like the pipeline's tasks
        return gpu_index_for(get_worker().name, 2), str(worker_device("auto"))

    with Client(dask_cluster, set_as_default=False) as client:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        futures = [client.submit(probe, workers=[w], pure=False) for w in workers]
        got = client.gather(futures)
    assert len(workers) == 2
    assert sorted(k for k, _ in got) == [0, 1]
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert all(d.startswith(expected) for _, d in got)


# --- one task per unit of work, retried on storage errors ------------------------------------


def test_outside_a_task_run_nothing_is_retried():
    from otaudit.errors import StorageError
    from otaudit.tasks.retry import attempts_left, reraise_for_retry

    assert attempts_left() == 0
    assert reraise_for_retry(StorageError("s3 down; fix: wait")) is False


def test_one_task_retries_storage_errors_then_returns_its_failure(prefect_harness):
    """The pattern of every task (real Prefect engine, in-process): a StorageError is
    re-raised while attempts are left (Prefect retries the same task run); on the last
    attempt — or at once for bad input — the failure is RETURNED, so the flow goes on."""
    from prefect import flow, task

    from otaudit.errors import InputError, StorageError, describe_error
    from otaudit.tasks.retry import is_transient, reraise_for_retry

    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=is_transient)
    def unit(name: str, n_storage_failures: int, bad_input: bool = False) -> str:
        calls.append(name)
        try:
            if bad_input:
                raise InputError("bad column", dataset=name, field="features", fix="rename it")
            if calls.count(name) <= n_storage_failures:
                raise StorageError(f"storage down for {name}; fix: retry later")
            return "ok"
        except Exception as e:  # noqa: BLE001 - the tasks' own pattern
            if reraise_for_retry(e):
                raise
            return f"failed: {describe_error(e)}"

    @flow
    def compose() -> list[str]:
        return [unit("flaky", 2), unit("down", 9), unit("bad", 0, bad_input=True)]

    assert compose() == [
        "ok",
        "failed: storage down for down; fix: retry later",
        "failed: dataset 'bad', field 'features': bad column; fix: rename it",
    ]
    assert calls.count("flaky") == 3 and calls.count("down") == 3  # 1 try + 2 retries
    assert calls.count("bad") == 1  # bad input is not retried


# --- the temporary Prefect server: its own process group, dies with its parent ---------------


def test_temporary_server_has_own_group_and_dies_with_kill_9(tmp_path):
    """A process starts a temporary server (flows.runtime.start_temporary_server) and is
    killed with SIGKILL (no atexit, no cleanup): the kernel's death signal (Linux
    PR_SET_PDEATHSIG) stops the server within seconds. The server is in its own process
    group, so a Ctrl-C in the terminal does not reach it before the CLI stops it in order."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    if not sys.platform.startswith("linux"):
        pytest.skip("the death signal is Linux's prctl")
    code = (
        "import sys, time\n"
        "from otaudit.flows.runtime import start_temporary_server\n"
        "s = start_temporary_server()\n"
        "print(s.server_process.pid, s.api_url, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    # migrate first: on a loaded machine a fresh database can miss the server's start timeout
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    subprocess.run(
        [prefect, "server", "database", "upgrade", "-y"],
        env=env, capture_output=True, timeout=600, check=True,
    )  # fmt: skip
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = parent.stdout.readline()
        pid, url = int(line.split()[0]), line.split()[1]
        server = psutil.Process(pid)
        assert "uvicorn" in " ".join(server.cmdline()) and url.endswith("/api")
        assert os.getpgid(pid) == pid != os.getpgid(parent.pid)  # its own process group
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 15
    while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the temporary server outlived its parent"
        time.sleep(0.2)
