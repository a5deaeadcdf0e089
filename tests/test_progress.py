"""Progress of long certified solves (issue 12 item 1, issue 17): the anytime loop's
``progress`` callback, throttled by :class:`otaudit.audit.progress.SolveProgress`, published
by the pair-block task as a Prefect progress artifact and a log line
(:mod:`otaudit.tasks.progress`) from a Dask worker process, and read back and rendered by
the CLI's polling code (:func:`otaudit.app.cli.read_solve_progress`, :func:`solve_rows`).

Real parts: the real solves (sparse exact route, several rounds), Prefect's harness server,
a Dask LocalCluster of its own (its worker's environment sets the publication knobs to 0 s).
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

import otaudit
from otaudit.audit.progress import ProgressRecord, SolveProgress, format_interval

D = 16


def _clouds(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed clouds: the sparse route needs several rounds to close the interval."""
    rng = np.random.default_rng(seed)
    X = rng.standard_t(4, size=(n, D))
    Y = rng.standard_t(4, size=(n, D)) * 1.3 + 0.2
    return X.astype(np.float32), Y.astype(np.float32)


def _monotone(records: list[tuple[float, float]]) -> None:
    los = [lo for lo, _ in records]
    ups = [up for _, up in records]
    assert all(a <= b for a, b in zip(los, los[1:], strict=False)), los  # lower never drops
    assert all(a >= b for a, b in zip(ups, ups[1:], strict=False)), ups  # upper never rises


def test_published_records_are_the_running_interval():
    X, Y = _clouds()
    sent: list[ProgressRecord] = []
    watch = SolveProgress("a~b", "w2", sent.append, after_s=0, every_s=0)
    res = otaudit.ot_bounds(X, Y, solver="sparse", target_gap=0.0, progress=watch)
    watch.close()
    hist = res.extra["history"]
    assert len(hist) >= 2, "the case must take several rounds"
    assert [(r.lower, r.upper) for r in sent] == [(lo, up) for _, lo, up in hist]
    assert [r.round for r in sent] == list(range(1, len(hist) + 1))
    _monotone([(r.lower, r.upper) for r in sent])
    pct = [r.percent for r in sent]
    assert all(a <= b for a, b in zip(pct, pct[1:], strict=False)) and pct[-1] > 99.9
    assert (sent[-1].lower, sent[-1].upper) == (res.lower, res.upper)
    line = sent[0].line()
    assert line.startswith("pair a~b w2  W2\u00b2 in [") and " gap " in line and "(round 1)" in line
    assert f"{100 * sent[0].gap_rel:.2g} %" in line


def test_throttle_keeps_the_first_and_the_last_and_short_solves_stay_silent():
    X, Y = _clouds()
    sent: list[ProgressRecord] = []
    watch = SolveProgress("a~b", "ot_bounds", sent.append, after_s=0, every_s=3600)
    res = otaudit.ot_bounds(X, Y, solver="sparse", target_gap=0.0, progress=watch)
    watch.close()
    assert len(res.extra["history"]) >= 3
    assert [r.round for r in sent] == [1, len(res.extra["history"])]  # first, then close()
    assert (sent[-1].lower, sent[-1].upper) == (res.lower, res.upper)
    quiet: list[ProgressRecord] = []
    watch = SolveProgress("a~b", "ot_bounds", quiet.append, after_s=3600, every_s=0)
    otaudit.ot_bounds(X, Y, solver="sparse", target_gap=0.0, progress=watch)
    watch.close()
    assert quiet == []  # a solve shorter than after_s publishes nothing


def test_a_failing_publisher_stops_the_progress_not_the_solve(caplog):
    X, Y = _clouds(600)
    calls = []

    def broken(record):
        calls.append(record)
        raise ConnectionError("API gone")

    watch = SolveProgress("a~b", "w2", broken, after_s=0, every_s=0)
    res = otaudit.ot_bounds(X, Y, solver="sparse", target_gap=0.0, progress=watch)
    watch.close()
    assert res.certified and len(calls) == 1  # tried once, then quiet
    assert "not published: API gone" in caplog.text


def test_progress_is_in_the_data_units_when_ot_bounds_rescales():
    X, Y = _clouds(400)
    big = 2.0**200  # beyond 2^150: ot_bounds rescales by a power of two internally
    X, Y = X.astype(np.float64) * big, Y.astype(np.float64) * big
    calls = []
    res = otaudit.ot_bounds(
        X, Y, solver="sparse", target_gap=0.0,
        progress=lambda r, lo, up: calls.append((lo, up)),
    )  # fmt: skip
    assert res.extra.get("data_scale_sq", 1.0) != 1.0
    assert calls[-1] == (res.lower, res.upper)
    _monotone(calls)


