"""When to try a message again: qmail's retry schedule, plus the queue lifetime rule.

Pure functions of times in seconds; the caller supplies the clock and the randomness.
"""

from __future__ import annotations

import math
import random

# qmail-send's chanskip for remote deliveries: the first retry comes 400 s after birth.
REMOTE_SKIP = 20
# Spread retries of mail that failed together so they do not hit a recovering server at once.
JITTER_FRACTION = 0.05
JITTER_CAP_SECONDS = 300.0


def next_attempt_at(birth: float, now: float, rng: random.Random | None = None) -> float:
    """qmail's `birth + (isqrt(age) + 20)**2`, with up to 5% (at most 5 min) of added jitter."""
    age = max(0, int(now - birth))
    delay = (math.isqrt(age) + REMOTE_SKIP) ** 2
    retry_at = birth + delay
    jitter = min((retry_at - now) * JITTER_FRACTION, JITTER_CAP_SECONDS)
    return retry_at + (rng or random).uniform(0.0, max(0.0, jitter))


def has_expired(birth: float, now: float, queue_lifetime: int) -> bool:
    """Once the lifetime has passed, the next temporary failure is treated as permanent."""
    return now > birth + queue_lifetime
