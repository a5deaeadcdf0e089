"""The report module: schema (contract columns, versioning), summary, heatmap, atomic
publication and reading back — including a "v0" report without the additive columns."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otaudit import OTResult
from otaudit.audit import report
from otaudit.data.storage import Store
from otaudit.errors import StorageError

CODE = "otaudit-test"


def _rows(run_id: str = "r1") -> tuple[list[dict], list[dict]]:
    names = ["a", "b", "c"]
    vals = {("a", "b"): 1.0, ("a", "c"): 100.0, ("b", "c"): 81.0}
    pairs = [
        report.pair_row(
            run_id=run_id,
            dataset_a=a,
            dataset_b=b,
            measure="otdd",
            result=OTResult(
                value=v, lower=v, upper=v, certified=True, method="exact", params={"inner": "exact"}
            ),
            n_a=10,
            n_b=12,
            code_version=CODE,
        )
        for (a, b), v in vals.items()
    ]
    pairs.append(
        report.pair_row(
            run_id=run_id,
            dataset_a="a",
            dataset_b="b",
            measure="ot_bounds",
            result=OTResult(
                value=2.0, lower=1.5, upper=2.5, certified=True, method="minibatch", n_solves=7
            ),
            n_a=10,
            n_b=12,
            code_version=CODE,
        )
    )
    datasets = [
        {
            "run_id": run_id,
            "dataset": n,
            "uri": f"/d/{n}",
            "fingerprint": "f" + n,
            "n_rows": 10,
            "n_classes": 2,
            "dim": 3,
            "embedder": "identity",
            "seconds": 0.1,
            "status": "ok",
            "error": None,
            "cache_hit": False,
            "embed_seconds": 0.01,
            "stats_seconds": 0.02,
            "labeled": True,
        }
        for n in names
    ]
    return pairs, datasets


def test_contract_columns_come_first_in_order():
    assert tuple(report.PAIRS_SCHEMA.names[: len(report.PAIRS_CONTRACT)]) == report.PAIRS_CONTRACT
    assert report.PAIRS_CONTRACT == (
        "run_id", "dataset_a", "dataset_b", "measure", "value", "lower", "upper", "gap_rel",
        "certified", "method", "n_a", "n_b", "n_solves", "seconds", "params", "code_version",
    )  # fmt: skip
    assert tuple(report.DATASETS_SCHEMA.names[:9]) == (
        "run_id", "dataset", "uri", "fingerprint", "n_rows", "n_classes", "dim", "embedder",
        "seconds",
    )  # fmt: skip


def test_run_ids_sort_chronologically_and_are_unique():
    from datetime import datetime, timedelta, timezone

    t = datetime(2026, 11, 23, 9, 0, 0, 5000, tzinfo=timezone.utc)
    ids = [report.new_run_id(t + timedelta(milliseconds=k * 7)) for k in range(50)]
    assert ids == sorted(ids)
    assert len(set(report.new_run_id(t) for _ in range(50))) == 50
    assert ids[0].startswith("20261123T090000.005Z-")


def test_assess_exit_codes():
    pairs, ds = _rows()
    assert report.assess(pairs, ds).exit_code == report.EXIT_OK
    a = report.assess(pairs, ds, {"otdd": 9.5})  # sqrt(100) = 10 > 9.5, sqrt(81) = 9 < 9.5
    assert (a.status, a.exit_code) == ("drift", report.EXIT_DRIFT)
    assert [(r["dataset_a"], r["dataset_b"]) for r in a.flagged] == [("a", "c")]
    bad = report.failed_pair_row(
        run_id="r1",
        dataset_a="a",
        dataset_b="d",
        measure="otdd",
        error="dataset 'd' failed:\n missing",
        code_version=CODE,
    )
    assert bad["error"] == "dataset 'd' failed: missing"  # one line
    a = report.assess([*pairs, bad], ds, {"otdd": 9.5})
    assert (a.status, a.exit_code) == ("partial", report.EXIT_PARTIAL)  # partial beats drift
    a = report.assess([bad], ds)
    assert (a.status, a.exit_code) == ("failed", report.EXIT_FAILED)


def test_summary_has_table_neighbours_flags_and_failures():
    pairs, ds = _rows()
    bad = report.failed_pair_row(
        run_id="r1",
        dataset_a="a",
        dataset_b="d",
        measure="otdd",
        error="dataset 'd' failed: no such column",
        code_version=CODE,
    )
    ds_bad = {**ds[0], "dataset": "d", "status": "failed", "error": "no such column"}
    md = report.render_summary(
        name="reg",
        run_id="r1",
        pair_rows=[*pairs, bad],
        dataset_rows=[*ds, ds_bad],
        thresholds={"otdd": 9.5},
        wall_seconds=3.0,
    )
    assert "**Status: partial** (exit code 2)" in md
    assert "| `a` | 0 | 1 | 10 | — |" in md  # distances = sqrt(value); d not computed
    assert "- `a` → `b` (1) **near-duplicate**" in md  # 1 < 0.25 * median(1, 9, 10)
    assert "| otdd | `a` – `c` | 10 | 9.5 |" in md
    assert "dataset `d`: no such column" in md
    # squared bounds say so, the interval comes first, the midpoint is labelled, gap relative
    assert (
        "| ot_bounds | `a` – `b` | bracketed | W2² 1.5 | W2² 2.5 | midpoint W2² 2 "
        "| [1.225, 1.581] | 0.4 | minibatch |"
    ) in md
    assert "| `a` | 0 | [1.225, 1.581] | — |" in md  # ot_bounds distance table: an interval
    assert "`gap` is relative" in md
    assert "wall time of the audit: 3.00 s" in md


def test_summary_states_screening_and_labels_estimates():
    from otaudit.core.sliced import sliced_otdd

    pairs, ds = _rows()
    est = sliced_otdd([[0.0], [1.0]], None, [[0.5], [3.0]], None, n_projections=4)
    sliced = [
        report.pair_row(
            run_id="r1", dataset_a=a, dataset_b=b, measure="sliced", result=est,
            n_a=2, n_b=2, code_version=CODE,
        )
        for a, b in (("a", "b"), ("a", "c"), ("b", "c"))
    ]  # fmt: skip
    row = sliced[0]
    assert row["certified"] is False and row["method"] == "sliced-estimate"
    assert row["upper"] is None and row["gap_rel"] is None and row["lower"] is not None
    screening = {"measure": "sliced", "keep": 2, "order": "nearest", "n_pairs": 3,
                 "kept": [("a", "b"), ("b", "c")]}  # fmt: skip
    otdd = [r for r in pairs if r["measure"] == "otdd"]
    md = report.render_summary(
        name="reg", run_id="r1", pair_rows=[*sliced, *otdd], dataset_rows=ds,
        screening=screening,
    )  # fmt: skip
    assert "Screened 3 pairs by sliced estimate, certified measures on the 2 nearest" in md
    assert "- `a` – `b` (" in md and "- `b` – `c` (" in md and "- `a` – `c` (" not in md
    assert "## sliced: sliced estimate of the distance (≈ sqrt of sliced²; not a bound)" in md
    assert "## Estimates (not bounds)" in md and "3 pair result(s) of sliced" in md
    assert "every computed value is exact (lower = value = upper; methods: exact)" in md
    # only estimates: no claim that anything is exact, no screening section
    md = report.render_summary(name="reg", run_id="r1", pair_rows=sliced, dataset_rows=ds)
    assert "every computed value is exact" not in md and "## Screening" not in md
    assert "no certified measure was computed" in md and "estimate" in md


def test_heatmap_is_a_png():
    pairs, ds = _rows()
    png = report.render_heatmap(pair_rows=pairs, names=["a", "b", "c"], title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_write_then_read_round_trip_and_latest(tmp_path):
    store = Store(str(tmp_path / "out"))
    for run_id in ("20260101T000000.000Z-aaaaaa", "20260102T000000.000Z-bbbbbb"):
        pairs, ds = _rows(run_id)
        files = report.report_files(
            pairs=report.build_pairs_table(pairs),
            datasets=report.build_datasets_table(ds),
            summary=f"# {run_id}",
            heatmap_png=None,
        )
        uri = report.write_report(store, "reg", run_id, files)
        assert uri.endswith(f"reg/run={run_id}")
    # an unfinished newer run (no _SUCCESS) is ignored
    store.write_bytes(b"partial", "reg", "run=20260103T000000.000Z-cccccc", "pairs.parquet")
    rep = report.read_report(str(tmp_path / "out" / "reg"))
    assert rep.run_id == "20260102T000000.000Z-bbbbbb"
    assert rep.schema_version == report.SCHEMA_VERSION
    assert rep.summary == "# 20260102T000000.000Z-bbbbbb"
    assert rep.pairs.schema.names == report.PAIRS_SCHEMA.names
    assert rep.value("b", "a", "otdd") == 1.0
    assert rep.pair_rows()[0]["params"] == '{"inner": "exact"}'
    with pytest.raises(StorageError, match="no complete otaudit report"):
        report.read_report(str(tmp_path / "out" / "nothing"))


def test_reads_a_v0_report_without_additive_columns(tmp_path):
    """A report written by schema version 0 (contract columns only, no version metadata)."""
    pairs, ds = _rows("r0")
    v0_pairs = pa.table({c: [r[c] for r in pairs] for c in report.PAIRS_CONTRACT})
    v0_ds = pa.table({c: [r[c] for r in ds] for c in report.DATASETS_CONTRACT})
    run = tmp_path / "reg" / "run=r0"
    run.mkdir(parents=True)
    pq.write_table(v0_pairs, run / "pairs.parquet")
    pq.write_table(v0_ds, run / "datasets.parquet")
    (run / "summary.md").write_text("old")
    (run / "_SUCCESS").write_text("{}")
    rep = report.read_report(str(run))
    assert rep.schema_version == 0
    assert rep.pairs.schema.names == report.PAIRS_SCHEMA.names
    rows = rep.pair_rows()
    assert {r["status"] for r in rows} == {"ok"} and {r["cached"] for r in rows} == {False}
    assert all(r["error"] is None for r in rows)
    assert rep.dataset_rows()[0]["cache_hit"] is False
    assert math.isclose(rep.value("a", "c", "otdd"), 100.0)
    # assess works on upgraded rows
    assert report.assess(rows, rep.dataset_rows()).exit_code == report.EXIT_OK


def test_unknown_column_is_an_input_error():
    pairs, _ = _rows()
    with pytest.raises(Exception, match="unknown columns"):
        report.build_pairs_table([{**pairs[0], "surprise": 1}])


def test_per_bound_certificates_keep_the_sliced_certified_lower_bound():
    """Schema 2: each bound says whether it is a certificate. The sliced result's ``value``
    is an estimate but its ``lower`` is certified (a max over frames of projected W2², each
    a lower bound of OTDD²): the row keeps it, flagged, through the pair cache's JSON."""
    from otaudit.core.sliced import sliced_otdd

    est = sliced_otdd([[0.0], [1.0]], None, [[0.5], [3.0]], None, n_projections=4)
    record = report.result_record(est)  # what the pair cache stores
    for result in (est, record):
        row = report.pair_row(
            run_id="r", dataset_a="a", dataset_b="b", measure="sliced", result=result,
            n_a=2, n_b=2, code_version=CODE,
        )  # fmt: skip
        assert row["lower"] == est.lower and row["lower_certified"] is True
        assert row["upper"] is None and row["upper_certified"] is False
        assert row["certified"] is False and row["kind"] == "estimate"
    exact, _ = _rows()
    assert [r["kind"] for r in exact] == ["exact"] * 3 + ["bracketed"]
    assert all(r["lower_certified"] and r["upper_certified"] for r in exact)
    # the W2 exact route of ot_bounds: lower == upper, both certified
    tbl = report.build_pairs_table(exact)
    assert tbl.schema.metadata[b"otaudit.schema_version"] == str(report.SCHEMA_VERSION).encode()


