"""Bad input through the whole pipeline (issue 6): ONE audit over a registry that mixes good
datasets with every kind of bad one, run through the command line on the shared Dask
LocalCluster and Prefect's harness.

What must hold: every bad dataset fails only its own pairs, with a one-line reason naming the
dataset, the field and the fix (on stderr, in ``datasets.parquet`` and in ``pairs.parquet``);
every other pair is computed (values equal to direct calls of the public API); the report is
published and the exit code is 2 (partial). Manifest-level mistakes (duplicate names, names
that would escape the output prefix, malformed or unsafe YAML) stop the audit before any
server or cluster starts: exit 1, one line.

The unit-level versions of these checks (every reader, every store) live in
tests/test_io.py, tests/test_manifest.py and tests/test_storage.py; RELIABILITY.md maps each
case to its test.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import otaudit
from otaudit.app.cli import app
from otaudit.app.demo import demo_datasets
from otaudit.audit.report import EXIT_PARTIAL, read_report
from otaudit.data.readers import write_dataset_parquet
from tests.helpers import CANARY_KEY, CANARY_SECRET, s3_options

N = 60
GOOD = ("good_a", "good_b", "single_row", "single_class", "dim3")
#: bad dataset -> (field named in its one-line reason, words the reason must contain)
BAD = {
    "nan_feats": ("features", "NaN or inf"),
    "empty": ("uri", "empty (0 rows"),
    "no_label_col": ("label", "unknown column 'label'"),
    "unknown_feat": ("features", "unknown column 'pixels'"),
    "text_feats": ("features", "not numeric"),
    "corrupt": ("uri", "corrupt or not Parquet"),
    "missing_file": ("uri", "not found"),
    "no_bucket": ("uri", "not found"),
}


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, s3_server):
    """Good and bad datasets on local disk (+ one in a bucket that does not exist on S3)."""
    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    data.mkdir()
    d = demo_datasets()
    Xa, ya = d["vendor_a"]
    Xb, yb = d["vendor_b"]
    arrays = {
        "good_a": (Xa[:N], ya[:N]),
        "good_b": (Xb[:N], yb[:N]),
        "single_row": (Xa[N : N + 1], ya[N : N + 1]),
        "single_class": (Xb[yb == 3][:20], yb[yb == 3][:20]),
        "dim3": (Xa[:N, :3], ya[:N]),
    }
    uris = {n: write_dataset_parquet(str(data), n, X, y) for n, (X, y) in arrays.items()}
    Xn = Xa[:N].copy()
    Xn[7, 2] = np.nan
    Xn[9, 0] = np.inf
    uris["nan_feats"] = write_dataset_parquet(str(data), "nan_feats", Xn, ya[:N])
    pq.write_table(
        pa.table(
            {
                "features": pa.array([], type=pa.list_(pa.float32(), 4)),
                "label": pa.array([], type=pa.int64()),
            }
        ),
        data / "empty.parquet",
    )
    uris["empty"] = str(data / "empty.parquet")
    uris["no_label_col"] = write_dataset_parquet(str(data), "no_label_col", Xa[:N])  # no label
    uris["unknown_feat"] = uris["good_a"]  # asks for a column `pixels` that is not there
    pq.write_table(
        pa.table({"features": ["a", "b", "c"], "label": [0, 1, 0]}), data / "text.parquet"
    )
    uris["text_feats"] = str(data / "text.parquet")
    (data / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    uris["corrupt"] = str(data / "corrupt.parquet")
    uris["missing_file"] = str(data / "does_not_exist.parquet")
    uris["no_bucket"] = "s3://no-such-bucket-otaudit/x.parquet"
    s3_opts = s3_options(s3_server)

    lines = [f"name: badinput\noutput: {root / 'out'}\ndatasets:"]
    for name in (*GOOD, *BAD):
        feats = "pixels" if name == "unknown_feat" else "features"
        extra = f", storage_options: {json.dumps(s3_opts)}" if name == "no_bucket" else ""
        lines.append(
            f"  - {{name: {name}, uri: '{uris[name]}', features: {feats}, label: label{extra}}}"
        )
    lines.append("measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 16, seed: 0}")
    manifest = root / "manifest.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return root, str(manifest), arrays


def test_bad_inputs_fail_only_their_own_pairs(registry, dask_cluster):
    root, manifest, arrays = registry
    res = CliRunner().invoke(
        app, ["audit", manifest, "--dask-address", dask_cluster, "--no-progress"]
    )
    out = res.output
    assert res.exit_code == EXIT_PARTIAL, out
    assert "Traceback" not in out

    # stderr/stdout: one line per failed dataset, naming dataset, field and fix
    failed_lines = {
        ln.split(":", 1)[0].removeprefix("failed dataset "): ln
        for ln in _lines(out)
        if ln.startswith("failed dataset ")
    }
    assert set(failed_lines) == set(BAD), out
    for name, (field, needle) in BAD.items():
        line = failed_lines[name]
        assert f"dataset {name!r}" in line, line
        assert f"field {field!r}" in line, line
        assert needle in line and "fix:" in line, line
        assert CANARY_SECRET not in line and CANARY_KEY not in line  # never printed

    report_uri = next(x for x in _lines(out) if x.startswith("report: "))[len("report: ") :]
    rep = read_report(report_uri)
    assert rep.uri.rstrip("/") == report_uri.rstrip("/")

    # datasets.parquet: good ones ok, bad ones failed with the same one-line reason
    ds = {r["dataset"]: r for r in rep.dataset_rows()}
    assert set(ds) == set(GOOD) | set(BAD)
    for name in GOOD:
        assert ds[name]["status"] == "ok" and ds[name]["error"] is None, ds[name]
    for name, (field, needle) in BAD.items():
        row = ds[name]
        assert row["status"] == "failed" and row["n_rows"] is None
        assert needle in row["error"] and f"field {field!r}" in row["error"]
        assert "\n" not in row["error"] and CANARY_SECRET not in row["error"]
    assert ds["single_row"]["n_rows"] == 1 and ds["single_class"]["n_classes"] == 1

    # pairs.parquet: a pair fails iff one of its datasets failed, or the dimensions differ
    rows = rep.pair_rows()
    names = [*GOOD, *BAD]
    assert len(rows) == len(names) * (len(names) - 1) // 2 * 2
    for r in rows:
        a, b = r["dataset_a"], r["dataset_b"]
        if a in BAD or b in BAD:
            bad = a if a in BAD else b
            assert r["status"] == "failed", r
            assert r["error"].startswith(f"dataset {bad!r} failed: ") and BAD[bad][1] in r["error"]
            assert r["value"] is None
        elif "dim3" in (a, b):
            assert r["status"] == "failed", r
            assert "dimension mismatch" in r["error"] and "field 'features'" in r["error"]
            assert f"{a!r} has d=" in r["error"] and f"{b!r} has d=" in r["error"]
            assert "fix:" in r["error"] and "\n" not in r["error"]
        else:
            assert r["status"] == "ok" and r["error"] is None, r
            assert r["value"] is not None and np.isfinite(r["value"])
    n_ok = sum(r["status"] == "ok" for r in rows)
    assert n_ok == 6 * 2  # the 6 pairs among good_a, good_b, single_row, single_class

    # the computed pairs are the same numbers a direct call gives (nothing lost or altered)
    for a, b in [("good_a", "good_b"), ("good_a", "single_row"), ("good_b", "single_class")]:
        (X1, y1), (X2, y2) = arrays[a], arrays[b]
        assert rep.value(a, b, "otdd") == otaudit.otdd(X1, y1, X2, y2, inner="exact").value
        assert rep.value(a, b, "ot_bounds") == otaudit.ot_bounds(X1, X2, batch_size=16).value

    # the summary lists failed datasets with their reasons; nothing half-written is left
    for name in BAD:
        assert f"dataset `{name}`" in rep.summary
    assert "**Status: partial**" in rep.summary
    run_dirs = sorted((root / "out" / "badinput").glob("run=*"))  # (history/ beside them)
    assert len(run_dirs) == 1 and (run_dirs[0] / "_SUCCESS").is_file()
    assert not [p for p in (root / "out").rglob(".tmp-*")]


MANIFEST_OK = (
    "name: m\noutput: /tmp/otaudit-never-written\ndatasets:\n"
    "  - {name: a, uri: a.parquet}\n  - {name: b, uri: b.parquet}\n"
)


@pytest.mark.parametrize(
    "text,needles",
    [
        (
            MANIFEST_OK.replace("name: b,", "name: a,"),
            ["dataset 'a', field 'name'", "duplicate dataset name"],
        ),
        (
            MANIFEST_OK.replace("name: b,", "name: ../../etc,"),
            ["dataset '../../etc', field 'name'", "not a safe storage name"],
        ),
        (
            MANIFEST_OK.replace("name: b,", "name: sub/dir,"),
            ["dataset 'sub/dir', field 'name'", "not a safe storage name"],
        ),
        (MANIFEST_OK.replace("name: m\n", "name: ../up\n"), ["field 'name'", "not a safe"]),
        (MANIFEST_OK + "pairs: [\n", ["field 'manifest'", "not valid YAML"]),
        (
            MANIFEST_OK + "evil: !!python/object/apply:os.system ['touch /tmp/otaudit-pwned']\n",
            ["field 'manifest'", "not valid YAML"],
        ),
        (MANIFEST_OK.replace("uri: a.parquet", "uri: a.parquet, colour: red"), ["colour"]),
    ],
    ids=["duplicate", "dotdot", "slash", "audit-dotdot", "malformed", "unsafe-tag", "unknown-key"],
)
def test_manifest_mistakes_stop_before_anything_runs(tmp_path, text, needles):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    res = CliRunner().invoke(app, ["audit", str(path), "--no-progress"])
    assert res.exit_code == 1
    lines = _lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("otaudit: error: "), res.output
    assert "fix:" in lines[0] and "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    import os

    assert not os.path.exists("/tmp/otaudit-never-written")
    assert not os.path.exists("/tmp/otaudit-pwned")
