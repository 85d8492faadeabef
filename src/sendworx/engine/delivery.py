"""Delivery sessions: per-destination queues of jobs, connection reuse, next-host fallback.

Each destination (an MX domain, a relay or an address literal) gets up to
`destination_concurrency` sessions; all sessions together hold at most `concurrency_remote`
connections. A session keeps its connection while the destination has more mail. Every job
ends with one result per recipient, whatever happens; only a cut at shutdown leaves a job
unreported (its message stays queued exactly as it was).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.limiter import ConnectionLimiter, LimiterClosed
from sendworx.engine.resolver import DestinationResolver, Host, ResolutionError
from sendworx.engine.smtp_client import SessionLost, SMTPConnection, Timeouts, TLSHandshakeFailed
from sendworx.shared.config import DeliveryConfig
from sendworx.shared.destinations import AddressLiteral, Destination, MxDomain, RelayHost
from sendworx.shared.settings import Settings

log = logging.getLogger(__name__)


class MessageGone(Exception):
    """The queue file disappeared (deleted by an operator) before it could be sent."""


@dataclass(eq=False)
class DeliveryJob:
    """Some recipients of one message that go to one destination in one transaction."""

    message_id: str
    sender: str
    recipients: list[str]
    load_content: Callable[[], bytes]
    on_done: Callable[[DeliveryJob, list[RecipientResult]], None]
    finished: bool = False

    def finish(self, results: list[RecipientResult]) -> None:
        if not self.finished:
            self.finished = True
            self.on_done(self, results)

    def finish_all(self, outcome: Outcome, reply: str, status: str, remote: str | None) -> None:
        self.finish(
            [RecipientResult(rcpt, outcome, reply, status, remote) for rcpt in self.recipients]
        )


@dataclass(eq=False)
class _Destination:
    key: Destination
    jobs: deque[DeliveryJob] = field(default_factory=deque)
    sessions: int = 0
    idle: int = 0
    more_mail: asyncio.Event = field(default_factory=asyncio.Event)


class DeliveryPool:
    """Sessions run inside `async with pool.running():`, which owns them: leaving it stops the
    pool, lets sessions finish within the grace period and cancels the rest."""

    def __init__(
        self,
        *,
        resolver: DestinationResolver,
        limiter: ConnectionLimiter,
        helo_name: Callable[[], str],
        config: DeliveryConfig,
        settings: Callable[[], Settings],
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self._resolver = resolver
        self._limiter = limiter
        self._helo_name = helo_name
        self._config = config
        self._settings = settings
        self._tls_context = tls_context
        self._destinations: dict[Destination, _Destination] = {}
        self._sessions: asyncio.TaskGroup | None = None
        self._stopping = False
        self.open_connections = 0
        self.cut = False  # sessions were still busy at the end of the grace period

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DeliveryPool]:
        grace_period = asyncio.timeout(None)
        try:
            async with grace_period, asyncio.TaskGroup() as sessions:
                self._sessions = sessions
                try:
                    yield self
                finally:
                    self.stop()
                    grace = self._config.shutdown_grace_seconds
                    grace_period.reschedule(asyncio.get_running_loop().time() + grace)
        except TimeoutError:
            if not grace_period.expired():
                raise
            self.cut = True  # the task group cancelled the sessions still running
        finally:
            self._sessions = None

    # -- feeding ---------------------------------------------------------------------------

    def submit(self, key: Destination, job: DeliveryJob) -> None:
        if self._stopping or self._sessions is None:
            job.finish_all(Outcome.SKIPPED, "engine stopping", "4.3.2", None)
            return
        destination = self._destinations.get(key)
        if destination is None:
            destination = self._destinations[key] = _Destination(key)
        destination.jobs.append(job)
        if destination.idle:
            destination.more_mail.set()
        elif destination.sessions < self._config.destination_concurrency:
            self._spawn(destination)

    def _spawn(self, destination: _Destination) -> None:
        assert self._sessions is not None
        destination.sessions += 1
        self._sessions.create_task(self._session(destination))

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work: queued jobs are skipped, sessions finish their current message,
        sessions waiting for a connection slot give up."""
        self._stopping = True
        self._limiter.close()
        for destination in self._destinations.values():
            self._skip_queued(destination)
            destination.more_mail.set()

    def _skip_queued(self, destination: _Destination) -> None:
        while destination.jobs:
            destination.jobs.popleft().finish_all(Outcome.SKIPPED, "engine stopping", "4.3.2", None)

    # -- sessions --------------------------------------------------------------------------

    async def _session(self, destination: _Destination) -> None:
        try:
            async with self._limiter.slot():
                await self._deliver_while_mail(destination)
        except LimiterClosed:
            pass  # stopping: the jobs it would have taken are skipped
        finally:
            destination.sessions -= 1
            if self._stopping:
                self._skip_queued(destination)
            elif destination.jobs and destination.sessions == 0:
                self._spawn(destination)
            elif not destination.jobs and destination.sessions == 0:
                self._destinations.pop(destination.key, None)

    async def _next_job(self, destination: _Destination) -> DeliveryJob | None:
        if not destination.jobs and not self._stopping:
            destination.more_mail.clear()
            destination.idle += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.idle_connection_seconds):
                        await destination.more_mail.wait()
            finally:
                destination.idle -= 1
        if self._stopping or not destination.jobs:
            return None
        return destination.jobs.popleft()

    async def _hosts(self, destination: Destination) -> list[Host]:
        match destination:
            case RelayHost(relay):
                return await self._resolver.hosts_for_relay(relay)
            case AddressLiteral(address):
                return await self._resolver.hosts_for_literal(address)
            case MxDomain(domain):
                return await self._resolver.hosts_for_domain(domain)

    async def _deliver_while_mail(self, destination: _Destination) -> None:
        job = await self._next_job(destination)
        if job is None:
            return
        connection: SMTPConnection | None = None
        try:
            try:
                hosts = await self._hosts(destination.key)
            except ResolutionError as error:
                outcome = Outcome.FAILED if error.permanent else Outcome.DEFERRED
                self._finish_with_queue(destination, job, outcome, error.reason, error.status)
                return
            settings = self._settings()
            timeouts = Timeouts(float(settings.timeout_connect), float(settings.timeout_remote))
            host_index = 0
            tries_left = len(hosts)
            while job is not None:
                if connection is None:
                    connection, host_index, failure = await self._connect(
                        hosts, host_index, timeouts
                    )
                    if connection is None:
                        # No host answers: everything queued here would fail the same way now.
                        self._finish_with_queue(
                            destination, job, Outcome.DEFERRED, failure, "4.4.1"
                        )
                        return
                try:
                    await self._transact(connection, job)
                except SessionLost as lost:
                    self._drop(connection)
                    connection = None
                    host_index = (host_index + 1) % len(hosts)
                    tries_left -= 1
                    if tries_left > 0:
                        continue
                    job.finish_all(Outcome.DEFERRED, lost.reason, "4.4.2", None)
                except MessageGone:
                    job.finish([])
                except Exception as error:
                    # A bug or an unreadable queue file must not strand the message: defer it,
                    # and drop the connection, whose protocol state is now unknown.
                    log.exception("delivery of %s failed unexpectedly", job.message_id)
                    job.finish_all(Outcome.DEFERRED, f"local error: {error}", "4.3.0", None)
                    self._drop(connection)
                    connection = None
                tries_left = len(hosts)
                job = await self._next_job(destination)
            if connection is not None:
                closing, connection = connection, None
                self.open_connections -= 1
                await closing.quit()
        except Exception as error:
            # Anything else unexpected (a bug, a host name the socket layer refuses): a
            # recorded temporary failure, never a message left active for ever.
            log.exception("session for %s failed unexpectedly", destination.key)
            if connection is not None:
                self._drop(connection)
            if job is not None:
                reason = f"local error: {error}"
                self._finish_with_queue(destination, job, Outcome.DEFERRED, reason, "4.3.0")
        except BaseException:
            # Cancelled (grace period over) mid-transaction: cut the connection and record
            # nothing, so the message stays queued exactly as it was.
            if job is not None:
                job.finished = True
            if connection is not None:
                self._drop(connection)
            raise

    @staticmethod
    def _finish_with_queue(
        destination: _Destination, job: DeliveryJob, outcome: Outcome, reason: str, status: str
    ) -> None:
        """`job` and everything queued behind it: they would all fail the same way now."""
        for doomed in [job, *destination.jobs]:
            doomed.finish_all(outcome, reason, status, None)
        destination.jobs.clear()

    def _drop(self, connection: SMTPConnection) -> None:
        """Cut a connection whose protocol state can no longer be trusted."""
        connection.abort()
        self.open_connections -= 1

    async def _connect(
        self, hosts: list[Host], start: int, timeouts: Timeouts
    ) -> tuple[SMTPConnection | None, int, str]:
        failure = "no hosts"
        for offset in range(len(hosts)):
            index = (start + offset) % len(hosts)
            host = hosts[index]
            for tls_context in self._tls_attempts():
                try:
                    connection = await SMTPConnection.open(
                        host.address,
                        host.port,
                        helo_name=self._helo_name(),
                        timeouts=timeouts,
                        server_name=host.name,
                        tls_context=tls_context,
                    )
                except TLSHandshakeFailed as lost:
                    failure = lost.reason
                    log.info("host %s: %s; retrying without TLS", host, lost.reason)
                    continue
                except SessionLost as lost:
                    failure = lost.reason
                    log.info("host %s unusable: %s", host, lost.reason)
                    break
                self.open_connections += 1
                return connection, index, ""
        return None, start, failure

    def _tls_attempts(self) -> list[ssl.SSLContext | None]:
        return [self._tls_context, None] if self._tls_context is not None else [None]

    async def _transact(self, connection: SMTPConnection, job: DeliveryJob) -> None:
        try:
            content = job.load_content()
        except FileNotFoundError as error:
            raise MessageGone(job.message_id) from error
        replies = await connection.send(job.sender, job.recipients, content)
        job.finish(
            [
                RecipientResult(
                    recipient,
                    Outcome.of_reply(reply.code),
                    str(reply),
                    reply.enhanced_status,
                    connection.remote,
                )
                for recipient, reply in replies.items()
            ]
        )
