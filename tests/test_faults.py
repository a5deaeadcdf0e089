"""Faults during an audit (issue 6), on real parts only: Dask LocalClusters whose worker
processes are SIGKILLed, moto's S3 HTTP server stopped and restarted mid-run, the audit
process itself SIGKILLed and resumed, two audits publishing to one prefix at once.

What must hold every time: nothing is lost (the final report has every pair, with values
bit-identical to a clean run — also across worker counts), no half-written report is ever
visible (a run prefix without ``_SUCCESS`` is ignored by readers), finished work is not
recomputed on a rerun, credentials appear in no report, cache entry, artifact, log or
console line, and nothing written locally is world-writable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otaudit.app.cli import app
from otaudit.app.demo import demo_datasets
from otaudit.audit.report import EXIT_OK, read_report
from otaudit.data.readers import write_dataset_parquet

N = 250  # points per dataset: a pair block takes a few tenths of a second on one core
NAMES = ("vendor_a", "vendor_b", "vendor_noisy", "vendor_missing")
MEASURES = "measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 32, seed: 0}\n"
KEY = "AKIAOTAUDITRELIABILITY"
SECRET = "s3cr3t-otaudit-9f2c41d7"  # must never appear anywhere the audit writes or prints


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def _report_uri(output: str) -> str:
    return next(x for x in _lines(output) if x.startswith("report: "))[len("report: ") :]


def _values(rep) -> dict[tuple[str, str, str], tuple]:
    return {
        (r["dataset_a"], r["dataset_b"], r["measure"]): (r["value"], r["lower"], r["upper"])
        for r in rep.pair_rows()
    }


def _write_manifest(path: Path, uris: dict[str, str], output: str, extra: str = "") -> str:
    ds = "\n".join(
        f"  - {{name: {n}, uri: '{u}', features: features, label: label}}" for n, u in uris.items()
    )
    path.write_text(f"name: faults\noutput: {output}\n{extra}datasets:\n{ds}\n{MEASURES}")
    return str(path)


def _cli(args: list[str]):
    res = CliRunner().invoke(app, [*args, "--no-progress"])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory):
    """Four digits vendors as local Parquet files."""
    root = tmp_path_factory.mktemp("faults")
    data = demo_datasets()
    uris = {}
    for name in NAMES:
        X, y = data[name]
        uris[name] = write_dataset_parquet(str(root / "data"), name, X[:N], y[:N])
    return root, uris


@pytest.fixture(scope="module")
def clean_values(local_lake, dask_cluster):
    """The reference: a clean audit on the shared cluster (2 workers x 1 thread)."""
    root, uris = local_lake
    manifest = _write_manifest(root / "clean.yaml", uris, str(root / "clean"))
    code, out = _cli(["audit", manifest, "--dask-address", dask_cluster])
    assert code == EXIT_OK, out
    rep = read_report(_report_uri(out))
    assert len(rep.pair_rows()) == 6 * 2 and all(r["status"] == "ok" for r in rep.pair_rows())
    return _values(rep)


def _wait_for(pred, timeout: float, every: float = 0.02) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(every)
    return False


@pytest.mark.timeout(240)
def test_worker_killed_mid_audit_gives_identical_values(local_lake, clean_values, prefect_api_url):
    """SIGKILL the only worker of a 1-worker LocalCluster while pair blocks are on it: the
    nanny restarts it, Dask reschedules the lost tasks, the audit completes with values
    identical to the clean 2-worker run (determinism across worker counts as well)."""
    from distributed import Client, LocalCluster

    root, uris = local_lake
    env = {
        k: os.environ[k]
        for k in ("PREFECT_API_URL", "OMP_NUM_THREADS", "PREFECT_SERVER_ANALYTICS_ENABLED")
        if k in os.environ
    }
    manifest = _write_manifest(root / "kill.yaml", uris, str(root / "kill"))
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        killed: dict[str, object] = {}
        finished = threading.Event()
        pair_dir = root / "kill" / "_cache" / "pair"

        def killer() -> None:
            # Prefect's Dask keys do not carry task names: wait for the first cached pair
            # result (pair blocks are running) while the worker still has tasks to do
            def busy() -> bool:
                if finished.is_set():
                    return True
                started = pair_dir.is_dir() and any(pair_dir.glob("*.json"))
                return started and any(client.processing().values())

            if _wait_for(busy, timeout=180) and not finished.is_set():
                ((_, pid),) = client.run(os.getpid).items()
                os.kill(pid, signal.SIGKILL)
                killed["pid"], killed["at"] = pid, time.monotonic()

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        code, out = _cli(["audit", manifest, "--dask-address", cluster.scheduler_address])
        done = time.monotonic()
        finished.set()
        t.join(timeout=5)
        assert "pid" in killed, "the worker was never seen running a pair block"
        assert killed["at"] < done
        new_pids = client.run(os.getpid)
        assert killed["pid"] not in new_pids.values()  # the nanny started a fresh worker
    assert code == EXIT_OK, out
    rep = read_report(_report_uri(out))
    assert all(r["status"] == "ok" for r in rep.pair_rows())
    assert _values(rep) == clean_values


@pytest.mark.timeout(150)
def test_interrupted_run_resumes_from_cache(
    local_lake, clean_values, dask_cluster, prefect_api_url
):
    """SIGKILL the ``otaudit audit`` process after its first pair results are cached: no
    report becomes visible; the rerun recomputes no finished dataset or pair and gives the
    clean run's values. Nothing written locally is world-writable."""
    from distributed import Client

    root, uris = local_lake
    out_dir = root / "resume"
    manifest = _write_manifest(root / "resume.yaml", uris, str(out_dir))
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from otaudit.app.cli import main; main()", "audit", manifest,
         "--dask-address", dask_cluster, "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    pair_dir = out_dir / "_cache" / "pair"
    try:
        seen = _wait_for(lambda: pair_dir.is_dir() and any(pair_dir.glob("*.json")), 120, 0.05)
        assert seen, "no pair result was ever cached"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # tasks already running on the workers finish on their own: wait until the cluster idles
    with Client(dask_cluster, set_as_default=False) as client:
        idle = _wait_for(
            lambda: (
                sum(client.run(lambda dask_worker: dask_worker.state.executing_count).values()) == 0
                and not any(client.processing().values())
            ),
            60,
            0.2,
        )
        assert idle
    time.sleep(0.5)
    n_pairs_done = len(list(pair_dir.glob("*.json")))
    n_stats_done = len(list((out_dir / "_cache" / "stats_meta").glob("*.json")))
    assert n_pairs_done >= 1
    report_dir = out_dir / "faults"
    assert not report_dir.exists() or not list(report_dir.glob("run=*/_SUCCESS"))

    code, out = _cli(["audit", manifest, "--dask-address", dask_cluster])
    assert code == EXIT_OK, out
    rep = read_report(str(report_dir))  # the prefix: the only complete run is the rerun
    assert rep.uri.rstrip("/") == _report_uri(out).rstrip("/")
    rows = rep.pair_rows()
    assert sum(r["cached"] for r in rows) == n_pairs_done
    assert sum(r["cache_hit"] for r in rep.dataset_rows()) == n_stats_done
    assert _values(rep) == clean_values

    for p in out_dir.rglob("*"):
        assert not (p.stat().st_mode & 0o002), f"{p} is world-writable"


