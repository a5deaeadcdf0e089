"""Interrupts of a CLI audit that cannot be missed (issue 16 item 7).

A Python signal handler runs only when the main thread next executes bytecode. A main
thread blocked in C (a lock wait, a long C call, a library that retries its wait on
``EINTR``) never runs it, so a handler that starts the shutdown watchdog itself can leave
a SIGTERM unanswered for as long as the C call lasts. :class:`Signals` therefore works on
three levels:

1. **C level**: :func:`signal.set_wakeup_fd` on a socketpair. CPython's C handler writes
   the signal number to it the moment the signal arrives, in whichever thread the kernel
   picked; a daemon *watcher* thread blocked in ``select`` wakes up (it needs the GIL,
   which a main thread blocked in C has released), starts the grace timer and, at a second
   signal or when the grace runs out, kills the child processes and calls ``os._exit``.
2. **Python level**: the main-thread handler raises :class:`Interrupted`, which takes the
   orderly path (cancel the flow run, stop the Dask cluster and the Prefect server, print
   ONE line, exit 128 + signal). It also arms the timer, in case something replaced the
   wakeup fd (an asyncio loop's ``add_signal_handler`` does).
3. **Kernel level**, the last resort when the watcher cannot run at the deadline (a C call
   holding the GIL, entered after the signal): at the first signal ``alarm(grace +
   ALARM_MARGIN_S)`` is armed if SIGALRM still has its default action, so the kernel ends
   the process (status 142, "Alarm clock"); the temporary Prefect server dies with it
   (``PR_SET_PDEATHSIG``) and the Dask workers notice their parent is gone. (A C call that
   already holds the GIL when the signal comes leaves no thread of this process able to
   run: nothing in-process can help there.)

Nothing is blocked with ``pthread_sigmask`` (child processes inherit the mask: the Prefect
server and the Dask workers must still die on SIGTERM). After an interrupt the watcher
and the handlers stay when the ``with`` block ends, so the rest of the exit (joining
non-daemon threads, ``atexit`` hooks) is bounded by the same deadline and a second signal
still kills the children: after an interrupt the process is on its way out (the CLI's
use). Without an interrupt the handlers, then the wakeup fd are restored and the watcher
stops; a signal arriving meanwhile meets one of them (:func:`signal.signal` runs a pending
handler before it switches), and :meth:`Signals.__exit__` then raises
:class:`Interrupted`. It also raises it when a signal came but the block ended without it
(a library swallowed the ``KeyboardInterrupt`` or turned it into another error).

Standard library only, imported at CLI start: nothing here may import on the hard path
(the main thread may hold the import lock).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

__all__ = ["Interrupted", "Signals", "ALARM_MARGIN_S"]

#: Seconds after the grace period at which the kernel alarm ends the process if the
#: watcher thread could not (a C call holding the GIL).
ALARM_MARGIN_S: int = 3
#: The signals handled (others reaching the wakeup fd are ignored by the watcher).
HANDLED = (signal.SIGINT, signal.SIGTERM)
_STOP = 0  # byte written by __exit__: the watcher returns
_ARMED = 255  # byte written by the Python handler: re-read the deadline


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during an audit (raised in the main thread by :class:`Signals`)."""

    def __init__(self, signum: int, flow_run_id: Any):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.flow_run_id = flow_run_id
        super().__init__(self.signal_name)


def current_flow_run_id() -> Any:
    """The id of the flow run the main thread is in (None outside a flow run)."""
    context = sys.modules.get("prefect.context")
    ctx = context.FlowRunContext.get() if context is not None else None
    run = getattr(ctx, "flow_run", None)
    return getattr(run, "id", None)


