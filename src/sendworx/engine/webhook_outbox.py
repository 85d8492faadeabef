"""Puts the engine's announcements into webhooks' outbound queue (shared/webhooks.py), never
in the way of delivery: the listener only appends the event to memory, and only while some
endpoint is enabled (otherwise it costs one attribute read); a thread of its own matches each
event against the endpoints (event wanted, account or sender domain in scope), builds its
JSON once (shared/webhook_events.py) and commits the batch, every `webhooks.flush_seconds`
(sooner past BATCH_SOON events), then wakes the sender (`sendworx webhookd`) with a datagram.
The engine never makes an HTTP request: a slow, dead or hostile receiver is the sender's
problem, in another process.

Durability is the delivery history's: what was announced in the last `flush_seconds` before
a kill -9 of the engine is lost; once committed, an event survives anything short of a
broken disk, and the sender posts it at least once. When the store cannot be written mail
flows on: the batch is dropped and counted (`sendworx_webhook_dropped_events_total`), one
log line a minute says so, and the store is opened again at the next batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from prometheus_client import Counter

from sendworx.engine.batches import Batches
from sendworx.engine.events import Fate, FateEvent
from sendworx.shared.bounce_classes import Classifier
from sendworx.shared.unix_sockets import send_datagram
from sendworx.shared.webhook_events import EventIds, WebhookEvent, new_event_id
from sendworx.shared.webhooks import Endpoint, NewDelivery, WebhookStore, WebhookStoreError

log = logging.getLogger("sendworx.webhooks")
MAX_PENDING = 100_000
BATCH_SOON = 500
ENDPOINTS_EVERY_SECONDS = 1.0  # an endpoint added, edited or disabled is seen this soon
COMPLAIN_EVERY_SECONDS = 60.0
CLASSIFIED = frozenset({"deferred", "bounced", "expired"})
# The fates webhooks tell of, by the event's name; a failure after the whole retry life
# (4.4.7) is `expired`. A bounce's own report (BOUNCED), a retry asked for and an unsigned
# message are not webhook events.
_EVENT_OF = {
    Fate.ACCEPTED: "accepted",
    Fate.DELIVERED: "delivered",
    Fate.DEFERRED: "deferred",
    Fate.FAILED: "bounced",
    Fate.SUPPRESSED: "suppressed",
    Fate.HELD: "held",
    Fate.RELEASED: "released",
    Fate.EXPIRED: "expired",
    Fate.DELETED: "deleted",
}


def webhook_event(
    event: FateEvent, name: str, node: str, event_id: str | None = None
) -> WebhookEvent:
    envelope = event.envelope
    origin = envelope.origin if envelope is not None else None
    return WebhookEvent(
        event=name,
        at=event.at,
        node=node,
        queue_id=event.message_id,
        event_id=event_id or new_event_id(),
        message_id=envelope.message_id_header if envelope else "",
        sender=envelope.sender if envelope else "",
        recipients=envelope.recipients if envelope else (),
        subject=envelope.subject if envelope else "",
        size=envelope.size if envelope else 0,
        recipient=event.recipient or "",
        status=event.status,
        reply=event.reply,
        attempt=event.attempt,
        account=(origin.account or "") if origin else "",
        relay=event.relay,
        tls=event.tls,
        detail=event.detail,
    )


def event_name(event: FateEvent) -> str | None:
    name = _EVENT_OF.get(event.fate)
    if name == "bounced" and event.status == "4.4.7":
        return "expired"
    return name


class WebhookOutbox:
    def __init__(
        self,
        path: Path,
        *,
        node: Callable[[], str],
        wake: Path,
        flush_seconds: float,
        classifier: Classifier,
        dropped: Counter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = WebhookStore(path)
        self._node = node
        self._wake_path = wake
        self._classifier = classifier
        self._dropped = dropped
        self._clock = clock
        self._endpoints: list[Endpoint] = []
        self.active = False  # some endpoint is enabled: the listener keeps events
        self._endpoints_read_at = -ENDPOINTS_EVERY_SECONDS
        self._endpoints_version = -1
        self._event_ids = EventIds()
        self._next_complaint = 0.0
        self._batches: Batches[FateEvent] = Batches(
            "webhooks",
            self._flush,
            flush_seconds=flush_seconds,
            soon=BATCH_SOON,
            most=MAX_PENDING,
            dropped=dropped,
            before=self._refresh_endpoints,
            after=self.store.close,
        )

    def start(self) -> None:
        self._refresh_endpoints(force=True)
        self._batches.start()

    def close(self, timeout: float = 10.0) -> None:
        """Queue what is pending, then stop (the engine stops)."""
        self._batches.close(timeout)

    def listen(self, event: FateEvent) -> None:
        """An announcement (on the event loop): kept in memory while some endpoint is
        enabled, nothing more."""
        if self.active:
            self._batches.add(event)

    def _refresh_endpoints(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._endpoints_read_at < ENDPOINTS_EVERY_SECONDS:
            return
        self._endpoints_read_at = now
        if not self.store.exists():
            self._endpoints, self.active = [], False
            return
        try:
            version = self.store.data_version()
            if version != self._endpoints_version or force:
                self._endpoints_version = version
                self._endpoints = [e for e in self.store.endpoints() if e.enabled]
        except WebhookStoreError as error:
            self._complain(0, error)
            return
        self.active = bool(self._endpoints)

    def _flush(self, batch: list[FateEvent]) -> None:
        if not batch:
            return
        node, now = self._node(), self._clock()
        rows = []
        messages: dict[int, str] = {}  # an envelope's `message` object, by the envelope
        for fate_event in batch:
            name = event_name(fate_event)
            if name is None:
                continue
            event = webhook_event(fate_event, name, node, self._event_ids())
            account, domain = event.account, event.sender_domain
            wanting = [e.id for e in self._endpoints if e.wants(name, account, domain)]
            if not wanting:
                continue
            if name in CLASSIFIED:
                found = self._classifier.classify(event.status, event.reply)
                event = replace(event, bounce_class=found)
            key = id(fate_event.envelope)
            message = messages.get(key)
            if message is None:
                message = messages[key] = event.message_json()
            body = event.to_json(message)
            rows += [
                NewDelivery(endpoint, event.event_id, name, event.queue_id, body, now)
                for endpoint in wanting
            ]
        if not rows:
            return
        try:
            self.store.enqueue(rows)
        except WebhookStoreError as error:
            self._dropped.inc(len(rows))
            self._complain(len(rows), error)
            return
        send_datagram(b"w", self._wake_path)

    def _complain(self, count: int, error: Exception) -> None:
        now = self._clock()
        if now >= self._next_complaint:
            self._next_complaint = now + COMPLAIN_EVERY_SECONDS
            log.error("webhook events not queued (%d dropped; mail goes on): %s", count, error)
