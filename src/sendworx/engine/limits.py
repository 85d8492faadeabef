"""Sending limits: how many messages and recipients one sender identity has sent in the last
hour and the last day, and when the next message may go.

Sliding windows, not calendar hours: a message sent at 10:59 still counts at 11:30. Each
counter key (a rule and who it covers) keeps the times of what it sent in the last day.
Pure: the queue manager passes the time in (`now`, wall-clock seconds).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sendworx.shared.policy import LimitRule

HOUR = 3600.0
DAY = 86400.0


@dataclass(eq=False, slots=True)
class _Window:
    seconds: float
    sent: deque[tuple[float, int]] = field(default_factory=deque)  # (when, recipients)
    messages: int = 0
    recipients: int = 0

    def prune(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - self.seconds:
            _, recipients = self.sent.popleft()
            self.messages -= 1
            self.recipients -= recipients

    def add(self, now: float, recipients: int) -> None:
        self.sent.append((now, recipients))
        self.messages += 1
        self.recipients += recipients

    def free_at(self, now: float, max_messages: int, max_recipients: int, recipients: int) -> float:
        """When one more message with `recipients` fits under the caps (0 meaning none): now,
        or the moment enough of what was sent leaves the window."""
        messages, total = self.messages, self.recipients
        if max_recipients and recipients > max_recipients:
            recipients = max_recipients  # a message larger than the cap goes alone
        at = now
        for when, counted in self.sent:
            fits_messages = not max_messages or messages + 1 <= max_messages
            fits_recipients = not max_recipients or total + recipients <= max_recipients
            if fits_messages and fits_recipients:
                break
            messages -= 1
            total -= counted
            at = when + self.seconds
        return at


class SendingLimits:
    def __init__(self) -> None:
        self._hour: dict[tuple[str, str], _Window] = {}
        self._day: dict[tuple[str, str], _Window] = {}

    def admit(self, rule: LimitRule, key: str, recipients: int, now: float) -> float:
        """0 when a message of `recipients` may go now (it is counted); otherwise the time
        at which it may (nothing is counted)."""
        counter = (rule.name, key)
        hour = self._hour.setdefault(counter, _Window(HOUR))
        day = self._day.setdefault(counter, _Window(DAY))
        hour.prune(now)
        day.prune(now)
        free = max(
            hour.free_at(now, rule.messages_per_hour, rule.recipients_per_hour, recipients),
            day.free_at(now, rule.messages_per_day, rule.recipients_per_day, recipients),
        )
        if free > now:
            return free
        hour.add(now, recipients)
        day.add(now, recipients)
        return 0.0

    def forget_idle(self, now: float) -> None:
        """Drop the counters with nothing left in their window (call now and then)."""
        for counters in (self._hour, self._day):
            for counter, window in list(counters.items()):
                window.prune(now)
                if not window.sent:
                    del counters[counter]
