"""What the engine did lately, for people: delivery results per minute over the last hours,
the queue's size at each minute, and the latest attempts with their remote replies.

Pure bookkeeping on a clock the caller gives; the web page draws it as curves (people would
rather look at a curve than read a log). Kept in memory: a restarted engine starts afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

KEPT_MINUTES = 6 * 60
KEPT_ATTEMPTS = 100


@dataclass
class Minute:
    start: int  # a whole minute, in seconds since the epoch
    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    bounced: int = 0
    unsigned: int = 0  # messages refused a DKIM signature (dkim_signer.py)
    queued: int = 0  # the queue's size when the minute was last written to

    def as_dict(self) -> dict[str, int]:
        return {
            "at": self.start,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "failed": self.failed,
            "bounced": self.bounced,
            "unsigned": self.unsigned,
            "queued": self.queued,
        }


@dataclass
class ActivityLog:
    minutes: deque[Minute] = field(default_factory=lambda: deque(maxlen=KEPT_MINUTES))
    latest: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=KEPT_ATTEMPTS))

    def _minute(self, now: float) -> Minute:
        start = int(now // 60 * 60)
        if not self.minutes or self.minutes[-1].start != start:
            self.minutes.append(Minute(start))
        return self.minutes[-1]

    def attempt(self, now: float, result: str, details: dict[str, object]) -> None:
        """One recipient's attempt: `result` is delivered, deferred or failed."""
        minute = self._minute(now)
        if result in ("delivered", "deferred", "failed"):
            setattr(minute, result, getattr(minute, result) + 1)
        self.latest.append({"at": now, "result": result, **details})

    def bounce(self, now: float) -> None:
        self._minute(now).bounced += 1

    def unsigned(self, now: float, details: dict[str, object]) -> None:
        """A message refused a DKIM signature: counted, and listed with the attempts."""
        self._minute(now).unsigned += 1
        self.latest.append(
            {"at": now, "result": "unsigned", "recipient": "(the message)", **details}
        )

    def queue_size(self, now: float, queued: int) -> None:
        self._minute(now).queued = queued

    def report(self, now: float, minutes: int = KEPT_MINUTES) -> dict[str, object]:
        """Every minute of the last `minutes`, quiet ones included (with the last size known),
        oldest first; and the latest attempts, newest first."""
        by_start = {minute.start: minute for minute in self.minutes}
        current = int(now // 60 * 60)
        first = current - (minutes - 1) * 60
        series = []
        earlier = [minute.queued for minute in self.minutes if minute.start < first]
        queued = earlier[-1] if earlier else 0
        for start in range(first, current + 1, 60):
            minute = by_start.get(start)
            if minute is not None:
                queued = minute.queued
                series.append(minute.as_dict())
            else:
                series.append(Minute(start, queued=queued).as_dict())
        return {"minutes": series, "latest": list(reversed(self.latest))}
