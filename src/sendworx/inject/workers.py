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


# The parent takes its signals synchronously: they stay blocked, and it waits for them with
# sigwaitinfo. A Python handler has two races a parent that forks cannot afford: a SIGTERM
# arriving just before os.wait() blocked ran the handler only when a child next exited (the
# parent slept on, its workers serving, until killed: seen 1 in ~40 stops under load), and a
# worker forked with the parent's handler could run it instead of stopping. A worker restores
# the defaults and unblocks them before it serves (SIGHUP once its loop takes it).
_WATCHED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
_STOP = {signal.SIGTERM, signal.SIGINT}


def _start(serve: Callable[[], None], parent: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        _die_with_parent(parent)
        for signum in _STOP:
            signal.signal(signum, signal.SIG_DFL)
        # SIGHUP stays blocked, not ignored: `serve` unblocks it once its loop handles it,
        # so a reload sent while the worker starts reaches it then instead of being lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED - {signal.SIGHUP})
        serve()
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        status = 1
    finally:
        logging.shutdown()
        os._exit(status)


def _send(children: set[int], signum: int) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
            os.kill(child, signum)


def supervise(count: int, serve: Callable[[], None]) -> None:
    """Run `count` workers of `serve` until SIGTERM/SIGINT, restarting any that die; SIGHUP
    is passed on (workers reread what they read at start)."""
    parent = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    children = {_start(serve, parent) for _ in range(count)}
    log.info("%d workers started", count)
    stopping = False
    while children:
        received = signal.sigwaitinfo(_WATCHED).si_signo
        if received in _STOP and not stopping:
            stopping = True
            _send(children, signal.SIGTERM)
        elif received == signal.SIGHUP:
            _send(children, signal.SIGHUP)
        while children:  # reap every worker that ended (SIGCHLD merges several into one)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
            children.discard(pid)
            if not stopping:
                log.error("worker %d exited (status %d); starting another", pid, status)
                time.sleep(RESTART_DELAY_SECONDS)  # signals wait, blocked, meanwhile
                children.add(_start(serve, parent))
