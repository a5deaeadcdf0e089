"""The report people read and the report that proves itself: schema-3 distance columns (and
older runs read back with them), ``_SUCCESS`` sizes and hashes verified on read, the
"labels permuted" flag, the history comparison, report.html (parsed strictly, and rendered by
a real headless Chromium where one is installed), and artifact keys."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from otaudit import OTResult
from otaudit.audit import history, html, permuted, report
from otaudit.data.storage import Store
from otaudit.errors import StorageError

from .test_report import CODE, _rows


def _publish(tmp_path, run_id: str = "20260101T000000.000Z-aaaaaa", rows=None) -> str:
    pairs, ds = rows or _rows(run_id)
    md = report.render_summary(name="reg", run_id=run_id, pair_rows=pairs, dataset_rows=ds)
    files = report.report_files(
        pairs=report.build_pairs_table(pairs),
        datasets=report.build_datasets_table(ds),
        summary=md,
        heatmap_png=report.render_heatmap(pair_rows=pairs, names=["a", "b", "c"]),
    )
    return report.write_report(Store(str(tmp_path / "out")), "reg", run_id, files)


# --------------------------------------------------------------------------- schema 3


def test_pairs_table_has_distance_columns_sqrt_of_clamped_values():
    pairs, _ = _rows()
    neg = report.pair_row(
        run_id="r1", dataset_a="b", dataset_b="c", measure="w2",
        result=OTResult(value=1e-18, lower=-1e-12, upper=4.0, certified=True, method="m"),
        n_a=1, n_b=1, code_version=CODE,
    )  # fmt: skip
    t = report.build_pairs_table([*pairs, neg]).to_pylist()
    assert [r["distance"] for r in t[:3]] == [1.0, 10.0, 9.0]  # sqrt(1), sqrt(100), sqrt(81)
    ob = t[3]
    assert (ob["distance_lower"], ob["distance_upper"]) == (math.sqrt(1.5), math.sqrt(2.5))
    assert t[4]["distance_lower"] == 0.0 and t[4]["distance_upper"] == 2.0  # clamped at 0
    assert report.SCHEMA_VERSION == 3
    assert tuple(report.PAIRS_SCHEMA.names[-3:]) == ("distance", "distance_lower", "distance_upper")


def test_reads_a_v2_run_and_derives_the_distance_columns(tmp_path):
    """A schema-2 run built by hand (the v2 writer's columns and metadata)."""
    pairs, ds = _rows("r2")
    v2 = pa.table({c: [r[c] for r in pairs] for c in report.PAIRS_SCHEMA.names
                   if c not in report.DISTANCE_COLUMNS})  # fmt: skip
    meta = {b"otaudit.schema_version": b"2"}
    run = tmp_path / "reg" / "run=r2"
    run.mkdir(parents=True)
    pq.write_table(v2.replace_schema_metadata(meta), run / "pairs.parquet")
    pq.write_table(report.build_datasets_table(ds), run / "datasets.parquet")
    (run / "summary.md").write_text("v2")
    sizes = {n: (run / n).stat().st_size for n in ("pairs.parquet", "datasets.parquet")}
    (run / "_SUCCESS").write_text(json.dumps({"files": sizes}))  # the size-only marker
    rep = report.read_report(str(run))
    assert rep.schema_version == 2 and rep.pairs.schema.names == report.PAIRS_SCHEMA.names
    rows = rep.pair_rows()
    assert [r["distance"] for r in rows] == [1.0, 10.0, 9.0, math.sqrt(2.0)]
    assert rows[3]["distance_upper"] == math.sqrt(2.5)


# --------------------------------------------------------------------------- _SUCCESS


def test_success_lists_every_file_with_size_and_sha256(tmp_path):
    uri = _publish(tmp_path)
    marker = json.loads((tmp_path / "out" / "reg" / uri.rsplit("/", 1)[1] / "_SUCCESS").read_text())
    names = set(marker["files"])
    assert names == {"pairs.parquet", "datasets.parquet", "summary.md", "heatmap.png"}
    for n, spec in marker["files"].items():
        data = (tmp_path / "out" / "reg" / uri.rsplit("/", 1)[1] / n).read_bytes()
        assert spec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_truncated_pairs_parquet_fails_in_one_line(tmp_path):
    from otaudit.app.cli import app

    uri = _publish(tmp_path)
    p = tmp_path / "out" / "reg" / uri.rsplit("/", 1)[1] / "pairs.parquet"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    msg = "incomplete or corrupt run: pairs.parquet (size mismatch"
    with pytest.raises(StorageError, match=r"incomplete or corrupt run: pairs\.parquet \(size"):
        report.read_report(str(tmp_path / "out" / "reg"))
    res = CliRunner().invoke(app, ["report", str(tmp_path / "out" / "reg")])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and msg in lines[0], res.output
    assert lines[0].endswith("re-run the audit")
    # same size, other bytes: the hash catches it
    p.write_bytes(bytes(b ^ 0xFF for b in data[:8]) + data[8:])
    with pytest.raises(StorageError, match=r"pairs\.parquet \(hash mismatch\)"):
        report.read_report(uri)


# --------------------------------------------------------------------------- labels permuted


def _stats(X, y, name):
    import otaudit

    return otaudit.dataset_stats(X, y, name=name)


def test_labels_permuted_on_a_relabelled_copy_only():
    """vendor_relabeled is vendor_a with classes renamed through a permutation (OTDD 0)."""
    from otaudit.app.demo import demo_datasets

    d = demo_datasets()
    (Xa, ya), (Xr, yr), (Xb, yb) = d["vendor_a"], d["vendor_relabeled"], d["vendor_b"]
    stats = {
        "a": _stats(Xa[:60], ya[:60], "a"),
        "r": _stats(Xr[:60], yr[:60], "r"),
        "b": _stats(Xb[:60], yb[:60], "b"),
        "a2": _stats(Xa[:60], ya[:60], "a2"),  # the same labels: not permuted
    }
    import otaudit

    rows = []
    for a, b in (("a", "r"), ("a", "b"), ("r", "b"), ("a", "a2"), ("b", "a2"), ("r", "a2")):
        res = otaudit.otdd_from_stats(stats[a], stats[b], inner="exact")
        rows.append(report.pair_row(run_id="r", dataset_a=a, dataset_b=b, measure="otdd",
                                    result=res, n_a=60, n_b=60, code_version=CODE))  # fmt: skip
    assert permuted.annotate_permutations(rows, stats.get) == 2  # a-r and r-a2
    by = {(r["dataset_a"], r["dataset_b"]): json.loads(r["params"]) for r in rows}
    assert by[("a", "r")]["labels_permuted"] is True
    assert by[("a", "a2")]["labels_permuted"] is False
    assert "labels_permuted" not in by[("a", "b")]  # not a near-duplicate: not computed
    corr = dict(map(tuple, by[("a", "r")]["class_correspondence"]))
    assert {corr[str(c)] for c in range(10)} == {f"digit-{k}" for k in range(10)}
    ds = [{"dataset": n, "status": "ok"} for n in stats]
    md = report.render_summary(name="x", run_id="r", pair_rows=rows, dataset_rows=ds)
    assert "- `a` → `r` (0) **near-duplicate** **labels permuted**" in md
    assert (
        "- `a2` → `a` (0) **near-duplicate**\n" in md or "`a2` → `a` (0) **near-duplicate**" in md
    )
    assert md.count("labels permuted") == 2  # a→r and r→a (a2's nearest is a)


# --------------------------------------------------------------------------- history


def test_compare_rows_moved_crossed_and_datasets():
    def row(a, b, lo, hi, certified=True):
        return {"dataset_a": a, "dataset_b": b, "measure": "otdd", "status": "ok",
                "value": (lo + hi) / 2, "lower": lo, "upper": hi, "certified": certified}  # fmt: skip

    prev = [row("a", "b", 1.0, 2.0), row("a", "c", 10.0, 12.0), row("b", "c", 4.0, 4.0)]
    cur = [row("a", "b", 1.5, 3.0), row("a", "c", 12.5, 13.0), row("c", "b", 4.0, 4.0)]
    ds = lambda names, fp="": [{"dataset": n, "fingerprint": n + fp} for n in names]  # noqa: E731
    ch = history.compare_rows(prev, ds("abc") + ds("x"), cur, ds("ab") + [{"dataset": "c",
                              "fingerprint": "new"}] + ds("y"), thresholds={"otdd": 3.4})  # fmt: skip
    assert [m["pair"] for m in ch["moved"]] == [["a", "c"]]  # [10,12] vs [12.5,13]: disjoint
    # sqrt(11) = 3.317 <= 3.4 < sqrt(12.75) = 3.571: crossed upward
    assert [(c["pair"], c["direction"]) for c in ch["crossed"]] == [(["a", "c"], "above")]
    assert ch["new_datasets"] == ["y"] and ch["removed_datasets"] == ["x"]
    assert ch["changed_datasets"] == ["c"]
    md = history.history_section(ch, "R0")
    assert "Compared with run `R0`." in md and "- new datasets: `y`" in md
    assert "otdd `a` – `c`: distance 3.317 → 3.571 (squared [10, 12] → [12.5, 13])" in md
    assert history.history_section(None, None).endswith("this is the first\n")


def test_report_compare_cli_and_previous_run(tmp_path):
    from otaudit.app.cli import app

    r0, r1 = "20260101T000000.000Z-aaaaaa", "20260102T000000.000Z-bbbbbb"
    _publish(tmp_path, r0)
    pairs, ds = _rows(r1)
    pairs[1] = {**pairs[1], "value": 400.0, "lower": 400.0, "upper": 400.0}  # a-c moved
    _publish(tmp_path, r1, (pairs, ds))
    audit = Store(str(tmp_path / "out")).child("reg")
    assert history.previous_run(audit, r1) == f"run={r0}"
    assert history.previous_run(audit, r0) is None
    res = CliRunner().invoke(app, ["report", str(tmp_path / "out" / "reg"), "--compare", r0])
    assert res.exit_code == 0, res.output
    assert f"## Run `{r1}` compared with run `{r0}`" in res.output
    assert "otdd `a` – `c`: distance 10 → 20" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "out" / "reg"), "--compare", "nope"])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- report.html


