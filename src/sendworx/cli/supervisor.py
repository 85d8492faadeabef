"""`sendworx run`: the whole service in the foreground, for `make run` and for trying it out.

Starts the submission listener and the engine as child processes and stops both on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sendworx.instance import Instance

CHILDREN = ("smtpd", "send")


def _spawn(instance: Instance, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sendworx", "--home", str(instance.home), command],
        start_new_session=True,
    )


def _banner(instance: Instance) -> str:
    config = instance.config
    sendmail = f"{Path(sys.executable).parent / 'sendworx'} --home {instance.home} sendmail"
    return "\n".join(
        [
            "sendworx is running.",
            f"  home:        {instance.home}",
            f"  settings:    {instance.control_dir} (qmail-style control files)",
            f"  submission:  smtp://{config.smtpd.listen[0]}:{config.smtpd.port}",
            f"  metrics:     http://{config.metrics.listen}:{config.metrics.port}/metrics",
            f"  logs:        {instance.log_dir}",
            "Send a test message:",
            f"  printf 'Subject: hello\\n\\nhi\\n' | {sendmail} you@example.com",
            "Stop with Ctrl-C.",
        ]
    )


def run(instance: Instance) -> int:
    instance.ensure()
    children = {name: _spawn(instance, name) for name in CHILDREN}
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
    for child in children.values():
        try:
            child.wait(timeout=instance.config.delivery.shutdown_grace_seconds + 5)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return status
