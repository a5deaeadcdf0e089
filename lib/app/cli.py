"""The ``otaudit`` command line: ``audit``, ``demo``, ``report`` (SPEC.md section 3).

Exit codes of ``otaudit audit`` (also documented in docs/pipeline.md):

====  ==================================================================================
0     every pair computed, no distance above its measure's threshold
1     total failure: bad manifest, unreachable storage, or no pair could be computed
2     partial: some datasets/pairs failed (listed in the report), the rest completed
3     drift: a pair's distance exceeds the manifest's ``thresholds`` for its measure
====  ==================================================================================

Errors a user can cause (InputError, StorageError) are printed as ONE line, no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import typer

from otaudit.app.interrupts import Signals

__all__ = ["app", "main", "run_audit"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Dataset audits with optimal transport (OTDD, certified mini-batch OT bounds).",
)


def _quiet_prefect_console(verbose: bool) -> None:
    """Keep Prefect's console logs (tracebacks of failed tasks) off the terminal unless
    ``--verbose``; they still go to the Prefect API (UI). Exported so Dask workers inherit
    it. Must run before prefect is imported."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("DISTRIBUTED_LOGGING__DISTRIBUTED", "error")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"otaudit: error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)


def read_solve_progress(client: Any, run_id: str) -> list[Any]:
    """The progress artifacts of this run's task runs (one per long certified solve,
    :mod:`otaudit.tasks.progress`), oldest first."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterType,
        TaskRunFilter,
        TaskRunFilterTags,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    arts = client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
        task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[f"otaudit-run:{run_id}"])),
        sort=ArtifactSort.CREATED_DESC,
        limit=200,
    )
    return list(reversed(arts))


def solve_rows(artifacts: list[Any]) -> list[tuple[str, str, float]]:
    """What the bars show of the solves' progress artifacts: ``(artifact id, line, percent
    certified)``, e.g. ``pair a~b ot_bounds  W2² in [1.234, 1.244]  gap 0.8 %  12 s (round
    3)`` and ``99.2`` (``100 * lower / upper``)."""
    rows = []
    for art in artifacts:
        try:
            pct = max(0.0, min(100.0, float(art.data)))
        except (TypeError, ValueError):
            continue
        rows.append((str(art.id), " ".join(str(art.description or "").splitlines()), pct))
    return rows


class _Progress:
    """Rich progress bars (on stderr) fed by polling the Prefect API for this run's task runs:
    datasets and pair blocks done, and one bar per long certified solve (its running
    interval, from the progress artifact its task publishes: :func:`solve_rows`).

    The polling thread talks to ``api_url`` explicitly, with Prefect's ephemeral mode off:
    Prefect's settings context is per thread, so a client created in a new thread without
    them would start a second temporary server of its own (issue 17). It is stopped (and
    joined) before the server goes away. Cosmetic: any error only stops the bars.
    """

    def __init__(
        self, run_id: str, n_datasets: int, n_blocks: int, n_pairs: int, enabled: bool,
        api_url: str | None = None,
    ):  # fmt: skip
        self.run_id = run_id
        self.api_url = api_url
        self.totals = {"prepare-dataset": n_datasets, "pair-block": n_blocks}
        self.n_pairs = n_pairs
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name="otaudit-bars")
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _counts(self, client: Any) -> dict[str, int]:
        from prefect.client.schemas.filters import (
            TaskRunFilter,
            TaskRunFilterState,
            TaskRunFilterStateType,
            TaskRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                tags=TaskRunFilterTags(all_=[f"otaudit-run:{self.run_id}"]),
                state=TaskRunFilterState(
                    type=TaskRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED])
                ),
            ),
            limit=200,
        )
        return {
            "prepare-dataset": sum(r.name.startswith("prepare-") for r in runs),
            "pair-block": sum(r.name == "pair-block" for r in runs),
        }

    def _run(self) -> None:
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
            temporary_settings,
        )

        updates: dict[Any, Any] = {PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}
        if self.api_url:
            updates[PREFECT_API_URL] = self.api_url
        try:
            with temporary_settings(updates=updates):
                self._poll()
        except Exception:  # noqa: BLE001 - the bars are cosmetic; the flow reports errors
            return

    def _poll(self) -> None:
        from prefect.client.orchestration import get_client
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with (
            get_client(sync_client=True) as client,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            ) as bar,
        ):
            names = {
                "prepare-dataset": "datasets (read, embed, statistics)",
                "pair-block": f"pair blocks ({self.n_pairs} pairs)",
            }
            ids = {
                k: bar.add_task(text, total=self.totals[k], count=f"0/{self.totals[k]}")
                for k, text in names.items()
            }
            solves: dict[str, Any] = {}
            while True:
                stop = self._stop.wait(0.5)
                try:
                    counts = self._counts(client)
                    rows = solve_rows(read_solve_progress(client, self.run_id))
                except Exception:  # noqa: BLE001 - cosmetic; try again at the next tick
                    counts, rows = None, []
                if counts is not None:
                    for k, tid in ids.items():
                        done = min(counts[k], self.totals[k])
                        bar.update(tid, completed=done, count=f"{done}/{self.totals[k]}")
                for key, line, pct in rows:
                    if key not in solves:
                        solves[key] = bar.add_task(line, total=100.0, count="")
                    bar.update(solves[key], description=line, completed=pct)
                if stop:
                    break


def run_audit(
    manifest: str,
    *,
    out: str | None = None,
    dask_address: str | None = None,
    use_cache: bool | None = None,
    progress: bool = False,
    settings: Any = None,
) -> dict[str, Any]:
    """Run the ``audit`` flow on the configured environment and return its outcome.

    Environment (from :func:`otaudit.config.load_settings` unless ``settings`` is given):
    the Prefect API (``OTAUDIT_PREFECT_API_URL``/``PREFECT_API_URL``, else ONE temporary
    local server for this call), the Dask scheduler (``dask_address``/``OTAUDIT_DASK_ADDRESS``,
    else a LocalCluster of ``n_workers`` x ``threads_per_worker``, closed on return), whether
    the cache is read (``use_cache``, else ``OTAUDIT_CACHE``, default true).

    An interrupt (``KeyboardInterrupt``; the CLI turns SIGINT/SIGTERM into one) cancels the
    flow run in the API, then the cluster and the server are stopped, in that order, and the
    exception propagates.

    Raises:
        InputError: bad manifest. StorageError: output store unreachable.
    """
    from otaudit.config import load_settings
    from otaudit.data.manifest import load_manifest, select_pairs

    settings = settings or load_settings()
    m = load_manifest(manifest)  # fail fast (one line) before any server or cluster starts
    from otaudit.audit.plan import plan_blocks
    from otaudit.audit.preflight import check_preflight
    from otaudit.audit.report import new_run_id

    for line in check_preflight(m).warnings():  # metadata only; exit 1 if no pair computable
        typer.echo(line, err=True)
    address = dask_address or settings.dask_address
    from otaudit.flows.audit import audit
    from otaudit.flows.runtime import (
        cancel_flow_run,
        cluster_threads,
        local_cluster,
        make_task_runner,
        prefect_api,
    )

    n_threads = (
        cluster_threads(address)
        if address
        else int(settings.n_workers) * int(settings.threads_per_worker)
    )
    run_id = new_run_id()
    pairs = select_pairs(m)
    n_blocks = len(plan_blocks(pairs, n_threads))
    cache = settings.cache if use_cache is None else use_cache
    with prefect_api(settings) as api_url, contextlib.ExitStack() as stack:
        if not address:
            address = stack.enter_context(local_cluster(settings))
        flow = audit.with_options(task_runner=make_task_runner(settings, address=address))
        try:
            with _Progress(run_id, len(m.datasets), n_blocks, len(pairs), progress, api_url):
                return flow(
                    manifest=str(manifest),
                    run_id=run_id,
                    output=out,
                    n_threads=n_threads,
                    use_cache=cache,
                )
        except KeyboardInterrupt as e:
            why = f"interrupted by {getattr(e, 'signal_name', 'KeyboardInterrupt')}"
            cancel_flow_run(getattr(e, "flow_run_id", None), why)
            raise


@contextlib.contextmanager
def _one_line_warnings() -> Any:
    """Inside the block, warnings reach the terminal as one line each:
    ``otaudit: warning: Category: message`` (no source line, no file path)."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:  # fmt: skip
        text = " ".join(str(message).split())
        (file or sys.stderr).write(f"otaudit: warning: {category.__name__}: {text}\n")

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _version(value: bool) -> None:
    if value:
        from otaudit import __version__

        typer.echo(f"otaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Dataset audits with optimal transport."""


def _report_outcome(outcome: dict[str, Any]) -> int:
    typer.echo(f"report: {outcome['uri']}")
    typer.echo(f"status: {outcome['status']} (exit code {outcome['exit_code']})")
    for name, reason in outcome["failed_datasets"]:
        typer.echo(f"failed dataset {name}: {reason}", err=True)
    for measure, a, b, dist, lim in outcome["flagged"]:
        typer.echo(f"above threshold: {measure} {a} - {b}: {dist:.4g} > {lim:.4g}")
    return int(outcome["exit_code"])


def _run_cli(
    manifest: str,
    out: str | None,
    dask_address: str | None,
    use_cache: bool | None,
    progress: bool,
    debug: bool,
) -> dict[str, Any]:
    from otaudit.config import INTERRUPT_GRACE_S
    from otaudit.errors import OTAuditError

    signals = Signals(INTERRUPT_GRACE_S)  # before any child process exists
    outcome: dict[str, Any] | None = None
    try:  # around the block: a signal while its handlers are restored is caught here too
        with _one_line_warnings(), signals:
            try:
                outcome = run_audit(
                    manifest, out=out, dask_address=dask_address, use_cache=use_cache,
                    progress=progress,
                )  # fmt: skip
            except Exception as e:
                if signals.signum is not None or debug:
                    raise  # an interrupt that surfaced as another error: see Signals.__exit__
                if isinstance(e, OTAuditError):
                    raise _fail(str(e)) from None
                raise _fail(
                    f"{type(e).__name__}: {e} (unexpected; re-run with --debug for the traceback)"
                ) from None
    except KeyboardInterrupt:
        signals.signum = signals.signum or signal.SIGINT
        signals.say(
            "the audit had finished, its report is published"
            if outcome is not None
            else "run cancelled, Dask cluster and Prefect server stopped"
        )
        raise typer.Exit(signals.exit_code) from None
    return outcome


@app.command()
def audit(
    manifest: str = typer.Argument(..., help="Manifest YAML (path or fsspec URI)."),
    out: str | None = typer.Option(None, "--out", help="Override the manifest's output URI."),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="Existing Dask scheduler, e.g. tcp://host:8786."
    ),
    cache: bool | None = typer.Option(
        None, "--cache/--no-cache", help="Read the cache (default: OTAUDIT_CACHE, else true)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Prefect's console logs."),
    debug: bool = typer.Option(False, "--debug", help="Traceback on unexpected errors."),
) -> None:
    """Run the audit of MANIFEST and print where the report is (exit code: see docs)."""
    _quiet_prefect_console(verbose)
    outcome = _run_cli(manifest, out, dask_address, cache, progress and sys.stderr.isatty(), debug)
    raise typer.Exit(_report_outcome(outcome))


