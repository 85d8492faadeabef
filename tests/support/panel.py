"""A running `sendworx panel` for tests, with clients for every auth form.

The panel really controls an engine; teardown kills whatever it started.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import ssl
import subprocess
import xmlrpc.client
from pathlib import Path
from typing import Any

from sendworx.cli import users_command
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid
from support.instance import SendworxHome
from support.net import free_port, port_open, wait_for

SEND = "/nodeworx/mail/send"
# listServiceInfo's payload while the engine is stopped, exactly as the spec page shows it.
STOPPED_SERVICE_INFO = {
    "id": "send",
    "name": "##LG_OUTBOUND_MAIL##",
    "ports": "##LG_NOT_APPLICABLE##",
    "page": "/nodeworx/mail/mta",
    "ctrl": "/nodeworx/mail/send",
    "is_running": 0,
}


class Panel:
    def __init__(self, home: SendworxHome, **panel_config: Any) -> None:
        self.home = home
        self.https_port, self.http_port = free_port(), free_port()
        home.write_config(
            panel={"https_port": self.https_port, "http_port": self.http_port, **panel_config}
        )
        # `sendworx init`'s own code, in this process: a fresh interpreter for it cost every
        # panel test a fifth of a second (test_run and test_users_cli run the command itself).
        with contextlib.redirect_stdout(io.StringIO()):
            assert users_command.init(Instance(home.home), None) == 0
        panel_dir = home.home / "panel"
        self.key = (panel_dir / "master.key").read_text()
        self.password = (panel_dir / "master.password").read_text().strip()
        self.email = "admin@sendworx.test"
        self.ca = panel_dir / "tls" / "ca.pem"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Panel:
        """Ready means: this process holds the panel's lock and both ports answer."""
        self.process = self.home.spawn("panel")
        process, pid_file = self.process, self.home.instance.panel_pid_file

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"panel exited: {self.home.stderr('panel')[-2000:]}")
            return (
                running_pid(pid_file) == process.pid
                and port_open("127.0.0.1", self.https_port)
                and port_open("127.0.0.1", self.http_port)
            )

        wait_for(ready, timeout=20)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.home.stop(self.process)

    def kill_engine(self) -> None:
        pid = running_pid(self.home.instance.engine_pid_file)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: running_pid(self.home.instance.engine_pid_file) is None)

    def close(self) -> None:
        self.kill_engine()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def https(self, path: str = "/xmlrpc") -> xmlrpc.client.ServerProxy:
        context = ssl.create_default_context(cafile=str(self.ca))
        return xmlrpc.client.ServerProxy(
            f"https://127.0.0.1:{self.https_port}{path}", context=context, allow_none=True
        )

    def http(self, path: str = "/xmlrpc") -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(
            f"http://127.0.0.1:{self.http_port}{path}", allow_none=True
        )

    def call(
        self, action: str, data: Any = None, *, auth: Any = None, controller: str = SEND
    ) -> Any:
        arguments = [self.key if auth is None else auth, controller, action]
        if data is not None:
            arguments.append(data)
        return self.https().iworx.route(*arguments)

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        connection.request("POST", "/xmlrpc", body, {"Content-Type": "text/xml", **(headers or {})})
        response = connection.getresponse()
        assert response.status == 200, response.status
        return response.read()

    def add_user(self, email: str, *permissions: str, password: str = "correct horse 1") -> str:
        arguments = ["user", "add", email, *(f"--permission={p}" for p in permissions)]
        subprocess.run(
            self.home.command(*arguments),
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        result = subprocess.run(
            self.home.command("apikey", "--user", email), capture_output=True, text=True, check=True
        )
        return result.stdout


def control_file(home: SendworxHome, name: str) -> str | None:
    path: Path = home.home / "control" / name
    return path.read_text() if path.exists() else None