@pytest.mark.timeout(150)
def test_two_audits_publish_to_one_prefix_at_once(local_lake, clean_values, dask_cluster,
                                                  prefect_api_url):  # fmt: skip
    """Two ``otaudit audit`` processes, same manifest, same output, same cache, at once:
    both complete, each has its own complete run prefix, both equal the clean run."""
    root, uris = local_lake
    out_dir = root / "concurrent"
    manifest = _write_manifest(root / "concurrent.yaml", uris, str(out_dir))
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    cmd = [sys.executable, "-c", "from otaudit.app.cli import main; main()", "audit", manifest,
           "--dask-address", dask_cluster, "--no-progress"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=140)[0] for p in procs]
    assert [p.returncode for p in procs] == [EXIT_OK, EXIT_OK], outs
    uris_out = {_report_uri(o) for o in outs}
    assert len(uris_out) == 2
    runs = sorted((out_dir / "faults").glob("run=*"))
    assert len(runs) == 2
    for run in runs:
        assert {p.name for p in run.iterdir()} == {
            "_SUCCESS", "pairs.parquet", "datasets.parquet", "summary.md", "heatmap.png"
        }  # fmt: skip
        assert _values(read_report(str(run))) == clean_values
    assert not list(out_dir.rglob(".tmp-*"))


