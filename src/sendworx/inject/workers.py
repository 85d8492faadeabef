"""Pre-forked worker processes for the SMTP listener: one event loop per CPU core.

The parent binds the sockets and holds the pid lock; workers accept on the shared sockets,
die with the parent (PR_SET_PDEATHSIG) and are restarted if they crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("sendworx.smtpd")

_PR_SET_PDEATHSIG = 1
RESTART_DELAY_SECONDS = 0.5


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# Signals the parent handles in Python. A forked child inherits those handlers until it sets
# its own: a SIGTERM landing in between ran the parent's `stop` in the worker, which then went
# on serving and was never stopped (seen under coverage, whose after-fork hook widens the
# window). So they are blocked across the fork; the child restores the defaults before it
# lets them in, and the parent records the child before it does.
_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _start(
    serve: Callable[[], None], parent: int, children: set[int], stopping: Callable[[], bool]
) -> None:
    """Fork a worker unless the parent is stopping (asked with the signals blocked, so a
    stop cannot fall between the question and the fork and leave a worker nobody stops)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    try:
        if stopping():
            return
        pid = os.fork()
        if pid:
            children.add(pid)
            return
    finally:
        if os.getpid() == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
    status = 0
    try:
        _die_with_parent(parent)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        # Not the parent's forwarder; ignored until the worker's own loop takes it over.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        serve()
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        status = 1
    finally:
        logging.shutdown()
        os._exit(status)


def supervise(count: int, serve: Callable[[], None]) -> None:
    """Run `count` workers of `serve` until SIGTERM/SIGINT, restarting any that die."""
    parent = os.getpid()
    stopping = False
    children: set[int] = set()

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        forward(signal.SIGTERM, frame)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):  # reaped, not yet forgotten
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)  # workers reread what they read at start
    for _ in range(count):
        _start(serve, parent, children, lambda: stopping)
    log.info("%d workers started", count)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return
        children.discard(pid)
        if not stopping:
            log.error("worker %d exited (status %d); starting another", pid, status)
            time.sleep(RESTART_DELAY_SECONDS)
            _start(serve, parent, children, lambda: stopping)
