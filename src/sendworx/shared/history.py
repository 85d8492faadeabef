"""The delivery history: every event of every message, kept in SQLite (WAL) under
`<state>/history/history.sqlite3` for `history.retention_days`, searched by the API, the CLI
and the pages. The engine writes it (engine/history_recorder.py), in batches, off the
delivery path; everything else only reads. The queue files stay the truth for mail still
queued: this is what has happened.

One row per event: a recipient's attempt (delivered, deferred, failed; suppressed: not
attempted, on the suppression list), or the message's
(accepted, bounced, held, released, expired, retried, deleted, unsigned). Searches are by
address or domain (sender or recipient), origin account, queue id or Message-ID, event and
time; newest first, paged as the queue's list is.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3  # 2: the bounce class; 3: TLS
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    message_id_header TEXT NOT NULL DEFAULT '',
    sender TEXT NOT NULL DEFAULT '',
    sender_domain TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '',
    recipient_domain TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    relay TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    reply TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    queued_seconds REAL NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    class TEXT NOT NULL DEFAULT '',
    tls TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id);
CREATE INDEX IF NOT EXISTS events_message_id ON events (message_id_header)
    WHERE message_id_header != '';
CREATE INDEX IF NOT EXISTS events_recipient ON events (recipient, at);
CREATE INDEX IF NOT EXISTS events_recipient_domain ON events (recipient_domain, at);
CREATE INDEX IF NOT EXISTS events_sender ON events (sender, at);
CREATE INDEX IF NOT EXISTS events_sender_domain ON events (sender_domain, at);
CREATE INDEX IF NOT EXISTS events_account ON events (account, at) WHERE account != '';
CREATE INDEX IF NOT EXISTS events_class ON events (class, at) WHERE class != '';
-- The Activity page's summary of deferrals and failures (only they have a class), answered
-- from the index alone.
CREATE INDEX IF NOT EXISTS events_failures ON events (at, event, class, recipient_domain)
    WHERE class != '';
"""
EVENTS = (
    "accepted", "delivered", "deferred", "failed", "bounced", "held", "released", "expired",
    "retried", "deleted", "unsigned", "suppressed",
)  # fmt: skip
MAX_PER_PAGE = 500
SUMMARY_QUERY = (
    "SELECT recipient_domain, class, event, count(*) FROM events INDEXED BY events_failures "
    "WHERE class != '' AND at >= ? AND event IN ('deferred', 'failed') GROUP BY 1, 2, 3"
)


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    at: float
    event: str
    queue_id: str
    message_id_header: str = ""
    sender: str = ""
    recipient: str = ""
    account: str = ""
    origin: str = ""  # how it came in: sendmail, smtpd, engine
    relay: str = ""  # the host that answered ("local" for this host's mailboxes)
    status: str = ""  # the enhanced status code
    reply: str = ""  # the remote's reply, or why
    attempt: int = 0
    size: int = 0
    queued_seconds: float = 0.0  # from acceptance to this event
    detail: str = ""
    bounce_class: str = ""  # deferred and failed: why, in a word (bounce_classes.py)
    tls: str = ""  # the session's TLS protocol and cipher; "" in clear or not a delivery

    def row(self) -> tuple[Any, ...]:
        return (
            self.at,
            self.event,
            self.queue_id,
            self.message_id_header,
            self.sender,
            _domain(self.sender),
            self.recipient,
            _domain(self.recipient),
            self.account,
            self.origin,
            self.relay,
            self.status,
            self.reply,
            self.attempt,
            self.size,
            self.queued_seconds,
            self.detail,
            self.bounce_class,
            self.tls,
        )

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = (
    "at, event, queue_id, message_id_header, sender, sender_domain, recipient, "
    "recipient_domain, account, origin, relay, status, reply, attempt, size, queued_seconds, "
    "detail, class, tls"
)
_SELECTED = ", ".join(field.name for field in fields(HistoryEvent)).replace("bounce_class", "class")


@dataclass(frozen=True)
class HistoryFilter:
    """What a search selects; empty fields select everything."""

    sender: str = ""  # an address, or a domain
    recipient: str = ""  # an address, or a domain
    account: str = ""
    queue_id: str = ""
    message_id: str = ""  # the Message-ID header, with or without its angle brackets
    event: str = ""
    bounce_class: str = ""
    since: float | None = None
    until: float | None = None


class HistoryError(Exception):
    """The store cannot be opened or read (missing, damaged, locked for too long)."""


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def _address_or_domain(column: str, value: str) -> tuple[str, list[str]]:
    """`user@example.com` matches the address; `example.com` or `@example.com` the domain."""
    text = value.strip()
    if "@" in text.lstrip("@"):
        return f"{column} = ?", [text]
    return f"{column}_domain = ?", [text.lstrip("@").lower()]


