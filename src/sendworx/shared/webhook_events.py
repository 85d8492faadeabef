"""The JSON body of a webhook request: one event, field by field as docs/api.md documents it.
Pure; the engine builds one per event an endpoint wants (engine/webhook_outbox.py), the API
the test action's.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring

MAX_RECIPIENTS_LISTED = 100  # a message's `to`; `to_count` says how many it has

# What each event means for its recipient or message, in one word.
OUTCOMES = {
    "accepted": "queued",
    "delivered": "delivered",
    "deferred": "retrying",
    "bounced": "failed",
    "expired": "failed",
    "suppressed": "failed",
    "held": "held",
    "released": "queued",
    "deleted": "deleted",
    "test": "test",
}


# JSON's string quoting, in C: what json.dumps(ensure_ascii=False) writes for a string.
_quote = encode_basestring


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


_last_second: list[tuple[int, str]] = [(-1, "")]  # the one second formatted last


def iso_time(at: float) -> str:
    second = int(at)
    known, whole = _last_second[0]
    if known != second:
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second[0] = (second, whole)
    return f"{whole}.{int(at % 1 * 1000):03d}Z"


class EventIds:
    """Event ids for one process: a random prefix (64 bits, new at each start) and a
    counter, as unique as random ids and cheaper to make by the thousand."""

    def __init__(self) -> None:
        self._prefix = "evt_" + secrets.token_hex(8)
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:08x}"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event: str
    at: float
    node: str
    queue_id: str
    event_id: str = field(default_factory=new_event_id)
    message_id: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    subject: str = ""
    size: int = 0
    recipient: str = ""
    status: str = ""
    reply: str = ""
    bounce_class: str = ""
    attempt: int = 0
    account: str = ""
    relay: str = ""
    tls: str = ""
    detail: str = ""

    @property
    def sender_domain(self) -> str:
        return _domain(self.sender)

    def message_json(self) -> str:
        """The `message` object: the same for every event of a message (the outbox reuses
        it for the events of one batch)."""
        to = ",".join(_quote(address) for address in self.recipients[:MAX_RECIPIENTS_LISTED])
        return (
            f'{{"queue_id":{_quote(self.queue_id)},"message_id":{_quote(self.message_id)},'
            f'"from":{_quote(self.sender)},"to":[{to}],"to_count":{len(self.recipients)},'
            f'"subject":{_quote(self.subject)},"size":{int(self.size)}}}'
        )

    def to_json(self, message: str | None = None) -> bytes:
        """The body, compact JSON in the documented order; written out field by field (it is
        made for every event in the engine's process): the same document as json.dumps of
        `to_document()`, which the tests check."""
        destination = _domain(self.recipient) if self.recipient else ""
        return (
            f'{{"id":{_quote(self.event_id)},"event":{_quote(self.event)},'
            f'"time":"{iso_time(self.at)}","timestamp":{round(self.at, 3)!r},'
            f'"node":{_quote(self.node)},"message":{message or self.message_json()},'
            f'"recipient":{_quote(self.recipient)},'
            f'"outcome":{_quote(OUTCOMES.get(self.event, self.event))},'
            f'"status":{_quote(self.status)},"reply":{_quote(self.reply)},'
            f'"class":{_quote(self.bounce_class)},"attempt":{int(self.attempt)},'
            f'"account":{_quote(self.account)},"destination":{_quote(destination)},'
            f'"relay":{_quote(self.relay)},"tls":{_quote(self.tls)},'
            f'"detail":{_quote(self.detail)}}}'
        ).encode()

    def to_document(self) -> dict[str, object]:
        return {
            "id": self.event_id,
            "event": self.event,
            "time": iso_time(self.at),
            "timestamp": round(self.at, 3),
            "node": self.node,
            "message": {
                "queue_id": self.queue_id,
                "message_id": self.message_id,
                "from": self.sender,
                "to": list(self.recipients[:MAX_RECIPIENTS_LISTED]),
                "to_count": len(self.recipients),
                "subject": self.subject,
                "size": self.size,
            },
            "recipient": self.recipient,
            "outcome": OUTCOMES.get(self.event, self.event),
            "status": self.status,
            "reply": self.reply,
            "class": self.bounce_class,
            "attempt": self.attempt,
            "account": self.account,
            "destination": _domain(self.recipient) if self.recipient else "",
            "relay": self.relay,
            "tls": self.tls,
            "detail": self.detail,
        }


def sample_event(node: str, endpoint_id: int, now: float) -> WebhookEvent:
    """What the test action sends: the shape of a delivery, marked as a test."""
    return WebhookEvent(
        event="test",
        at=now,
        node=node,
        queue_id="0000000000000000",
        message_id="test@sendworx.invalid",
        sender="sender@example.com",
        recipients=("recipient@example.net",),
        subject="sendworx test event",
        size=0,
        recipient="recipient@example.net",
        status="2.0.0",
        reply="250 2.0.0 test",
        detail=f"a test of endpoint {endpoint_id}",
    )
