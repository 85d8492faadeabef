"""The due-message index: which queued messages are due, earliest first, within a limit."""

from __future__ import annotations

from sendworx.engine.due_index import DueIndex


def test_the_index_returns_due_messages_in_order_and_respects_the_limit() -> None:
    due = DueIndex()
    due.schedule("late", 30.0)
    due.schedule("early", 10.0)
    due.schedule("middle", 20.0)
    assert due.take_due(25.0, limit=1) == ["early"]
    assert due.take_due(25.0, limit=10) == ["middle"]
    assert due.next_due_at() == 30.0
    assert due.active_count == 2


def test_rescheduling_replaces_the_old_time() -> None:
    due = DueIndex()
    due.schedule("m", 10.0)
    due.schedule("m", 50.0)
    assert due.take_due(20.0, 10) == []
    assert due.take_due(50.0, 10) == ["m"]


def test_make_all_due_skips_active_messages() -> None:
    due = DueIndex()
    due.schedule("a", 1000.0)
    due.schedule("b", 0.0)
    assert due.take_due(1.0, 10) == ["b"]
    assert due.make_all_due(5.0) == 1
    assert due.take_due(5.0, 10) == ["a"]


def test_forget_removes_a_message_entirely() -> None:
    due = DueIndex()
    due.schedule("a", 0.0)
    due.forget("a")
    assert len(due) == 0 and "a" not in due
    assert due.take_due(10.0, 10) == [] and due.next_due_at() is None
