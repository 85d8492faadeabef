"""The history store on its own: searches newest first and paged, each filter through an
index (a scan of a million events is what the bench's targets forbid), pruning, and a store
of the first version taken over as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sendworx.shared.history import (
    SUMMARY_QUERY,
    HistoryError,
    HistoryEvent,
    HistoryFilter,
    HistoryReader,
    HistoryWriter,
    _where,
)


def _event(at: float, **fields: object) -> HistoryEvent:
    base: dict[str, object] = {"event": "delivered", "queue_id": f"q{int(at)}"}
    return HistoryEvent(at=at, **{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    writer = HistoryWriter(path)
    writer.append(
        [
            _event(10, sender="a@shop.example", recipient="x@far.example", account="alice"),
            _event(20, sender="b@shop.example", recipient="y@far.example", message_id_header="m@s"),
            _event(30, event="failed", recipient="x@far.example", bounce_class="invalid_recipient"),
        ]
    )
    writer.close()
    return path


def test_searches_are_newest_first_paged_and_filtered(store: Path) -> None:
    reader = HistoryReader(store)
    found, more = reader.search(HistoryFilter(recipient="x@far.example"), 1, 1)
    assert [event.at for event in found] == [30] and more
    found, more = reader.search(HistoryFilter(recipient="x@far.example"), 2, 1)
    assert [event.at for event in found] == [10] and not more
    assert [e.at for e in reader.search(HistoryFilter(sender="shop.example"))[0]] == [20, 10]
    assert [e.at for e in reader.search(HistoryFilter(message_id="<m@s>"))[0]] == [20]
    assert [e.at for e in reader.search(HistoryFilter(account="alice"))[0]] == [10]
    classed = reader.search(HistoryFilter(bounce_class="invalid_recipient"))[0]
    assert [event.bounce_class for event in classed] == ["invalid_recipient"]
    assert [e.at for e in reader.search(HistoryFilter(since=15, until=30))[0]] == [20]
    assert reader.timeline("q20")[0].message_id_header == "m@s"


@pytest.mark.parametrize(
    "selection",
    [
        HistoryFilter(recipient="x@far.example"),
        HistoryFilter(recipient="far.example"),
        HistoryFilter(sender="a@shop.example"),
        HistoryFilter(sender="shop.example"),
        HistoryFilter(account="alice"),
        HistoryFilter(queue_id="q10"),
        HistoryFilter(message_id="m@s"),
        HistoryFilter(bounce_class="invalid_recipient"),
    ],
)
def test_every_filter_uses_an_index(store: Path, selection: HistoryFilter) -> None:
    where, values = _where(selection)
    db = sqlite3.connect(store)
    plan = " ".join(
        row[3]
        for row in db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM events WHERE {where}", values)
    )
    assert "USING INDEX" in plan, plan


def test_pruning_takes_old_events_a_slice_at_a_time(store: Path) -> None:
    writer = HistoryWriter(store)
    assert writer.prune(before=25, limit=1) == 1
    assert writer.prune(before=25, limit=10) == 1
    writer.close()
    assert [event.at for event in HistoryReader(store).search(HistoryFilter())[0]] == [30]


def test_a_first_version_store_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL,"
        " queue_id TEXT NOT NULL, message_id_header TEXT NOT NULL DEFAULT '',"
        " sender TEXT NOT NULL DEFAULT '', sender_domain TEXT NOT NULL DEFAULT '',"
        " recipient TEXT NOT NULL DEFAULT '', recipient_domain TEXT NOT NULL DEFAULT '',"
        " account TEXT NOT NULL DEFAULT '', origin TEXT NOT NULL DEFAULT '',"
        " relay TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT '',"
        " reply TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL DEFAULT 0,"
        " size INTEGER NOT NULL DEFAULT 0, queued_seconds REAL NOT NULL DEFAULT 0,"
        " detail TEXT NOT NULL DEFAULT '')"
    )
    db.execute("INSERT INTO events (at, event, queue_id) VALUES (1, 'accepted', 'old')")
    db.commit()
    db.close()
    writer = HistoryWriter(path)
    writer.append([_event(2, bounce_class="policy")])
    writer.close()
    found = HistoryReader(path).search(HistoryFilter())[0]
    assert [(e.queue_id, e.bounce_class) for e in found] == [("q2", "policy"), ("old", "")]


def test_a_missing_or_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no delivery history yet"):
        HistoryReader(tmp_path / "none.sqlite3").search(HistoryFilter())
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"not a database" * 100)
    with pytest.raises(HistoryError, match="cannot be"):
        HistoryReader(damaged).search(HistoryFilter())


def test_the_summary_counts_deferrals_and_failures_by_class_and_destination(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite3"
    writer = HistoryWriter(path)
    writer.append(
        [
            _event(10, event="deferred", recipient="a@big.example", bounce_class="rate_limited"),
            _event(11, event="deferred", recipient="b@big.example", bounce_class="rate_limited"),
            _event(12, event="failed", recipient="c@big.example", bounce_class="invalid_recipient"),
            _event(13, event="failed", recipient="d@small.example", bounce_class="bad_domain"),
            _event(14, event="delivered", recipient="e@small.example"),
            _event(1, event="failed", recipient="f@old.example", bounce_class="policy"),
        ]
    )
    writer.close()
    summary = HistoryReader(path).summarise(since=5, limit=10)
    assert summary["classes"][0] == {"class": "rate_limited", "deferred": 2, "failed": 0}
    assert {row["class"] for row in summary["classes"]} == {
        "rate_limited",
        "invalid_recipient",
        "bad_domain",
    }
    assert summary["destinations"] == [
        {"domain": "big.example", "deferred": 2, "failed": 1, "top_class": "rate_limited"},
        {"domain": "small.example", "deferred": 0, "failed": 1, "top_class": "bad_domain"},
    ]
    assert HistoryReader(path).summarise(since=100) == {"classes": [], "destinations": []}
    # Read from the failures' covering index alone, never the table nor every event.
    with sqlite3.connect(path) as db:
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {SUMMARY_QUERY}", (5,)))
    assert "COVERING INDEX events_failures" in plan, plan
