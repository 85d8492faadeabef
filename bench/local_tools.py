"""Helpers the process benchmarks share: Postfix's tools, waiting for a port, smtp-sink."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

SBIN = "/usr/sbin"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if not found:
        raise SystemExit(f"{name} not found: install Debian's postfix package (make test does)")
    return found


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port}")


def smtp_sink(
    address: str, port: int, backlog: int = 2000, dump: str | None = None
) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink on `address:port`, accepting everything, as nobody when root;
    with `dump` (a directory nobody may write), each message is kept in a file there."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    keep = ["-d", f"{dump}/m"] if dump else []
    return subprocess.Popen(
        [tool("smtp-sink"), *user, *keep, f"{address}:{port}", str(backlog)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
