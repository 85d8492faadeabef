"""Running the long-lived processes in the foreground: pid lock, logging, event loop.

Shared by `sendworx send`, `sendworx smtpd` and the `run` supervisor's children.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from sendworx.engine.queue import Queue
from sendworx.engine.service import Engine
from sendworx.inject import smtpd
from sendworx.inject import workers as workers_module
from sendworx.instance import Instance
from sendworx.logs import setup_logging
from sendworx.panel.server import serve_panel
from sendworx.pidfile import AlreadyRunning, PidFile

log = logging.getLogger("sendworx.smtpd")


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
        config = instance.config
        queue = Queue(instance.queue_dir, instance.home).ensure()
        listeners = smtpd.bind_listeners(config)
        workers = config.smtpd.workers or os.cpu_count() or 1
        log.info("listening on %s port %d", ", ".join(config.smtpd.listen), config.smtpd.port)

        def serve() -> None:
            pid_file.forget()  # a worker must not keep the parent's lock alive
            run_loop(smtpd.serve(queue, config, listeners))

        if workers == 1:
            run_loop(smtpd.serve(queue, config, listeners))
        else:
            workers_module.supervise(workers, serve)
        log.info("stopped")
    finally:
        pid_file.release()
    return 0


def run_panel(instance: Instance) -> int:
    pid_file = PidFile(instance.panel_pid_file)
    if not _hold_pid(pid_file, "panel"):
        return 1
    try:
        setup_logging(instance.log_dir / "panel.log")
        run_loop(serve_panel(instance))
    finally:
        pid_file.release()
    return 0
