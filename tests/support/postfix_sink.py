"""Postfix's `smtp-sink` as a real remote peer, with its fault options (-r -f -q -Q -W).

It dumps every accepted transaction to a file we parse to see what reached it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.net import free_port, port_open, wait_for


def smtp_sink_binary() -> str:
    found = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("smtp-sink not found: `make test` installs Debian's postfix package")
    return found


class PostfixSink:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *options: str) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.options = options
        # smtp-sink drops to an unprivileged user when started as root; it must reach the dump.
        self._directory = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        os.chmod(self._directory, 0o777)
        self.dump = self._directory / "dump"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostfixSink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [
            smtp_sink_binary(),
            *user,
            "-D",
            str(self.dump),
            *self.options,
            f"{self.host}:{self.port}",
            "256",
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: port_open(self.host, self.port), timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
        shutil.rmtree(self._directory, ignore_errors=True)

    def transactions(self) -> list[str]:
        try:
            text = self.dump.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [chunk for chunk in text.split("X-Client-Addr:")[1:]]

    def recipients(self) -> list[str]:
        return [
            line.split("<", 1)[1].rstrip(">")
            for chunk in self.transactions()
            for line in chunk.splitlines()
            if line.startswith("X-Rcpt-Args: <")
        ]