# --- S3 server stopped and restarted mid-run ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def _stop_moto(server) -> None:
    """Stop serving AND close the listening socket (``stop()`` alone leaves it bound, so
    clients would hang instead of being refused, and the port could not be reused)."""
    server.stop()
    server._server.server_close()


@pytest.mark.timeout(240)
def test_s3_outage_mid_run_then_rerun_completes(tmp_path, dask_cluster, prefect_api_url):
    """moto's S3 server (our own, fixed port) goes away for 4 s once the first embeddings
    are cached, then comes back on the same port with its state (moto keeps objects in
    process memory, not in the server object). The run either completes through retries or
    fails with a one-line reason; no run prefix without ``_SUCCESS`` is ever read; the rerun
    completes with the right values. Credentials appear nowhere."""
    import boto3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import LogSort

    import otaudit

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = _start_moto(port)
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    bucket = f"outage-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    so = {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": endpoint},
        "config_kwargs": {"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 3}},
    }
    data = demo_datasets()
    arrays = {}
    uris = {}
    for name in NAMES[:3]:
        X, y = data[name]
        arrays[name] = (X[:80], y[:80])
        uris[name] = write_dataset_parquet(
            f"s3://{bucket}/data", name, X[:80], y[:80], storage_options=so, row_group_size=40
        )
    manifest = _write_manifest(
        tmp_path / "s3.yaml", uris, f"s3://{bucket}/audits", f"storage_options: {json.dumps(so)}\n"
    )
    outage: dict[str, float] = {}

    def chaos() -> None:
        def cached() -> bool:
            try:
                r = s3.list_objects_v2(Bucket=bucket, Prefix="audits/_cache/emb/")
            except Exception:  # noqa: BLE001 - the server is ours; keep polling
                return False
            return r.get("KeyCount", 0) >= 1

        if _wait_for(cached, 120, 0.05):
            _stop_moto(server)
            outage["stopped"] = time.monotonic()
            time.sleep(4)
            holder["server"] = _start_moto(port)
            outage["restarted"] = time.monotonic()

    holder = {"server": server}
    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    try:
        code1, out1 = _cli(["audit", manifest, "--dask-address", dask_cluster])
        t.join(timeout=30)
        assert "stopped" in outage and "restarted" in outage, "the outage never happened"
        # either the retries carried the run through, or it stopped with one line
        assert code1 in (0, 1, 2), out1
        if code1 == 1:
            errs = [x for x in _lines(out1) if x.startswith("otaudit: error: ")]
            assert len(errs) == 1 and "fix:" in errs[0], out1
        assert "Traceback" not in out1

        # no half-written report is readable: every listed run is complete or ignored
        keys = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket=bucket, Prefix="audits/faults/").get("Contents", [])
        ]
        runs = {k.split("/")[2] for k in keys}
        for run in runs:
            files = {k.split("/", 3)[3] for k in keys if k.split("/")[2] == run}
            if "_SUCCESS" in files:
                assert files == {
                    "_SUCCESS", "pairs.parquet", "datasets.parquet", "summary.md", "heatmap.png"
                }  # fmt: skip

        code2, out2 = _cli(["audit", manifest, "--dask-address", dask_cluster])
        assert code2 == EXIT_OK, out2
        rep = read_report(f"s3://{bucket}/audits/faults", so)  # latest complete run
        assert rep.uri.rstrip("/") == _report_uri(out2).rstrip("/")
        assert all(r["status"] == "ok" for r in rep.pair_rows())
        (Xa, ya), (Xb, yb) = arrays["vendor_a"], arrays["vendor_b"]
        assert (
            rep.value("vendor_a", "vendor_b", "otdd")
            == otaudit.otdd(Xa, ya, Xb, yb).value
        )

        # credentials: not in any object written, the console, artifacts or Prefect logs
        for k in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]:
            if k.startswith("audits/"):
                body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                assert SECRET.encode() not in body and KEY.encode() not in body, k
        for text in (out1, out2, rep.summary):
            assert SECRET not in text and KEY not in text
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(limit=200)
            logs = client.read_logs(limit=200, sort=LogSort.TIMESTAMP_DESC)
        assert arts and logs
        blob = json.dumps([a.model_dump(mode="json") for a in arts]) + json.dumps(
            [lg.model_dump(mode="json") for lg in logs]
        )
        assert SECRET not in blob and KEY not in blob
    finally:
        _stop_moto(holder["server"])
