"""A file other processes replace atomically, re-read only when it changed.

The panel checks `users.json` on every API request so that a key revoked by the CLI stops
working at once. Holding the file open, one fstat (no path lookup) tells both kinds of
change: written in place (mtime or size moved) or replaced by a rename (the open file's link
count dropped to 0). That is half the cost of a stat by path, with the same promptness.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class WatchedFile(Generic[T]):
    def __init__(self, path: str, parse: Callable[[bytes], T]) -> None:
        self._path = path
        self._parse = parse
        self._lock = threading.Lock()  # the loop and worker threads both ask
        self._fd: int | None = None
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of what `_value` holds
        self._value: T | None = None

    def current(self) -> T | None:
        """The parsed content, parsed again only after a change; None while there is no file.

        A parse error propagates and is raised again on the next call until the file is fixed.
        """
        with self._lock:
            if self._fd is not None:
                status = os.fstat(self._fd)
                if status.st_nlink and (status.st_mtime_ns, status.st_size) == self._stamp:
                    return self._value
                if not status.st_nlink:
                    self._close()  # replaced or deleted: open whatever is there now
            if self._fd is None:
                try:
                    self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
            status = os.fstat(self._fd)
            stamp = (status.st_mtime_ns, status.st_size)  # taken first: a later write shows
            self._value = self._parse(_read_all(self._fd))
            self._stamp = stamp
            return self._value

    def forget(self) -> None:
        """Read the file again next time (we just wrote it ourselves)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._stamp = None
        self._value = None

    def __del__(self) -> None:
        self._close()


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
