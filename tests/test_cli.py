"""The command line: version, one-line errors without tracebacks, ``report`` and ``demo``."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import otaudit
from otaudit.app.cli import app
from otaudit.audit import report
from otaudit.data.storage import Store

runner = CliRunner()


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"otaudit {otaudit.__version__}"


def test_one_version_source_pyproject(tmp_path):
    """``otaudit.__version__`` is pyproject's ``[project] version`` (installed metadata, or
    the file itself for an uninstalled tree)."""
    from pathlib import Path

    from otaudit.version import pyproject_version

    root = Path(__file__).resolve().parents[1]
    assert otaudit.__version__ == pyproject_version() == pyproject_version(root / "pyproject.toml")
    other = tmp_path / "pyproject.toml"
    other.write_text('[tool.x]\nversion = "9"\n[project]\nname = "otaudit"\nversion = "1.2.3"\n')
    assert pyproject_version(other) == "1.2.3"  # the [project] table's, not another table's


def test_console_script_is_installed_and_fast_to_fail(tmp_path):
    """The real entry point (a subprocess): bad manifest -> exit 1, one line, no traceback,
    before any Prefect server or Dask cluster is started."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\noutput: /tmp/x\ndatasets:\n  - {name: a, uri: a.parquet, "
        "features: x, colour: red}\n"
    )
    exe = [sys.executable, "-c", "from otaudit.app.cli import main; main()"]
    res = subprocess.run([*exe, "audit", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert _lines(res.stderr) == [res.stderr.strip()]
    assert res.stderr.startswith("otaudit: error: dataset 'a'") and "colour" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_missing_manifest_is_one_line():
    res = runner.invoke(app, ["audit", "/nonexistent/manifest.yaml"])
    assert res.exit_code == 1
    assert _lines(res.output) == [
        "otaudit: error: field 'manifest': manifest '/nonexistent/manifest.yaml' not found; "
        "fix: check the path of the manifest file"
    ]


def _write_small_report(root) -> str:
    """A complete one-pair report ``reg/run=r1`` under ``root``; returns its URI."""
    row = report.pair_row(
        run_id="r1", dataset_a="a", dataset_b="b", measure="otdd",
        result=otaudit.OTResult(value=4.0, lower=4.0, upper=4.0, certified=True,
                                method="exact"),
        n_a=3, n_b=3, code_version="t",
    )  # fmt: skip
    ds = [
        {
            "run_id": "r1",
            "dataset": n,
            "uri": n,
            "fingerprint": n,
            "n_rows": 3,
            "n_classes": 1,
            "dim": 2,
            "embedder": "identity",
            "seconds": 0.0,
        }
        for n in "ab"
    ]
    md = report.render_summary(name="reg", run_id="r1", pair_rows=[row], dataset_rows=ds)
    files = report.report_files(
        pairs=report.build_pairs_table([row]),
        datasets=report.build_datasets_table(ds),
        summary=md,
        heatmap_png=None,
    )
    return report.write_report(Store(str(root)), "reg", "r1", files)


def test_report_command(tmp_path):
    uri = _write_small_report(tmp_path)
    res = runner.invoke(app, ["report", str(tmp_path / "reg")])
    assert res.exit_code == 0, res.output
    assert "# otaudit report `reg` — run `r1`" in res.output and uri in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and len(_lines(res.output)) == 1
    assert "no complete otaudit report" in res.output


def test_demo_runs_a_real_audit(tmp_path, dask_cluster, monkeypatch):
    """``otaudit demo`` end to end (on the shared cluster): planted drift shows up."""
    monkeypatch.setenv("OTAUDIT_DASK_ADDRESS", dask_cluster)
    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--lines", "200"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "report: " + str(tmp_path / "reports" / "digits-vendors" / "run=") in out
    assert (tmp_path / "manifest.yaml").is_file()
    assert len(list((tmp_path / "data").glob("*.parquet"))) == 6
    rep = report.read_report(str(tmp_path / "reports" / "digits-vendors"))
    assert rep.value("vendor_a", "vendor_relabeled", "otdd") == 0.0  # renaming labels
    ab = rep.value("vendor_a", "vendor_b", "otdd")  # same distribution, other samples
    assert ab < rep.value("vendor_a", "vendor_flipped", "otdd")
    assert ab < rep.value("vendor_a", "vendor_missing", "otdd")
    # vendor_noisy is vendor_b plus noise: closer to b than to a
    assert rep.value("vendor_b", "vendor_noisy", "otdd") < rep.value(
        "vendor_a", "vendor_noisy", "otdd"
    )
    flagged = {
        (r["dataset_a"], r["dataset_b"])
        for r in rep.pair_rows()
        if r["measure"] == "otdd" and r["value"] ** 0.5 > otaudit.config.DEMO_OTDD_THRESHOLD
    }
    assert flagged and all("vendor_flipped" in p for p in flagged)
    assert "near-duplicate" in rep.summary
    assert {r["device"] for r in rep.dataset_rows()} == {"cpu"}  # identity embedder: NumPy
    # OTAUDIT_CACHE is honoured (through config.load_settings) unless --cache/--no-cache says
    manifest = str(tmp_path / "manifest.yaml")
    res = runner.invoke(app, ["audit", manifest, "--no-progress"])
    assert res.exit_code == 3, res.output  # the planted drift
    assert "6 prepared (6 from cache)" in report.read_report(_report_of(res.output)).summary
    monkeypatch.setenv("OTAUDIT_CACHE", "false")
    res = runner.invoke(app, ["audit", manifest, "--no-progress"])
    assert "6 prepared (0 from cache)" in report.read_report(_report_of(res.output)).summary
    res = runner.invoke(app, ["audit", manifest, "--no-progress", "--cache"])
    assert "6 prepared (6 from cache)" in report.read_report(_report_of(res.output)).summary


def _report_of(output: str) -> str:
    return next(x for x in output.splitlines() if x.startswith("report: "))[len("report: ") :]
