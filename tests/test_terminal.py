"""What a user meets first in a terminal (issue 17 items 1-2, issue 16 item 7): a fast start
(lazy imports), one temporary Prefect server per CLI run (none left behind), no tracebacks
or ERROR lines on a successful run, and clean interrupts (SIGINT 130, SIGTERM 143, < 10 s,
no process left; after ``kill -9`` the server dies too).

Everything here runs the real console entry point in a subprocess: the real Prefect
temporary server, a real Dask LocalCluster, real signals, a real pseudo-terminal (the
progress bars only run on a terminal, which is where the second server used to start).
The end-to-end ones start a server and a cluster (~15 s alone, minutes on a loaded 2-core
machine): marked ``slow``.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

HEAVY = ("torch", "ot", "prefect", "dask", "distributed", "fsspec", "matplotlib")
EXE = [sys.executable, "-c", "from otaudit.app.cli import main; main()"]


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _loaded(output: str) -> set[str]:
    """The modules listed on the last ``loaded:a,b`` line of ``output``."""
    line = [x for x in output.splitlines() if x.startswith("loaded:")][-1]
    return {m for m in line[len("loaded:") :].split(",") if m}


# --- lazy imports -----------------------------------------------------------------------


def test_import_otaudit_and_help_load_no_heavy_module():
    """``import otaudit`` and ``otaudit --help``/``--version`` import none of torch, POT,
    Prefect, Dask (they made every command take 9-14 s before any work)."""
    res = _python(
        f"""
        import sys
        import otaudit
        first = [m for m in {HEAVY!r} if m in sys.modules]
        from otaudit.app.cli import app
        for args in (["--help"], ["--version"], ["audit", "--help"]):
            try:
                app(args)
            except SystemExit as e:
                assert e.code == 0, (args, e.code)
        after = [m for m in {HEAVY!r} if m in sys.modules]
        print("loaded:" + ",".join(first), file=sys.stderr)
        print("loaded:" + ",".join(after))
        """
    )
    assert res.returncode == 0, res.stderr
    assert _loaded(res.stderr) == set()  # after `import otaudit`
    assert _loaded(res.stdout) == set()  # after --help/--version


def test_every_public_name_still_resolves():
    """The SPEC's names (``otaudit.otdd`` ...) resolve lazily to the defining objects, also
    through ``from otaudit import ...``, and ``dir()`` lists them."""
    import otaudit
    from otaudit.core.result import OTResult
    from otaudit.core.solve import ot_bounds, solve_ot
    from otaudit.dataset_distance import otdd
    from otaudit.dataset_distance.flow import FlowResult, otdd_flow

    for name in otaudit.__all__:
        assert getattr(otaudit, name) is not None, name
        assert name in dir(otaudit)
    assert otaudit.otdd is otdd and otaudit.ot_bounds is ot_bounds
    assert otaudit.solve_ot is solve_ot and otaudit.OTResult is OTResult
    assert otaudit.otdd_flow is otdd_flow and otaudit.FlowResult is FlowResult
    assert otaudit.config.SEED == 0  # subpackages reachable as attributes
    from otaudit import sliced_otdd  # noqa: F401 - the import form works too

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = otaudit.nope
    # and the public API computes: W2^2 between two point sets 3 apart on one axis is 9
    X = np.zeros((4, 2))
    assert abs(otaudit.ot_bounds(X, X + [3.0, 0.0], batch_size=4).value - 9.0) < 1e-9


def test_report_command_needs_no_torch_prefect_dask(tmp_path):
    """``otaudit report URI`` reads Parquet and prints; it loads no torch/Prefect/Dask."""
    from tests.test_cli import _write_small_report

    uri = _write_small_report(tmp_path)
    res = _python(
        f"""
        import sys
        from otaudit.app.cli import app
        try:
            app(["report", {str(tmp_path / "reg")!r}])
        except SystemExit as e:
            assert e.code == 0, e.code
        print("loaded:" + ",".join(m for m in ("torch", "ot", "prefect", "dask", "distributed")
                                   if m in sys.modules))
        """
    )
    assert res.returncode == 0, res.stderr
    assert uri in res.stdout
    assert _loaded(res.stdout) == set()


# --- the interrupt watchdog (fast: no server) -------------------------------------------


def test_interrupt_watchdog_bounds_a_stuck_shutdown():
    """A SIGINT whose orderly shutdown hangs: the watchdog exits 130 after the grace period,
    with one ``interrupted:`` line and no traceback."""
    res = _python(
        """
        import os, signal, threading, time
        from otaudit.app.interrupts import Signals
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        with Signals(1.0):
            try:
                while True:
                    time.sleep(0.05)
            except KeyboardInterrupt:
                time.sleep(30)  # a cleanup that never finishes
        print("not reached")
        """,
        timeout=60,
    )
    assert res.returncode == 130
    assert "not reached" not in res.stdout and "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("otaudit: interrupted: SIGINT;"), lines


def test_demo_data_is_not_rewritten(tmp_path):
    """A second ``write_demo`` leaves identical files untouched (same bytes, same mtime),
    so the datasets' fingerprints do not change and the re-run hits the cache."""
    from otaudit.app.demo import write_demo

    first = write_demo(tmp_path)
    stamp = {n: (p.stat().st_mtime_ns, p.read_bytes()) for n, p in first.items()}
    time.sleep(0.01)
    second = write_demo(tmp_path)
    assert second == first
    assert {n: (p.stat().st_mtime_ns, p.read_bytes()) for n, p in second.items()} == stamp
    victim = first["vendor_a"]
    victim.write_bytes(b"not parquet")  # different content: written again
    write_demo(tmp_path)
    assert victim.read_bytes() == stamp["vendor_a"][1]


