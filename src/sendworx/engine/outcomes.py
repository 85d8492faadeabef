"""The one writer of what happened to queued mail: a delivery attempt's results, and what an
operator or the sending policy does to messages. It changes the files and the manager's
memory of them in an order that is safe at every step, and only then announces each change
(`events.py`); nothing else in the engine records a fate.

An attempt (`record_attempt`): its results are folded (`attempts.py`); a message with no
recipient left to try has its bounce queued first, then its file retired; otherwise its state
file is rewritten when it changed, and it is due again at its next retry. Only once that is
durable is the attempt announced (the delivery log line among others), so a logged delivery
is never repeated: a `kill -9` between a remote's 250 and the record repeats the delivery
(at-least-once), never the reverse. Disk trouble keeps the message as it was on disk and
tries it again a minute later.

An action (`apply`): retry, hold, release, expire or delete on messages not being delivered
(the caller waits for the attempt under way first). Memory and files change in the order
that keeps the scheduler from attempting a message with its old state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from sendworx.engine.activity import ActivityLog
from sendworx.engine.attempts import AttemptRecord, fold_attempt
from sendworx.engine.bounces import build_bounce
from sendworx.engine.events import RECIPIENT_FATES, Fate, FateEvent, FateListener, announce
from sendworx.engine.metrics import EngineMetrics
from sendworx.engine.queue_state import ActiveMessage, QueueState
from sendworx.shared.queue import Queue
from sendworx.shared.queue_actions import ActionOutcome, QueueAction, apply_to_files
from sendworx.shared.queue_format import (
    CorruptMessageError,
    Envelope,
    MessageKind,
    Origin,
    RecipientFailure,
)
from sendworx.shared.settings import MailNames

log = logging.getLogger("sendworx.engine")
delivery_log = logging.getLogger("sendworx.delivery")
RECORD_RETRY_SECONDS = 60.0  # when an attempt cannot be recorded (disk trouble), try again then

_BEFORE_ANY = frozenset({QueueAction.HOLD, QueueAction.DELETE})
_ACTION_FATES = {
    QueueAction.RETRY: Fate.RETRIED,
    QueueAction.HOLD: Fate.HELD,
    QueueAction.RELEASE: Fate.RELEASED,
    QueueAction.EXPIRE: Fate.EXPIRED,
    QueueAction.DELETE: Fate.DELETED,
}


class Outcomes:
    def __init__(
        self,
        queue: Queue,
        state: QueueState,
        *,
        clock: Callable[[], float],
        names: Callable[[], MailNames],
        queue_lifetime: Callable[[], int],
        wake: Callable[[], None],
    ) -> None:
        self._queue = queue
        self._state = state
        self._clock = clock
        self._names = names
        self._queue_lifetime = queue_lifetime
        self._wake = wake
        self.listeners: list[FateListener] = []

    # -- a delivery attempt ------------------------------------------------------------------

    async def record_attempt(self, active: ActiveMessage, now: float) -> AttemptRecord | None:
        """Fold the attempt and make it durable; None when the disk refused (the message is
        due again in a minute, as it was on disk). Announce it with `announce_attempt`."""
        message_id, envelope, state = active.message_id, active.envelope, self._state
        record = fold_attempt(
            active.state,
            active.results,
            birth=envelope.birth,
            now=now,
            queue_lifetime=self._queue_lifetime(),
        )
        try:
            if record.finished:
                failures = record.state.failed
                if failures:
                    bounce = await asyncio.to_thread(self._bounce, message_id, envelope, failures)
                    if bounce is not None:
                        announce(self.listeners, [bounce])
                self._queue.retire(message_id, has_state=message_id not in state.stateless)
                state.stateless.discard(message_id)
                state.due.forget(message_id)
            else:
                if record.changed:
                    state.stateless.discard(message_id)  # before: a crash leaves it unsure
                    await asyncio.to_thread(self._queue.write_state, message_id, record.state)
                state.due.schedule(message_id, record.state.next_attempt_at)
        except Exception:
            # Disk trouble or a bug: keep the message as it is on disk, try again in a minute.
            log.exception("cannot record attempt for %s; retrying it in 60s", message_id)
            state.due.schedule(message_id, now + RECORD_RETRY_SECONDS)
            return None
        return record

    def announce_attempt(
        self, message_id: str, envelope: Envelope, record: AttemptRecord, now: float
    ) -> None:
        """Each recipient's result, once recorded; with the first, whether it went unsigned
        though its From domain signs (once: the attempt's number is on disk). A message held
        before its first attempt was announced accepted then (`apply`)."""
        if record.attempt == 1 and not record.state.held_seconds:
            first = [FateEvent(Fate.ACCEPTED, envelope.birth, message_id, envelope=envelope)]
            if envelope.dkim_refused is not None:
                refused = f"{envelope.origin_name} may not sign as {envelope.dkim_refused}"
                first.append(
                    FateEvent(Fate.UNSIGNED, now, message_id, detail=refused, envelope=envelope)
                )
            announce(self.listeners, first)
        announce(
            self.listeners,
            (
                FateEvent(
                    Fate(result.outcome.value),
                    now,
                    message_id,
                    result.recipient,
                    status=result.status,
                    reply=result.reply,
                    relay=result.remote or "",
                    tls=result.tls,
                    attempt=record.attempt,
                    envelope=envelope,
                )
                for result in record.results
            ),
        )

    def _bounce(
        self, message_id: str, envelope: Envelope, failures: list[RecipientFailure]
    ) -> FateEvent | None:
        """Queue the one DSN this message owes; runs in a worker thread (file I/O). None when
        none is sent (a failed double bounce, or double bounces switched off)."""
        if envelope.kind is MessageKind.DOUBLE_BOUNCE:
            log.warning("double bounce %s failed too; dropping it (no triple bounces)", message_id)
            return None
        names = self._names()
        if envelope.sender == "" or envelope.kind is MessageKind.BOUNCE:
            recipient = names.double_bounce_recipient
            if recipient is None:
                log.warning(
                    "%s failed and double bounces are switched off (doublebounceto is empty); "
                    "no report is sent",
                    message_id,
                )
                return None
            notify, kind = recipient, MessageKind.DOUBLE_BOUNCE
        else:
            notify, kind = envelope.sender, MessageKind.BOUNCE
        try:
            _, content = self._queue.read(message_id)
        except FileNotFoundError:
            return None
        now = self._clock()
        report = build_bounce(
            original=envelope,
            original_content=content,
            failures=failures,
            notify=notify,
            reporting_mta=names.me,
            sender=names.bounce_sender,
            now=now,
        )
        bounce = Envelope("", (notify,), now, kind, Origin("engine"))
        bounce_id = self._queue.inject(bounce, report)
        log.info("bounce %s (%s) for %s sent to %s", bounce_id, kind.value, message_id, notify)
        return FateEvent(
            Fate.BOUNCED, now, message_id, detail=kind.value, envelope=envelope, related=bounce_id
        )

    # -- an action on messages not being delivered ---------------------------------------

    async def apply(
        self, ids: list[str], action: QueueAction, held_by: str = "", by: str = ""
    ) -> ActionOutcome:
        """The action on messages not being delivered: memory and files in the order that
        keeps the scheduler from attempting one with its old state. `held_by`: the sender
        hold it is for; `by`: the operator who asked (both go into the announcement)."""
        detail = held_by or (f"by {by}" if by else "")
        now = self._clock()
        state = self._state
        if action is QueueAction.RETRY:
            outcome = ActionOutcome()
            for message_id in ids:
                if message_id in state.due:
                    state.due.schedule(message_id, now)
                    outcome.touched.append(message_id)
                elif message_id not in state.held:
                    outcome.missing.append(message_id)
            self._wake()
            self._announce_action(outcome, action, now, detail)
            return outcome
        if action is not QueueAction.RELEASE:
            for message_id in ids:  # not attempted from now on, with the old state or at all
                state.due.forget(message_id)
        # Held or deleted before any attempt: announced accepted now, as an attempt would.
        unseen = [i for i in ids if i in state.stateless] if action in _BEFORE_ANY else []
        state.stateless.difference_update(ids)  # the files may get one now
        outcome, envelopes = await asyncio.to_thread(
            self._apply_to_files, action, ids, now, held_by, unseen
        )
        missing = set(outcome.missing)
        for message_id in (message_id for message_id in ids if message_id not in missing):
            if action is QueueAction.HOLD:
                state.held.add(message_id)
            elif action is QueueAction.DELETE:
                state.held.discard(message_id)
            elif action is QueueAction.EXPIRE or message_id in outcome.touched:
                state.held.discard(message_id)  # expired, or released
                state.due.schedule(message_id, now)
        for message_id in missing:
            state.held.discard(message_id)
        self._wake()
        self._announce_action(outcome, action, now, detail, envelopes)
        return outcome

    def _apply_to_files(
        self, action: QueueAction, ids: list[str], now: float, held_by: str, unseen: list[str]
    ) -> tuple[ActionOutcome, dict[str, Envelope]]:
        """The action on the files (a worker thread), and the envelopes of the messages
        never attempted, read first (a delete removes them)."""
        envelopes = {}
        for message_id in unseen:
            with contextlib.suppress(OSError, CorruptMessageError):
                envelopes[message_id] = self._queue.read_envelope(message_id)
        return apply_to_files(self._queue, action, ids, now, held_by), envelopes

    def _announce_action(
        self,
        outcome: ActionOutcome,
        action: QueueAction,
        now: float,
        detail: str,
        envelopes: dict[str, Envelope] | None = None,
    ) -> None:
        fate, envelopes = _ACTION_FATES[action], envelopes or {}
        events = []
        for message_id in outcome.touched:
            envelope = envelopes.get(message_id)
            if envelope is not None:
                events.append(
                    FateEvent(Fate.ACCEPTED, envelope.birth, message_id, envelope=envelope)
                )
            events.append(FateEvent(fate, now, message_id, detail=detail, envelope=envelope))
        announce(self.listeners, events)


def activity_listener(activity: ActivityLog) -> FateListener:
    """The Activity page's figures: results per minute, bounces, the latest attempts."""

    def listen(event: FateEvent) -> None:
        if event.fate is Fate.BOUNCED:
            activity.bounce(event.at)
        elif event.fate is Fate.UNSIGNED:
            activity.unsigned(event.at, {"id": event.message_id, "reply": event.detail})
        elif event.recipient is not None:
            details: dict[str, object] = {
                "id": event.message_id,
                "recipient": event.recipient,
                "status": event.status,
                "reply": event.reply,
                "relay": event.relay,
            }
            activity.attempt(event.at, event.fate.value, details)

    return listen


def metrics_listener(metrics: EngineMetrics) -> FateListener:
    """Attempts per recipient by result, and bounces by kind."""

    def listen(event: FateEvent) -> None:
        if event.fate is Fate.BOUNCED:
            metrics.bounces.labels(kind=event.detail).inc()
        elif event.fate is Fate.UNSIGNED:
            metrics.dkim_refused.inc()
        elif event.fate is Fate.SUPPRESSED:
            metrics.suppressed.inc()
        elif event.recipient is not None:
            metrics.attempts.labels(result=event.fate.value).inc()

    return listen


def queue_time_listener(
    metrics: EngineMetrics, group_of: Callable[[str, str], str]
) -> FateListener:
    """Each delivery's time in queue, by its destination group (`group_of(recipient,
    relay)`)."""

    def listen(event: FateEvent) -> None:
        if event.fate is Fate.DELIVERED and event.envelope is not None and event.recipient:
            group = group_of(event.recipient, event.relay)
            metrics.time_in_queue.labels(group=group).observe(event.at - event.envelope.birth)

    return listen


def delivery_log_listener() -> FateListener:
    """send.log's one line per recipient and attempt (`docs/operations.md` describes it)."""

    def listen(event: FateEvent) -> None:
        if event.fate in RECIPIENT_FATES:
            delivery_log.info(
                "delivery id=%s rcpt=%s relay=%s result=%s status=%s attempt=%d reply=%s",
                event.message_id,
                json.dumps(event.recipient, ensure_ascii=False),
                event.relay or "-",
                event.fate.value,
                event.status,
                event.attempt,
                json.dumps(event.reply, ensure_ascii=False),
            )

    return listen
