"""qmail's retry schedule with jitter, the lifetime rule, and the due-message index."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from sendworx.engine.schedule import has_expired, next_attempt_at
from sendworx.engine.scheduler import Scheduler


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


def test_scheduler_returns_due_messages_in_order_and_respects_the_limit() -> None:
    scheduler = Scheduler()
    scheduler.schedule("late", 30.0)
    scheduler.schedule("early", 10.0)
    scheduler.schedule("middle", 20.0)
    assert scheduler.take_due(25.0, limit=1) == ["early"]
    assert scheduler.take_due(25.0, limit=10) == ["middle"]
    assert scheduler.next_due_at() == 30.0
    assert scheduler.active_count == 2


def test_rescheduling_replaces_the_old_time() -> None:
    scheduler = Scheduler()
    scheduler.schedule("m", 10.0)
    scheduler.schedule("m", 50.0)
    assert scheduler.take_due(20.0, 10) == []
    assert scheduler.take_due(50.0, 10) == ["m"]


def test_make_all_due_skips_active_messages() -> None:
    scheduler = Scheduler()
    scheduler.schedule("a", 1000.0)
    scheduler.schedule("b", 0.0)
    assert scheduler.take_due(1.0, 10) == ["b"]
    assert scheduler.make_all_due(5.0) == 1
    assert scheduler.take_due(5.0, 10) == ["a"]


def test_forget_removes_a_message_entirely() -> None:
    scheduler = Scheduler()
    scheduler.schedule("a", 0.0)
    scheduler.forget("a")
    assert len(scheduler) == 0 and "a" not in scheduler
    assert scheduler.take_due(10.0, 10) == [] and scheduler.next_due_at() is None
