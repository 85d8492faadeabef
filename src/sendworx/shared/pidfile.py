"""A pid file held with `flock` for as long as the process lives.

The lock, not the file's existence, says "running": kill -9 releases it with the process.
`running_pid` probes with a shared lock it drops at once; a starter that meets only such a
probe tries again for a moment (`ACQUIRE_PATIENCE_SECONDS`), so a start never fails because
the panel was answering `isRunning` at that instant.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

# A probe holds its lock for microseconds; a descheduled prober on a loaded machine, a few
# milliseconds. A real holder keeps it: "already running" after this long.
ACQUIRE_PATIENCE_SECONDS = 1.0


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid})")
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ACQUIRE_PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise AlreadyRunning(pid) from None
                time.sleep(0.005)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def forget(self) -> None:
        """In a forked child: close the inherited descriptor, leaving the lock to the parent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        # The file stays: unlinking a locked pid file lets a racing starter lock a dead inode.
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def running_pid(path: Path | str) -> int | None:
    """The pid of the live holder of `path`'s lock, or None when nobody holds it.

    Cheap enough for every API request: closing the descriptor drops our probe lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)
