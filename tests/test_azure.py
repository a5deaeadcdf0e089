"""Azure Blob end to end against azurite (Microsoft's emulator, a real Blob HTTP API on
loopback): datasets and the report on ``az://`` (adlfs), through ``otaudit audit`` with a
real Dask LocalCluster and Prefect's harness, give the same numbers as otaudit.otdd / otaudit.ot_bounds on the
same arrays in memory (what the audit of local files gives: tests/test_flow.py).

Tolerance: EXACT equality. Both runs read bit-identical float32 Parquet columns and run the
same deterministic code (exact LP for OTDD, seeded mini-batch bounds); only the storage
differs. Skips, with the install command, when azurite (npm) or adlfs is not installed.
"""

from __future__ import annotations

import pytest

from otaudit.data.storage import Store
from tests import emulators


@pytest.fixture(scope="module")
def azurite_options():
    with emulators.azurite() as opts:
        yield opts


@pytest.mark.slow
def test_audit_on_azure_equals_in_memory(azurite_options, dask_cluster, tmp_path):
    remote, expected, prefix, out = emulators.audit_remote(
        "az", azurite_options, dask_cluster, tmp_path
    )
    assert emulators.pair_values(remote) == expected
    runs = Store(prefix, azurite_options)
    assert runs.list_published() == [f"run={remote.run_id}"]
    assert {"pairs.parquet", "datasets.parquet", "summary.md", "_SUCCESS"} <= set(
        runs.ls(f"run={remote.run_id}")
    )
    # the connection string (with the account key) is masked everywhere it is written
    assert emulators.AZURITE_KEY not in remote.summary and emulators.AZURITE_KEY not in out


def test_missing_container_is_one_line(azurite_options):
    from otaudit.data.storage import check_reachable
    from otaudit.errors import StorageError

    with pytest.raises(StorageError) as e:
        check_reachable(Store("az://no-such-container-x/audits", azurite_options))
    msg = str(e.value)
    assert "\n" not in msg and "does not exist" in msg and emulators.AZURITE_KEY not in msg
