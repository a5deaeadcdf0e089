"""The audit flow on real parts: Prefect's harness server, a Dask LocalCluster (2 workers x 1
thread, shared), a local directory as the object store; values checked against direct calls
of the public API."""

from __future__ import annotations

import numpy as np
import pytest

import otaudit
from otaudit.app.demo import demo_datasets
from otaudit.audit.report import EXIT_DRIFT, EXIT_OK, EXIT_PARTIAL, read_report
from otaudit.config import load_settings
from otaudit.data.readers import write_dataset_parquet
from otaudit.tasks.plan import plan_blocks

N = 90  # points per dataset: small enough for 2 shared cores, big enough for 10 classes


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Three digits vendors written as Parquet (row groups of 40 rows: 3 shards each)."""
    root = tmp_path_factory.mktemp("registry")
    data = demo_datasets()
    out = {}
    for name in ("vendor_a", "vendor_flipped", "vendor_relabelled"):
        X, y = data[name]
        X, y = X[:N], y[:N]
        uri = write_dataset_parquet(str(root / "data"), name, X, y, row_group_size=40)
        out[name] = (uri, X, y)
    return root, out


def _manifest(root, datasets, *, extra: str = "", measures: str | None = None) -> str:
    lines = [f"name: flowtest\noutput: {root / 'out'}\ndatasets:"]
    for name, uri in datasets.items():
        lines.append(f"  - {{name: {name}, uri: {uri}, features: features, label: label}}")
    lines.append(
        measures or "measures:\n  otdd: {inner: exact}\n  ot_bounds: {batch_size: 32}\n  w2: {}"
    )
    lines.append(extra)
    path = root / f"manifest-{abs(hash(extra + str(measures))) % 10**8}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_plan_blocks_covers_every_pair_once():
    pairs = [(f"d{i}", f"d{j}") for i in range(10) for j in range(i + 1, 10)]
    blocks = plan_blocks(pairs, n_threads=2)
    assert [p for b in blocks for p in b] == pairs
    assert len(blocks) == 8 and max(map(len, blocks)) <= otaudit.config.PAIR_BLOCK_MAX
    assert plan_blocks([], 2) == [] and plan_blocks(pairs[:1], 8) == [pairs[:1]]


def test_flow_values_equal_direct_calls(registry, dask_cluster):
    """Exact equality: the pipeline and the direct call see the same float32 inputs and run
    the same deterministic code (exact LP for OTDD and w2 at this size; seeded bounds)."""
    from otaudit.app.cli import run_audit

    root, ds = registry
    manifest = _manifest(root, {n: uri for n, (uri, _, _) in ds.items()})
    outcome = run_audit(manifest, dask_address=dask_cluster, settings=load_settings())
    assert outcome["exit_code"] == EXIT_OK, outcome["summary"]
    rep = read_report(outcome["uri"])
    rows = rep.pair_rows()
    assert len(rows) == 3 * 3 and {r["status"] for r in rows} == {"ok"}
    (_, Xa, ya), (_, Xf, yf) = ds["vendor_a"], ds["vendor_flipped"]
    (_, Xr, yr) = ds["vendor_relabelled"]
    direct = otaudit.otdd(Xa, ya, Xf, yf, inner="exact")
    assert rep.value("vendor_a", "vendor_flipped", "otdd") == direct.value
    # renaming labels does not change OTDD: vendor_relabelled is vendor_a renamed
    assert rep.value("vendor_a", "vendor_relabelled", "otdd") == 0.0
    b = otaudit.ot_bounds(
        Xa, Xf, batch_size=32, budget=None, partition="aligned", coupling="optimal", seed=0
    )
    row = next(
        r
        for r in rows
        if r["measure"] == "ot_bounds"
        and {r["dataset_a"], r["dataset_b"]} == {"vendor_a", "vendor_flipped"}
    )
    assert (row["value"], row["lower"], row["upper"]) == (b.value, b.lower, b.upper)
    assert row["lower"] <= row["value"] <= row["upper"] and row["certified"]
    import ot  # POT's exact LP is the oracle for plain W2 (same network simplex: 1e-12)

    M = ot.dist(Xa.astype(np.float64), Xf.astype(np.float64))
    w2 = ot.emd2([], [], M, numItermax=10**7)
    assert rep.value("vendor_a", "vendor_flipped", "w2") == pytest.approx(w2, rel=1e-12)
    dsrows = {r["dataset"]: r for r in rep.dataset_rows()}
    assert dsrows["vendor_a"]["n_rows"] == N and dsrows["vendor_a"]["dim"] == 64
    assert dsrows["vendor_a"]["n_classes"] == len(np.unique(ya))
    assert "## otdd: OTDD distance" in rep.summary and "Nearest neighbours" in rep.summary
    assert rep.run_id in outcome["uri"]


def test_threshold_exceeded_gives_exit_3(registry, dask_cluster):
    from otaudit.app.cli import run_audit

    root, ds = registry
    manifest = _manifest(
        root, {n: uri for n, (uri, _, _) in ds.items()},
        measures="measures:\n  otdd: {inner: exact}", extra="thresholds: {otdd: 1.0}",
    )  # fmt: skip
    outcome = run_audit(manifest, dask_address=dask_cluster, settings=load_settings())
    assert outcome["exit_code"] == EXIT_DRIFT
    flagged = {(a, b) for _, a, b, _, _ in outcome["flagged"]}
    assert ("vendor_a", "vendor_flipped") in flagged
    assert ("vendor_a", "vendor_relabelled") not in flagged  # distance 0


def test_one_bad_dataset_fails_only_its_pairs(registry, dask_cluster, tmp_path):
    from otaudit.app.cli import run_audit

    root, ds = registry
    good = {n: uri for n, (uri, _, _) in ds.items()}
    bad = write_dataset_parquet(str(tmp_path), "nolabel", ds["vendor_a"][1][:30])  # no label
    manifest = _manifest(
        root, {**good, "nolabel": bad}, measures="measures:\n  otdd: {inner: exact}"
    )
    outcome = run_audit(manifest, dask_address=dask_cluster, settings=load_settings())
    assert outcome["exit_code"] == EXIT_PARTIAL and outcome["status"] == "partial"
    assert [n for n, _ in outcome["failed_datasets"]] == ["nolabel"]
    rep = read_report(outcome["uri"])
    rows = rep.pair_rows()
    failed = [r for r in rows if r["status"] == "failed"]
    assert {frozenset((r["dataset_a"], r["dataset_b"])) for r in failed} == {
        frozenset((n, "nolabel")) for n in good
    }
    assert all("nolabel" in r["error"] and "\n" not in r["error"] for r in failed)
    assert all(r["value"] is None for r in failed)
    assert sum(r["status"] == "ok" for r in rows) == 3
    assert "dataset `nolabel`" in rep.summary


def test_screening_spends_otdd_on_the_nearest_pairs_only(registry, dask_cluster):
    """`screen: {keep: 2}`: sliced rows for all 6 pairs, otdd rows only for the 2 pairs with
    the smallest sliced estimate (ties: pair order), and the sliced certified `lower` never
    above OTDD² (gaussian inner, same lambdas) up to float round-off (1e-9 relative)."""
    from otaudit.app.cli import run_audit

    root, ds = registry
    X, y = demo_datasets()["vendor_b"]
    uris = {n: uri for n, (uri, _, _) in ds.items()}
    uris["vendor_b"] = write_dataset_parquet(str(root / "data"), "vendor_b", X[:N], y[:N])
    manifest = _manifest(
        root, uris, measures="measures:\n  sliced: {}\n  otdd: {inner: gaussian}",
        extra="screen: {keep: 2}",
    )  # fmt: skip
    outcome = run_audit(manifest, dask_address=dask_cluster, settings=load_settings())
    assert outcome["exit_code"] == EXIT_OK, outcome["summary"]
    rows = read_report(outcome["uri"]).pair_rows()
    assert {r["status"] for r in rows} == {"ok"}
    sliced = {(r["dataset_a"], r["dataset_b"]): r for r in rows if r["measure"] == "sliced"}
    otdd = {(r["dataset_a"], r["dataset_b"]): r for r in rows if r["measure"] == "otdd"}
    pairs = [(a, b) for i, a in enumerate(uris) for b in list(uris)[i + 1 :]]
    assert sorted(sliced) == sorted(pairs) and len(rows) == 6 + 2
    assert all(not r["certified"] and r["upper"] is None for r in sliced.values())
    nearest = sorted(pairs, key=lambda p: (sliced[p]["value"], pairs.index(p)))[:2]
    assert set(otdd) == set(nearest)
    assert ("vendor_a", "vendor_relabelled") in otdd  # renamed labels: estimate 0
    # vendor_relabelled is vendor_a renamed, so (a, b) and (relabelled, b) tie exactly: the
    # earlier pair in manifest order is kept
    assert (
        sliced[("vendor_a", "vendor_b")]["value"]
        == sliced[("vendor_relabelled", "vendor_b")]["value"]
    )
    assert ("vendor_a", "vendor_b") in otdd
    for p, r in otdd.items():
        assert sliced[p]["lower"] <= r["value"] * (1 + 1e-9) + 1e-12, p
    summary = outcome["summary"]
    assert "Screened 6 pairs by sliced estimate, certified measures on the 2 nearest" in summary
    assert all(f"- `{a}` – `{b}` (" in summary for a, b in nearest)
