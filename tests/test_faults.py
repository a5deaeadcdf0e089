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
from tests.helpers import CANARY_KEY, CANARY_SECRET

N = 250  # points per dataset: a pair block takes a few tenths of a second on one core
NAMES = ("vendor_a", "vendor_b", "vendor_noisy", "vendor_missing")
MEASURES = "measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 32, seed: 0}\n"
KEY, SECRET = CANARY_KEY, CANARY_SECRET  # must never appear anywhere the audit writes or prints


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
            "_SUCCESS", "pairs.parquet", "datasets.parquet", "summary.md", "heatmap.png", "report.html"
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


class _S3Lake:
    """Three vendors on our own moto S3 server (fixed port, so it can be stopped and
    restarted with its state: moto keeps objects in process memory, not in the server)."""

    def __init__(self, tmp_path: Path):
        import boto3

        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = _start_moto(self.port)
        self.s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET
        )
        self.bucket = f"outage-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.so = {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint},
            "config_kwargs": {
                "connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 3}
            },
        }  # fmt: skip
        data = demo_datasets()
        self.arrays, uris = {}, {}
        for name in NAMES[:3]:
            X, y = data[name]
            self.arrays[name] = (X[:80], y[:80])
            uris[name] = write_dataset_parquet(
                f"s3://{self.bucket}/data", name, X[:80], y[:80], storage_options=self.so,
                row_group_size=40,
            )  # fmt: skip
        self.manifest = _write_manifest(
            tmp_path / "s3.yaml",
            uris,
            f"s3://{self.bucket}/audits",
            f"storage_options: {json.dumps(self.so)}\n",
        )

    def first_embedding_cached(self) -> bool:
        try:
            r = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="audits/_cache/emb/")
        except Exception:  # noqa: BLE001 - the server is ours; keep polling
            return False
        return r.get("KeyCount", 0) >= 1

    def stop(self) -> None:
        _stop_moto(self.server)

    def restart(self) -> None:
        self.server = _start_moto(self.port)

    def keys(self, prefix: str) -> list[str]:
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return [o["Key"] for o in out]

    def published_runs(self) -> dict[str, set[str]]:
        """Run prefix -> its files, for every run that has ``_SUCCESS``."""
        keys = self.keys("audits/faults/")
        runs = {k.split("/")[2] for k in keys}
        files = {r: {k.split("/", 3)[3] for k in keys if k.split("/")[2] == r} for r in runs}
        return {r: f for r, f in files.items() if "_SUCCESS" in f}


def _outage_during_audit(lake: _S3Lake, dask_cluster: str, down_s: float | None):
    """Run ``otaudit audit`` while the S3 server goes away once the first embeddings are
    cached: for ``down_s`` seconds, or (None) until the audit has returned. Returns
    ``(exit code, output, outage times)``."""
    outage: dict[str, float] = {}
    returned = threading.Event()

    def chaos() -> None:
        if _wait_for(lake.first_embedding_cached, 120, 0.05):
            lake.stop()
            outage["stopped"] = time.monotonic()
            if down_s is None:
                returned.wait(timeout=200)
            else:
                time.sleep(down_s)
            lake.restart()
            outage["restarted"] = time.monotonic()

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    code, out = _cli(["audit", lake.manifest, "--dask-address", dask_cluster])
    outage["returned"] = time.monotonic()
    returned.set()
    t.join(timeout=30)
    assert "stopped" in outage and "restarted" in outage, "the outage never happened"
    return code, out, outage


def _rerun_completes_and_leaks_nothing(lake: _S3Lake, dask_cluster: str, *first_outputs: str):
    """The rerun completes with the right values; credentials are in no object written,
    console line, artifact or Prefect log."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import LogSort

    import otaudit

    code2, out2 = _cli(["audit", lake.manifest, "--dask-address", dask_cluster])
    assert code2 == EXIT_OK, out2
    rep = read_report(f"s3://{lake.bucket}/audits/faults", lake.so)  # latest complete run
    assert rep.uri.rstrip("/") == _report_uri(out2).rstrip("/")
    assert all(r["status"] == "ok" for r in rep.pair_rows())
    (Xa, ya), (Xb, yb) = lake.arrays["vendor_a"], lake.arrays["vendor_b"]
    assert rep.value("vendor_a", "vendor_b", "otdd") == otaudit.otdd(Xa, ya, Xb, yb).value
    for k in lake.keys("audits/"):
        body = lake.s3.get_object(Bucket=lake.bucket, Key=k)["Body"].read()
        assert SECRET.encode() not in body and KEY.encode() not in body, k
    for text in (*first_outputs, out2, rep.summary):
        assert SECRET not in text and KEY not in text
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(limit=200)
        logs = client.read_logs(limit=200, sort=LogSort.TIMESTAMP_DESC)
    assert arts and logs
    blob = json.dumps([a.model_dump(mode="json") for a in arts]) + json.dumps(
        [lg.model_dump(mode="json") for lg in logs]
    )
    assert SECRET not in blob and KEY not in blob


REPORT_FILES = {
    "_SUCCESS", "pairs.parquet", "datasets.parquet", "summary.md", "heatmap.png", "report.html",
}  # fmt: skip


@pytest.mark.timeout(240)
def test_s3_outage_shorter_than_a_retry_delay_completes(tmp_path, dask_cluster, prefect_api_url):
    """The S3 server goes away for 0.3 s, well under ``config.TASK_RETRY_DELAY_S`` (1 s):
    any task attempt that failed during the window is retried after the server is back,
    so the run completes (exit 0) with every pair computed."""
    from otaudit import config

    assert config.TASK_RETRIES >= 1 and config.TASK_RETRY_DELAY_S >= 3 * 0.3
    lake = _S3Lake(tmp_path)
    try:
        code, out, outage = _outage_during_audit(lake, dask_cluster, down_s=0.3)
        assert outage["restarted"] < outage["returned"], "the outage ended after the run"
        assert code == EXIT_OK, out
        rep = read_report(_report_uri(out), lake.so)
        assert len(rep.pair_rows()) == 3 * 2 and all(r["status"] == "ok" for r in rep.pair_rows())
        assert list(lake.published_runs().values()) == [REPORT_FILES]
        _rerun_completes_and_leaks_nothing(lake, dask_cluster, out)
    finally:
        _stop_moto(lake.server)


@pytest.mark.timeout(240)
def test_s3_outage_outlasting_the_retries_fails_in_one_line(
    tmp_path, dask_cluster, prefect_api_url
):
    """The S3 server stays away from the first cached embedding until the audit returns:
    the report cannot be published, so the run fails (exit 1) with ONE line naming the
    store and a fix; no run prefix is published (nothing half-written is readable); the
    rerun, with the server back, completes with the right values."""
    lake = _S3Lake(tmp_path)
    try:
        code, out, _ = _outage_during_audit(lake, dask_cluster, down_s=None)
        assert code == 1, out
        errs = [x for x in _lines(out) if x.startswith("otaudit: error: ")]
        assert len(errs) == 1 and "fix:" in errs[0], out
        assert "Traceback" not in out
        assert lake.published_runs() == {}
        _rerun_completes_and_leaks_nothing(lake, dask_cluster, out)
        assert list(lake.published_runs().values()) == [REPORT_FILES]
    finally:
        _stop_moto(lake.server)
