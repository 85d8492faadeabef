"""The `sendworx send` process: takes due messages from the queue, hands them to delivery
sessions, and records every outcome durably before it logs it.

Signals: SIGTERM/SIGINT stop gracefully, SIGHUP rereads the control files, SIGALRM retries
everything now. A loopback control socket answers `status`, `retry` and `reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sendworx.engine.bounces import build_bounce
from sendworx.engine.delivery import (
    DeliveryJob,
    DeliveryPool,
    DestinationKey,
    Outcome,
    RecipientResult,
)
from sendworx.engine.limiter import ConnectionLimiter
from sendworx.engine.metrics import EngineMetrics
from sendworx.engine.resolver import DestinationResolver
from sendworx.engine.schedule import has_expired, next_attempt_at
from sendworx.engine.scheduler import Scheduler
from sendworx.engine.smtp_client import opportunistic_tls_context
from sendworx.shared.addresses import AddressError, check_domain, literal_address
from sendworx.shared.instance import Instance
from sendworx.shared.queue import (
    CorruptMessageError,
    DeliveryState,
    Envelope,
    MessageKind,
    Queue,
    RecipientFailure,
    socket_name,
)
from sendworx.shared.settings import Settings, read_settings

log = logging.getLogger("sendworx.engine")
delivery_log = logging.getLogger("sendworx.delivery")

_PEERCRED = struct.Struct("3i")


@dataclass(eq=False)
class ActiveMessage:
    message_id: str
    envelope: Envelope
    state: DeliveryState
    results: list[RecipientResult] = field(default_factory=list)
    outstanding: int = 0

    def pending(self) -> list[str]:
        """Recipients neither delivered nor failed in an earlier attempt, each once."""
        finished = set(self.state.delivered) | {failure.recipient for failure in self.state.failed}
        return [rcpt for rcpt in dict.fromkeys(self.envelope.recipients) if rcpt not in finished]


def destination_for(recipient: str, settings: Settings) -> DestinationKey:
    """Where a recipient's mail goes; AddressError when its domain names nowhere."""
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("address has no domain")
    domain = domain.lower()
    literal = literal_address(domain)
    if literal is not None:
        return DestinationKey("literal", literal)
    check_domain(domain)
    route = settings.route_table.lookup(domain)
    if route is not None and route.relay is not None:
        return DestinationKey("relay", str(route.relay), route.relay)
    return DestinationKey("mx", domain)


