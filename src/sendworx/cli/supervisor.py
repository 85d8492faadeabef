"""`sendworx run`: the whole service in the foreground, for `make run` and for trying it out.

Runs the panel and the submission listener as children and starts the engine through the
same backend the API uses (the API may stop and start it); Ctrl-C stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sendworx.backends import ServiceError
from sendworx.backends.builtin import BuiltinBackend
from sendworx.shared.instance import Instance

CHILDREN = ("smtpd", "panel")


def _spawn(instance: Instance, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sendworx", "--home", str(instance.home), command],
        start_new_session=True,
    )


def _banner(instance: Instance) -> str:
    config = instance.config
    sendworx = f"{Path(sys.executable).parent / 'sendworx'} --home {instance.home}"
    panel = config.panel
    lines = [
        "sendworx is running.",
        f"  home:        {instance.home}",
        f"  settings:    {instance.control_dir} (qmail-style control files)",
        f"  submission:  smtp://{config.smtpd.listen[0]}:{config.smtpd.port}",
    ]
    if panel.https_port:
        base = f"https://{panel.listen}:{panel.https_port}"
        lines += [
            f"  web pages:   {base}/  (the master user's password: "
            f"{instance.master_password_file})",
            f"  XML-RPC:     {base}/xmlrpc",
            f"  SOAP WSDL:   {base}/soap?wsdl",
            f"  JSON API:    {base}/api/v1/  (OpenAPI: {base}/api/v1/openapi.json)",
            f"  CA file:     {instance.tls_dir / 'ca.pem'}",
        ]
    if panel.http_port:
        lines.append(
            f"  API (plain): http://{panel.listen}:{panel.http_port}/xmlrpc, /soap, /api/v1/"
        )
    lines += [
        f"  API key:     {instance.master_key_file} (master user, mode 0600)",
        f"  metrics:     http://{config.metrics.listen}:{config.metrics.port}/metrics",
        f"  logs:        {instance.log_dir}",
        f"  local mail:  {sendworx} mailbox  (bounces to local senders, root, postmaster)",
        "Send a test message:",
        f"  printf 'Subject: hello\\n\\nhi\\n' | {sendworx} sendmail you@example.com",
        "See the service, the queue and the settings:",
        f"  {sendworx} status",
    ]
    if panel.http_port:
        lines += [
            "Ask the API whether Outbound Mail runs:",
            f'  python3 -c "import xmlrpc.client as x; print(x.ServerProxy('
            f"'http://{panel.listen}:{panel.http_port}/xmlrpc').iworx.route("
            f"open('{instance.master_key_file}').read(), "
            "'/nodeworx/mail/send', 'isRunning', {}))\"",
        ]
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)


def run(instance: Instance) -> int:
    instance.ensure()
    backend = BuiltinBackend(instance)
    children = {name: _spawn(instance, name) for name in CHILDREN}
    try:
        backend.start()
    except ServiceError as error:
        print(f"sendworx run: {error}", file=sys.stderr)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(_banner(instance), flush=True)
    status = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"sendworx {name} exited with {child.returncode}", file=sys.stderr)
                stopping, status = True, 1
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    try:
        backend.stop()
    except ServiceError as error:
        print(f"sendworx run: {error}", file=sys.stderr)
    for child in children.values():
        try:
            child.wait(timeout=instance.config.delivery.shutdown_grace_seconds + 5)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return status
