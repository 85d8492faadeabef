"""The queue's shape (Postfix's qshape, as `querySummary` gives it): totals by state, where
mail waits (per destination, with its most frequent last reply) and who sent it (per sender
domain), kept as counts that change with the index's rows, in the same transactions.

Grouping a million rows for every summary took a second; these tables make it a read of
the biggest rows (a sort of one row per destination or sender domain), and the oldest of
each of the 50 shown is one seek in an index by time. The index's writer tells a `Shape`
what it removes and adds; `apply` writes the differences before the commit.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS shape_states (
    state TEXT PRIMARY KEY, messages INTEGER NOT NULL, bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shape_destinations (  -- pending recipients only
    destination TEXT PRIMARY KEY, messages INTEGER NOT NULL, recipients INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shape_destinations_biggest
    ON shape_destinations (messages DESC, destination);
CREATE TABLE IF NOT EXISTS shape_replies (  -- pending recipients per destination and reply
    destination TEXT, reply INTEGER, recipients INTEGER NOT NULL,
    PRIMARY KEY (destination, reply)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shape_senders (
    sender_domain TEXT PRIMARY KEY, messages INTEGER NOT NULL, bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shape_senders_biggest ON shape_senders (messages DESC, sender_domain);
"""
# One message's part in the shape: its row (state, sender domain, size) and its pending
# recipients' (destination, reply).
Part = tuple[str, str, int, Sequence[tuple[str, int]]]


class Shape:
    """The differences one transaction makes, applied in one go before it commits."""

    def __init__(self) -> None:
        self._states: Counter[tuple[str, str]] = Counter()  # (state, what) -> change
        self._destinations: Counter[tuple[str, str]] = Counter()
        self._replies: Counter[tuple[str, int]] = Counter()
        self._senders: Counter[tuple[str, str]] = Counter()

    def count(self, part: Part, sign: int) -> None:
        state, sender_domain, size, pending = part
        self._states[state, "messages"] += sign
        self._states[state, "bytes"] += sign * size
        self._senders[sender_domain, "messages"] += sign
        self._senders[sender_domain, "bytes"] += sign * size
        for destination in {destination for destination, _ in pending}:
            self._destinations[destination, "messages"] += sign
        for destination, reply in pending:
            self._destinations[destination, "recipients"] += sign
            self._destinations[destination, "bytes"] += sign * size
            if reply:
                self._replies[destination, reply] += sign

    def apply(self, db: sqlite3.Connection) -> None:
        _upsert(db, "shape_states", "state", ("messages", "bytes"), self._states)
        _upsert(
            db,
            "shape_destinations",
            "destination",
            ("messages", "recipients", "bytes"),
            self._destinations,
        )
        _upsert(db, "shape_senders", "sender_domain", ("messages", "bytes"), self._senders)
        db.executemany(
            "INSERT INTO shape_replies VALUES (?, ?, ?) ON CONFLICT (destination, reply) "
            "DO UPDATE SET recipients = recipients + excluded.recipients",
            [(d, r, n) for (d, r), n in self._replies.items() if n],
        )
        db.execute("DELETE FROM shape_replies WHERE recipients <= 0")
        for table in ("shape_states", "shape_destinations", "shape_senders"):
            db.execute(f"DELETE FROM {table} WHERE messages <= 0")
        self.__init__()  # type: ignore[misc]


def _upsert(
    db: sqlite3.Connection,
    table: str,
    key: str,
    columns: tuple[str, ...],
    changes: Counter[tuple[str, str]],
) -> None:
    rows: dict[str, list[int]] = {}
    for (name, column), change in changes.items():
        rows.setdefault(name, [0] * len(columns))[columns.index(column)] += change
    updates = ", ".join(f"{column} = {column} + excluded.{column}" for column in columns)
    marks = ", ".join("?" * (len(columns) + 1))
    db.executemany(
        f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}",
        [(name, *values) for name, values in rows.items() if any(values)],
    )


