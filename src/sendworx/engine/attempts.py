"""What one delivery attempt means for its message: its recipients' results folded into the
message's next state. Pure: the queue manager records the fold durably, then logs it.

A recipient is finished once delivered or failed; a deferral past the queue lifetime (not
counting time the message spent held) is a failure (4.4.7, carrying the last error). Every
attempt is added to the message's history, the last few kept. A message with no recipient
left to try is finished: whatever failed is bounced, then the message is removed. Otherwise
it waits: for qmail's next retry time if anything was deferred, or until it is taken again if
its attempt was cut short (the engine stopping) with nothing deferred.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from sendworx.engine.retry_policy import has_expired, next_attempt_at
from sendworx.shared.queue_format import (
    HISTORY_LIMIT,
    AttemptLog,
    DeliveryState,
    RecipientAttempt,
    RecipientFailure,
)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    # Not tried: the address is on the suppression list. Final, as a failure is.
    SUPPRESSED = "suppressed"
    # Not tried because the engine is stopping; the recipient stays queued as it was.
    SKIPPED = "skipped"

    @classmethod
    def of_reply(cls, code: int) -> Outcome:
        """2xx delivered, 4xx deferred (try again later), 5xx failed for good."""
        if 200 <= code < 300:
            return cls.DELIVERED
        return cls.DEFERRED if code < 500 else cls.FAILED


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    outcome: Outcome
    reply: str
    status: str
    remote: str | None = None
    tls: str = ""  # the session's TLS protocol and cipher; "" in clear


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    state: DeliveryState  # the message's progress after this attempt, to be written
    results: tuple[RecipientResult, ...]  # as recorded and logged; skipped recipients left out
    attempt: int  # this attempt's number, for the log
    finished: bool  # no recipient left to try: bounce what failed, then remove the message
    changed: bool  # the state differs from what is on disk and must be written first


def fold_attempt(
    state: DeliveryState,
    results: Iterable[RecipientResult],
    *,
    birth: float,
    now: float,
    queue_lifetime: int,
    rng: random.Random | None = None,
) -> AttemptRecord:
    """The next state of a message whose attempt gave `results`; `state` is left as it was."""
    expired = has_expired(birth + state.held_seconds, now, queue_lifetime)
    after = replace(
        state,
        delivered=list(state.delivered),
        failed=list(state.failed),
        last_errors=dict(state.last_errors),
        history=list(state.history),
    )
    recorded: list[RecipientResult] = []
    deferred = skipped = progressed = False
    for result in results:
        if result.outcome is Outcome.SKIPPED:
            skipped = True
            continue
        if result.outcome is Outcome.DEFERRED and expired:
            result = replace(
                result,
                outcome=Outcome.FAILED,
                reply=f"delivery time expired; last error: {result.reply}",
                status="4.4.7",
            )
        if result.outcome is Outcome.DEFERRED:
            after.last_errors[result.recipient] = result.reply
            deferred = True
        else:
            if result.outcome is Outcome.DELIVERED:
                after.delivered.append(result.recipient)
            else:
                after.failed.append(
                    RecipientFailure(result.recipient, result.reply, result.status, result.remote)
                )
            after.last_errors.pop(result.recipient, None)
            progressed = True
        recorded.append(result)
    if deferred:
        after.attempts += 1
        after.next_attempt_at = next_attempt_at(birth, now, rng)
    if recorded:
        logged = tuple(
            RecipientAttempt(result.recipient, result.outcome.value, result.reply, result.remote)
            for result in recorded
        )
        after.history = [*after.history, AttemptLog(now, logged)][-HISTORY_LIMIT:]
    return AttemptRecord(
        state=after,
        results=tuple(recorded),
        attempt=state.attempts + 1,
        finished=not deferred and not skipped,
        changed=deferred or progressed,
    )
