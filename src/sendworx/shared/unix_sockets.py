"""The engine's Unix sockets (control, wake-up) as files in the instance's run directory.

The directory is 0700, so only the instance's owner can create, squat or reach them; an
abstract-namespace name (what they were before) is visible to every local user in
/proc/net/unix and theirs to take while the engine is stopped. A socket path may not exceed
108 bytes, and instance homes can be deep, so every bind, connect and send goes through
`/proc/self/fd/<the run directory>/<name>`, which is always short. A stale file left by a
`kill -9` is removed by the next engine, which binds only while it holds its pid lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """A path to `path` that fits in a socket address, valid inside the block."""
    # O_PATH: search permission is enough (a site account may reach run/ without reading it).
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def bind(sock: socket.socket, path: Path) -> None:
    """Bind to `path`, replacing a stale socket file (callers hold the instance's pid lock)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with short_path(path) as address:
        sock.bind(address)


def connect(sock: socket.socket, path: Path) -> None:
    with short_path(path) as address:
        sock.connect(address)


def send_datagram(data: bytes, path: Path) -> None:
    """One datagram to `path`; silent when nobody listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        with contextlib.suppress(OSError), short_path(path) as address:
            sender.sendto(data, address)
