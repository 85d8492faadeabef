"""Delivery sessions: a lane of jobs per destination, fair connection slots, pacing,
connection reuse, next-host fallback.

- A destination's hosts are resolved before it asks for a slot, so a DNS lookup never holds
  one. Then it waits for a slot in `scheduler.Waiting`: slots (`concurrency_remote` of them,
  a hard cap on open connections) go to the destination with mail waiting and the fewest
  sessions, round-robin among equals; a session is started with its first job in hand.
- Between two messages a session goes on with its destination's next job, unless a waiting
  destination is starved (`scheduler.should_yield`), its connection has carried the most
  messages its pacing allows, or its destination must wait for the rate. With nothing to
  send it parks: its connection stays open for `idle_connection_seconds` for new mail, but a
  destination waiting for a slot reclaims it at once.
- Each destination has a `Pace` (`pacing.py`): its pacing rule's, shared by every destination
  the rule matches, or its own. A reply that asks us to slow down cuts the rate; the job that
  got it goes back to the front of its lane (at most `MAX_REQUEUES` times, then deferred).
- Every job ends with one result per recipient, whatever happens; only a cut at shutdown
  leaves a job unreported (its message stays queued exactly as it was).

Why one module of some 600 lines: the lanes, the slot dispatcher and the session loop share
the pool's state (slots, lanes, parked sessions, paces) and change it at every step; apart,
each would reach into the others. What can stand alone already does: the rules without I/O
(`scheduler.py`, `pacing.py`), the job and how it is sent (`delivery_job.py`), the wire
(`smtp_protocol.py`, `smtp_client.py`), the DNS (`resolver.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sendworx.engine.attempts import Outcome
from sendworx.engine.delivery_job import DeliveryJob, MessageGone, results_of, send_job
from sendworx.engine.pacing import Pace, is_rate_signal, says_rate
from sendworx.engine.resolver import DestinationResolver, Host, ResolutionError
from sendworx.engine.scheduler import Waiting, should_yield
from sendworx.engine.smtp_client import SessionLost, SMTPConnection, Timeouts, TLSHandshakeFailed
from sendworx.shared.config import DeliveryConfig
from sendworx.shared.destinations import AddressLiteral, Destination, MxDomain, RelayHost
from sendworx.shared.policy import PacingRule, Policy
from sendworx.shared.settings import Settings

log = logging.getLogger(__name__)
MAX_REQUEUES = 3  # a job sent back by "slow down" replies this often is deferred as usual
RESOLVE_AT_ONCE = 64  # DNS lookups in flight
HOSTS_FRESH_SECONDS = 300.0  # a busy destination's hosts are looked up again after this


@dataclass(eq=False, slots=True)
class _Lane:
    """One destination: its jobs nobody has taken, its hosts, its sessions."""

    key: Destination
    jobs: deque[DeliveryJob] = field(default_factory=deque)
    hosts: list[Host] | None = None
    resolved_at: float = 0.0
    resolving: bool = False
    pace: Pace | None = None
    sessions: int = 0  # each holds one slot: connecting, delivering or parked
    idle: deque[_Session] = field(default_factory=deque)


@dataclass(eq=False, slots=True)
class _Session:
    """One connection slot's task; small, as there may be a thousand of them."""

    lane: _Lane
    job: DeliveryJob | None
    pace: Pace  # the one it counts against (a reload may give its lane another)
    parked: asyncio.Future[None] | None = None  # set while it waits with nothing to send
    sent: int = 0  # messages over the current connection
    reclaimed: bool = False

    def wake(self) -> None:
        if self.parked is not None and not self.parked.done():
            self.parked.set_result(None)


def _domain_of(key: Destination) -> str:
    match key:
        case MxDomain(domain):
            return domain
        case RelayHost(relay):
            return relay.host
        case AddressLiteral(address):
            return address


