"""The `sendworx send` process: the queue manager. It takes due messages from the queue, hands
their recipients to delivery sessions, and records every outcome before it logs it.

How a message moves (the files are the truth; everything in memory is rebuilt from them):

    tmp/ --injector renames--> new/ --claim--> mess/ (+ state/ once tried) --> gone
                                                 `--unreadable--> corrupt/ (kept for people)

- An injector writes `tmp/<id>`, fsyncs it, renames it into `new/` and fsyncs `new/`; only
  then does it acknowledge the message. It then sends a wake-up datagram to the trigger socket.
- A wake-up is only a hint: the manager claims `new/` when one arrives and also every
  `rescan_seconds`, so a lost datagram delays mail, never loses it.
- Claimed messages live in `mess/`; the due index holds each one's next-attempt time. Up to
  `max_active_messages` are active at once: their envelopes are read, their recipients split
  into jobs (one per destination and transaction) for the delivery pool.
- When every job of a message has reported, the attempt is folded (`attempts.py`) and
  recorded: the message is removed (after its bounce is queued) or its `state/` file is
  rewritten. Only then is the attempt logged, so a logged delivery is never repeated; a
  `kill -9` between a remote's 250 and the record repeats the delivery (at-least-once).
- An operator's action (retry, hold, release, expire, delete) on a message not being delivered
  changes its files at once (`shared/queue_actions.py`); on one being delivered, it waits for
  the end of that attempt. Held messages are never attempted. While the engine runs it holds
  `run/queue.lock`, so nothing else changes `mess/` or `state/` under it.
- The manager never talks to the outside world itself: sessions do, in `delivery.py`.

Signals: SIGTERM/SIGINT stop gracefully, SIGHUP rereads the control files, SIGALRM retries
everything now. The control socket (`control.py`) answers `status`, `retry`, `reload`,
`active` and `queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sendworx.engine.activity import ActivityLog
from sendworx.engine.attempts import Outcome, RecipientResult, fold_attempt
from sendworx.engine.bounces import build_bounce
from sendworx.engine.control import serve_admission, serve_control
from sendworx.engine.control_commands import ControlCommands
from sendworx.engine.delivery import DeliveryJob, DeliveryPool
from sendworx.engine.due_index import DueIndex
from sendworx.engine.local_delivery import deliver_locally
from sendworx.engine.metrics import EngineMetrics
from sendworx.engine.notices import build_hold_notice
from sendworx.engine.resolver import DestinationResolver
from sendworx.engine.sending_policy import Found, SendingPolicy, Watched
from sendworx.engine.smtp_client import opportunistic_tls_context
from sendworx.shared import unix_sockets
from sendworx.shared.addresses import AddressError, has_control_characters
from sendworx.shared.config import ConfigError
from sendworx.shared.destinations import Destination, destination_for
from sendworx.shared.file_lock import FileLock
from sendworx.shared.holds import (
    Hold,
    HoldAction,
    mail_of,
    messages_held_by,
)
from sendworx.shared.instance import Instance
from sendworx.shared.local_domains import is_local, local_domains
from sendworx.shared.policy import Identity
from sendworx.shared.queue_actions import ActionOutcome, QueueAction, apply_to_files
from sendworx.shared.queue_format import (
    CorruptMessageError,
    DeliveryState,
    Envelope,
    MessageKind,
    Origin,
    RecipientFailure,
)
from sendworx.shared.settings import MailNames, read_settings

log = logging.getLogger("sendworx.engine")
delivery_log = logging.getLogger("sendworx.delivery")
RECORD_RETRY_SECONDS = 60.0  # when an attempt cannot be recorded (disk trouble), try again then


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


class QueueManager:
    def __init__(self, instance: Instance, clock: Callable[[], float] = time.time) -> None:
        """`clock` gives the wall-clock time that births, retries and lifetimes are measured
        in; tests pass one they can move."""
        self.instance = instance
        self.config = instance.config
        self.clock = clock
        self.queue = instance.queue()
        self.settings = read_settings(instance.control_dir)
        self.names = self._names()
        self.locals = self._local_domains()
        self.due = DueIndex()
        self.metrics = EngineMetrics()
        self.policy = SendingPolicy(instance, lambda: self.names, self.metrics, clock)
        self._admitting: set[str] = set()  # taken from the due index, waiting for Redis
        # Queued messages known to have no state file: never tried, nothing written for them
        # (while the engine runs it alone writes state files): no file to open or remove.
        self._stateless: set[str] = set()
        delivery = self.config.delivery
        self.pool = DeliveryPool(
            resolver=DestinationResolver(self.config.resolver, delivery.remote_port),
            limit=self.settings.concurrency_remote,
            helo_name=lambda: self.names.me,
            config=delivery,
            settings=lambda: self.settings,
            policy=lambda: self.policy.rules,
            tls_context=opportunistic_tls_context() if delivery.starttls else None,
        )
        self.metrics.bind(
            queue_size=lambda: len(self.due) + len(self.held),
            held=lambda: len(self.held),
            holds=lambda: len(self.policy.holds),
            active=lambda: len(self._active),
            connections=lambda: self.pool.open_connections,
            limit=lambda: self.pool.limit,
            pacing=self.pool.status,
            redis=self._redis_health,
        )
        self.started_at = self.clock()
        self._active: dict[str, ActiveMessage] = {}
        self.held: set[str] = set()  # never attempted until an operator releases them
        self.activity = ActivityLog()
        self._after_attempt: dict[str, QueueAction] = {}  # actions on messages in flight
        self._queue_lock = FileLock(instance.queue_lock_file)
        self._recorders: asyncio.TaskGroup | None = None
        self._stopping = False
        self._check_new = True
        self._wake: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # Offline queue tools finish what they are doing first, and start none while we run.
        await asyncio.to_thread(self._queue_lock.acquire)
        self._load_queue()
        trigger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        unix_sockets.bind(trigger, self.instance.queue_trigger_socket)
        trigger.setblocking(False)
        loop.add_reader(trigger.fileno(), self._drain_trigger, trigger)
        admission = await serve_admission(
            self.instance.admission_socket, self.policy.admit_injection
        )
        control = await serve_control(
            self.instance.engine_control_socket, ControlCommands(self).table()
        )
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
            len(self.due),
            self.settings.concurrency_remote,
            self.names.me,
        )
        try:
            # Recording an attempt is a task of its own (its file I/O runs in a thread); the
            # group owns them and outlives the pool, whose last sessions still report.
            async with asyncio.TaskGroup() as recorders:
                self._recorders = recorders
                self._share(self.policy.rules.redis_url)
                async with self.pool.running():
                    await self._schedule_loop()
            if self.pool.cut:
                grace = self.config.delivery.shutdown_grace_seconds
                log.warning(
                    "sessions still busy after %.0fs were cut; their mail stays queued", grace
                )
        finally:
            self._recorders = None
            if self.policy.shared is not None:
                await self.policy.shared.close()
            loop.remove_reader(trigger.fileno())
            trigger.close()
            control.close()
            admission.close()
            self._queue_lock.release()
        log.info("stopped: %d messages remain queued", len(self.due) + len(self.held))

    def stop(self) -> None:
        if not self._stopping:
            log.info("stopping: no new deliveries, finishing those in flight")
        self._stopping = True
        self.wake()

    def reload(self) -> None:
        self.settings = read_settings(self.instance.control_dir)
        self.names = self._names()
        self.locals = self._local_domains()
        self.pool.set_limit(self.settings.concurrency_remote)
        try:
            self.policy.reload()
        except ConfigError as error:
            log.error("policy not reloaded, the one in force stays: %s", error)
        else:
            self.pool.reconfigure()
            if self._recorders is not None:
                self._share(self.policy.rules.redis_url)
        values = " ".join(
            f"{name}={value}" for name, value in self.settings.integer_values().items()
        )
        log.info("settings reloaded: %s routes=%d", values, len(self.settings.smtp_routes))
        self.wake()

    def _share(self, url: str | None) -> None:
        """Count limits and keep holds in Redis at `url` from now on (None: alone)."""
        if url == self.policy.shared_url:
            return  # a reload that did not change it: the connection stays
        replaced = self.policy.share(url)
        if replaced is not None:
            self._spawn(replaced.close())
        if url is not None:
            self._spawn(self._adopt_shared_holds())

    def _redis_health(self) -> tuple[bool, int]:
        shared = self.policy.shared
        return (shared.up, shared.errors) if shared is not None else (True, 0)

    def _local_domains(self) -> frozenset[str]:
        names = self.names
        return local_domains(self.instance.control_dir, self.config.helo_name, names.me)

    def _names(self) -> MailNames:
        delivery = self.config.delivery
        return self.settings.mail_names(self.config.helo_name, delivery.double_bounce_to)

    def retry_now(self) -> None:
        count = self.due.make_all_due(self.clock())
        log.info("retrying %d waiting messages now", count)
        self.wake()

    def wake(self) -> None:
        """Look at the queue, the due index and the clock again now."""
        if self._wake is not None:
            self._wake.set()

    # -- queue intake --------------------------------------------------------------------

    def _load_queue(self) -> None:
        now = self.clock()
        self.queue.claim_new()  # before the orphan check: a state's message may be in new/
        stale = self.queue.remove_stale_temporaries(now)
        stale += self.queue.remove_unfinished_state_writes()  # we hold the queue lock
        orphans = self.queue.remove_orphan_states()
        if stale or orphans:
            log.info("cleaned %d stale temp files and %d orphan state files", stale, orphans)
        for message_id in self.queue.message_ids():
            try:
                state = self.queue.read_state(message_id)
            except (ValueError, TypeError, KeyError) as error:
                log.warning("state of %s unreadable (%s); retrying it now", message_id, error)
                state = None
            if state is None:
                self._stateless.add(message_id)
            if state is not None and state.held:
                self.held.add(message_id)
            else:
                self.due.schedule(message_id, state.next_attempt_at if state else now)

    def _drain_trigger(self, trigger: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                trigger.recv(64)
        self._check_new = True
        self.wake()

    def _claim_new(self) -> None:
        now = self.clock()
        for message_id in self.queue.claim_new():
            self._stateless.add(message_id)  # while we run, only we write state files
            self.due.schedule(message_id, now)

    async def _schedule_loop(self) -> None:
        assert self._wake is not None
        rescan_every = self.config.delivery.rescan_seconds
        next_rescan = time.monotonic() + rescan_every
        max_active = self.config.delivery.max_active_messages
        while not self._stopping:
            self._wake.clear()
            self.activity.queue_size(self.clock(), len(self.due) + len(self.held))
            if self._check_new or time.monotonic() >= next_rescan:
                # The wake-up datagram is only a hint; the periodic look catches lost ones.
                self._check_new = False
                next_rescan = time.monotonic() + rescan_every
                self._claim_new()
                self.policy.forget_spent()
                if self.policy.shared is not None:
                    self._spawn(self._adopt_shared_holds())
            busy = len(self._active) + len(self._admitting)
            for message_id in self.due.take_due(self.clock(), max_active - busy):
                self._start(message_id)
            timeout = next_rescan - time.monotonic()
            next_due = self.due.next_due_at()
            if next_due is not None and len(self._active) + len(self._admitting) < max_active:
                timeout = min(timeout, next_due - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()

    # -- one message -----------------------------------------------------------------------

    def _start(self, message_id: str) -> None:
        try:
            envelope = self.queue.read_envelope(message_id)
        except FileNotFoundError:
            self.due.forget(message_id)
            self._stateless.discard(message_id)
            return
        except (CorruptMessageError, OSError) as error:
            log.error("message %s cannot be read (%s); moved to queue/corrupt", message_id, error)
            self.queue.quarantine(message_id)
            self.due.forget(message_id)
            self._stateless.discard(message_id)
            return
        try:
            stored = None if message_id in self._stateless else self.queue.read_state(message_id)
        except (ValueError, TypeError, KeyError) as error:
            log.warning("state of %s unreadable (%s); starting it afresh", message_id, error)
            stored = None
        state = stored or DeliveryState()
        if state.held:
            self.due.forget(message_id)
            self.held.add(message_id)
            return
        watched = None
        if not state.attempts and not state.held_seconds:
            # Never tried, nor released by hand: its sender's hold and breaker apply.
            hold_id = self.policy.hold_for(envelope)
            if hold_id is not None:
                self._hold_new(message_id, hold_id)
                return
            watched = self.policy.breaker_watching(message_id, envelope)
        found = self.policy.deferring_limit(envelope) if not state.attempts else None
        if (watched or found) and self.policy.shared is not None:
            # Counted in Redis: the start goes on once it answers (or fails over).
            self._admitting.add(message_id)
            self._spawn(self._start_when_admitted(message_id, envelope, state, watched, found))
            return
        if watched is not None:
            reason = self.policy.count_message_here(watched, envelope)
            if reason is not None:
                self._trip(self.policy.trip(watched, reason), message_id)
                return
        if found is not None:
            now = self.clock()
            free_at = self.policy.admit_here(found, len(envelope.recipients), now)
            if free_at:
                self.due.schedule(message_id, free_at)  # nothing written: asked again then
                self.policy.waits(found, free_at)
                return
        self._begin(message_id, envelope, state)

    async def _start_when_admitted(
        self,
        message_id: str,
        envelope: Envelope,
        state: DeliveryState,
        watched: Watched | None,
        found: Found | None,
    ) -> None:
        """`_start`'s breaker count and limit check, in Redis for every engine sharing it.

        A message counted under its breaker's threshold goes, as on a lone engine, even if a
        message counted after it trips the breaker while this one waited for Redis."""
        try:
            reason = None
            if watched is not None:
                reason = await self.policy.count_message(watched, message_id, envelope)
            free_at = 0.0
            if found is not None and reason is None:
                free_at = await self.policy.admit(found, len(envelope.recipients), self.clock())
        finally:
            self._admitting.discard(message_id)
        if message_id not in self.due or message_id in self.held or self._stopping:
            return  # deleted or held meanwhile; or stopping: it stays queued, due
        hold_id = self.policy.hold_for(envelope) if watched is not None else None
        if reason is not None and watched is not None and hold_id is None:
            self._trip(self.policy.trip(watched, reason), message_id)
        elif hold_id is not None and (reason is not None or self._held_otherwise(hold_id, watched)):
            self._hold_new(message_id, hold_id)
        elif free_at:
            self.due.schedule(message_id, free_at)
            if found is not None:
                self.policy.waits(found, free_at)
        else:
            self._begin(message_id, envelope, state)
        self.wake()

    def _held_otherwise(self, hold_id: str, watched: Watched | None) -> bool:
        """Whether the hold in force came from elsewhere than `watched`'s own trip (an
        operator, another rule): it holds even mail counted under the threshold."""
        hold = self.policy.holds.get(hold_id)
        return hold is None or watched is None or hold.rule != watched[0].name

    def _begin(self, message_id: str, envelope: Envelope, state: DeliveryState) -> None:
        active = ActiveMessage(message_id, envelope, state)
        self._active[message_id] = active
        if state.expire:
            # An operator expired it: what is left is bounced now, nothing is attempted.
            reason = "message expired by the mail administrator"
            active.results = [
                RecipientResult(recipient, Outcome.FAILED, reason, "4.4.7")
                for recipient in active.pending()
            ]
            self._record_later(active)
            return
        try:
            jobs, local = self._jobs_for(active)
        except Exception as error:
            # A bug must not strand the message as active for ever: record a temporary
            # failure for every recipient still to do, as a failed session would.
            log.exception("cannot plan the delivery of %s; deferring it", message_id)
            active.results = [
                RecipientResult(recipient, Outcome.DEFERRED, f"local error: {error}", "4.3.0")
                for recipient in active.pending()
            ]
            jobs, local = [], None
        active.outstanding = len(jobs) + (local is not None)
        if not active.outstanding:
            self._record_later(active)
        for destination, job in jobs:
            self.pool.submit(destination, job)
        if local is not None:
            self._spawn(self._deliver_locally(local))

    # -- sender holds (the circuit breaker) -----------------------------------------------------

    def _trip(self, hold: Hold, message_id: str) -> None:
        """A breaker tripped counting `message_id`: the sender goes on hold, the message with
        it."""
        self._spawn(self._put_on_hold(hold, self.policy.notify_address(hold)))
        self._hold_new(message_id, hold.hold_id)

    def _hold_new(self, message_id: str, hold_id: str) -> None:
        """A message never tried, from a sender on hold: held, not attempted."""
        self.due.forget(message_id)
        self.held.add(message_id)
        self._spawn(self._apply([message_id], QueueAction.HOLD, held_by=hold_id))

    async def _put_on_hold(
        self, hold: Hold, notify: str | None, publish: bool = True
    ) -> ActionOutcome:
        """Record the hold, then hold the sender's queued mail; mail being delivered is held
        after its attempt (`_record`)."""
        await self.policy.record(hold, publish)
        if notify:
            await asyncio.to_thread(self._notify_hold, hold, notify)
        in_flight = [
            message_id
            for message_id, active in self._active.items()
            if Identity.of(active.envelope).value(hold.scope) == hold.key
        ]
        waiting = self.due.waiting_ids()
        ids = await asyncio.to_thread(mail_of, self.queue, hold.scope, hold.key, waiting)
        outcome = await self._apply(ids, QueueAction.HOLD, held_by=hold.hold_id)
        outcome.in_flight.extend(in_flight)  # held after their attempt (`_record`)
        return outcome

    def _notify_hold(self, hold: Hold, notify: str) -> None:
        report = build_hold_notice(hold, notify, self.names.me, self.names.bounce_sender)
        envelope = Envelope("", (notify,), self.clock(), MessageKind.NORMAL, Origin("engine"))
        self.queue.inject(envelope, report)
        self._check_new = True

    async def _adopt_shared_holds(self) -> None:
        """Holds another engine recorded in Redis become ours (and hold our mail of theirs)."""
        for hold in await self.policy.holds_of_other_nodes():
            await self._put_on_hold(hold, None, publish=False)

    async def end_hold(self, hold_id: str, action: HoldAction) -> ActionOutcome:
        """Release or purge a sender hold: the record goes first, then the mail it held."""
        if await self.policy.end(hold_id) is not None:
            log.info("hold on %s ended (%s) by the mail administrator", hold_id, action.value)
        held = list(self.held)
        ids = await asyncio.to_thread(messages_held_by, self.queue, hold_id, held)
        queue_action = QueueAction.RELEASE if action is HoldAction.RELEASE else QueueAction.DELETE
        return await self._apply(ids, queue_action)

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` as a task of the manager's own; its failure (disk trouble, a bug) is
        logged and leaves the files as they were, never stopping the manager."""
        if self._recorders is None:  # only while the manager runs
            raise RuntimeError("the queue manager is not running")

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("a queue change failed; the files stay as they were")

        self._recorders.create_task(guarded())

    def _jobs_for(
        self, active: ActiveMessage
    ) -> tuple[list[tuple[Destination, DeliveryJob]], DeliveryJob | None]:
        """One job per destination and transaction, and one for the recipients on this host
        itself (`local_domains.py`); recipients that name nowhere fail here."""
        routes = self.settings.route_table
        per_transaction = self.config.delivery.recipients_per_transaction
        if has_control_characters(active.envelope.sender):
            # A queue file from before smtpd refused these: never put them on the wire.
            reason = "sender address contains control characters"
            for recipient in active.pending():
                failure = RecipientResult(recipient, Outcome.FAILED, reason, "5.1.7", None)
                active.results.append(failure)
            return [], None
        by_destination: dict[Destination, list[str]] = {}
        local: list[str] = []
        for recipient in active.pending():
            if is_local(recipient, self.locals):
                local.append(recipient)
                continue
            try:
                destination = destination_for(recipient, routes)
            except AddressError as error:
                failure = RecipientResult(recipient, Outcome.FAILED, str(error), "5.1.3", None)
                active.results.append(failure)
            else:
                by_destination.setdefault(destination, []).append(recipient)
        message_id = active.message_id
        local_job = None
        if local:  # one job, written by a task of the manager's (`_deliver_locally`)
            local_job = DeliveryJob(
                message_id,
                active.envelope.sender,
                local,
                load_content=lambda: self.queue.read_content(message_id),
                on_done=self._job_done,
            )
        jobs = []
        for destination, recipients in by_destination.items():
            for start in range(0, len(recipients), per_transaction):
                job = DeliveryJob(
                    message_id,
                    active.envelope.sender,
                    recipients[start : start + per_transaction],
                    load_content=lambda: self.queue.read_content(message_id),
                    on_done=self._job_done,
                )
                jobs.append((destination, job))
        return jobs, local_job

    async def _deliver_locally(self, job: DeliveryJob) -> None:
        """Mail for this host into its local mailboxes (file I/O, in a thread)."""
        try:
            results = await asyncio.to_thread(deliver_locally, self.instance.mailboxes_dir, job)
        except Exception as error:
            log.exception("local delivery of %s failed; deferring it", job.message_id)
            reason = f"local delivery failed: {error}"
            results = [
                RecipientResult(rcpt, Outcome.DEFERRED, reason, "4.3.0", "local")
                for rcpt in job.recipients
            ]
        self._job_done(job, results)

    def _job_done(self, job: DeliveryJob, results: list[RecipientResult]) -> None:
        active = self._active.get(job.message_id)
        if active is None:
            return
        active.results.extend(results)
        active.outstanding -= 1
        if active.outstanding == 0:
            self._record_later(active)

    def _record_later(self, active: ActiveMessage) -> None:
        self._spawn(self._record(active))

    async def _record(self, active: ActiveMessage) -> None:
        """Record the attempt durably, then log it: a logged delivery is never repeated."""
        message_id, envelope = active.message_id, active.envelope
        now = self.clock()
        record = fold_attempt(
            active.state,
            active.results,
            birth=envelope.birth,
            now=now,
            queue_lifetime=self.settings.queue_lifetime,
        )
        try:
            if record.finished:
                failures = record.state.failed
                if failures:
                    sent = await asyncio.to_thread(self._bounce, message_id, envelope, failures)
                    if sent:
                        self.activity.bounce(now)
                self.queue.retire(message_id, has_state=message_id not in self._stateless)
                self._stateless.discard(message_id)
                self.due.forget(message_id)
            else:
                if record.changed:
                    self._stateless.discard(message_id)  # before: a crash leaves it unsure
                    await asyncio.to_thread(self.queue.write_state, message_id, record.state)
                self.due.schedule(message_id, record.state.next_attempt_at)
        except Exception:
            # Disk trouble or a bug: keep the message as it is on disk, try again in a minute.
            log.exception("cannot record attempt for %s; retrying it in 60s", message_id)
            self.due.schedule(message_id, now + RECORD_RETRY_SECONDS)
            return
        finally:
            self._active.pop(message_id, None)
            self.policy.forget_message(message_id)
            action = self._after_attempt.pop(message_id, None)
            self.wake()
        tripped = await self.policy.count_results(envelope, record.results)
        if tripped is not None:
            self._spawn(self._put_on_hold(tripped, self.policy.notify_address(tripped)))
        hold_id = self.policy.hold_for(envelope)
        if hold_id is not None and not record.finished and action is None:
            action = QueueAction.HOLD  # its sender went on hold while it was being delivered
        if action is not None and not record.finished:
            await self._apply([message_id], action, held_by=hold_id or "")
        for result in record.results:
            self.metrics.attempts.labels(result=result.outcome.value).inc()
            self.activity.attempt(
                now,
                result.outcome.value,
                {
                    "id": message_id,
                    "recipient": result.recipient,
                    "status": result.status,
                    "reply": result.reply,
                    "relay": result.remote or "",
                },
            )
            delivery_log.info(
                "delivery id=%s rcpt=%s relay=%s result=%s status=%s attempt=%d reply=%s",
                message_id,
                json.dumps(result.recipient, ensure_ascii=False),
                result.remote or "-",
                result.outcome.value,
                result.status,
                record.attempt,
                json.dumps(result.reply, ensure_ascii=False),
            )

    def _bounce(
        self, message_id: str, envelope: Envelope, failures: list[RecipientFailure]
    ) -> bool:
        """Queue the one DSN this message owes; runs in a worker thread (file I/O). False when
        none is sent (a failed double bounce, or double bounces switched off)."""
        if envelope.kind is MessageKind.DOUBLE_BOUNCE:
            log.warning("double bounce %s failed too; dropping it (no triple bounces)", message_id)
            return False
        names = self.names
        if envelope.sender == "" or envelope.kind is MessageKind.BOUNCE:
            recipient = names.double_bounce_recipient
            if recipient is None:
                log.warning(
                    "%s failed and double bounces are switched off (doublebounceto is empty); "
                    "no report is sent",
                    message_id,
                )
                return False
            notify, kind = recipient, MessageKind.DOUBLE_BOUNCE
        else:
            notify, kind = envelope.sender, MessageKind.BOUNCE
        try:
            _, content = self.queue.read(message_id)
        except FileNotFoundError:
            return False
        now = self.clock()
        report = build_bounce(
            original=envelope,
            original_content=content,
            failures=failures,
            notify=notify,
            reporting_mta=names.me,
            sender=names.bounce_sender,
            now=now,
        )
        bounce_id = self.queue.inject(Envelope("", (notify,), now, kind, Origin("engine")), report)
        self.metrics.bounces.labels(kind=kind.value).inc()
        log.info("bounce %s (%s) for %s sent to %s", bounce_id, kind.value, message_id, notify)
        return True

    # -- an operator's actions ----------------------------------------------------------------

    async def act(self, action: QueueAction, ids: list[str]) -> ActionOutcome:
        """`action` on messages: now for those not being delivered, after the attempt under
        way for those that are. Mail still in `new/` is claimed first, so it counts too."""
        self._claim_new()
        outcome = ActionOutcome()
        idle = []
        for message_id in dict.fromkeys(ids):
            if message_id in self._active:
                outcome.in_flight.append(message_id)
                if action is not QueueAction.RELEASE:  # nothing in flight is held
                    self._after_attempt[message_id] = action
            else:
                idle.append(message_id)
        outcome.merge(await self._apply(idle, action))
        return outcome

    async def _apply(self, ids: list[str], action: QueueAction, held_by: str = "") -> ActionOutcome:
        """The action on messages not being delivered: memory and files in the order that
        keeps the scheduler from attempting one with its old state."""
        now = self.clock()
        if action is QueueAction.RETRY:
            outcome = ActionOutcome()
            for message_id in ids:
                if message_id in self.due:
                    self.due.schedule(message_id, now)
                    outcome.touched.append(message_id)
                elif message_id not in self.held:
                    outcome.missing.append(message_id)
            self.wake()
            return outcome
        if action is not QueueAction.RELEASE:
            for message_id in ids:  # not attempted from now on, with the old state or at all
                self.due.forget(message_id)
        self._stateless.difference_update(ids)  # the files may get one now
        outcome = await asyncio.to_thread(apply_to_files, self.queue, action, ids, now, held_by)
        missing = set(outcome.missing)
        for message_id in (message_id for message_id in ids if message_id not in missing):
            if action is QueueAction.HOLD:
                self.held.add(message_id)
            elif action is QueueAction.DELETE:
                self.held.discard(message_id)
                self.policy.forget_message(message_id)
            elif action is QueueAction.EXPIRE or message_id in outcome.touched:
                self.held.discard(message_id)  # expired, or released
                self.due.schedule(message_id, now)
        for message_id in missing:
            self.held.discard(message_id)
        self.wake()
        return outcome

    # -- control socket ---------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "stopping": self._stopping,
            "queued": len(self.due) + len(self.held),
            "held": len(self.held),
            "active": len(self._active),
            "open_connections": self.pool.open_connections,
            "concurrency_remote": self.pool.limit,
            "pacing": self.pool.status(),
            "settings": self.settings.as_inputs(),
        }

    def active_ids(self) -> list[str]:
        """The ids being delivered now (at most max_active_messages)."""
        return sorted(self._active)

    async def hold_by_operator(self, hold: Hold) -> ActionOutcome:
        """A hold the mail administrator added: the sender's mail is held as by a breaker
        (nothing, if that hold is already in force)."""
        if not self.policy.add(hold):
            return ActionOutcome()
        return await self._put_on_hold(hold, None)