def part_in_index(db: sqlite3.Connection, message_id: str) -> Part | None:
    """The part of a message the index holds now (before it is removed)."""
    row = db.execute(
        "SELECT state, sender_domain, size FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    pending = db.execute(
        "SELECT destination, reply FROM recipients WHERE message_id = ? AND state = 'pending'",
        (message_id,),
    ).fetchall()
    return row[0], row[1], row[2], pending


def recount(db: sqlite3.Connection) -> None:
    """Every count again from the rows (after the destinations were all recomputed)."""
    for statement in (
        "DELETE FROM shape_states",
        "DELETE FROM shape_destinations",
        "DELETE FROM shape_replies",
        "DELETE FROM shape_senders",
        "INSERT INTO shape_states SELECT state, COUNT(*), SUM(size) FROM messages GROUP BY state",
        "INSERT INTO shape_destinations SELECT destination, COUNT(DISTINCT message_id), "
        "COUNT(*), SUM(size) FROM recipients WHERE state = 'pending' GROUP BY destination",
        "INSERT INTO shape_replies SELECT destination, reply, COUNT(*) FROM recipients "
        "WHERE state = 'pending' AND reply != 0 GROUP BY 1, 2",
        "INSERT INTO shape_senders SELECT sender_domain, COUNT(*), SUM(size) FROM messages "
        "GROUP BY 1",
    ):
        db.execute(statement)  # not executescript: that would commit the caller's transaction


def summarise(
    db: sqlite3.Connection, limit: int, now: float, reply_text: Callable[[int], str]
) -> dict[str, Any]:
    """The summary from the counts; `active_now` (a temporary table) holds the messages being
    delivered, counted as active rather than as their files say."""
    totals = dict.fromkeys(("new", "active", "deferred", "held"), 0)
    messages = size = 0
    for state, count, total in db.execute("SELECT state, messages, bytes FROM shape_states"):
        totals[state] = count
        messages, size = messages + count, size + total
    for state, count in db.execute(
        "SELECT state, COUNT(*) FROM messages WHERE id IN (SELECT id FROM active_now) "
        "GROUP BY state"
    ):
        totals[state] -= count
        totals["active"] += count
    (oldest,) = db.execute("SELECT MIN(birth) FROM messages").fetchone()
    destinations = []
    for destination, count, recipients, total in db.execute(
        "SELECT destination, messages, recipients, bytes FROM shape_destinations "
        "ORDER BY messages DESC, destination LIMIT ?",
        (limit,),
    ).fetchall():
        (born,) = db.execute(
            "SELECT MIN(birth) FROM recipients WHERE state = 'pending' AND destination = ?",
            (destination,),
        ).fetchone()
        reply, reply_count = db.execute(
            "SELECT reply, recipients FROM shape_replies WHERE destination = ? "
            "ORDER BY recipients DESC, reply LIMIT 1",
            (destination,),
        ).fetchone() or (0, 0)
        destinations.append(
            {
                "destination": destination,
                "messages": count,
                "recipients": recipients,
                "bytes": total,
                "oldest_age": _age(now, born),
                "top_reply": reply_text(reply) if reply else "",
                "top_reply_count": reply_count,
            }
        )
    senders = []
    for domain, count, total in db.execute(
        "SELECT sender_domain, messages, bytes FROM shape_senders "
        "ORDER BY messages DESC, sender_domain LIMIT ?",
        (limit,),
    ).fetchall():
        (born,) = db.execute(
            "SELECT MIN(birth) FROM messages WHERE sender_domain = ?", (domain,)
        ).fetchone()
        senders.append(
            {"domain": domain, "messages": count, "bytes": total, "oldest_age": _age(now, born)}
        )
    return {
        "totals": {
            "messages": messages,
            "bytes": size,
            "oldest_age": _age(now, oldest) if oldest is not None else 0,
            **totals,
        },
        "destinations": destinations,
        "sender_domains": senders,
    }


def _age(now: float, born: float | None) -> int:
    return int(max(0.0, now - born)) if born is not None else 0
