"""The circuit breaker's counters (engine/breaker.py): sliding windows, distinct recipients,
failure shares, and what a restart counts again."""

from __future__ import annotations

from sendworx.engine.breaker import Breakers
from sendworx.shared.policy import BreakerRule

T = 1_000_000.0


def test_messages_slide_out_of_the_window() -> None:
    rule = BreakerRule(name="b", scope="account", window_minutes=1, messages=2)
    breakers = Breakers()
    assert breakers.count_message(rule, "alice", ("a@x",), T, T) is None
    assert breakers.count_message(rule, "alice", ("a@x",), T + 30, T + 30) is None
    assert breakers.count_message(rule, "bob", ("a@x",), T + 30, T + 30) is None
    # The first left the window at T + 60: two in the window, not three.
    assert breakers.count_message(rule, "alice", ("a@x",), T + 61, T + 61) is None
    reason = breakers.count_message(rule, "alice", ("a@x",), T + 62, T + 62)
    assert reason == "more than 2 messages in 1 minute"


def test_recipients_count_once_however_often_they_are_written_to() -> None:
    rule = BreakerRule(name="b", scope="domain", window_minutes=10, recipients=3)
    breakers = Breakers()
    for _ in range(5):
        assert breakers.count_message(rule, "d", ("A@x", "a@x", "b@x"), T, T) is None
    assert breakers.count_message(rule, "d", ("c@x",), T, T) is None
    assert breakers.count_message(rule, "d", ("d@x",), T, T) == (
        "more than 3 distinct recipients in 10 minutes"
    )


def test_a_message_born_before_the_window_is_not_counted_again() -> None:
    rule = BreakerRule(name="b", scope="account", window_minutes=1, messages=1)
    breakers = Breakers()
    for _ in range(5):  # the queue read again after a restart, an hour later
        assert breakers.count_message(rule, "alice", ("a@x",), T, T + 3600) is None


def test_the_failure_share_needs_enough_attempts_and_forgets_old_ones() -> None:
    rule = BreakerRule(name="b", scope="sender", failure_share=0.5, min_attempts=10)
    breakers = Breakers()
    assert breakers.count_results(rule, "s", 0, 9, T) is None  # 9 attempts: too few to judge
    assert breakers.count_results(rule, "s", 2, 0, T) == (
        "9 of 11 recipients deferred or bounced in 60 minutes (the limit is 50%)"
    )
    breakers = Breakers()
    assert breakers.count_results(rule, "s", 6, 3, T) is None
    assert breakers.count_results(rule, "s", 0, 3, T + 1) == (
        "6 of 12 recipients deferred or bounced in 60 minutes (the limit is 50%)"
    )
    breakers.forget("b", "s")
    assert breakers.count_results(rule, "s", 0, 5, T + 2) is None
    assert breakers.count_results(rule, "s", 0, 5, T + 3700) is None  # the first 5 left


def test_idle_watches_are_dropped() -> None:
    rule = BreakerRule(name="b", scope="account", window_minutes=1, messages=5)
    breakers = Breakers()
    breakers.count_message(rule, "alice", ("a@x",), T, T)
    breakers.forget_idle(T + 30, {"b": 1})
    assert breakers.count_message(rule, "alice", ("a@x",), T + 30, T + 30) is None
    breakers.forget_idle(T + 120, {"b": 1})
    breakers.forget_idle(T + 120, {})  # a rule gone from the policy
    assert not breakers._watches
