"""The command line over the API: InterWorx-style `nodeworx` and the friendly service commands.

Each runs as a real process against a real instance (and, with --url, a real panel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.instance import SendworxHome
from support.panel import Panel, control_file

from sendworx.cli import nodeworx_command
from sendworx.shared.pidfile import running_pid

NODEWORX = str(Path(sys.executable).parent / "nodeworx")


def _run(arguments: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        timeout=60,
        **options,  # type: ignore[call-overload]
    )
    return result


def _sendworx(home: SendworxHome, *arguments: str) -> subprocess.CompletedProcess[str]:
    return _run(home.command(*arguments))


def _nodeworx(home: SendworxHome, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The `nodeworx` console script, pointed at the instance by SENDWORX_HOME."""
    return _run([NODEWORX, *arguments], env={**os.environ, "SENDWORX_HOME": str(home.home)})


@pytest.fixture
def initialised(home: SendworxHome) -> SendworxHome:
    assert _sendworx(home, "init").returncode == 0
    return home


def test_nodeworx_prints_structs_as_key_value_lines(initialised: SendworxHome) -> None:
    result = _sendworx(
        initialised, "nodeworx", "-u", "-n", "-c", "MailSend", "-a", "listServiceInfo"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "id: send",
        "name: ##LG_OUTBOUND_MAIL##",
        "ports: ##LG_NOT_APPLICABLE##",
        "page: /nodeworx/mail/mta",
        "ctrl: /nodeworx/mail/send",
        "is_running: 0",
    ]
    listed = _nodeworx(initialised, "-u", "-n", "-c", "MailSend", "-a", "listRequiredPermissions")
    assert listed.stdout == "EMAIL\n"
    running = _nodeworx(
        initialised, "-un", "--controller=/nodeworx/mail/send", "--action", "isRunning"
    )
    assert running.stdout == "0\n"


def test_nodeworx_update_with_combined_flags_and_repeated_inputs(
    initialised: SendworxHome,
) -> None:
    result = _nodeworx(
        initialised,
        "-unc",
        "MailSend",
        "-a",
        "update",
        "--concurrency_remote",
        "100",
        "--smtp_routes",
        "a.test:relay.test",
        "--smtp_routes=.b.test:[127.0.0.1]:2525",
    )
    assert (result.returncode, result.stdout) == (0, "Outbound mail settings updated\n")
    assert control_file(initialised, "concurrencyremote") == "100\n"
    assert (
        control_file(initialised, "smtproutes") == "a.test:relay.test\n.b.test:[127.0.0.1]:2525\n"
    )


def test_nodeworx_failures_exit_non_zero_and_change_nothing(initialised: SendworxHome) -> None:
    invalid = _nodeworx(
        initialised, "-u", "-n", "-c", "MailSend", "-a", "update", "--queue_lifetime=-1"
    )
    assert invalid.returncode == 1
    assert invalid.stderr.splitlines()[1:] == ["queue_lifetime: must be between 0 and 31536000"]
    assert control_file(initialised, "queuelifetime") is None
    unknown = _nodeworx(initialised, "-u", "-n", "-c", "MailSent", "-a", "isRunning")
    assert (unknown.returncode, "unknown controller" in unknown.stderr) == (1, True)
    stray = _nodeworx(initialised, "-u", "-n", "-c", "MailSend", "-a", "update", "stray")
    assert stray.returncode == 2
    (initialised.home / "sendworx.toml").write_text("helo_name = [\n")
    broken = _nodeworx(initialised, "-u", "-n", "-c", "MailSend", "-a", "isRunning")
    assert broken.returncode == 1 and broken.stderr.startswith("nodeworx: "), broken.stderr
    assert "not valid TOML" in broken.stderr and "Traceback" not in broken.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_nodeworx_refuses_users_other_than_root_and_the_owner(initialised: SendworxHome) -> None:
    # A forked child drops to `nobody` (the interpreter and modules are already loaded, so it
    # needs no access to the virtualenv) and runs the command's entry point.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        sys.stderr = os.fdopen(write_end, "w")
        os.seteuid(65534)
        code = nodeworx_command.run(
            ["-u", "-n", "-c", "MailSend", "-a", "isRunning"], instance=initialised.instance
        )
        sys.stderr.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as errors:
        message = errors.read()
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 1
    assert "run as root or as the owner" in message


def test_nodeworx_reaches_a_panel_with_url_and_key_file(panel: Panel) -> None:
    result = _run(
        [
            NODEWORX,
            "--url",
            f"https://127.0.0.1:{panel.https_port}",
            "--key-file",
            str(panel.home.home / "panel" / "master.key"),
            "--ca-file",
            str(panel.ca),
            "-c",
            "MailSend",
            "-a",
            "listPortNumbers",
        ]
    )
    assert (result.returncode, result.stdout) == (0, "##LG_NOT_APPLICABLE##\n")


def test_start_status_stop_run_the_real_service(initialised: SendworxHome) -> None:
    try:
        started = _sendworx(initialised, "start", "--json")
        assert json.loads(started.stdout) == {"action": "start", "result": "send started"}
        pid = running_pid(initialised.instance.engine_pid_file)
        assert pid is not None
        report = json.loads(_sendworx(initialised, "status", "--json").stdout)
        assert (report["running"], report["queue"]["engine_pid"]) == (True, pid)
        assert report["since"] > 0
        assert report["settings"]["concurrency_remote"] == 255
        assert "cascade_to_nodes" not in report["settings"]
        text = _sendworx(initialised, "status").stdout  # not a terminal: plain lines
        assert "service: send (Outbound Mail): running" in text.splitlines()
    finally:
        stopped = _sendworx(initialised, "stop")
    assert (stopped.returncode, stopped.stdout) == (0, "send stopped\n")
    assert running_pid(initialised.instance.engine_pid_file) is None


def test_settings_set_and_show(initialised: SendworxHome) -> None:
    changed = _sendworx(
        initialised, "settings", "set", "timeout_connect=30", "smtp_routes=x.test:relay.test"
    )
    assert changed.returncode == 0, changed.stderr
    shown = json.loads(_sendworx(initialised, "settings", "--json").stdout)
    assert shown["timeout_connect"] == 30 and shown["smtp_routes"] == ["x.test:relay.test"]
    cleared = _sendworx(initialised, "settings", "set", "smtp_routes=")
    assert cleared.returncode == 0
    assert control_file(initialised, "smtproutes") == ""


@pytest.mark.parametrize(
    ("assignment", "status", "message"),
    [
        ("timeout_connect=0", 1, "timeout_connect: must be between 1 and 3600"),
        ("speed=fast", 2, "unknown setting(s) speed"),
        ("timeout_connect", 2, "expected KEY=VALUE"),
    ],
)
def test_settings_set_refuses_bad_input_and_writes_nothing(
    initialised: SendworxHome, assignment: str, status: int, message: str
) -> None:
    result = _sendworx(initialised, "settings", "set", assignment)
    assert (result.returncode, message in result.stderr) == (status, True), result.stderr
    assert control_file(initialised, "timeoutconnect") is None