class HistoryWriter:
    """The engine's connection: batches appended in one transaction each, old events pruned
    a slice at a time. Not thread-safe: the recorder's thread alone uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A commit is in the WAL when it returns: a kill -9 loses nothing committed; a
            # power loss at most the commits since the last checkpoint's sync.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=2000")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column in ("class", "tls"):  # added by versions 2 and 3
                if columns and column not in columns:
                    self._db.execute(
                        f"ALTER TABLE events ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
                    )
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error:
            self._db.close()
            raise

    def append(self, events: Sequence[HistoryEvent]) -> None:
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 19)})",
                [event.row() for event in events],
            )

    def prune(self, before: float, limit: int = 5000) -> int:
        """Events older than `before`, at most `limit` of them (a short transaction: the
        recorder prunes a slice per batch rather than pausing for a big delete)."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM events WHERE seq IN "
                "(SELECT seq FROM events WHERE at < ? ORDER BY at LIMIT ?)",
                (before, limit),
            )
        return cursor.rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class HistoryReader:
    """Searches, for the API (in its worker threads: one connection per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            raise HistoryError("no delivery history yet: the engine writes it as mail goes")
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise HistoryError(f"the delivery history cannot be opened: {error}") from error
        try:
            db.execute("PRAGMA busy_timeout=2000")
            yield db
        except sqlite3.Error as error:
            raise HistoryError(f"the delivery history cannot be read: {error}") from error
        finally:
            db.close()

    def search(
        self, selection: HistoryFilter, page: int = 1, per_page: int = 50
    ) -> tuple[list[HistoryEvent], bool]:
        """One page of the events selected, newest first, and whether there are more."""
        where, values = _where(selection)
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        offset = (max(page, 1) - 1) * per_page
        query = (
            f"SELECT {_SELECTED} FROM events WHERE {where} ORDER BY at DESC, seq DESC "
            "LIMIT ? OFFSET ?"
        )
        with self._connection() as db:
            rows = db.execute(query, [*values, per_page + 1, offset]).fetchall()
        events = [HistoryEvent(*row) for row in rows[:per_page]]
        return events, len(rows) > per_page

    def summarise(self, since: float, limit: int = 10) -> dict[str, Any]:
        """Deferrals and failures since `since`: per class, and the `limit` destinations
        (recipient domains) with the most, each with its most frequent class. One pass over
        a covering index of the failures alone (`events_failures`)."""
        with self._connection() as db:
            try:
                rows = db.execute(SUMMARY_QUERY, (since,)).fetchall()
            except sqlite3.OperationalError:  # a store its engine has not opened since
                unindexed = SUMMARY_QUERY.replace(" INDEXED BY events_failures", "")
                rows = db.execute(unindexed, (since,)).fetchall()
        classes: dict[str, dict[str, int]] = {}
        domains: dict[str, dict[str, int]] = {}
        by_domain_class: dict[str, dict[str, int]] = {}
        for domain, bounce_class, event, count in rows:
            counts = classes.setdefault(bounce_class, {"deferred": 0, "failed": 0})
            counts[event] += count
            totals = domains.setdefault(domain, {"deferred": 0, "failed": 0})
            totals[event] += count
            mix = by_domain_class.setdefault(domain, {})
            mix[bounce_class] = mix.get(bounce_class, 0) + count
        ordered = sorted(classes.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        busiest = sorted(domains.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        return {
            "classes": [{"class": name, **counts} for name, counts in ordered],
            "destinations": [
                {
                    "domain": domain,
                    **counts,
                    "top_class": max(
                        sorted(by_domain_class[domain].items()), key=lambda item: item[1]
                    )[0],
                }
                for domain, counts in busiest[:limit]
            ],
        }

    def timeline(self, queue_id: str) -> list[HistoryEvent]:
        """Every event of one message, oldest first (its DSN's events name it in `detail`)."""
        query = f"SELECT {_SELECTED} FROM events WHERE queue_id = ? ORDER BY at, seq"
        with self._connection() as db:
            return [HistoryEvent(*row) for row in db.execute(query, (queue_id,))]


def _where(selection: HistoryFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    for column, value in (("sender", selection.sender), ("recipient", selection.recipient)):
        if value:
            clause, arguments = _address_or_domain(column, value)
            clauses.append(clause)
            values += arguments
    # `!= ''` as the partial indexes say, so that SQLite may use them.
    if selection.account:
        clauses.append("account = ? AND account != ''")
        values.append(selection.account)
    if selection.queue_id:
        clauses.append("queue_id = ?")
        values.append(selection.queue_id)
    if selection.message_id:
        clauses.append("message_id_header = ? AND message_id_header != ''")
        values.append(selection.message_id.strip().strip("<>"))
    if selection.event:
        clauses.append("event = ?")
        values.append(selection.event)
    if selection.bounce_class:
        clauses.append("class = ? AND class != ''")
        values.append(selection.bounce_class)
    if selection.since is not None:
        clauses.append("at >= ?")
        values.append(selection.since)
    if selection.until is not None:
        clauses.append("at < ?")
        values.append(selection.until)
    return " AND ".join(clauses) or "1", values
