"""A sendworx instance in a temporary directory, driven through real processes.

Tests write its config and control files, start `sendworx send` / `smtpd` as child
processes, inject with the real `sendworx sendmail`, and read its logs and queue.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sendworx.engine.control import query_engine
from sendworx.inject import sendmail
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid
from sendworx.shared.queue_format import Envelope, decode_message
from support.net import free_port, smtp_greets, unix_socket_answers, wait_for

DELIVERY_LINE = re.compile(
    r"delivery id=(?P<id>\S+) rcpt=(?P<rcpt>\"(?:[^\"\\]|\\.)*\") relay=(?P<relay>\S+) "
    r"result=(?P<result>\w+) status=(?P<status>\S+) attempt=(?P<attempt>\d+) reply=(?P<reply>.*)$"
)


def _toml_value(value: Any) -> str:
    return json.dumps(value)


class SendworxHome:
    def __init__(self, home: Path, *, dns_port: int, remote_port: int = 25) -> None:
        self.home = home
        self.instance = Instance(home)
        self.smtpd_port = free_port()
        self.config: dict[str, dict[str, Any]] = {
            "resolver": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout_seconds": 2.0},
            "smtpd": {"port": self.smtpd_port},
            "delivery": {
                "remote_port": remote_port,
                "idle_connection_seconds": 0.3,
                "shutdown_grace_seconds": 5.0,
                "rescan_seconds": 5.0,
            },
            "metrics": {"port": 0, "panel_port": 0},
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.write_config()

    # -- configuration ---------------------------------------------------------------------

    def write_config(self, **sections: dict[str, Any]) -> None:
        for section, values in sections.items():
            self.config.setdefault(section, {}).update(values)
        lines = ['helo_name = "sendworx.test"']
        for section, values in self.config.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "sendworx.toml").write_text("\n".join(lines) + "\n")

    def set_control(self, name: str, value: str) -> None:
        control = self.home / "control"
        control.mkdir(parents=True, exist_ok=True)
        (control / name).write_text(value)

    def routes(self, *lines: str) -> None:
        self.set_control("smtproutes", "".join(f"{line}\n" for line in lines))

    # -- processes -------------------------------------------------------------------------

    def command(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "sendworx", "--home", str(self.home), *arguments]

    def start_engine(self) -> subprocess.Popen[bytes]:
        process = self.spawn("send")
        wait_for(lambda: self.engine_answers(process), timeout=15)
        return process

    def start_smtpd(self) -> subprocess.Popen[bytes]:
        """Ready means: this process holds the smtpd lock and the port greets.

        The port alone could still be answered by a dying predecessor, and a bound socket
        accepts connections before the process's event loop serves them."""
        process = self.spawn("smtpd")
        pid_file = self.instance.smtpd_pid_file

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"smtpd exited: {self.stderr('smtpd')[-2000:]}")
            return running_pid(pid_file) == process.pid and smtp_greets(
                "127.0.0.1", self.smtpd_port
            )

        wait_for(ready, 15)
        return process

    def start_submitd(self) -> subprocess.Popen[bytes]:
        """Ready means: this process holds the submitd lock and its socket answers."""
        process = self.spawn("submitd")
        pid_file, path = self.instance.submitd_pid_file, self.instance.submission_socket

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"submitd exited: {self.stderr('submitd')[-2000:]}")
            return running_pid(pid_file) == process.pid and unix_socket_answers(path)

        wait_for(ready, 15)
        return process

    def queued(self) -> list[tuple[Envelope, bytes]]:
        """Every message in new/ and mess/, oldest first: its envelope and its content."""
        found = []
        for folder in ("new", "mess"):
            for name in self.queue_files(folder):
                found.append(decode_message((self.home / "queue" / folder / name).read_bytes()))
        return sorted(found, key=lambda queued: queued[0].birth)

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.stderr").open("ab")
        process = subprocess.Popen(self.command(name), stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def engine_answers(self, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"engine exited with {process.returncode}: {self.stderr('send')}")
        try:
            return bool(query_engine(self.instance, "status", timeout=1)["pid"] == process.pid)
        except OSError:
            return False

    def status(self) -> dict[str, Any]:
        return query_engine(self.instance, "status")

    def signal_engine(self, process: subprocess.Popen[bytes], signum: int) -> None:
        process.send_signal(signum)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)

    def stderr(self, name: str) -> str:
        path = self.home / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- mail ------------------------------------------------------------------------------

    def sendmail(
        self, *arguments: str, message: bytes = b"Subject: test\n\nhello\n"
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command("sendmail", *arguments), input=message, capture_output=True, timeout=30
        )

    def inject(
        self, *recipients: str, sender: str = "sender@origin.test", body: str = "hi"
    ) -> None:
        """Queue a message through `sendworx sendmail`'s own code, in this process: a fresh
        interpreter per message was a seventh of the suite's CPU (`sendmail()` runs the
        command itself, for the tests of the command)."""
        message = f"Subject: test\nMessage-ID: <{time.time_ns()}@t>\n\n{body}\n".encode()
        instance = Instance(self.home)  # the config as the test last wrote it
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            status = sendmail.run(
                ["-f", sender, *recipients],
                instance.queue(),
                instance.mail_names(),
                stdin=io.BytesIO(message),
                admission=instance.admission_socket,
            )
        assert status == 0, errors.getvalue()

    def enqueue(
        self, *recipients: str, sender: str = "sender@origin.test", copies: int = 1
    ) -> None:
        """Queue messages in-process through the injectors' own code path (fast setup)."""
        queue = self.instance.queue()
        for copy in range(copies):
            content = f"Subject: copy {copy}\r\n\r\nbody {copy}\r\n".encode()
            queue.inject(Envelope(sender, recipients, time.time()), content)

    def queue_files(self, folder: str = "mess") -> list[str]:
        """The messages' files in a folder; not the temporaries a state write stages there
        (`.ID.RANDOM.tmp`, renamed over the state file a moment later)."""
        path = self.home / "queue" / folder
        names = os.listdir(path) if path.exists() else []
        return sorted(name for name in names if not name.startswith("."))

    def queue_empty(self) -> bool:
        # `new/` first: a message moves from there to `mess/`, so listing them the other
        # way round could miss one that moved between the two listings.
        return not self.queue_files("new") and not self.queue_files("mess")

    def state(self, message_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "queue" / "state" / message_id).read_text())
        return data

    def deliveries(self) -> list[dict[str, str]]:
        path = self.home / "log" / "send.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text(errors="replace").splitlines():
            match = DELIVERY_LINE.search(line)
            if match:
                entry = match.groupdict()
                entry["rcpt"] = json.loads(entry["rcpt"])
                entry["reply"] = json.loads(entry["reply"])
                found.append(entry)
        return found

    def log_text(self, name: str = "send") -> str:
        path = self.home / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_delivery_lines(self, count: int, timeout: float = 15.0) -> list[dict[str, str]]:
        wait_for(lambda: len(self.deliveries()) >= count, timeout)
        return self.deliveries()
