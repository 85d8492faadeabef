"""Knows at once when a process has exited, with one system call and no file work per question.

A pidfd (Linux 5.3+) becomes readable when its process exits, zombie or not, and cannot be
fooled by pid reuse. One zero-timeout poll answers; where pidfds are missing, the caller's
slower check (the engine's pid lock: open, flock, read, close) is used instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading


class ExitWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the panel asks from its loop and from worker threads
        self._pid: int | None = None
        self._fd: int | None = None
        self._poll = select.poll()

    def alive(self, pid: int) -> bool | None:
        """True while `pid` runs, False once it has exited, None when we cannot tell."""
        with self._lock:
            if self._pid != pid:
                self._close()
                try:
                    self._fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    return False
                except (OSError, AttributeError):
                    return None
                self._pid = pid
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLIN)
            if self._poll.poll(0):
                self._close()
                return False
            return True

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._pid = self._fd = None
