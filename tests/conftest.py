"""Shared fixtures: real parts only (moto's S3 HTTP server on loopback, Prefect's test
harness, Dask LocalCluster). Threads are pinned: these machines have 2 cores."""

from __future__ import annotations

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import logging  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# moto's S3 server logs every request through werkzeug, whose logger adds a stream handler on
# sys.stderr at its FIRST request. If that happens inside a CliRunner invocation, the handler
# keeps the runner's (soon closed) stream and every later request prints "--- Logging error
# ---" tracebacks into whatever output is captured next, breaking "one line" assertions in
# an order-dependent way. Give werkzeug its own handler on the real stderr, warnings only.
_werkzeug = logging.getLogger("werkzeug")
_werkzeug.setLevel(logging.WARNING)
_werkzeug.addHandler(logging.StreamHandler(sys.__stderr__))


# A test run started as a background job (``cmd &`` in a non-interactive shell, some CI
# runners) inherits SIGINT *ignored*, and an ignored signal stays ignored across exec: the
# interrupt tests' child processes would then never see the SIGINT they are sent (otaudit
# deliberately leaves an inherited SIG_IGN alone). Python's own handler is reset to the
# default action on exec, so installing it here gives every child SIGINT's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP API on loopback (moto's ThreadedMotoServer). Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; yields (bucket_name, storage_options)."""
    import uuid

    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_bucket(Bucket=name)  # no region_name against moto (ECOSYSTEM.md)
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    yield name, opts


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness (a real temporary API server + database), once per session."""
    from prefect.testing.utilities import prefect_test_harness

    from otaudit.config import load_settings

    timeout = int(load_settings().prefect_server_start_timeout_s)
    with prefect_test_harness(server_startup_timeout=timeout):
        yield


# --- orchestration fixtures (owner: orchestration helper; appended block) ---------------


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness):
    """The harness's API URL, exported so that Dask worker processes started afterwards
    talk to it instead of each spawning a temporary server (ECOSYSTEM.md trap)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    yield url
    if previous is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def dask_cluster(prefect_api_url):
    """A real Dask LocalCluster (2 worker processes x 1 thread) shared by the pipeline tests;
    yields its scheduler address (pass it as ``--dask-address``)."""
    from distributed import LocalCluster

    env = {
        k: os.environ[k]
        for k in (
            "PREFECT_API_URL",
            "OMP_NUM_THREADS",
            "PREFECT_SERVER_ANALYTICS_ENABLED",
            "DO_NOT_TRACK",
        )
    }
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
    ) as cluster:
        yield cluster.scheduler_address


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.slow`` checks (multi-minute end-to-end runs: emulator audits, two-run
    history, corruption re-runs, killed workers, real signals) are on demand: ``make
    test-all`` (``OTAUDIT_SLOW=1``) or ``-m slow`` runs them; ``make test`` (CI) skips them,
    with this reason, to stay within CI's time on 2 cores."""
    if os.environ.get("OTAUDIT_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow end-to-end check: run with `make test-all`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
