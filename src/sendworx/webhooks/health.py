"""When to try a webhook delivery again, and when an endpoint is paused (pure).

A delivery that fails is due again after `retry_seconds`, doubled at each attempt up to
`max_retry_seconds`, give or take a fifth (jitter spreads a crowd of retries); once the next
attempt would fall past `max_age_hours` after it was queued, it is dead-lettered instead.

An endpoint whose requests fail `breaker_failures` times in a row is paused (the circuit
breaker opens) for `breaker_seconds`, doubled at each pause in a row up to
`max_retry_seconds`: meanwhile nothing is sent to it, and its deliveries' attempts are not
spent. When the pause ends one request probes it; a success closes the breaker and every
delivery waiting for it is due at once, a failure pauses it again, longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sendworx.shared.config import WebhooksConfig

JITTER = 0.2


def retry_delay(attempts: int, config: WebhooksConfig, rng: random.Random) -> float:
    """The wait before attempt `attempts + 1`, after `attempts` failed."""
    base = config.retry_seconds * 2.0 ** min(max(attempts - 1, 0), 30)
    delay = min(base, config.max_retry_seconds)
    return delay * rng.uniform(1 - JITTER, 1 + JITTER)


@dataclass(slots=True)
class Health:
    """One endpoint's breaker."""

    failures: int = 0  # in a row
    paused_until: float = 0.0
    pauses: int = 0  # in a row
    gone: bool = False  # it answered 410: nothing more is sent until it is enabled again

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def probing(self, now: float) -> bool:
        """Paused before and the pause is over: the next request is a probe."""
        return self.pauses > 0 and now >= self.paused_until

    def failed(self, now: float, config: WebhooksConfig) -> bool:
        """A request failed; True when that pauses the endpoint."""
        self.failures += 1
        if self.failures < config.breaker_failures and not self.pauses:
            return False
        pause = config.breaker_seconds * 2.0 ** min(self.pauses, 30)
        self.paused_until = now + min(pause, max(config.max_retry_seconds, config.breaker_seconds))
        self.pauses += 1
        return True

    def succeeded(self) -> bool:
        """A request succeeded; True when the endpoint was failing (its waiting deliveries
        may go now)."""
        was_failing = self.failures > 0 or self.pauses > 0
        self.failures, self.paused_until, self.pauses = 0, 0.0, 0
        return was_failing
