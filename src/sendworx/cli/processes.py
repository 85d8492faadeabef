"""Running the long-lived processes in the foreground: pid lock, logging, event loop.

Shared by `sendworx send`, `sendworx smtpd` and the `run` supervisor's children; each
loads only its own process's code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sendworx.shared.config import ConfigError
from sendworx.shared.history import HistoryReader
from sendworx.shared.instance import Instance
from sendworx.shared.logs import setup_logging
from sendworx.shared.pidfile import AlreadyRunning, PidFile

if TYPE_CHECKING:
    from sendworx.inject.account_webhooks import WebhooksAccess

log = logging.getLogger("sendworx.smtpd")


T = TypeVar("T")


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _in_foreground(
    instance: Instance, name: str, pid_path: Path, main: Callable[[PidFile], None]
) -> int:
    """Hold `name`'s pid lock, log to log/<name>.log, run `main`, release; 1 if already running.

    SIGHUP is blocked from before the lock is taken (from then on the panel and the service
    find this process and may ask it to reread its settings) until `main` has its handler in
    place and unblocks it: a reload sent while it starts is handled then, rather than killing
    it (SIGHUP's default)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    pid_file = PidFile(pid_path)
    try:
        pid_file.acquire()
    except AlreadyRunning as running:
        print(f"sendworx {name}: already running (pid {running.pid})", file=sys.stderr)
        return 1
    try:
        setup_logging(instance.log_file(name))
        main(pid_file)
    finally:
        pid_file.release()
    return 0


def run_engine(instance: Instance) -> int:
    from sendworx.engine.queue_manager import QueueManager
    from sendworx.shared.bounce_classes import Classifier
    from sendworx.shared.holds import read_holds
    from sendworx.shared.policy import load_policy

    try:
        # A bad policy.toml, holds.json or bounce_rules.toml names its problems, then exit:
        # a hold is never dropped by starting without it.
        load_policy(instance.policy_path)
        read_holds(instance.holds_path)
        Classifier.load(instance.bounce_rules_path)
    except ConfigError as error:
        print(f"sendworx send: {error}", file=sys.stderr)
        return 78  # EX_CONFIG
    return _in_foreground(
        instance, "send", instance.engine_pid_file, lambda _: run_loop(QueueManager(instance).run())
    )


def run_panel(instance: Instance) -> int:
    from sendworx.panel.server import serve_panel

    return _in_foreground(
        instance, "panel", instance.panel_pid_file, lambda _: run_loop(serve_panel(instance))
    )


def _admission(instance: Instance) -> Path | None:
    """Where injectors ask the engine about `reject` limits: only while the policy has some
    (an unreadable policy: ask, the engine decides). Reread on every SIGHUP."""
    from sendworx.shared.policy import load_policy

    try:
        rejects = load_policy(instance.policy_path).rejects
    except ConfigError as error:
        log.error("sending policy unreadable, asking the engine: %s", error)
        rejects = True
    return instance.admission_socket if rejects else None


def run_smtpd(instance: Instance) -> int:
    from sendworx.inject import smtpd
    from sendworx.inject import workers as workers_module

    def main(pid_file: PidFile) -> None:
        config = instance.config
        queue = instance.queue()
        try:
            listeners = smtpd.bind_listeners(config)
        except OSError as error:
            where = ", ".join(config.smtpd.listen)
            raise SystemExit(
                f"sendworx smtpd: cannot listen on {where} port {config.smtpd.port}: {error}"
            ) from error
        workers = config.smtpd.workers or os.cpu_count() or 1
        log.info("listening on %s port %d", ", ".join(config.smtpd.listen), config.smtpd.port)

        admission = functools.partial(_admission, instance)

        def serve() -> None:
            pid_file.forget()  # a worker must not keep the parent's lock alive
            run_loop(smtpd.serve(queue, config, listeners, instance.mail_names, admission))

        if workers == 1:
            run_loop(smtpd.serve(queue, config, listeners, instance.mail_names, admission))
        else:
            workers_module.supervise(workers, serve)
        log.info("stopped")

    return _in_foreground(instance, "smtpd", instance.smtpd_pid_file, main)


def run_submitd(instance: Instance) -> int:
    from sendworx.inject import submitd
    from sendworx.shared import systemd

    def main(pid_file: PidFile) -> None:
        config = instance.config
        passed = systemd.listen_sockets()  # installed: systemd's socket, open to every account
        listener = passed[0] if passed else submitd.bind_listener(instance.submission_socket)

        service = submitd.SubmissionService(
            instance.queue(),
            config.submission,
            instance.mail_names(),
            aliases=instance.aliases_path,
            admission=_admission(instance),
            service_uid=os.getuid(),
            history=HistoryReader(instance.history_path) if config.history.enabled else None,
            webhooks=_webhooks_access(instance),
        )

        def reload() -> None:
            service.names, service.admission = instance.mail_names(), _admission(instance)

        def ready() -> None:
            systemd.notify(READY="1", STATUS="accepting local mail")

        run_loop(submitd.serve(service, listener, reload, ready))

    return _in_foreground(instance, "submitd", instance.submitd_pid_file, main)


def _webhooks_access(instance: Instance) -> WebhooksAccess | None:
    """What the submission daemon needs for `sendworx webhooks` run by an account."""
    from sendworx.inject.account_webhooks import WebhooksAccess
    from sendworx.shared.network_guard import AddressGuard
    from sendworx.shared.webhooks import WebhookStore

    config = instance.config.webhooks
    if not config.enabled:
        return None
    return WebhooksAccess(
        WebhookStore(instance.webhooks_path),
        AddressGuard(config.allow_networks),
        instance.webhooks_trigger_socket,
        instance.node_id,
        config.timeout_seconds + 5.0,
        instance.webhookd_pid_file,
    )


def run_webhookd(instance: Instance) -> int:
    from sendworx.shared.webhooks import WebhookStore
    from sendworx.webhooks import sender

    def main(pid_file: PidFile) -> None:
        store = WebhookStore(instance.webhooks_path)
        try:
            config, trigger = instance.config.webhooks, instance.webhooks_trigger_socket
            run_loop(sender.serve(store, config, trigger))
        finally:
            store.close()

    return _in_foreground(instance, "webhookd", instance.webhookd_pid_file, main)