def test_reads_a_v1_report_and_derives_its_certificates(tmp_path):
    """A schema-1 report (one ``certified`` flag per row, no ``device``) reads with both
    certificate columns equal to ``certified``, ``kind`` derived, ``device`` null."""
    pairs, ds = _rows("r1")
    v2_only = {"lower_certified", "upper_certified", "kind", *report.DISTANCE_COLUMNS}
    v1_pairs = pa.table(
        {c: [r[c] for r in pairs] for c in report.PAIRS_SCHEMA.names if c not in v2_only}
    )
    v1_ds = pa.table(
        {c: [r.get(c) for r in ds] for c in report.DATASETS_SCHEMA.names if c != "device"}
    )
    meta = {b"otaudit.schema_version": b"1"}
    run = tmp_path / "reg" / "run=r1"
    run.mkdir(parents=True)
    pq.write_table(v1_pairs.replace_schema_metadata(meta), run / "pairs.parquet")
    pq.write_table(v1_ds.replace_schema_metadata(meta), run / "datasets.parquet")
    (run / "summary.md").write_text("v1")
    (run / "_SUCCESS").write_text("{}")
    rep = report.read_report(str(run))
    assert rep.schema_version == 1 and rep.pairs.schema.names == report.PAIRS_SCHEMA.names
    rows = rep.pair_rows()
    assert [r["kind"] for r in rows] == ["exact"] * 3 + ["bracketed"]
    assert all(r["lower_certified"] is True and r["upper_certified"] is True for r in rows)
    assert {r["device"] for r in rep.dataset_rows()} == {None}


def test_summary_calls_gaussian_inner_otdd_exact_for_the_gaussian_label_cost():
    pairs, ds = _rows()
    gauss = [
        {**r, "params": '{"inner": "gaussian"}', "method": "otdd-gaussian"}
        for r in pairs
        if r["measure"] == "otdd"
    ]
    md = report.render_summary(name="reg", run_id="r1", pair_rows=gauss, dataset_rows=ds)
    assert "3 OTDD result(s) with `inner: gaussian` are exact for the Gaussian label cost" in md
    assert "every computed value is exact" not in md
