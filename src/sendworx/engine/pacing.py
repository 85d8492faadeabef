"""How fast one budget may send: connections, messages per connection, messages per minute,
the gap between new connections, and the adaptive cut when the receiver says "slow down".

A `Pace` is one budget: a pacing rule's (shared by every destination the rule matches) or a
single destination's. It never sleeps and never does I/O; the delivery pool asks it how long
to wait and tells it what happened, with the time passed in (`now`, monotonic seconds).

Adaptive backoff: a 421, or a 4xx that talks about rate ("too many", "try again later"...),
halves the rate (the configured one, or else the rate observed over the last minute, or
over the seconds since sending began), with a floor of one message a minute. After each
`RECOVERY_SECONDS` without such a reply the rate grows by half again, until it is back at the
configured rate (or, without one, at twice what was observed before the cut, where the cap
is lifted).
"""

from __future__ import annotations

import re
from collections import deque

RECOVERY_SECONDS = 60.0
MIN_RATE = 1.0  # messages per minute
# "Send more slowly", in the words large receivers use (Gmail 4.7.28 "rate limited",
# Outlook "server busy, please try again later", Yahoo "unexpected volume").
_SLOW_WORDS = re.compile(
    r"rate|too many|try (again )?later|throttl|slow down|exceeded|unexpected volume|server busy",
    re.I,
)
# The receiver's budget, which every one of its hosts shares: not worth trying the next host,
# worth sending the same message again once the pace allows.
_BUDGET_WORDS = re.compile(r"rate|too many|throttl|slow down|exceeded|volume", re.I)
# Greylisting says "try again later" too, but wants minutes, not a slower rate.
_GREYLISTING = re.compile(r"gr[ae]y-?list", re.I)


def is_rate_signal(code: int, text: str) -> bool:
    """Whether a reply asks us to send more slowly: a 421, or a 4xx that says so."""
    if _GREYLISTING.search(text):
        return False
    return code == 421 or (400 <= code < 500 and _SLOW_WORDS.search(text) is not None)


def says_rate(code: int, text: str) -> bool:
    """A temporary reply that names the receiver's budget, the same on every one of its hosts
    (a bare 421 may be one host's trouble: the next host is tried)."""
    if _GREYLISTING.search(text):
        return False
    return 400 <= code < 500 and _BUDGET_WORDS.search(text) is not None


class Pace:
    def __init__(self, name: str, *, shared: bool) -> None:
        self.name = name
        self.shared = shared  # a rule's, for every destination it matches
        self.connections = 1  # most open at once
        self.messages_per_connection = 0  # 0: no limit
        self.connection_interval = 0.0
        self.configured_rate: float | None = None
        self.rate: float | None = None  # the effective rate, messages per minute
        self.open = 0  # connections open now (or being opened)
        self.backoffs = 0  # times the receiver said "slow down"
        self._ceiling: float | None = None  # without a configured rate: where the cap lifts
        self._next_message = 0.0
        self._next_connection = 0.0
        self._quiet_since = 0.0
        self._sent: deque[float] = deque()  # when each message of the last minute left

    @property
    def adapted(self) -> bool:
        return self.rate != self.configured_rate

    def configure(
        self,
        *,
        connections: int,
        messages_per_connection: int,
        messages_per_minute: float,
        connection_interval: float,
    ) -> None:
        """The rule's figures (again, after a reload); a backoff in force stays in force, as
        the receiver still wants it, but never above the new configured rate."""
        self.connections = connections
        self.messages_per_connection = messages_per_connection
        self.connection_interval = connection_interval
        configured = messages_per_minute or None
        if not self.adapted:
            self.rate = configured
        elif configured is not None and self.rate is not None:
            self.rate = min(self.rate, configured)
        self.configured_rate = configured

    # -- connections -------------------------------------------------------------------------

    def connection_wait(self, now: float) -> float:
        """Seconds until a new connection may open (0: now), ignoring how many are open."""
        return max(0.0, self._next_connection - now)

    def may_connect(self, now: float) -> bool:
        return self.open < self.connections and self.connection_wait(now) == 0

    def connection_opened(self, now: float) -> None:
        self.open += 1
        self._next_connection = now + self.connection_interval

    def connection_closed(self) -> None:
        self.open -= 1

    def connection_spent(self, messages_sent: int) -> bool:
        """Whether a connection that has carried this many messages must close."""
        return 0 < self.messages_per_connection <= messages_sent

    # -- messages ----------------------------------------------------------------------------

    def message_wait(self, now: float) -> float:
        """Seconds until the next message may start (0: now)."""
        self._recover(now)
        if self.rate is None:
            return 0.0
        return max(0.0, self._next_message - now)

    def message_sent(self, now: float) -> None:
        self._sent.append(now)
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()
        if self.rate is not None:
            self._next_message = max(now, self._next_message) + 60.0 / self.rate

    def slow_down(self, now: float) -> None:
        """The receiver asked for less: halve the rate, and start the quiet period again."""
        recent = [sent for sent in self._sent if sent > now - 60.0]
        # Messages a minute over the last minute, or over the seconds since sending began.
        observed = len(recent) * 60.0 / max(1.0, now - recent[0]) if recent else MIN_RATE
        if self.rate is None:
            self._ceiling = 2 * max(observed, MIN_RATE)
            base = max(observed, MIN_RATE)
        else:
            base = self.rate
        self.rate = max(MIN_RATE, base / 2)
        self.backoffs += 1
        self._quiet_since = now
        self._next_message = now + 60.0 / self.rate

    def _recover(self, now: float) -> None:
        while (
            self.adapted and self.rate is not None and now - self._quiet_since >= RECOVERY_SECONDS
        ):
            self._quiet_since += RECOVERY_SECONDS
            grown = self.rate * 1.5
            target = self.configured_rate if self.configured_rate is not None else self._ceiling
            if target is None or grown >= target:
                self.rate = self.configured_rate
                self._ceiling = None
            else:
                self.rate = grown

    def status(self, now: float) -> dict[str, object]:
        self._recover(now)
        return {
            "name": self.name,
            "open": self.open,
            "connections": self.connections,
            "rate_per_minute": self.rate,
            "configured_rate_per_minute": self.configured_rate,
            "backoffs": self.backoffs,
        }