class _Strict(HTMLParser):
    """Fails on unbalanced or misnested tags (html.parser accepts anything otherwise)."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.imgs = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _page():
    pairs, ds = _rows()
    md = report.render_summary(name="reg", run_id="r1", pair_rows=pairs, dataset_rows=ds,
                               history=history.history_section(None, None))  # fmt: skip
    png = report.render_heatmap(pair_rows=pairs, names=["a", "b", "c"])
    return html.render_html(title="otaudit report reg — run r1", summary=md, heatmap_png=png,
                            plots={"flow_a__b.png": png})  # fmt: skip


def test_report_html_is_valid_and_self_contained():
    page = _page()
    p = _Strict()
    p.feed(page)
    p.close()
    assert p.stack == [], p.stack
    text = " ".join(p.text)
    assert "[1.225, 1.581]" in text and "Certified widths" in text and "W2² 1.5" in text
    assert len(p.imgs) == 2 and all(i["src"].startswith("data:image/png;base64,") for i in p.imgs)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("<table>") == 3  # otdd, ot_bounds, certified widths


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"
)
def test_report_html_renders_in_headless_chromium(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(_page(), encoding="utf-8")
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
    ]
    dom = subprocess.run([*base, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert "otaudit report reg — run r1" in dom and "[1.225, 1.581]" in dom
    assert dom.count("<table>") == 3 and "labels permuted" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    img = shot.read_bytes()
    assert img[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    arr = imread(str(shot))
    # the page painted something: not a single blank colour (the heatmap is coloured)
    assert arr.shape[0] == 1600 and float(np.std(arr[..., :3])) > 0.05


# --------------------------------------------------------------------------- artifacts


def test_artifact_keys_are_unique_across_audit_names_and_valid():
    from otaudit.tasks.report import artifact_key

    keys = {artifact_key(n, "summary") for n in ("reg", "Reg", "a_b", "a-b", "a.b", "a b")}
    assert len(keys) == 6
    assert artifact_key("reg", "summary") == "otaudit-reg-summary"
    assert all(k == k.lower() and set(k) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
               for k in keys)  # fmt: skip


def test_artifact_rows_are_rounded_with_units():
    from otaudit.audit.publish import artifact_rows

    pairs, _ = _rows()
    pairs[0] = {**pairs[0], "value": 2.0 / 3.0}
    rows = artifact_rows(pairs)
    assert rows[0]["distance"] == 0.8165 and rows[0]["value (squared)"] == 0.6667
    assert rows[3]["distance_lower"] == 1.225 and rows[3]["kind"] == "bracketed"