@app.command()
def demo(
    out: str | None = typer.Option(None, "--out", help="Directory for data and reports."),
    lines: int = typer.Option(40, "--lines", help="Summary lines to print."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Prefect's console logs."),
) -> None:
    """Build a registry from sklearn digits with planted drift and audit it (offline)."""
    _quiet_prefect_console(verbose)
    from otaudit.app.demo import demo_manifest, write_demo, write_if_changed
    from otaudit.config import load_settings

    t0 = time.perf_counter()
    target = Path(out or load_settings().output)
    paths = write_demo(target)
    mpath = target / "manifest.yaml"
    write_if_changed(mpath, demo_manifest(target, paths))
    typer.echo(f"demo data: {target / 'data'} ({len(paths)} vendors); manifest: {mpath}")
    outcome = _run_cli(str(mpath), None, None, None, sys.stderr.isatty(), False)
    code = _report_outcome(outcome)
    typer.echo("")
    typer.echo("\n".join(outcome["summary"].splitlines()[:lines]))
    typer.echo(f"... full summary: otaudit report {outcome['uri']}")
    typer.echo(f"demo finished in {time.perf_counter() - t0:.1f} s")
    # Drift is planted on purpose: the demo succeeds when the audit ran (exit 0 or 3).
    raise typer.Exit(0 if code in (0, 3) else code)


@app.command()
def report(
    uri: str = typer.Argument(..., help="Run directory, or audit prefix (latest complete run)."),
    storage_options: str | None = typer.Option(
        None, "--storage-options", help="fsspec options as JSON, e.g. '{\"anon\": true}'."
    ),
    compare: str | None = typer.Option(
        None, "--compare", help="Run id of the same audit to compare with (prints the changes)."
    ),
) -> None:
    """Print the summary of a written report (with --compare RUN_ID: what changed)."""
    from otaudit.audit.report import read_report
    from otaudit.errors import OTAuditError

    try:
        so = json.loads(storage_options) if storage_options else None
    except json.JSONDecodeError as e:
        raise _fail(
            f"--storage-options is not valid JSON: {e.msg}; fix: pass a JSON object"
        ) from None
    if compare is not None:
        from otaudit.audit.history import compare_runs

        try:
            typer.echo(compare_runs(uri, compare, so))
        except OTAuditError as e:
            raise _fail(str(e)) from None
        return
    try:
        rep = read_report(uri, so)
    except OTAuditError as e:
        raise _fail(str(e)) from None
    typer.echo(rep.summary)
    typer.echo(f"(report {rep.uri}, schema version {rep.schema_version})")


def main() -> None:
    """Console-script entry point (``otaudit``).

    Until an audit installs its handlers (:class:`otaudit.app.interrupts.Signals`, before
    any child process starts) Ctrl-C has the kernel's default action: the process ends at
    once with status 130, no traceback (Python's handler would raise wherever the main
    thread is, e.g. in an import, and click would print ``Aborted!`` and exit 1). SIGTERM
    has its default action there too (143)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
