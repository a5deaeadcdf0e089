"""History across runs on real parts (Prefect's harness server, the shared Dask
LocalCluster, a local directory as the store): two consecutive audits with one dataset
changed, the summary's "Changed since" section, ``history/`` read by pandas, ``otaudit report
--compare``, "labels permuted" on the demo's relabelled vendor, report.html, and the
``otaudit.drift`` event read back from the server's events API."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from otaudit import config
from otaudit.app.demo import demo_datasets
from otaudit.audit.report import read_report
from otaudit.config import load_settings
from otaudit.data.readers import write_dataset_parquet

N = 60  # points per dataset: 10 digit classes, small for the 2 shared cores


def _manifest(root, datasets: dict[str, str], name: str) -> str:
    lines = [f"name: {name}\noutput: {root / 'out'}\ndatasets:"]
    for n, uri in datasets.items():
        lines.append(f"  - {{name: {n}, uri: {uri}, features: features, label: label}}")
    lines.append("measures:\n  otdd: {inner: exact}\nthresholds:\n  otdd: 30.0")
    path = root / f"{name}-{len(datasets)}-{time.time_ns()}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _drift_events(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=[config.DRIFT_EVENT]),
        resource=EventResourceFilter(id=[f"otaudit.audit.{name}"]),
    )
    with get_client(sync_client=True) as client:
        return list(client.read_events(filter=flt, limit=50).events)


@pytest.mark.slow
def test_two_runs_one_dataset_changed(tmp_path, dask_cluster):
    from otaudit.app.cli import app, run_audit

    data = demo_datasets()
    uris = {}
    for n in ("vendor_a", "vendor_b", "vendor_relabeled"):
        X, y = data[n]
        uris[n] = write_dataset_parquet(str(tmp_path / "d1"), n, X[:N], y[:N])
    name = "hist-test"
    out1 = run_audit(_manifest(tmp_path, uris, name), dask_address=dask_cluster,
                     settings=load_settings())  # fmt: skip
    assert out1["previous_run"] is None
    assert "no previous complete run: this is the first" in out1["summary"]
    # the relabelled copy of vendor_a: OTDD 0, a near-duplicate whose labels map crosswise
    assert "**near-duplicate** **labels permuted**" in out1["summary"]
    rep1 = read_report(out1["uri"])
    row = next(
        r for r in rep1.pair_rows()
        if {r["dataset_a"], r["dataset_b"]} == {"vendor_a", "vendor_relabeled"}
    )  # fmt: skip
    assert row["distance"] == 0.0 and '"labels_permuted": true' in row["params"]
    ab = next(
        r for r in rep1.pair_rows() if {r["dataset_a"], r["dataset_b"]} == {"vendor_a", "vendor_b"}
    )
    assert '"labels_permuted": false' in ab["params"] or "labels_permuted" not in ab["params"]
    html = (tmp_path / "out" / name / f"run={rep1.run_id}" / "report.html").read_text()
    assert "labels permuted" in html and "data:image/png;base64," in html

    # second run: vendor_b changed (mirrored images: a covariate shift), a dataset added
    Xf, yf = data["vendor_flipped"]
    Xn, yn = data["vendor_noisy"]
    uris2 = dict(uris)
    uris2["vendor_b"] = write_dataset_parquet(str(tmp_path / "d2"), "vendor_b", Xf[:N], yf[:N])
    uris2["vendor_noisy"] = write_dataset_parquet(
        str(tmp_path / "d2"), "vendor_noisy", Xn[:N], yn[:N]
    )
    del uris2["vendor_relabeled"]
    out2 = run_audit(_manifest(tmp_path, uris2, name), dask_address=dask_cluster,
                     settings=load_settings())  # fmt: skip
    assert out2["previous_run"] == rep1.run_id
    ch = out2["changes"]
    assert ch["changed_datasets"] == ["vendor_b"]
    assert ch["new_datasets"] == ["vendor_noisy"] and ch["removed_datasets"] == ["vendor_relabeled"]
    moved = {tuple(m["pair"]) for m in ch["moved"]}
    assert moved == {("vendor_a", "vendor_b")}  # the only pair in both runs whose data changed
    md = out2["summary"]
    assert f"Compared with run `{rep1.run_id}`." in md
    assert "- changed datasets (same name, new content fingerprint): `vendor_b`" in md
    assert "1 pair result(s) moved beyond their certified intervals" in md

    # history/: one file per run, read directly by pandas (the run id from the folder name)
    hist = pd.read_parquet(str(tmp_path / "out" / name / config.HISTORY_DIR))
    assert set(hist["run"].astype(str)) == {f"{out1['run_id']}", f"{out2['run_id']}"}
    assert {"distance", "distance_lower", "distance_upper"} <= set(hist.columns)

    # otaudit report --compare: any two runs
    res = CliRunner().invoke(
        app, ["report", str(tmp_path / "out" / name), "--compare", out1["run_id"]]
    )
    assert res.exit_code == 0, res.output
    assert f"## Run `{out2['run_id']}` compared with run `{out1['run_id']}`" in res.output
    assert "otdd `vendor_a` – `vendor_b`" in res.output

    # the drift event reached the server (the flipped vendor_b moved): read it back
    deadline = time.monotonic() + 20  # events are sent asynchronously by the worker
    events = _drift_events(name)
    while not any(e.payload.get("run_id") == out2["run_id"] for e in events):
        assert time.monotonic() < deadline, [e.payload for e in events]
        time.sleep(1)
        events = _drift_events(name)
    ev = next(e for e in events if e.payload["run_id"] == out2["run_id"])
    assert ev.resource.id == f"otaudit.audit.{name}"
    assert ev.payload["previous_run"] == out1["run_id"]
    assert [tuple(m["pair"]) for m in ev.payload["moved"]] == [("vendor_a", "vendor_b")]
