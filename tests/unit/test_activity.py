"""The engine's activity log: results per minute, the queue's size, the latest attempts."""

from __future__ import annotations

from sendworx.engine.activity import KEPT_ATTEMPTS, KEPT_MINUTES, ActivityLog

T0 = 1_800_000_000.0  # a whole minute


def test_attempts_are_counted_in_the_minute_they_ended_in() -> None:
    log = ActivityLog()
    log.attempt(T0 + 1, "delivered", {"id": "a"})
    log.attempt(T0 + 59, "deferred", {"id": "b"})
    log.attempt(T0 + 60, "failed", {"id": "c"})
    log.bounce(T0 + 61)
    log.unsigned(T0 + 62, {"id": "d", "reply": "account x may not sign as y.example"})
    minutes = log.report(T0 + 62, 2)["minutes"]
    zero = {"delivered": 0, "deferred": 0, "failed": 0, "bounced": 0, "unsigned": 0, "queued": 0}
    assert minutes == [
        {**zero, "at": T0, "delivered": 1, "deferred": 1},
        {**zero, "at": T0 + 60, "failed": 1, "bounced": 1, "unsigned": 1},
    ]


def test_quiet_minutes_are_reported_with_the_last_queue_size_known() -> None:
    log = ActivityLog()
    log.queue_size(T0, 40)  # before the window asked for
    log.queue_size(T0 + 180, 7)
    minutes = log.report(T0 + 300, 4)["minutes"]
    assert isinstance(minutes, list)
    assert [minute["at"] for minute in minutes] == [T0 + 120, T0 + 180, T0 + 240, T0 + 300]
    assert [minute["queued"] for minute in minutes] == [40, 7, 7, 7]
    assert all(minute["delivered"] == 0 for minute in minutes)


def test_latest_attempts_come_newest_first_and_only_the_last_hundred() -> None:
    log = ActivityLog()
    for number in range(KEPT_ATTEMPTS + 5):
        log.attempt(T0 + number, "deferred", {"id": str(number), "reply": "451 later"})
    latest = log.report(T0 + 200, 1)["latest"]
    assert isinstance(latest, list)
    assert len(latest) == KEPT_ATTEMPTS
    assert latest[0] == {
        "at": T0 + KEPT_ATTEMPTS + 4,
        "result": "deferred",
        "id": "104",
        "reply": "451 later",
    }
    assert latest[-1]["id"] == "5"


def test_only_the_last_six_hours_are_kept() -> None:
    log = ActivityLog()
    for minute in range(KEPT_MINUTES + 30):
        log.attempt(T0 + minute * 60, "delivered", {})
    assert len(log.minutes) == KEPT_MINUTES
    minutes = log.report(T0 + (KEPT_MINUTES + 29) * 60, KEPT_MINUTES)["minutes"]
    assert isinstance(minutes, list)
    assert sum(minute["delivered"] for minute in minutes) == KEPT_MINUTES