# --- end to end: a real audit through the console script ---------------------------------


@pytest.fixture(scope="module")
def small_audit(tmp_path_factory):
    """Three small labelled datasets and a manifest (OTDD exact; ~1 s of numerics)."""
    from otaudit.data.parquet import write_dataset_parquet

    root = tmp_path_factory.mktemp("terminal")
    rng = np.random.default_rng(0)
    lines = [f"name: small\noutput: {root / 'out'}\ndatasets:"]
    for name, shift in (("a", 0.0), ("b", 0.5), ("c", 1.0)):
        X = (rng.normal(size=(200, 8)) + shift).astype(np.float32)
        uri = write_dataset_parquet(str(root / "data"), name, X, rng.integers(0, 3, 200))
        lines.append(f"  - {{name: {name}, uri: {uri}, features: features, label: label}}")
    lines.append("measures:\n  otdd: {inner: exact}\npairs: all\n")
    manifest = root / "m.yaml"
    manifest.write_text("\n".join(lines))
    # migrate the module's Prefect database once, outside the server's start timeout (on a
    # loaded 2-core machine a fresh database plus the server's start can exceed it)
    prefect = Path(sys.executable).with_name("prefect")
    subprocess.run(
        [str(prefect), "server", "database", "upgrade", "-y"],
        env=_cli_env(manifest), capture_output=True, timeout=600, check=True,
    )  # fmt: skip
    return manifest


def _cli_env(small_audit: Path) -> dict[str, str]:
    """No Prefect server configured (the embedded default); one PREFECT_HOME for this
    module's runs (its database is migrated once, by the first run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OTAUDIT_"))}
    home = small_audit.parent / "prefect"
    env.update(PREFECT_HOME=str(home), OTAUDIT_CACHE="false", COLUMNS="100")
    return env


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _alive(procs: list[psutil.Process]) -> list[int]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _is_server(p: psutil.Process) -> bool:
    try:
        return "uvicorn" in " ".join(p.cmdline())
    except psutil.Error:
        return False


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_terminal_run_starts_one_server_and_leaves_nothing(small_audit, tmp_path):
    """In a real pseudo-terminal (progress bars on): exit 0, no traceback, no RuntimeError,
    no ERROR line, exactly one temporary Prefect server during the run, and no process of
    the run left afterwards. With a ``w2`` measure on the sparse exact route (published at
    once: ``OTAUDIT_PROGRESS_AFTER_S=0``) the bars show each solve's certified interval."""
    manifest = small_audit.with_name("m-progress.yaml")
    manifest.write_text(
        small_audit.read_text().replace(
            "measures:\n", "measures:\n  w2: {solver: sparse, target_gap: 0}\n"
        )
    )
    env = _cli_env(small_audit)
    env.update(OTAUDIT_PROGRESS_AFTER_S="0", OTAUDIT_PROGRESS_EVERY_S="0", COLUMNS="200")
    master, slave = pty.openpty()
    cmd = [*EXE, "audit", str(manifest)]
    p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    proc = psutil.Process(p.pid)
    output, servers, seen = b"", set(), []
    while p.poll() is None:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        kids = _descendants(proc)
        seen.extend(k for k in kids if k.pid not in {s.pid for s in seen})
        servers |= {k.pid for k in kids if _is_server(k)}
    p.wait(timeout=60)
    while True:  # the rest of the output
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    text = output.decode(errors="replace")
    assert p.returncode == 0, text[-3000:]
    assert "report: " in text and "status: ok" in text
    for bad in ("Traceback", "RuntimeError", "ERROR", "Timed out"):
        assert bad not in text, text[-3000:]
    assert "datasets (read, embed, statistics)" in text  # the bars ran (a terminal)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    for pair in ("a~b", "a~c", "b~c"):  # one bar per solve, with its certified interval
        assert re.search(rf"pair {pair} w2  W2\u00b2 in \[\S+, \S+\]  gap \S+ %", plain), plain
    assert len(servers) == 1, servers
    time.sleep(1.0)
    assert _alive(seen) == [], [" ".join(k.cmdline()[:4]) for k in seen]


