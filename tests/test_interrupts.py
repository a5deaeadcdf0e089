"""Interrupts that cannot be missed (issue 16 item 7): :class:`otaudit.app.interrupts.Signals`
with real signals sent to a real subprocess, fast (no Prefect server, no Dask cluster).

The hard cases are a main thread blocked in C when the signal arrives (a lock wait that
retries on EINTR, so Python's handler never runs: before, SIGTERM was then ignored for as
long as the wait lasted), a shutdown that hangs after the ``with`` block (interpreter exit
joining a non-daemon thread), a second signal, and a C call holding the GIL. Each asserts
the exit status, the ONE ``otaudit: interrupted:`` line and that the child process the
script started does not survive. Timing bounds are loose on purpose (a shared, loaded
2-core machine): each says which margin it allows.

The end-to-end checks through ``otaudit audit`` (real Prefect server, real Dask workers)
are in tests/test_terminal.py (``slow``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")

#: Prologue of every script: a child process (like the Prefect server / Dask workers) whose
#: pid is printed, and a pthread mutex that the main thread can wait on in C (ctypes calls
#: through CDLL release the GIL; a second lock of a locked default mutex blocks in futex
#: wait, which no signal interrupts).
PROLOGUE = """
import ctypes, os, signal, subprocess, sys, threading, time
from otaudit.app.interrupts import Signals
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)
libc.pthread_mutex_lock(mutex)
"""


def _start(body: str) -> tuple[subprocess.Popen, int]:
    code = textwrap.dedent(PROLOGUE) + textwrap.dedent(body)
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    child = int(p.stdout.readline())
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # the main thread is now inside its wait
    return p, child


def _finish(p: subprocess.Popen, timeout: float = 60) -> tuple[str, str, float]:
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"no exit within {timeout} s of the signal; stderr: {err[-2000:]}")
    return out, err, time.monotonic() - t0


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    with_kill = psutil.Process(pid)
    with_kill.kill()  # do not leave it behind
    return False


def _one_line(err: str, name: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"otaudit: interrupted: {name};"), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


BLOCKED_IN_C = """
with Signals(GRACE):
    print("ready", flush=True)
    libc.pthread_mutex_lock(mutex)  # blocked in C: Python's handler never runs
print("not reached", flush=True)
"""


def test_sigterm_while_the_main_thread_is_blocked_in_c():
    """SIGTERM while the main thread waits in C: the watcher (woken by the wakeup fd at C
    level) kills the child and exits 143 once the grace period (1 s) is over. Before, the
    handler and with it the watchdog never ran: the process ignored SIGTERM."""
    p, child = _start(BLOCKED_IN_C.replace("GRACE", "1.0"))
    p.send_signal(signal.SIGTERM)
    out, err, took = _finish(p)
    assert p.returncode == 143, err[-2000:]
    assert "not reached" not in out
    line = _one_line(err, "SIGTERM")
    assert "shutdown took over 1 s: child processes killed (exit 143)" in line
    assert 0.9 <= took < 30.0, took  # the grace, plus up to 29 s of a loaded machine
    assert _gone(child), "the child process survived the interrupt"


def test_a_second_signal_exits_at_once_even_when_blocked_in_c():
    """Grace 120 s, main thread blocked in C: SIGINT then SIGTERM exit at once with the
    first signal's code (130), the child killed."""
    p, child = _start(BLOCKED_IN_C.replace("GRACE", "120.0"))
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert p.poll() is None, "exited before the grace period"
    p.send_signal(signal.SIGTERM)
    out, err, took = _finish(p)
    assert p.returncode == 130, err[-2000:]
    assert "second signal: child processes killed (exit 130)" in _one_line(err, "SIGINT")
    assert took < 30.0, took  # far below the 120 s grace
    assert _gone(child)


