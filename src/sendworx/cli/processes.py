"""Running the long-lived processes in the foreground: pid lock, logging, event loop.

Shared by `sendworx send`, `sendworx smtpd` and the `run` supervisor's children.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from sendworx.engine.queue import Queue
from sendworx.engine.service import Engine
from sendworx.inject import smtpd
from sendworx.instance import Instance
from sendworx.logs import setup_logging
from sendworx.pidfile import AlreadyRunning, PidFile


def run_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def _hold_pid(pid_file: PidFile, name: str) -> bool:
    try:
        pid_file.acquire()
    except AlreadyRunning as running:
        print(f"sendworx {name}: already running (pid {running.pid})", file=sys.stderr)
        return False
    return True


def run_engine(instance: Instance) -> int:
    pid_file = PidFile(instance.engine_pid_file)
    if not _hold_pid(pid_file, "send"):
        return 1
    try:
        setup_logging(instance.log_dir / "send.log")
        run_loop(Engine(instance).run())
    finally:
        pid_file.release()
    return 0


def run_smtpd(instance: Instance) -> int:
    pid_file = PidFile(instance.smtpd_pid_file)
    if not _hold_pid(pid_file, "smtpd"):
        return 1
    try:
        setup_logging(instance.log_dir / "smtpd.log")
        queue = Queue(instance.queue_dir, instance.home).ensure()
        run_loop(smtpd.serve(queue, instance.config))
    finally:
        pid_file.release()
    return 0
