"""qmail's retry schedule with jitter, and the lifetime rule."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from sendworx.engine.retry_policy import has_expired, next_attempt_at


def test_first_retry_is_400_seconds_after_birth() -> None:
    rng = random.Random(0)
    retry = next_attempt_at(1000.0, 1000.0, rng)
    assert 1400.0 <= retry <= 1400.0 + 20.0


@given(birth=st.floats(0, 1e9), age=st.integers(0, 10**7))
def test_retry_follows_qmail_and_is_always_in_the_future(birth: float, age: int) -> None:
    now = birth + age
    # qmail's age is the whole seconds of now - birth, as the float difference gives them.
    base = birth + (math.isqrt(max(0, int(now - birth))) + 20) ** 2
    retry = next_attempt_at(birth, now, random.Random(age))
    assert base <= retry <= base + 300
    assert retry > now


def test_lifetime_expires_strictly_after_birth_plus_lifetime() -> None:
    assert not has_expired(100.0, 160.0, 60)
    assert has_expired(100.0, 160.5, 60)
