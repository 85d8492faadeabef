"""What happened to a message or one of its recipients, as the engine announces it.

`outcomes.py` alone writes a message's fate (its files) and then announces it here, once per
change: a recipient delivered, deferred or failed by an attempt, the message's bounce
queued, the message held, released, expired, retried or deleted. Whatever wants to know
(the Activity figures, the metrics, the delivery log line, the sending policy's bookkeeping;
later the delivery history and webhooks) is a listener. A listener that fails is logged and
skipped: it never stops the others, nor delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from sendworx.shared.queue_format import Envelope

log = logging.getLogger("sendworx.engine")


class Fate(StrEnum):
    # Announced with its first attempt, dated when it was queued (`envelope` says from whom).
    ACCEPTED = "accepted"
    # A recipient's, by a delivery attempt (the values are send.log's `result=` words).
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"  # for good: a 5xx, a name that routes nowhere, or expired (4.4.7)
    SUPPRESSED = "suppressed"  # not attempted: on the suppression list (bounced as failed)
    # The message's.
    BOUNCED = "bounced"  # its delivery status notification was queued (`detail`: the kind)
    HELD = "held"  # `detail`: the sender hold it is for, if any
    RELEASED = "released"
    EXPIRED = "expired"  # by an operator: what is left is bounced at its next run
    RETRIED = "retried"
    DELETED = "deleted"
    # Announced with its first attempt: it went unsigned, its origin may not use its From
    # domain's DKIM key (`detail`: who, and the domain).
    UNSIGNED = "unsigned"


RECIPIENT_FATES = frozenset({Fate.DELIVERED, Fate.DEFERRED, Fate.FAILED, Fate.SUPPRESSED})


@dataclass(frozen=True, slots=True)
class FateEvent:
    fate: Fate
    at: float  # wall-clock seconds
    message_id: str
    recipient: str | None = None  # None: the whole message
    status: str = ""  # the enhanced status code
    reply: str = ""  # the remote's reply, or why
    relay: str = ""  # the host that answered ("local" for this host's mailboxes)
    tls: str = ""  # the session's TLS protocol and cipher; "" in clear
    attempt: int = 0  # the message's attempt this came from (recipient fates)
    detail: str = ""
    envelope: Envelope | None = None  # when the announcer has it: the delivery history's
    related: str = ""  # BOUNCED: the queue id of the DSN sent


FateListener = Callable[[FateEvent], None]


def announce(listeners: Iterable[FateListener], events: Iterable[FateEvent]) -> None:
    """Every event to every listener, in order; a listener's failure is only logged."""
    for event in events:
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a listener failed on %s of %s", event.fate, event.message_id)
