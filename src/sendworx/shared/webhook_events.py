"""The JSON body of a webhook request: one event, field by field as docs/api.md documents it.
Pure; the engine builds one per event an endpoint wants (engine/webhook_outbox.py), the API
the test action's.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

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


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def iso_time(at: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    return f"{whole}.{int(at % 1 * 1000):03d}Z"


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

    def to_json(self) -> bytes:
        destination = _domain(self.recipient) if self.recipient else ""
        document = {
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
            "destination": destination,
            "relay": self.relay,
            "tls": self.tls,
            "detail": self.detail,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


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