class Engine:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.config = instance.config
        self.queue = Queue(instance.queue_dir, instance.home).ensure()
        self.settings = read_settings(instance.control_dir)
        self.scheduler = Scheduler()
        self.metrics = EngineMetrics()
        self.limiter = ConnectionLimiter(self.settings.concurrency_remote)
        delivery = self.config.delivery
        self.pool = DeliveryPool(
            resolver=DestinationResolver(self.config.resolver, delivery.remote_port),
            limiter=self.limiter,
            helo_name=self.config.helo_name,
            config=delivery,
            settings=lambda: self.settings,
            tls_context=opportunistic_tls_context() if delivery.starttls else None,
        )
        self.metrics.bind(
            queue_size=lambda: len(self.scheduler),
            active=lambda: len(self._active),
            connections=lambda: self.pool.open_connections,
            limit=lambda: self.limiter.limit,
        )
        self.started_at = time.time()
        self._active: dict[str, ActiveMessage] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._check_new = True
        self._wake: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._load_queue()
        trigger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        trigger.bind(self.queue.trigger_name)
        trigger.setblocking(False)
        loop.add_reader(trigger.fileno(), self._drain_trigger, trigger)
        control = await self._start_control_socket()
        for signum, handler in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.reload),
            (signal.SIGALRM, self.retry_now),
        ):
            loop.add_signal_handler(signum, handler)
        self.metrics.serve(self.config.metrics.listen, self.config.metrics.port)
        log.info(
            "started: %d queued, concurrency_remote=%d, helo=%s",
            len(self.scheduler),
            self.settings.concurrency_remote,
            self.config.helo_name,
        )
        try:
            await self._schedule_loop()
        finally:
            await self._shut_down()
            loop.remove_reader(trigger.fileno())
            trigger.close()
            control.close()

    def stop(self) -> None:
        if not self._stopping:
            log.info("stopping: no new deliveries, finishing those in flight")
        self._stopping = True
        self._poke()

    def reload(self) -> None:
        self.settings = read_settings(self.instance.control_dir)
        self.limiter.set_limit(self.settings.concurrency_remote)
        log.info(
            "settings reloaded: concurrency_remote=%d timeout_remote=%d timeout_connect=%d "
            "queue_lifetime=%d routes=%d",
            self.settings.concurrency_remote,
            self.settings.timeout_remote,
            self.settings.timeout_connect,
            self.settings.queue_lifetime,
            len(self.settings.smtp_routes),
        )
        self._poke()

    def retry_now(self) -> None:
        count = self.scheduler.make_all_due(time.time())
        log.info("retrying %d waiting messages now", count)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _shut_down(self) -> None:
        self.pool.stop()
        grace = self.config.delivery.shutdown_grace_seconds
        if not await self.pool.wait_stopped(grace):
            log.warning("sessions still busy after %.0fs were cut; their mail stays queued", grace)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(grace, 5.0))
        log.info("stopped: %d messages remain queued", len(self.scheduler))

    # -- queue intake --------------------------------------------------------------------

    def _load_queue(self) -> None:
        now = time.time()
        self.queue.claim_new()  # before the orphan check: a state's message may be in new/
        stale = self.queue.remove_stale_temporaries(now)
        orphans = self.queue.remove_orphan_states()
        if stale or orphans:
            log.info("cleaned %d stale temp files and %d orphan state files", stale, orphans)
        for message_id in self.queue.message_ids():
            try:
                state = self.queue.read_state(message_id)
            except (ValueError, TypeError, KeyError) as error:
                log.warning("state of %s unreadable (%s); retrying it now", message_id, error)
                state = None
            self.scheduler.schedule(message_id, state.next_attempt_at if state else now)

    def _drain_trigger(self, trigger: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                trigger.recv(64)
        self._check_new = True
        self._poke()

    def _claim_new(self) -> None:
        now = time.time()
        for message_id in self.queue.claim_new():
            self.scheduler.schedule(message_id, now)

    async def _schedule_loop(self) -> None:
        assert self._wake is not None
        rescan_every = self.config.delivery.rescan_seconds
        next_rescan = time.monotonic() + rescan_every
        max_active = self.config.delivery.max_active_messages
        while not self._stopping:
            self._wake.clear()
            if self._check_new or time.monotonic() >= next_rescan:
                # The wake-up datagram is only a hint; the periodic look catches lost ones.
                self._check_new = False
                next_rescan = time.monotonic() + rescan_every
                self._claim_new()
            now = time.time()
            for message_id in self.scheduler.take_due(now, max_active - len(self._active)):
                self._start(message_id)
            timeout = next_rescan - time.monotonic()
            next_due = self.scheduler.next_due_at()
            if next_due is not None and len(self._active) < max_active:
                timeout = min(timeout, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()

    # -- one message -----------------------------------------------------------------------

    def _start(self, message_id: str) -> None:
        try:
            envelope = self.queue.read_envelope(message_id)
        except FileNotFoundError:
            self.scheduler.forget(message_id)
            return
        except (CorruptMessageError, OSError) as error:
            log.error("message %s cannot be read (%s); moved to queue/corrupt", message_id, error)
            self.queue.quarantine(message_id)
            self.scheduler.forget(message_id)
            return
        try:
            state = self.queue.read_state(message_id) or DeliveryState()
        except (ValueError, TypeError, KeyError) as error:
            log.warning("state of %s unreadable (%s); starting it afresh", message_id, error)
            state = DeliveryState()
        active = ActiveMessage(message_id, envelope, state)
        self._active[message_id] = active
        try:
            jobs = self._jobs_for(active)
        except Exception as error:
            # A bug must not strand the message as active for ever: record a temporary
            # failure for every recipient still to do, as a failed session would.
            log.exception("cannot plan the delivery of %s; deferring it", message_id)
            active.results = [
                RecipientResult(recipient, Outcome.DEFERRED, f"local error: {error}", "4.3.0")
                for recipient in active.pending()
            ]
            jobs = []
        active.outstanding = len(jobs)
        if not jobs:
            self._spawn(self._finalize(active))
        for key, job in jobs:
            self.pool.submit(key, job)

    def _jobs_for(self, active: ActiveMessage) -> list[tuple[DestinationKey, DeliveryJob]]:
        """One job per destination and transaction; recipients that name nowhere fail here."""
        settings = self.settings
        per_transaction = self.config.delivery.recipients_per_transaction
        by_destination: dict[DestinationKey, list[str]] = {}
        for recipient in active.pending():
            try:
                key = destination_for(recipient, settings)
            except AddressError as error:
                failure = RecipientResult(recipient, Outcome.FAILED, str(error), "5.1.3", None)
                active.results.append(failure)
            else:
                by_destination.setdefault(key, []).append(recipient)
        message_id = active.message_id
        jobs = []
        for key, recipients in by_destination.items():
            for start in range(0, len(recipients), per_transaction):
                job = DeliveryJob(
                    message_id,
                    active.envelope.sender,
                    recipients[start : start + per_transaction],
                    load_content=lambda: self.queue.read(message_id)[1],
                    on_done=self._job_done,
                )
                jobs.append((key, job))
        return jobs

    def _job_done(self, job: DeliveryJob, results: list[RecipientResult]) -> None:
        active = self._active.get(job.message_id)
        if active is None:
            return
        active.results.extend(results)
        active.outstanding -= 1
        if active.outstanding == 0:
            self._spawn(self._finalize(active))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finalize(self, active: ActiveMessage) -> None:
        """Record the attempt durably, then log it: a logged delivery is never repeated."""
        message_id, envelope, state = active.message_id, active.envelope, active.state
        now = time.time()
        expired = has_expired(envelope.birth, now, self.settings.queue_lifetime)
        deferred = skipped = progressed = False
        for result in active.results:
            if result.outcome is Outcome.DELIVERED:
                state.delivered.append(result.recipient)
                state.last_errors.pop(result.recipient, None)
                progressed = True
            elif result.outcome is Outcome.FAILED or (
                result.outcome is Outcome.DEFERRED and expired
            ):
                reply, status = result.reply, result.status
                if result.outcome is Outcome.DEFERRED:
                    reply, status = f"delivery time expired; last error: {reply}", "4.4.7"
                state.failed.append(
                    RecipientFailure(result.recipient, reply, status, result.remote)
                )
                state.last_errors.pop(result.recipient, None)
                progressed = True
            elif result.outcome is Outcome.DEFERRED:
                state.last_errors[result.recipient] = result.reply
                deferred = True
            else:
                skipped = True
        try:
            if not deferred and not skipped:
                if state.failed:
                    await asyncio.to_thread(self._bounce, message_id, envelope, state.failed)
                self.queue.remove(message_id)
                self.scheduler.forget(message_id)
            else:
                if deferred:
                    state.attempts += 1
                    state.next_attempt_at = next_attempt_at(envelope.birth, now)
                if deferred or progressed:
                    await asyncio.to_thread(self.queue.write_state, message_id, state)
                self.scheduler.schedule(message_id, state.next_attempt_at)
        except Exception:
            # Disk trouble or a bug: keep the message as it is on disk, try again in a minute.
            log.exception("cannot record attempt for %s; retrying it in 60s", message_id)
            self.scheduler.schedule(message_id, now + 60)
            return
        finally:
            self._active.pop(message_id, None)
            self._poke()
        self._log_results(active, expired)

    def _log_results(self, active: ActiveMessage, expired: bool) -> None:
        for result in active.results:
            if result.outcome is Outcome.SKIPPED:
                continue
            outcome = result.outcome
            if outcome is Outcome.DEFERRED and expired:
                outcome = Outcome.FAILED
            self.metrics.attempts.labels(result=outcome.value).inc()
            delivery_log.info(
                "delivery id=%s rcpt=%s relay=%s result=%s status=%s attempt=%d reply=%s",
                active.message_id,
                json.dumps(result.recipient, ensure_ascii=False),
                result.remote or "-",
                outcome.value,
                result.status,
                active.state.attempts + (0 if outcome is Outcome.DEFERRED else 1),
                json.dumps(result.reply, ensure_ascii=False),
            )

    def _bounce(
        self, message_id: str, envelope: Envelope, failures: list[RecipientFailure]
    ) -> None:
        """Queue the one DSN this message owes; runs in a worker thread (file I/O)."""
        if envelope.kind is MessageKind.DOUBLE_BOUNCE:
            log.warning("double bounce %s failed too; dropping it (no triple bounces)", message_id)
            return
        if envelope.sender == "" or envelope.kind is MessageKind.BOUNCE:
            notify, kind = self._double_bounce_address(), MessageKind.DOUBLE_BOUNCE
        else:
            notify, kind = envelope.sender, MessageKind.BOUNCE
        try:
            _, content = self.queue.read(message_id)
        except FileNotFoundError:
            return
        now = time.time()
        report = build_bounce(
            original=envelope,
            original_content=content,
            failures=failures,
            notify=notify,
            reporting_mta=self.config.helo_name,
            now=now,
        )
        bounce_id = self.queue.inject(Envelope("", (notify,), now, kind), report)
        self.metrics.bounces.labels(kind=kind.value).inc()
        log.info("bounce %s (%s) for %s sent to %s", bounce_id, kind.value, message_id, notify)

    def _double_bounce_address(self) -> str:
        address = self.config.delivery.double_bounce_to
        return address if "@" in address else f"{address}@{self.config.helo_name}"

    # -- control socket ---------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "stopping": self._stopping,
            "queued": len(self.scheduler),
            "active": len(self._active),
            "open_connections": self.pool.open_connections,
            "concurrency_remote": self.limiter.limit,
            "settings": {
                "concurrency_remote": self.settings.concurrency_remote,
                "timeout_remote": self.settings.timeout_remote,
                "timeout_connect": self.settings.timeout_connect,
                "queue_lifetime": self.settings.queue_lifetime,
                "smtp_routes": [str(route) for route in self.settings.smtp_routes],
            },
        }

    async def _start_control_socket(self) -> asyncio.AbstractServer:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_name(self.instance.home, "control"))
        return await asyncio.start_unix_server(self._control, sock=listener)

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("socket")
            _, uid, _ = _PEERCRED.unpack(
                peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in (0, os.getuid()):
                writer.write(b'{"error": "permission denied"}\n')
                return
            async with asyncio.timeout(5):
                command = (await reader.readline()).decode("ascii", "replace").strip()
            answer: dict[str, object]
            if command == "status":
                answer = self.status()
            elif command == "retry":
                self.retry_now()
                answer = {"ok": True}
            elif command == "reload":
                self.reload()
                answer = {"ok": True}
            else:
                answer = {"error": f"unknown command {command[:40]!r}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()


def query_engine(instance: Instance, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running engine over its control socket; raises OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(socket_name(instance.home, "control"))
        client.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
