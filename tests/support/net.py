"""Small network helpers for tests: free ports, waiting for a listener, reading an SMTP reply."""

from __future__ import annotations

import io
import itertools
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from sendworx.shared import unix_sockets

# Ports for the servers tests start come from below the kernel's ephemeral range (32768 and
# up, where it picks the local port of every outgoing connection and of every bind to port
# 0), one block per pytest-xdist worker. Asking the kernel for a free port and closing it was
# a race: another worker, or a client connection, could take the same number before the
# server bound it (a panel then answered for a few seconds on a port that was not its own).
_FIRST_PORT, _BLOCK = 10_000, 2_500
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_BLOCK_START = _FIRST_PORT + _BLOCK * (int(_WORKER[2:]) if _WORKER[2:].isdigit() else 0)
_next_port = itertools.count(random.randrange(_BLOCK))  # another suite at once: elsewhere
# Ports Chromium refuses to load pages from (ERR_UNSAFE_PORT; net/base/port_util.cc's list
# above 1024): a panel given one cannot be tested in the browser. 10080 is in gw0's block.
_UNSAFE_FOR_BROWSERS = frozenset(
    {1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667,
     6668, 6669, 6679, 6697, 10080}
)  # fmt: skip


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody else in this test run is given, free on `host` now."""
    for _ in range(_BLOCK):
        port = _BLOCK_START + next(_next_port) % _BLOCK
        if port in _UNSAFE_FOR_BROWSERS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue  # still held by an earlier test's process
            return port
    raise RuntimeError(f"no free port in {_BLOCK_START}-{_BLOCK_START + _BLOCK - 1}")


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll `predicate` until it is truthy; fail with AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def smtp_greets(host: str, port: int) -> bool:
    """True once a server on the port sends its SMTP greeting: its event loop serves (a
    bound socket alone accepts connections into its backlog before that)."""
    try:
        with socket.create_connection((host, port), timeout=2) as probe:
            probe.settimeout(2)
            return probe.recv(4).startswith(b"220")
    except OSError:
        return False


def unix_socket_answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket at `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            unix_sockets.connect(probe, path)
            return True
    except OSError:
        return False


def connection_held_by(pid: int, local_port: int, remote_port: int) -> bool:
    """Whether process `pid` has a descriptor open on the TCP connection from its
    `local_port` to `remote_port` on loopback (the kernel's tables, not a count of sockets:
    other connections come and go meanwhile)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                    and inode != "0"
                ):
                    inodes.add(f"socket:[{inode}]")
    return bool(inodes & _open_sockets(pid))


def _open_sockets(pid: int) -> set[str]:
    """The process's socket descriptors; one closed while we look is simply not counted."""
    found = set()
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(entry.path)
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def smtp_reply(stream: io.BufferedIOBase) -> list[bytes]:
    """One SMTP reply read from `stream`, all its lines (`250-...` up to `250 ...`)."""
    lines = [stream.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(stream.readline())
    return lines
