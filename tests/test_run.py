"""`sendworx run` (what `make run` starts): panel, submission listener and engine together."""

from __future__ import annotations

import signal
import smtplib
import subprocess

from support.instance import SendworxHome
from support.net import port_open, wait_for
from support.panel import Panel

from sendworx.shared.pidfile import running_pid


def test_run_brings_everything_up_prints_where_and_stops_it_all(home: SendworxHome) -> None:
    panel = Panel(home)  # writes the ports into the config and runs `sendworx init`
    process = subprocess.Popen(
        home.command("run"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline()]
        while banner[-1] and banner[-1] != "Stop with Ctrl-C.\n":
            banner.append(process.stdout.readline())
        assert banner[0] == "sendworx is running.\n"
        text = "".join(banner)
        for expected in (
            f"https://127.0.0.1:{panel.https_port}/  (the master user's password",
            f"https://127.0.0.1:{panel.https_port}/xmlrpc",
            f"https://127.0.0.1:{panel.https_port}/soap?wsdl",
            f"https://127.0.0.1:{panel.https_port}/api/v1/openapi.json",
            f"smtp://127.0.0.1:{home.smtpd_port}",
            str(home.home / "panel" / "master.key"),
            str(home.home / "panel" / "master.password"),
        ):
            assert expected in text, expected
        wait_for(lambda: port_open("127.0.0.1", panel.https_port), timeout=20)
        assert panel.call("isRunning")["payload"] is True
        wait_for(lambda: port_open("127.0.0.1", home.smtpd_port), timeout=20)
        with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
        assert running_pid(home.instance.webhookd_pid_file) is not None  # the webhook sender
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert running_pid(home.instance.engine_pid_file) is None
    assert running_pid(home.instance.webhookd_pid_file) is None
    assert not port_open("127.0.0.1", panel.https_port)
    assert not port_open("127.0.0.1", home.smtpd_port)