class Signals:
    """Clean, bounded interrupts (see the module docstring). SIGINT (Ctrl-C) and SIGTERM
    raise :class:`Interrupted` in the main thread; from the moment the signal arrives, at
    most ``grace_s`` pass before the child processes are killed and the process exits (at
    once on a second signal). Either way ONE line ``otaudit: interrupted: ...`` is printed
    and the exit code is 128 + the first signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, grace_s: float):
        self.grace_s = float(grace_s)
        self.signum: int | None = None
        self._lock = threading.RLock()  # RLock: the handler may interrupt its own holder
        self._said = False
        self._c_count = 0  # signals seen at C level (wakeup fd)
        self._py_count = 0  # Python handler calls (coalesced: <= the real count)
        self._deadline: float | None = None
        self._previous: dict[int, Any] = {}
        self._old_wakeup: int | None = None
        self._socks: tuple[socket.socket, socket.socket] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    # --- install / restore ------------------------------------------------------------

    def __enter__(self) -> Signals:
        with contextlib.suppress(ImportError):
            import psutil  # noqa: F401 - loaded now: the hard path must not import
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)  # set_wakeup_fd requires it (a signal handler writes)
        self._socks = (rsock, wsock)
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="otaudit-signals")
        self._watcher.start()
        # watcher first, then the wakeup fd, then the handlers: from the first handler on,
        # every signal reaches both levels
        self._old_wakeup = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # inherited "ignore" (a background job): the caller's choice
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.signum is None:
            self._restore()  # may see a signal that arrives meanwhile
        # else: interrupted, the process is on its way out. The handlers, the wakeup fd and
        # the watcher stay, so the rest of the exit (non-daemon threads, atexit hooks) ends
        # by the same deadline, and a second signal still kills the children.
        if self.signum is not None and not (exc_type and issubclass(exc_type, KeyboardInterrupt)):
            # the signal came, but the block ended without its Interrupted: it reached only
            # the watcher, or a library swallowed it or turned it into another error
            raise Interrupted(self.signum, None) from None

    def _restore(self) -> None:
        """Previous handlers back, then the wakeup fd, then the watcher stops (in that
        order: a signal arriving in between meets one of ours, never nobody)."""
        for sig, handler in self._previous.items():
            while True:  # signal.signal runs a pending handler before it switches
                try:
                    signal.signal(sig, handler)
                    break
                except Interrupted:  # it arrived just now: self.signum is set
                    pass
        self._previous.clear()
        self._stop_watcher()  # a signal seen only by the watcher sets self.signum too

    def _stop_watcher(self) -> None:
        if self._socks is None:
            return
        rsock, wsock = self._socks
        with contextlib.suppress(ValueError, OSError):
            current = signal.set_wakeup_fd(
                -1 if self._old_wakeup is None else self._old_wakeup, warn_on_full_buffer=False
            )
            if current != wsock.fileno():  # someone replaced ours meanwhile: keep theirs
                signal.set_wakeup_fd(current)
        with contextlib.suppress(OSError):
            wsock.send(bytes([_STOP]))
        end = time.monotonic() + 2.0
        while self._watcher is not None and self._watcher.is_alive():
            if self._deadline is not None or time.monotonic() > end:
                return  # armed by a last signal: it keeps bounding the exit
            self._watcher.join(timeout=0.05)
        rsock.close()
        wsock.close()
        self._socks = None

    # --- the two levels -----------------------------------------------------------------

    def _arm(self, signum: int) -> bool:
        """Record a first signal: start the grace timer and the kernel backstop. False when
        a timer already runs."""
        with self._lock:
            if self._deadline is not None:
                return False
            self.signum = self.signum or signum
            self._deadline = time.monotonic() + self.grace_s
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None):
                signal.alarm(int(math.ceil(self.grace_s)) + ALARM_MARGIN_S)
        return True

    def _handle(self, signum: int, frame: Any) -> None:
        """The main thread's handler: the orderly path (raise), or a hard exit at the second
        signal."""
        with self._lock:
            self._py_count += 1
            second = max(self._c_count, self._py_count) >= 2
        if second:
            self._hard_exit("second signal")
        if self._arm(signum) and self._socks is not None:
            with contextlib.suppress(OSError):  # the wakeup fd may not be ours any more
                self._socks[1].send(bytes([_ARMED]))
        raise Interrupted(signum, current_flow_run_id())

    def _watch(self) -> None:
        """The watcher thread: wakes at C level on every signal and at the deadline."""
        assert self._socks is not None
        rsock = self._socks[0]
        while True:
            with self._lock:
                deadline = self._deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([rsock], [], [], timeout)
            except (OSError, ValueError):  # closed
                return
            if not ready:
                self._hard_exit(f"shutdown took over {self.grace_s:g} s")
            try:
                data = rsock.recv(256)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            for byte in data:
                if byte in HANDLED:
                    self._c_signal(byte)
                elif byte == _STOP and self._deadline is None:
                    return  # (armed: stay until the deadline)

    def _c_signal(self, signum: int) -> None:
        with self._lock:
            self._c_count += 1
            second = max(self._c_count, self._py_count) >= 2
        if second:
            self._hard_exit("second signal")
        self._arm(signum)

    # --- the hard path ------------------------------------------------------------------

    def _hard_exit(self, why: str) -> None:
        """Kill every child process (the Prefect server, the Dask workers), print the line,
        ``os._exit(128 + signal)``. No imports, no locks of other code (stderr by fd)."""
        psutil = sys.modules.get("psutil")  # imported in __enter__
        runtime = sys.modules.get("otaudit.flows.runtime")
        with contextlib.suppress(Exception):
            if psutil is not None:
                for child in psutil.Process().children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            elif runtime is not None:
                runtime.stop_temporary_servers()
        self.say(f"{why}: child processes killed", raw=True)
        os._exit(self.exit_code)

    def say(self, detail: str, raw: bool = False) -> None:
        """Print the one ``interrupted:`` line (once). ``raw``: straight to fd 2 (the hard
        path: the main thread may hold ``sys.stderr``'s lock)."""
        with self._lock:
            if self._said:
                return
            self._said = True
        name = signal.Signals(self.signum or signal.SIGINT).name
        line = f"\notaudit: interrupted: {name}; {detail} (exit {self.exit_code})\n"
        if raw:
            with contextlib.suppress(OSError):
                os.write(2, line.encode())
            return
        sys.stderr.write(line)
        sys.stderr.flush()
