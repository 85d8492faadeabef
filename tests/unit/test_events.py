"""The engine's announcements: every listener hears every event in order, and one that
fails neither stops the others nor the announcer."""

from __future__ import annotations

import logging

import pytest

from sendworx.engine.events import Fate, FateEvent, announce


def test_a_failing_listener_is_logged_and_the_others_still_hear_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, Fate]] = []

    def broken(event: FateEvent) -> None:
        raise RuntimeError("history store full")

    events = [FateEvent(Fate.DELIVERED, 1.0, "m1", "a@x.test"), FateEvent(Fate.HELD, 2.0, "m2")]
    with caplog.at_level(logging.ERROR, logger="sendworx.engine"):
        announce(
            [
                lambda e: heard.append(("first", e.fate)),
                broken,
                lambda e: heard.append(("last", e.fate)),
            ],
            events,
        )
    assert heard == [
        ("first", Fate.DELIVERED),
        ("last", Fate.DELIVERED),
        ("first", Fate.HELD),
        ("last", Fate.HELD),
    ]
    assert [record.getMessage() for record in caplog.records] == [
        "a listener failed on delivered of m1",
        "a listener failed on held of m2",
    ]
