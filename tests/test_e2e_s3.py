"""End to end through the command line against moto's real S3 HTTP server, a Dask
LocalCluster (2 workers x 1 thread) and Prefect's harness:

datasets uploaded as Parquet to S3 → ``otaudit audit`` (typer's CliRunner) → the report read
back from S3 → values equal to direct ``otaudit.otdd`` / ``otaudit.ot_bounds`` calls.

Tolerance: EXACT equality. The pipeline and the direct call get bit-identical float32
inputs (the Parquet columns, identity embedder) and run the same deterministic code: the
exact LP (network simplex) for OTDD at this size and seeded mini-batch bounds.

Then the cache: a re-run with nothing changed embeds nothing and computes no pair (same
values); changing one dataset recomputes only that dataset and its pairs. Finally a bad
dataset among good ones gives a partial report (exit code 2) with the failed pairs listed,
and no half-written report is ever visible.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import otaudit
from otaudit.app.cli import app
from otaudit.app.demo import demo_datasets
from otaudit.audit.report import read_report
from otaudit.data.readers import write_dataset_parquet
from otaudit.data.storage import Store
from tests.helpers import CANARY_KEY, CANARY_SECRET, s3_options

N = 80
NAMES = ("vendor_a", "vendor_b", "vendor_noisy", "vendor_missing")


@pytest.fixture(scope="module")
def lake(s3_server, tmp_path_factory):
    """A bucket with four digits vendors as Parquet (row groups of 32 rows)."""
    import uuid

    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=CANARY_KEY,
        aws_secret_access_key=CANARY_SECRET,
    ).create_bucket(Bucket=bucket)
    so = s3_options(s3_server)
    data = demo_datasets()
    arrays = {}
    for name in NAMES:
        X, y = data[name]
        arrays[name] = (X[:N], y[:N])
        write_dataset_parquet(
            f"s3://{bucket}/data", name, X[:N], y[:N], storage_options=so, row_group_size=32
        )
    root = tmp_path_factory.mktemp("e2e")
    return bucket, so, arrays, root


def _write_manifest(lake, names, *, extra_datasets: str = "", tag: str = "m") -> str:
    bucket, so, _, root = lake
    ds = "\n".join(
        f"  - {{name: {n}, uri: 's3://{bucket}/data/{n}.parquet', features: features, "
        f"label: label}}"
        for n in names
    )
    text = (
        f"name: lake-audit\noutput: s3://{bucket}/audits\n"
        f"storage_options: {json.dumps(so)}\n"
        f"datasets:\n{ds}\n{extra_datasets}"
        "measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 32, seed: 0}\n"
        "pairs: all\n"
    )
    path = root / f"{tag}.yaml"
    path.write_text(text)
    return str(path)


def _audit(manifest: str, dask_cluster: str):
    res = CliRunner().invoke(
        app, ["audit", manifest, "--dask-address", dask_cluster, "--no-progress"]
    )
    return res, res.output


def _report_uri(output: str) -> str:
    line = next(x for x in output.splitlines() if x.startswith("report: "))
    return line[len("report: ") :]


def test_audit_cache_and_partial_failure_on_s3(lake, dask_cluster):
    bucket, so, arrays, _ = lake
    manifest = _write_manifest(lake, NAMES)

    # --- run 1: everything computed -----------------------------------------------------
    res, out = _audit(manifest, dask_cluster)
    assert res.exit_code == 0, out
    uri1 = _report_uri(out)
    assert uri1.startswith(f"s3://{bucket}/audits/lake-audit/run=")
    rep1 = read_report(f"s3://{bucket}/audits/lake-audit", so)  # prefix -> latest run
    assert rep1.uri.rstrip("/") == uri1.rstrip("/")
    rows1 = rep1.pair_rows()
    assert len(rows1) == 6 * 2 and all(r["status"] == "ok" for r in rows1)
    assert not any(r["cached"] for r in rows1)
    assert not any(r["cache_hit"] for r in rep1.dataset_rows())
    for a, b in [("vendor_a", "vendor_b"), ("vendor_b", "vendor_missing")]:
        (Xa, ya), (Xb, yb) = arrays[a], arrays[b]
        assert rep1.value(a, b, "otdd") == otaudit.otdd(Xa, ya, Xb, yb, inner="exact").value
        bnd = otaudit.ot_bounds(Xa, Xb, batch_size=32, seed=0)
        row = next(
            r
            for r in rows1
            if (r["dataset_a"], r["dataset_b"], r["measure"]) == (a, b, "ot_bounds")
        )
        assert (row["lower"], row["value"], row["upper"]) == (bnd.lower, bnd.value, bnd.upper)
    assert all(json.loads(r["params"]) for r in rows1)  # parameters recorded as JSON
    assert CANARY_SECRET not in rep1.summary and CANARY_KEY not in rep1.summary

    # --- run 2: nothing changed: no embedding, no pair computation, identical values ----
    res, out = _audit(manifest, dask_cluster)
    assert res.exit_code == 0, out
    rep2 = read_report(_report_uri(out), so)
    assert rep2.run_id > rep1.run_id
    ds2 = rep2.dataset_rows()
    assert all(r["cache_hit"] for r in ds2)
    assert all(r["embed_seconds"] == 0.0 and r["stats_seconds"] == 0.0 for r in ds2)
    rows2 = rep2.pair_rows()
    assert all(r["cached"] for r in rows2)
    key = lambda r: (r["dataset_a"], r["dataset_b"], r["measure"])  # noqa: E731
    assert {key(r): r["value"] for r in rows2} == {key(r): r["value"] for r in rows1}

    # --- run 3: one dataset changed: only it and its pairs are recomputed ---------------
    Xn, yn = arrays["vendor_noisy"]
    Xn2 = Xn + 1.0
    write_dataset_parquet(
        f"s3://{bucket}/data", "vendor_noisy", Xn2, yn, storage_options=so, row_group_size=32
    )
    res, out = _audit(manifest, dask_cluster)
    assert res.exit_code == 0, out
    rep3 = read_report(_report_uri(out), so)
    hits = {r["dataset"]: r["cache_hit"] for r in rep3.dataset_rows()}
    assert hits == {
        "vendor_a": True,
        "vendor_b": True,
        "vendor_noisy": False,
        "vendor_missing": True,
    }
    for r in rep3.pair_rows():
        touches = "vendor_noisy" in (r["dataset_a"], r["dataset_b"])
        assert r["cached"] is (not touches), key(r)
    Xa, ya = arrays["vendor_a"]
    assert (
        rep3.value("vendor_a", "vendor_noisy", "otdd")
        == otaudit.otdd(Xa, ya, Xn2, yn, inner="exact").value
    )
    assert rep3.value("vendor_a", "vendor_b", "otdd") == rep1.value("vendor_a", "vendor_b", "otdd")

    # --- run 4: a bad dataset among good ones: partial report, exit code 2 --------------
    missing = (
        f"  - {{name: ghost, uri: 's3://{bucket}/data/ghost.parquet', "
        "features: features, label: label}\n"
    )
    bad_manifest = _write_manifest(lake, NAMES, extra_datasets=missing, tag="bad")
    res, out = _audit(bad_manifest, dask_cluster)
    assert res.exit_code == 2, out
    assert "failed dataset ghost:" in out
    rep4 = read_report(_report_uri(out), so)
    failed = [r for r in rep4.pair_rows() if r["status"] == "failed"]
    assert len(failed) == 4 * 2  # ghost x 4 datasets x 2 measures
    assert all("ghost" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in rep4.pair_rows()) == 6 * 2
    ghost = next(r for r in rep4.dataset_rows() if r["dataset"] == "ghost")
    assert ghost["status"] == "failed" and ghost["error"]

    # --- no half-written report: every run prefix is complete ---------------------------
    audits = Store(f"s3://{bucket}/audits/lake-audit", so)
    runs = [r for r in audits.ls() if r != "history"]  # history/: one file per run
    assert len(runs) == 4 and all(r.startswith("run=") for r in runs)
    assert audits.ls("history") == runs  # each complete run added its pairs to history/
    for r in runs:
        assert audits.exists(r, "_SUCCESS")
        assert set(audits.ls(r)) == {
            "_SUCCESS",
            "pairs.parquet",
            "datasets.parquet",
            "summary.md",
            "heatmap.png",
            "report.html",
        }

    # --- `otaudit report` prints the latest summary -------------------------------------
    res = CliRunner().invoke(
        app, ["report", f"s3://{bucket}/audits/lake-audit", "--storage-options", json.dumps(so)]
    )
    assert res.exit_code == 0, res.output
    assert rep4.run_id in res.output and "**Status: partial**" in res.output


def test_unreachable_bucket_is_one_line_exit_1(lake, dask_cluster, tmp_path):
    bucket, so, _, _ = lake
    text = (
        f"name: nobucket\noutput: s3://no-such-bucket-{bucket}/audits\n"
        f"storage_options: {json.dumps(so)}\n"
        f"datasets:\n  - {{name: a, uri: 's3://{bucket}/data/vendor_a.parquet', "
        "features: features, label: label}\n"
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    res = CliRunner().invoke(
        app, ["audit", str(path), "--dask-address", dask_cluster, "--no-progress"]
    )
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("otaudit: error: storage")
    assert "Traceback" not in res.output and CANARY_SECRET not in res.output