class DeliveryPool:
    """Sessions run inside `async with pool.running():`, which owns them: leaving it stops the
    pool, lets sessions finish within the grace period and cancels the rest."""

    def __init__(
        self,
        *,
        resolver: DestinationResolver,
        limit: int,
        helo_name: Callable[[], str],
        config: DeliveryConfig,
        settings: Callable[[], Settings],
        policy: Callable[[], Policy],
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self._resolver = resolver
        self._limit = limit
        self._helo_name = helo_name
        self._config = config
        self._settings = settings
        self._policy = policy
        self._tls_context = tls_context
        self._lanes: dict[Destination, _Lane] = {}
        self._paces: dict[str, Pace] = {}  # by rule name, or by destination without a rule
        self._waiting: Waiting[_Lane] = Waiting()
        self._blocked: set[_Lane] = set()  # mail waiting, but pacing says not yet
        self._unresolved: set[_Lane] = set()  # mail that came while the limit was 0
        self._idle: dict[_Session, None] = {}  # parked sessions, oldest first
        self._slots = 0  # sessions alive; each holds one slot
        self._reclaiming = 0
        self._yield_budget = 0
        self._resolving = asyncio.Semaphore(RESOLVE_AT_ONCE)
        self._dispatch_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._sessions: asyncio.TaskGroup | None = None
        self._stopping = False
        self._clock = time.monotonic  # the event loop's clock once the pool runs
        self.open_connections = 0
        self.cut = False  # sessions were still busy at the end of the grace period

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Takes effect for the next connection; open ones close at their next message."""
        self._limit = limit
        self._dispatch_soon()

    def reconfigure(self) -> None:
        """The policy was reloaded: every pace takes its rule's new figures."""
        for lane in self._lanes.values():
            if lane.hosts is not None:
                lane.pace = self._pace_for(lane.key, lane.hosts)
        self._dispatch_soon()

    def status(self) -> list[dict[str, object]]:
        """The paces that matter now: with connections open, or cut by their receivers.
        Also read by the metrics thread, hence the copy and the clock of its own."""
        now = self._clock()
        paces = list(self._paces.values())
        return [pace.status(now) for pace in paces if pace.open or pace.adapted]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DeliveryPool]:
        grace_period = asyncio.timeout(None)
        try:
            async with grace_period, asyncio.TaskGroup() as sessions:
                self._sessions = sessions
                self._clock = asyncio.get_running_loop().time
                try:
                    yield self
                finally:
                    self.stop()
                    grace = self._config.shutdown_grace_seconds
                    grace_period.reschedule(self._clock() + grace)
        except TimeoutError:
            if not grace_period.expired():
                raise
            self.cut = True  # the task group cancelled the sessions still running
        finally:
            self._sessions = None
            if self._timer is not None:
                self._timer.cancel()

    # -- feeding ---------------------------------------------------------------------------

    def submit(self, key: Destination, job: DeliveryJob) -> None:
        if self._stopping or self._sessions is None:
            job.finish_all(Outcome.SKIPPED, "engine stopping", "4.3.2", None)
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        lane.jobs.append(job)
        now = self._clock()
        if lane.hosts is None or now - lane.resolved_at > HOSTS_FRESH_SECONDS:
            if self._limit > 0:
                self._resolve(lane)
            else:  # a lookup is part of an attempt, and concurrency 0 holds every attempt
                self._unresolved.add(lane)
        if lane.hosts is not None:
            self._update(lane, now)
            self._dispatch_soon()

    def _resolve(self, lane: _Lane) -> None:
        if lane.resolving:
            return
        assert self._sessions is not None
        lane.resolving = True
        self._sessions.create_task(self._look_up(lane))

    async def _look_up(self, lane: _Lane) -> None:
        try:
            async with self._resolving:
                hosts = await self._hosts(lane.key)
        except ResolutionError as error:
            if lane.hosts is None:  # a refresh that fails keeps the hosts it had
                outcome = Outcome.FAILED if error.permanent else Outcome.DEFERRED
                self._finish_queued(lane, outcome, error.reason, error.status)
        except Exception as error:
            log.exception("looking up %s failed unexpectedly", lane.key)
            if lane.hosts is None:
                self._finish_queued(lane, Outcome.DEFERRED, f"local error: {error}", "4.3.0")
        else:
            lane.hosts = hosts
            lane.resolved_at = self._clock()
            lane.pace = self._pace_for(lane.key, hosts)
        finally:
            lane.resolving = False
            if self._stopping:
                self._finish_queued(lane, Outcome.SKIPPED, "engine stopping", "4.3.2")
            self._forget_if_done(lane)
            if lane.hosts is not None:
                self._update(lane, self._clock())
                self._dispatch_soon()

    def _pace_for(self, key: Destination, hosts: list[Host]) -> Pace:
        """The pace of the rule that matches `key` (by domain or first MX host), or the
        destination's own; it takes the rule's current figures."""
        matched = self._policy().pacing_for(_domain_of(key), hosts[0].name if hosts else None)
        if matched is None:
            name = f"{key} (no rule)"
            rule = PacingRule(name="default", connections=self._config.destination_concurrency)
        else:
            name, rule = matched.name, matched
        pace = self._paces.get(name)
        if pace is None:
            # A rule's pace is shared by every destination it matches (a rule may well be
            # called "default"); a destination without one has its own.
            pace = self._paces[name] = Pace(name, shared=matched is not None)
        pace.configure(
            connections=rule.connections,
            messages_per_connection=rule.messages_per_connection,
            messages_per_minute=rule.messages_per_minute,
            connection_interval=rule.connection_interval_seconds,
        )
        return pace

    def _forget_if_done(self, lane: _Lane) -> None:
        """A lane with no jobs and no sessions goes; its pace stays while it matters."""
        if lane.jobs or lane.sessions or lane.resolving:
            return
        self._waiting.discard(lane)
        self._blocked.discard(lane)
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]
        pace = lane.pace
        if pace is not None and not pace.shared and not pace.adapted and pace.open == 0:
            self._paces.pop(pace.name, None)

    # -- the scheduler -----------------------------------------------------------------------

    def _update(self, lane: _Lane, now: float) -> None:
        """Put `lane` where it belongs: feeding its parked sessions, waiting for a slot,
        blocked by its pacing until a time, or nowhere (nothing to send, or at its caps)."""
        pace = lane.pace
        if self._stopping or pace is None or not lane.jobs:
            self._waiting.discard(lane)
            self._blocked.discard(lane)
            return
        while True:
            wait = pace.message_wait(now)
            if wait > 0:
                self._block(lane, now + wait)
                return
            if not (lane.idle and lane.jobs):
                break
            session = lane.idle.popleft()
            self._idle.pop(session, None)
            session.job = self._take(lane, now)
            session.wake()
        self._blocked.discard(lane)
        if not lane.jobs or lane.idle:
            self._waiting.discard(lane)
            return
        if lane.sessions >= self._config.destination_concurrency or pace.open >= pace.connections:
            self._waiting.discard(lane)  # a session of its own or of its pace ends: updated
            return
        wait = pace.connection_wait(now)
        if wait > 0:
            self._block(lane, now + wait)
            return
        self._waiting.add(lane, lane.sessions)

    def _block(self, lane: _Lane, until: float) -> None:
        self._waiting.discard(lane)
        self._blocked.add(lane)
        if self._timer is None or until < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(until, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self, lane: _Lane, now: float) -> DeliveryJob:
        job = lane.jobs.popleft()
        if not lane.jobs:
            self._waiting.discard(lane)  # nothing left for a new session to take
        assert lane.pace is not None
        lane.pace.message_sent(now)
        return job

    def _dispatch_soon(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Hand out free slots, and reclaim parked connections when none is free."""
        self._dispatch_pending = False
        if self._stopping or self._sessions is None:
            return
        now = self._clock()
        if self._limit > 0 and self._unresolved:
            for lane in self._unresolved:
                self._resolve(lane)
            self._unresolved.clear()
        for lane in list(self._blocked):
            self._update(lane, now)
        while self._slots < self._limit:
            chosen = self._waiting.pop()
            if chosen is None:
                break
            pace = chosen.pace
            if not chosen.jobs or pace is None or not pace.may_connect(now):
                # Its jobs went to sessions it already had, or another lane of its pace just
                # took the last connection or opened one within the pace's gap: put it where
                # it belongs now (blocked until the gap ends, or held until a session ends).
                self._update(chosen, now)
                continue
            self._start_session(chosen, now)
            self._update(chosen, now)
        wanted = len(self._waiting) - self._reclaiming
        while wanted > 0 and self._idle:
            session = next(iter(self._idle))
            del self._idle[session]
            session.lane.idle.remove(session)
            session.reclaimed = True
            session.wake()
            self._reclaiming += 1
            wanted -= 1
        self._yield_budget = len(self._waiting)

    def _start_session(self, lane: _Lane, now: float) -> None:
        assert self._sessions is not None and lane.pace is not None
        session = _Session(lane, self._take(lane, now), lane.pace)
        self._slots += 1
        lane.sessions += 1
        session.pace.connection_opened(now)
        self._sessions.create_task(self._session(session))

    async def _next_job(self, session: _Session) -> DeliveryJob | None:
        """The session's next job, or None: it closes its connection and gives its slot up."""
        lane = session.lane
        pace = lane.pace
        assert pace is not None
        if self._stopping or pace.connection_spent(session.sent) or self._slots > self._limit:
            return None
        now = self._clock()
        if lane.jobs and pace.message_wait(now) == 0:
            if self._yield_budget > 0 and should_yield(lane.sessions, self._waiting.fewest()):
                self._yield_budget -= 1
                return None
            return self._take(lane, now)
        session.job = None
        session.parked = asyncio.get_running_loop().create_future()
        lane.idle.append(session)
        self._idle[session] = None
        self._update(lane, now)  # sets the timer when the rate is what holds it
        if self._waiting:
            self._dispatch_soon()  # a parked connection is a slot a waiting lane may reclaim
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.idle_connection_seconds):
                await session.parked
        session.parked = None
        if session in self._idle:
            del self._idle[session]
            lane.idle.remove(session)
        job, session.job = session.job, None
        if job is not None and self._stopping:
            job.finish_all(Outcome.SKIPPED, "engine stopping", "4.3.2", None)
            return None
        return job

    def _session_ended(self, session: _Session) -> None:
        lane = session.lane
        self._slots -= 1
        lane.sessions -= 1
        if session.reclaimed:
            self._reclaiming -= 1
        pace = session.pace
        pace.connection_closed()
        if self._stopping:
            self._finish_queued(lane, Outcome.SKIPPED, "engine stopping", "4.3.2")
        self._forget_if_done(lane)
        now = self._clock()
        self._update(lane, now)
        if pace.open == pace.connections - 1:
            for other in self._lanes.values():  # lanes held back by their shared pace
                if other.pace is pace and other is not lane and other.jobs:
                    self._update(other, now)
        self._dispatch_soon()

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work: queued jobs are skipped, sessions finish their current message,
        parked sessions close."""
        self._stopping = True
        for lane in list(self._lanes.values()):
            self._finish_queued(lane, Outcome.SKIPPED, "engine stopping", "4.3.2")
        for session in list(self._idle):
            session.wake()
        self._waiting = Waiting()
        self._blocked.clear()
        self._unresolved.clear()

    @staticmethod
    def _finish_queued(lane: _Lane, outcome: Outcome, reason: str, status: str) -> None:
        while lane.jobs:
            lane.jobs.popleft().finish_all(outcome, reason, status, None)

    # -- sessions --------------------------------------------------------------------------

    async def _session(self, session: _Session) -> None:
        try:
            await self._deliver_while_mail(session)
        finally:
            self._session_ended(session)

    async def _hosts(self, destination: Destination) -> list[Host]:
        match destination:
            case RelayHost(relay):
                return await self._resolver.hosts_for_relay(relay)
            case AddressLiteral(address):
                return await self._resolver.hosts_for_literal(address)
            case MxDomain(domain):
                return await self._resolver.hosts_for_domain(domain)

    async def _deliver_while_mail(self, session: _Session) -> None:
        lane, job = session.lane, session.job
        assert lane.hosts is not None
        hosts = lane.hosts
        connection: SMTPConnection | None = None
        try:
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
                        if self._rate_limited(lane, failure) and self._requeue(lane, job):
                            return
                        # No host answers: everything queued here would fail the same way now.
                        self._finish_with_queue(
                            lane, job, Outcome.DEFERRED, failure.reason, "4.4.1"
                        )
                        return
                    session.sent = 0
                done_here = False  # the job went back to its lane, or the receiver said stop
                try:
                    replies = await send_job(connection, job)
                    session.sent += 1
                    if any(is_rate_signal(reply.code, str(reply)) for _, reply in replies):
                        self._slowed(lane)
                        budget = all(says_rate(reply.code, str(reply)) for _, reply in replies)
                        done_here = budget and self._requeue(lane, job)
                    if not done_here:
                        job.finish(results_of(replies, connection.remote, connection.tls))
                except SessionLost as lost:
                    self._drop(connection)
                    connection = None
                    if self._rate_limited(lane, lost):
                        # The receiver's budget is the same on its other hosts: stop here.
                        if not self._requeue(lane, job):
                            job.finish_all(Outcome.DEFERRED, lost.reason, "4.4.2", None)
                        done_here = True
                    else:
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
                if done_here:
                    job = None  # this connection has done enough; the pace says when to go on
                    break
                tries_left = len(hosts)
                job = await self._next_job(session)
            if connection is not None:
                closing, connection = connection, None
                self.open_connections -= 1
                await closing.quit()
        except Exception as error:
            # Anything else unexpected (a bug, a host name the socket layer refuses): a
            # recorded temporary failure, never a message left active for ever.
            log.exception("session for %s failed unexpectedly", lane.key)
            if connection is not None:
                self._drop(connection)
            if job is not None:
                reason = f"local error: {error}"
                self._finish_with_queue(lane, job, Outcome.DEFERRED, reason, "4.3.0")
        except BaseException:
            # Cancelled (grace period over) mid-transaction: cut the connection and record
            # nothing, so the message stays queued exactly as it was.
            if job is not None:
                job.finished = True
            if connection is not None:
                self._drop(connection)
            raise

    def _rate_limited(self, lane: _Lane, lost: SessionLost) -> bool:
        """Whether the reply that ended a session names the receiver's rate, so that its other
        hosts would say the same. Any "slow down" (a bare 421 too) cuts the pace."""
        if lost.reply is None or not is_rate_signal(lost.reply.code, str(lost.reply)):
            return False
        self._slowed(lane)
        return says_rate(lost.reply.code, str(lost.reply))

    def _slowed(self, lane: _Lane) -> None:
        assert lane.pace is not None
        lane.pace.slow_down(self._clock())
        rate = lane.pace.rate or 0.0
        log.info(
            "%s asked to slow down: %s now %.1f messages a minute", lane.key, lane.pace.name, rate
        )

    def _requeue(self, lane: _Lane, job: DeliveryJob) -> bool:
        """Put a job refused with "slow down" back at the front of its lane, where the pace
        lets it go again; False once it has been back too often (it is deferred as usual)."""
        if job.requeued >= MAX_REQUEUES or self._stopping:
            return False
        job.requeued += 1
        lane.jobs.appendleft(job)
        return True

    @staticmethod
    def _finish_with_queue(
        lane: _Lane, job: DeliveryJob, outcome: Outcome, reason: str, status: str
    ) -> None:
        """`job` and everything queued behind it: they would all fail the same way now."""
        job.finish_all(outcome, reason, status, None)
        DeliveryPool._finish_queued(lane, outcome, reason, status)

    def _drop(self, connection: SMTPConnection) -> None:
        """Cut a connection whose protocol state can no longer be trusted."""
        connection.abort()
        self.open_connections -= 1

    async def _connect(
        self, hosts: list[Host], start: int, timeouts: Timeouts
    ) -> tuple[SMTPConnection | None, int, SessionLost]:
        failure = SessionLost("no hosts")
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
                    failure = lost
                    log.info("host %s: %s; retrying without TLS", host, lost.reason)
                    continue
                except SessionLost as lost:
                    failure = lost
                    log.info("host %s unusable: %s", host, lost.reason)
                    break
                self.open_connections += 1
                return connection, index, failure
        return None, start, failure

    def _tls_attempts(self) -> list[ssl.SSLContext | None]:
        return [self._tls_context, None] if self._tls_context is not None else [None]