def test_orderly_path_then_a_hung_exit_is_still_bounded():
    """The main thread runs bytecode: SIGINT raises in it, the orderly path prints the line
    and leaves the block; then the interpreter's exit hangs (a non-daemon thread that never
    ends). The watcher outlives the block and ends the process by the deadline, exit 130,
    still one line (before, the watchdog stopped with the block: the exit hung)."""
    body = """
    signals = Signals(2.0)
    try:
        with signals:
            print("ready", flush=True)
            while True:
                time.sleep(0.05)
    except KeyboardInterrupt as e:
        assert type(e).__name__ == "Interrupted" and e.signum == signal.SIGINT
        signals.say("run cancelled")
    threading.Thread(target=time.sleep, args=(300,)).start()  # non-daemon: exit waits
    sys.exit(signals.exit_code)
    """
    p, child = _start(body)
    p.send_signal(signal.SIGINT)
    out, err, took = _finish(p)
    assert p.returncode == 130, err[-2000:]
    assert _one_line(err, "SIGINT").endswith("run cancelled (exit 130)")
    assert 1.9 <= took < 30.0, took
    assert _gone(child)


def test_a_swallowed_interrupt_still_exits_with_the_signal():
    """A library swallows the KeyboardInterrupt (or turns it into another error) and the
    block ends normally: leaving the block raises Interrupted anyway (exit 143)."""
    body = """
    signals = Signals(30.0)
    try:
        with signals:
            print("ready", flush=True)
            try:
                while True:
                    time.sleep(0.05)
            except KeyboardInterrupt:
                pass  # swallowed
    except KeyboardInterrupt as e:
        signals.say("after a swallowed interrupt")
        os._exit(signals.exit_code)
    print("not reached", flush=True)
    """
    p, child = _start(body)
    p.send_signal(signal.SIGTERM)
    out, err, _ = _finish(p)
    assert p.returncode == 143 and "not reached" not in out, err[-2000:]
    _one_line(err, "SIGTERM")
    psutil.Process(child).kill()


def test_without_an_interrupt_everything_is_restored():
    """No signal: on leaving the block the previous handlers and wakeup fd are back and the
    watcher thread is gone; a later SIGTERM has its default action (killed by SIGTERM). An
    inherited SIG_IGN (a background job's SIGINT) is left alone."""
    body = """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Signals(5.0) as s:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == s._handle
        assert any(t.name == "otaudit-signals" for t in threading.enumerate())
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # restored (and nothing else was installed)
    for _ in range(100):
        if not any(t.name == "otaudit-signals" for t in threading.enumerate()):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the watcher thread is still running")
    child.kill()
    print("ready", flush=True)
    time.sleep(60)
    """
    p, _ = _start(body)
    p.send_signal(signal.SIGTERM)
    _, err, took = _finish(p)
    assert p.returncode == -signal.SIGTERM, err[-2000:]
    assert err.strip() == ""


def test_a_c_call_holding_the_gil_meets_the_kernel_alarm():
    """The last resort: after the signal the main thread enters a C call that holds the GIL
    (ctypes.PyDLL), so no Python thread can run and the watcher cannot act; the alarm armed
    at the first signal (grace + ALARM_MARGIN_S = 1 + 3 s) ends the process (SIGALRM)."""
    from otaudit.app.interrupts import ALARM_MARGIN_S

    body = """
    gil = ctypes.PyDLL(None)
    with Signals(1.0):
        print("ready", flush=True)
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            gil.pthread_mutex_lock(mutex)  # a cleanup stuck in C, holding the GIL
    """
    p, child = _start(body)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err, _ = _finish(p)
    took = time.monotonic() - t0
    assert p.returncode == -signal.SIGALRM, err[-2000:]
    assert 1.0 + ALARM_MARGIN_S - 0.1 <= took < 60.0, took
    psutil.Process(child).kill()  # nothing of ours could run: the child is the test's to kill


def test_cli_entry_point_gives_sigint_the_default_action_until_an_audit_runs():
    """Before an audit installs its handlers (imports, argument parsing) Ctrl-C ends the
    CLI at once with status 130-by-signal: no traceback, no ``Aborted!``."""
    code = """
    import signal, sys, time
    from otaudit.app import cli
    cli.app = lambda: (print("ready", flush=True), time.sleep(60))  # parsing, imports...
    cli.main()
    """
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    _, err, _ = _finish(p)
    assert p.returncode == -signal.SIGINT and err.strip() == "", err[-2000:]


@pytest.fixture(autouse=True)
def _no_stray_children():
    before = {c.pid for c in psutil.Process(os.getpid()).children(recursive=True)}
    yield
    for c in psutil.Process(os.getpid()).children(recursive=True):
        if c.pid not in before:
            c.kill()
