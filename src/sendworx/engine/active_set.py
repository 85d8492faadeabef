"""The active set: messages taken from the due index and being delivered. A message is
admitted (its envelope and state read; its sender's hold, breaker and `defer` limit
consulted, in Redis when the policy shares them), split into jobs (`delivery_plan.py`) for
the delivery pool or this host's mailboxes, and finished once every job has reported: the
attempt recorded (`outcomes.py`), its results counted by the sender's breaker, an action an
operator asked meanwhile applied, and only then announced.

Up to `max_active_messages` are active at once (the manager takes that many from the due
index). Held messages are never admitted; a message being delivered is held after its
attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sendworx.engine.actions import QueueActions
from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.delivery import DeliveryPool
from sendworx.engine.delivery_job import DeliveryJob
from sendworx.engine.delivery_plan import plan_delivery
from sendworx.engine.local_delivery import deliver_locally
from sendworx.engine.outcomes import Outcomes
from sendworx.engine.queue_state import ActiveMessage, QueueState, pending_recipients
from sendworx.engine.sending_policy import Found, SendingPolicy, Watched
from sendworx.engine.suppression import SUPPRESSED_HOLD, Suppressions, suppressed_reply
from sendworx.shared.aliases import AliasFile
from sendworx.shared.config import DeliveryConfig
from sendworx.shared.destinations import Destination
from sendworx.shared.holds import Hold
from sendworx.shared.instance import Instance
from sendworx.shared.queue_actions import QueueAction
from sendworx.shared.queue_format import CorruptMessageError, DeliveryState, Envelope, Origin
from sendworx.shared.settings import Settings

log = logging.getLogger("sendworx.engine")
Spawn = Callable[[Coroutine[Any, Any, object]], None]


class ActiveSet:
    def __init__(
        self,
        instance: Instance,
        state: QueueState,
        *,
        policy: SendingPolicy,
        suppressions: Suppressions | None,
        pool: DeliveryPool,
        outcomes: Outcomes,
        actions: QueueActions,
        config: DeliveryConfig,
        settings: Callable[[], Settings],
        local_domains: Callable[[], frozenset[str]],
        clock: Callable[[], float],
        spawn: Spawn,
        wake: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._instance = instance
        self._queue = instance.queue()
        self._state = state
        self._policy = policy
        self._suppressions = suppressions
        self._pool = pool
        self._outcomes = outcomes
        self._actions = actions
        self._config = config
        self._settings = settings
        self._local_domains = local_domains
        self._clock = clock
        self._spawn = spawn
        self._wake = wake
        self._stopping = stopping
        self._aliases = AliasFile(instance.aliases_path)

    # -- admission -------------------------------------------------------------------------

    def start(self, message_id: str) -> None:
        """A message the due index gave: into delivery, held, or due again later."""
        state, queue = self._state, self._queue
        try:
            envelope = queue.read_envelope(message_id)
        except FileNotFoundError:
            state.due.forget(message_id)
            state.stateless.discard(message_id)
            return
        except (CorruptMessageError, OSError) as error:
            log.error("message %s cannot be read (%s); moved to queue/corrupt", message_id, error)
            queue.quarantine(message_id)
            state.due.forget(message_id)
            state.stateless.discard(message_id)
            return
        try:
            stored = None if message_id in state.stateless else queue.read_state(message_id)
        except (ValueError, TypeError, KeyError) as error:
            log.warning("state of %s unreadable (%s); starting it afresh", message_id, error)
            stored = None
        delivery_state = stored or DeliveryState()
        if delivery_state.held:
            state.due.forget(message_id)
            state.held.add(message_id)
            return
        if self._holds_suppressed(envelope, delivery_state):
            self._hold_new(message_id, SUPPRESSED_HOLD)
            return
        policy = self._policy
        watched = None
        if not delivery_state.attempts and not delivery_state.held_seconds:
            # Never tried, nor released by hand: its sender's hold and breaker apply.
            hold_id = policy.hold_for(envelope)
            if hold_id is not None:
                self._hold_new(message_id, hold_id)
                return
            watched = policy.breaker_watching(message_id, envelope)
        found = policy.deferring_limit(envelope) if not delivery_state.attempts else None
        if (watched or found) and policy.shared is not None:
            # Counted in Redis: the start goes on once it answers (or fails over).
            state.admitting.add(message_id)
            self._spawn(
                self._start_when_admitted(message_id, envelope, delivery_state, watched, found)
            )
            return
        if watched is not None:
            reason = policy.count_message_here(watched, envelope)
            if reason is not None:
                self._trip(policy.trip(watched, reason), message_id)
                return
        if found is not None:
            free_at = policy.admit_here(found, len(envelope.recipients), self._clock())
            if free_at:
                state.due.schedule(message_id, free_at)  # nothing written: asked again then
                policy.waits(found, free_at)
                return
        self._begin(message_id, envelope, delivery_state)

    async def _start_when_admitted(
        self,
        message_id: str,
        envelope: Envelope,
        delivery_state: DeliveryState,
        watched: Watched | None,
        found: Found | None,
    ) -> None:
        """`start`'s breaker count and limit check, in Redis for every engine sharing it.

        A message counted under its breaker's threshold goes, as on a lone engine, even if a
        message counted after it trips the breaker while this one waited for Redis."""
        state, policy = self._state, self._policy
        try:
            reason = None
            if watched is not None:
                reason = await policy.count_message(watched, message_id, envelope)
            free_at = 0.0
            if found is not None and reason is None:
                free_at = await policy.admit(found, len(envelope.recipients), self._clock())
        finally:
            state.admitting.discard(message_id)
        if message_id not in state.due or message_id in state.held or self._stopping():
            return  # deleted or held meanwhile; or stopping: it stays queued, due
        hold_id = policy.hold_for(envelope) if watched is not None else None
        if reason is not None and watched is not None and hold_id is None:
            self._trip(policy.trip(watched, reason), message_id)
        elif hold_id is not None and (reason is not None or self._held_otherwise(hold_id, watched)):
            self._hold_new(message_id, hold_id)
        elif free_at:
            state.due.schedule(message_id, free_at)
            if found is not None:
                policy.waits(found, free_at)
        else:
            self._begin(message_id, envelope, delivery_state)
        self._wake()

    def _holds_suppressed(self, envelope: Envelope, delivery_state: DeliveryState) -> bool:
        """In `hold` mode: whether the message waits for an operator, a recipient of it
        being suppressed (not once an operator released it)."""
        suppressions = self._suppressions
        if suppressions is None or not suppressions.holds or delivery_state.held_seconds:
            return False
        now = self._clock()
        pending = pending_recipients(envelope, delivery_state)
        return any(suppressions.check(recipient, now) for recipient in pending)

    def _held_otherwise(self, hold_id: str, watched: Watched | None) -> bool:
        """Whether the hold in force came from elsewhere than `watched`'s own trip (an
        operator, another rule): it holds even mail counted under the threshold."""
        hold = self._policy.holds.get(hold_id)
        return hold is None or watched is None or hold.rule != watched[0].name

    def _trip(self, hold: Hold, message_id: str) -> None:
        """A breaker tripped counting `message_id`: the sender goes on hold, the message with
        it."""
        self._spawn(self._actions.put_on_hold(hold, self._policy.notify_address(hold)))
        self._hold_new(message_id, hold.hold_id)

    def _hold_new(self, message_id: str, hold_id: str) -> None:
        """A message never tried, from a sender on hold: held, not attempted."""
        self._state.due.forget(message_id)
        self._state.held.add(message_id)
        self._spawn(self._outcomes.apply([message_id], QueueAction.HOLD, held_by=hold_id))

    # -- delivery --------------------------------------------------------------------------

    def _begin(self, message_id: str, envelope: Envelope, delivery_state: DeliveryState) -> None:
        active = ActiveMessage(message_id, envelope, delivery_state)
        self._state.active[message_id] = active
        if delivery_state.expire:
            # An operator expired it: what is left is bounced now, nothing is attempted.
            reason = "message expired by the mail administrator"
            active.results = [
                RecipientResult(recipient, Outcome.FAILED, reason, "4.4.7")
                for recipient in active.pending()
            ]
            self._finish_later(active)
            return
        recipients = self._not_suppressed(active)
        try:
            jobs, local = self._jobs_for(active, recipients)
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
            self._finish_later(active)
        for destination, job in jobs:
            self._pool.submit(destination, job)
        if local is not None:
            self._spawn(self._deliver_locally(local))

    def _not_suppressed(self, active: ActiveMessage) -> list[str]:
        """The recipients to attempt; in `bounce` mode, those suppressed are failed here,
        with a reply that says why and since when."""
        pending = active.pending()
        suppressions = self._suppressions
        if suppressions is None or suppressions.holds:
            return pending
        now, recipients = self._clock(), []
        for recipient in pending:
            entry = suppressions.check(recipient, now)
            if entry is None:
                recipients.append(recipient)
            else:
                reply = suppressed_reply(entry)
                active.results.append(
                    RecipientResult(recipient, Outcome.SUPPRESSED, reply, "5.1.1", "suppressed")
                )
        return recipients

    def _jobs_for(
        self, active: ActiveMessage, recipients: list[str]
    ) -> tuple[list[tuple[Destination, DeliveryJob]], DeliveryJob | None]:
        """One job per destination and transaction, and one for the recipients on this host
        itself (`local_domains.py`); recipients that name nowhere fail here."""
        plan = plan_delivery(
            active.envelope.sender,
            recipients,
            routes=self._settings().route_table,
            local_domains=self._local_domains(),
            per_transaction=self._config.recipients_per_transaction,
        )
        active.results.extend(plan.failures)
        message_id, sender = active.message_id, active.envelope.sender

        def load_content() -> bytes:
            return self._queue.read_content(message_id)

        local_job = None
        if plan.local:  # one job, written by a task of the manager's (`_deliver_locally`)
            local_job = DeliveryJob(message_id, sender, plan.local, load_content, self._job_done)
        jobs = [
            (destination, DeliveryJob(message_id, sender, recipients, load_content, self._job_done))
            for destination, recipients in plan.transactions
        ]
        return jobs, local_job

    async def _deliver_locally(self, job: DeliveryJob) -> None:
        """Mail for this host into its local mailboxes (file I/O, in a thread)."""
        try:
            results = await asyncio.to_thread(
                deliver_locally,
                self._instance.mailboxes_dir,
                job,
                self._aliases.current(),
                self._local_domains(),
                self._forward,
            )
        except Exception as error:
            log.exception("local delivery of %s failed; deferring it", job.message_id)
            reason = f"local delivery failed: {error}"
            results = [
                RecipientResult(rcpt, Outcome.DEFERRED, reason, "4.3.0", "local")
                for rcpt in job.recipients
            ]
        self._job_done(job, results)

    def _forward(self, sender: str, recipients: tuple[str, ...], content: bytes) -> str:
        """A copy for an alias's address elsewhere, queued as a new message (worker thread)."""
        envelope = Envelope(sender, recipients, self._clock(), origin=Origin("engine"))
        forwarded_id = self._queue.inject(envelope, content)
        log.info("forwarded to %s as %s", ", ".join(recipients), forwarded_id)
        return forwarded_id

    def _job_done(self, job: DeliveryJob, results: list[RecipientResult]) -> None:
        active = self._state.active.get(job.message_id)
        if active is None:
            return
        active.results.extend(results)
        active.outstanding -= 1
        if active.outstanding == 0:
            self._finish_later(active)

    # -- the end of an attempt -------------------------------------------------------------

    def _finish_later(self, active: ActiveMessage) -> None:
        self._spawn(self._finish(active))

    async def _finish(self, active: ActiveMessage) -> None:
        """Record the attempt durably, then what follows from it, then announce it: a logged
        delivery is never repeated."""
        message_id, envelope, state = active.message_id, active.envelope, self._state
        now = self._clock()
        try:
            record = await self._outcomes.record_attempt(active, now)
        finally:
            state.active.pop(message_id, None)
            self._policy.forget_message(message_id)
            action, by = state.after_attempt.pop(message_id, (None, ""))
            self._wake()
        if record is None:
            return
        tripped = await self._policy.count_results(envelope, record.results)
        if tripped is not None:
            self._spawn(self._actions.put_on_hold(tripped, self._policy.notify_address(tripped)))
        hold_id = self._policy.hold_for(envelope)
        if hold_id is not None and not record.finished and action is None:
            action = QueueAction.HOLD  # its sender went on hold while it was being delivered
        if action is not None and not record.finished:
            await self._outcomes.apply([message_id], action, held_by=hold_id or "", by=by)
        self._outcomes.announce_attempt(message_id, envelope, record, now)