def _start_and_wait(small_audit: Path, tmp_path: Path, settle_s: float):
    """Start an audit in its own session (like a shell job) and wait until its Prefect
    server and Dask workers run, plus ``settle_s``; returns (Popen, psutil procs)."""
    p = subprocess.Popen(
        [*EXE, "audit", str(small_audit), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(small_audit),
        start_new_session=True,
    )
    proc = psutil.Process(p.pid)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:
        kids = _descendants(proc)
        spawned = [k for k in kids if "multiprocessing" in " ".join(k.cmdline())]
        if any(_is_server(k) for k in kids) and len(spawned) >= 3:  # 2 workers + tracker
            break
        time.sleep(0.2)
    time.sleep(settle_s)
    assert p.poll() is None, "the audit ended before it could be interrupted"
    return p, _descendants(proc)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("how", "code"),
    [("ctrl-c", 130), ("sigterm", 143)],
)
def test_interrupt_exits_fast_and_cleanly(small_audit, tmp_path, how, code):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM (to
    the CLI): exit 130/143 within 10 s, one ``interrupted:`` line, no traceback, and no
    server or worker process left."""
    p, procs = _start_and_wait(small_audit, tmp_path, settle_s=5.0)
    assert any(_is_server(k) for k in procs)
    t0 = time.monotonic()
    if how == "ctrl-c":
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == code, err[-3000:]
    assert took < 10.0, f"{took:.1f} s"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("otaudit: interrupted: "), err[-3000:]
    assert "Traceback" not in out + err
    time.sleep(1.0)
    assert _alive(procs) == [], [" ".join(k.cmdline()[:4]) for k in procs]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_leaves_no_server_or_worker(small_audit, tmp_path):
    """``kill -9`` of the CLI: the kernel stops the temporary server (PR_SET_PDEATHSIG) and
    the Dask workers exit (their parent-alive pipe closes) within seconds."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the death signal is Linux's prctl")
    p, procs = _start_and_wait(small_audit, tmp_path, settle_s=2.0)
    servers = [k for k in procs if _is_server(k)]
    assert servers
    p.kill()
    p.communicate(timeout=30)
    deadline = time.monotonic() + 15
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(procs) == [], [" ".join(k.cmdline()[:4]) for k in procs]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_while_the_server_starts_exits_143_and_leaves_nothing(small_audit, tmp_path):
    """The early window: SIGTERM as soon as the temporary Prefect server's process exists
    (the CLI is still waiting for it to answer, no cluster yet): exit 143 within 10 s, one
    ``interrupted:`` line, no traceback, the server gone."""
    p = subprocess.Popen(
        [*EXE, "audit", str(small_audit), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_cli_env(small_audit), start_new_session=True,
    )  # fmt: skip
    proc = psutil.Process(p.pid)
    deadline = time.monotonic() + 600
    servers: list[psutil.Process] = []
    while time.monotonic() < deadline and p.poll() is None and not servers:
        servers = [k for k in _descendants(proc) if _is_server(k)]
        time.sleep(0.02)
    assert servers and p.poll() is None, "no server process seen"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 143, err[-3000:]
    assert took < 10.0, f"{took:.1f} s"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("otaudit: interrupted: SIGTERM;"), err[-3000:]
    assert "Traceback" not in out + err
    time.sleep(1.0)
    procs = servers + _descendants(proc)
    assert _alive(procs) == [], [" ".join(k.cmdline()[:4]) for k in procs]
