"""The whole service as one process tree: `sendworx run` in the foreground for `make run`, and
`sendworx serve`, the main process of the installed `sendworx.service`.

It runs the panel, the SMTP listener, the webhook sender (and, for the developer's instance,
the local submission daemon, which systemd runs on its own socket when installed) as children, and
owns the Outbound Mail engine: it starts it unless the last word on it was "stop" (that word
survives restarts and reboots), starts it again if it dies while wanted, and is who the
panel and the command line ask to start or stop it when installed (`run/service.sock`), so
that the engine always is this unit's child: `systemctl status sendworx` shows it, and its
"Status:" line says what the API's isRunning says.

Under systemd: READY=1 once the panel and the listener serve (and the engine, if wanted);
STATUS= on every change; SIGHUP (`systemctl reload`) rereads the settings and the policy in
the engine and the listener (RELOADING=1, then READY=1). A child that dies ends the service
(systemd restarts it: Restart=on-failure); SIGTERM stops the children, the engine letting the
deliveries in flight end first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from sendworx.backends import ServiceError
from sendworx.backends.builtin import BuiltinBackend
from sendworx.engine.control import Command, serve_control
from sendworx.shared import systemd
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid

log = logging.getLogger("sendworx.service")
WATCH_SECONDS = 1.0
# An engine that keeps dying is started again at most this often.
RESTART_BACKOFF_SECONDS = (1.0, 5.0, 30.0)


def children_of(instance: Instance) -> tuple[str, ...]:
    if instance.system:
        return ("smtpd", "panel", "webhookd")
    return ("smtpd", "panel", "submitd", "webhookd")


def _spawn(instance: Instance, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        instance.command(command),
        start_new_session=not instance.system,  # `run`: Ctrl-C reaches us, we stop them
    )


class Supervisor:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.backend = BuiltinBackend(instance, supervisor=True)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = asyncio.Event()
        self._status = ""
        self._failures = 0
        self._next_restart = 0.0
        self._engine_busy = asyncio.Lock()  # one start, stop or restart at a time

    # -- the engine, as asked on service.sock --------------------------------------------

    def commands(self) -> Mapping[str, Command]:
        async def act(name: str) -> dict[str, object]:
            operation = {
                "start": self.backend.start,
                "stop": self.backend.stop,
                "restart": self.backend.restart,
            }[name]
            async with self._engine_busy:
                try:
                    await asyncio.to_thread(operation)
                except ServiceError as error:
                    return {"error": str(error)}
                finally:
                    self._update_status()
            return {"ok": True}

        async def start(argument: object) -> dict[str, object]:
            return await act("start")

        async def stop(argument: object) -> dict[str, object]:
            return await act("stop")

        async def restart(argument: object) -> dict[str, object]:
            return await act("restart")

        async def status(argument: object) -> dict[str, object]:
            return {"status": self._status, "wanted": self.backend.wanted()}

        return {"start": start, "stop": stop, "restart": restart, "status": status}

    # -- the service ---------------------------------------------------------------------

    async def run(self, banner: str | None = None) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        server = await serve_control(self.instance.service_socket, self.commands())
        status = 0
        try:
            self.children = {
                name: _spawn(self.instance, name) for name in children_of(self.instance)
            }
            if self.backend.wanted():
                async with self._engine_busy:
                    try:
                        await asyncio.to_thread(self.backend.start)
                    except ServiceError as error:
                        log.error("Outbound Mail did not start: %s", error)
            await self._until_children_serve()
            if banner is not None:
                print(banner, flush=True)
            self._update_status()
            systemd.notify(READY="1", STATUS=self._status)
            status = await self._watch()
        finally:
            server.close()
            systemd.notify(STOPPING="1", STATUS="stopping")
            await asyncio.to_thread(self._stop_all)
        return status

    async def _until_children_serve(self) -> None:
        """Until each child holds its lock (its sockets are bound by then) or one died."""
        pid_files = {
            "panel": self.instance.panel_pid_file,
            "smtpd": self.instance.smtpd_pid_file,
            "submitd": self.instance.submitd_pid_file,
            "webhookd": self.instance.webhookd_pid_file,
        }
        while not self._stopping.is_set():
            if any(child.poll() is not None for child in self.children.values()):
                return
            if all(
                running_pid(pid_files[name]) == child.pid for name, child in self.children.items()
            ):
                return
            await asyncio.sleep(0.05)

    async def _watch(self) -> int:
        while not self._stopping.is_set():
            for name, child in self.children.items():
                if child.poll() is not None:
                    log.error("sendworx %s exited with %d; stopping", name, child.returncode)
                    return 1
            await self._keep_engine_up()
            self._update_status()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_SECONDS):
                    await self._stopping.wait()
        return 0

    async def _keep_engine_up(self) -> None:
        """An engine that died while wanted (killed, crashed) is started again."""
        if self._engine_busy.locked() or not self.backend.wanted():
            return
        if await asyncio.to_thread(self.backend.is_running):
            self._failures = 0
            return
        if time.monotonic() < self._next_restart:
            return
        log.error("Outbound Mail is not running although it was not stopped; starting it")
        async with self._engine_busy:
            try:
                await asyncio.to_thread(self.backend.start)
            except ServiceError as error:
                log.error("Outbound Mail did not start: %s", error)
        backoff = RESTART_BACKOFF_SECONDS[min(self._failures, len(RESTART_BACKOFF_SECONDS) - 1)]
        self._failures += 1
        self._next_restart = time.monotonic() + backoff

    def _update_status(self) -> None:
        pid = running_pid(self.instance.engine_pid_file)
        if pid is not None:
            status = f"Outbound Mail is running (engine pid {pid})"
        elif self.backend.wanted():
            status = "Outbound Mail is not running (starting it)"
        else:
            status = "Outbound Mail is stopped (by the API or `sendworx stop`)"
        if status != self._status:
            self._status = status
            log.info("%s", status)
            systemd.notify(STATUS=status)

    def _reload(self) -> None:
        systemd.notify(RELOADING="1", MONOTONIC_USEC=str(time.monotonic_ns() // 1000))
        self.backend.apply_settings()
        log.info("settings and policy reread by the engine and the listener")
        systemd.notify(READY="1", STATUS=self._status)

    def _stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        try:
            if running_pid(self.instance.engine_pid_file) is not None:
                self.backend.stop_for_shutdown()
        except ServiceError as error:
            log.error("%s", error)
        grace = self.instance.config.delivery.shutdown_grace_seconds + 5
        for child in self.children.values():
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run(instance: Instance) -> int:
    """`sendworx run`: the developer's instance in the foreground, with where everything is."""
    from sendworx.cli.processes import run_loop
    from sendworx.shared.logs import setup_logging

    instance.ensure()
    setup_logging(None)
    return run_loop(Supervisor(instance).run(banner=_banner(instance)))


def serve(instance: Instance) -> int:
    """`sendworx serve`: the main process of the installed service."""
    from sendworx.cli.processes import run_loop
    from sendworx.shared.logs import setup_logging

    instance.ensure()
    setup_logging(instance.log_file("service"))
    return run_loop(Supervisor(instance).run())


def _banner(instance: Instance) -> str:
    config = instance.config
    sendworx = f"{Path(sys.executable).parent / 'sendworx'} --home {instance.home}"
    panel = config.panel
    lines = [
        "sendworx is running.",
        f"  home:        {instance.home}",
        f"  settings:    {instance.control_dir} (qmail-style control files)",
        f"  submission:  smtp://{config.smtpd.listen[0]}:{config.smtpd.port}",
        f"  sendmail:    {instance.submission_socket} (any local account, with the compiled"
        " client: `make sendmail`)",
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