@pytest.mark.parametrize("max_exact", [None, 30])
def test_otdd_reports_its_running_interval_on_otdd2(max_exact):
    """``otdd(progress=)``: the outer sparse solve's rounds, never widening, ending at the
    result's certified interval. ``max_exact=30``: the label table is bracketed (mini-batch
    inner solves), so two outer solves run: the first reports ``(lower, inf)``, the second
    keeps the first's final lower."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rec: list[tuple[int, float, float]] = []
    r = otaudit.otdd(
        X[:600],
        y[:600],
        X[600:1200],
        y[600:1200],
        solver="sparse",
        inner_options=(
            None
            if max_exact is None
            else {
                "max_exact": max_exact,
                "solver": "minibatch",
                "options": {"batch_size": 8, "target_gap": 0.5},  # stays bracketed
            }
        ),
        progress=lambda k, lo, up: rec.append((k, lo, up)),
    )
    assert len(rec) >= 2
    _monotone([(lo, up) for _, lo, up in rec])
    assert [k for k, _, _ in rec] == sorted(k for k, _, _ in rec)
    assert rec[-1][1] == pytest.approx(r.lower, rel=1e-12)
    assert rec[-1][2] == pytest.approx(r.upper, rel=1e-12)
    two_solves = len(r.extra["outer"]) > 1
    assert two_solves == (max_exact is not None)
    if two_solves:
        assert rec[0][2] == float("inf")
    rec_line = ProgressRecord("a~b", "otdd", rec[-1][0], rec[-1][1], rec[-1][2], 1.0)
    assert "OTDD\u00b2 in [" in rec_line.line()


def test_interval_display_separates_narrow_ends():
    assert format_interval(28.4216, 28.4219) != "[28.42, 28.42]"
    lo, up = format_interval(28.4216, 28.4219)[1:-1].split(", ")
    assert lo != up
    assert format_interval(1.0, 2.0) == "[1, 2]"
    r = ProgressRecord("a~b", "w2", 1, 0.0, float("inf"), 3.0)
    assert r.percent == 0.0 and "gap inf %" in r.line()


# --- through Prefect and a Dask worker process, read back by the CLI's polling code -------


@pytest.fixture(scope="module")
def progress_cluster(prefect_api_url):
    """One Dask worker process whose environment publishes every round at once."""
    from distributed import LocalCluster

    keep = (
        "PREFECT_API_URL",
        "OMP_NUM_THREADS",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "DO_NOT_TRACK",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(OTAUDIT_PROGRESS_AFTER_S="0", OTAUDIT_PROGRESS_EVERY_S="0")
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
        env=env,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.timeout(600)
def test_pipeline_publishes_monotone_progress_the_cli_reads(tmp_path, progress_cluster):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    from otaudit.app.cli import read_solve_progress, run_audit, solve_rows
    from otaudit.audit.report import read_report
    from otaudit.config import load_settings
    from otaudit.data.parquet import write_dataset_parquet
    from otaudit.tasks.progress import LOG_PREFIX

    X, Y = _clouds()
    lines = [f"name: progress\noutput: {tmp_path / 'out'}\ndatasets:"]
    for name, Z in (("vendor_a", X), ("vendor_b", Y)):
        uri = write_dataset_parquet(str(tmp_path / "data"), name, Z)
        lines.append(f"  - {{name: {name}, uri: {uri}, features: features}}")
    lines.append("measures:\n  w2: {solver: sparse, target_gap: 0}\npairs: all\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("\n".join(lines))

    outcome = run_audit(str(manifest), dask_address=progress_cluster, settings=load_settings())
    assert outcome["exit_code"] == 0, outcome["summary"]
    (row,) = read_report(outcome["uri"]).pair_rows()
    run_id = row["run_id"]

    with get_client(sync_client=True) as client:
        arts = read_solve_progress(client, run_id)
        assert len(arts) == 1  # one artifact per solve, updated in place
        (art,) = arts
        assert art.type == "progress" and art.task_run_id is not None
        # the artifact holds the final interval: 100 * lower / upper, and its line
        assert float(art.data) == pytest.approx(100 * row["lower"] / row["upper"], abs=1e-9)
        ((key, line, pct),) = solve_rows(arts)  # what the CLI's bar shows
        assert key == str(art.id) and pct == float(art.data)
        assert line.startswith("pair vendor_a~vendor_b w2  W2\u00b2 in [")
        assert re.search(r"gap [0-9.e+-]+ %", line), line
        # the history: one task-run log line per publication, sent from the worker process
        deadline, found = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            logs = client.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[art.task_run_id]))
            )
            found = [lg.message for lg in logs if lg.message.startswith(LOG_PREFIX)]
            if found and f"upper={row['upper']!r}" in found[-1]:
                break
            time.sleep(0.5)
    bounds = [
        (float(m.group(1)), float(m.group(2)))
        for m in (re.search(r"lower=(\S+) upper=(\S+)$", x) for x in found)
    ]
    assert len(bounds) >= 2, found  # several rounds published, not only the last
    _monotone(bounds)
    assert bounds[-1] == (row["lower"], row["upper"])  # ... ending at the report's interval
