"""A searchable index of the queue: filters, pages and summaries without reading every queue
file per request. It is derived from the files, which stay the truth.

SQLite holds it (one row per message, one per recipient, one per distinct remote reply with
a trigram full-text index for "the reply contains"): the filters, the paging and the
per-destination summary are queries, not loops. One connection, used from worker threads
under a lock, so the event loop never waits on a query.

Persisted (`<home>/queue-index/queue.sqlite3`, WAL): a panel that starts finds yesterday's
index and answers from it at once, while `check` compares it with the files (one listing of
each queue directory and a stat of each state file: seconds for a million) and rereads only
the messages that came, went or changed meanwhile. Built from nothing, message by message
and in view (`status`), only when the file is missing, damaged (SQLite's quick check, or an
error while in use) or from another version. Killed mid-write, SQLite's journal leaves it as
of its last commit, and the next check brings it up to date: nothing a check cannot repair
is ever trusted. While the panel runs, a watcher (queue_watch.py) reports the changed ids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sendworx.shared import queue_shape
from sendworx.shared.addresses import AddressError, domain_of
from sendworx.shared.destinations import destination_for
from sendworx.shared.queue import Queue
from sendworx.shared.queue_entries import (
    Entry,
    message_locations,
    read_entry,
    state_stamps,
)
from sendworx.shared.queue_format import is_message_id
from sendworx.shared.routes import RouteTable

log = logging.getLogger("sendworx.queue")
MESSAGE_STATES = ("new", "active", "deferred", "held")
FORMAT = "1"  # of the file: one written by another version is built again
READ_CHUNK = 2000  # messages read, then written in one transaction, between two questions
CACHE_KIB = 32768  # SQLite's own page cache, beside the file in the OS's
BUILD_CACHE_KIB = 65536  # while many messages are read into it
BIG_CHECK = 50_000
BUILDING_WAIT_SECONDS = 5.0  # a question about an index being built waits that long for it
# How a piece of reply text is looked for (QueueIndex._prepare):
#   near: the other filters leave at most NEAR_CANDIDATES messages: each one's replies are
#         matched with LIKE (no text index read: a common piece matches a third of a queue);
#   few:  the trigram index finds the replies, fewer than DENSE_REPLY recipients carry them:
#         their messages gathered;
#   many: as few, but many carry them: each message tested (as the page walks them).
NEAR_CANDIDATES = 50_000
DENSE_REPLY = 20_000
SWEEP_EVERY = 100_000  # messages rewritten between two sweeps of replies no longer used
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replies (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS replies_text USING fts5(
    text, content='replies', content_rowid='id', tokenize='trigram'
);
CREATE TRIGGER IF NOT EXISTS replies_added AFTER INSERT ON replies BEGIN
    INSERT INTO replies_text (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS replies_removed AFTER DELETE ON replies BEGIN
    INSERT INTO replies_text (replies_text, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, location TEXT NOT NULL, sender TEXT, sender_domain TEXT, kind TEXT,
    birth REAL, size INTEGER, attempts INTEGER, next_attempt REAL, state TEXT,
    reply INTEGER NOT NULL,  -- replies.id of the last reply (0: none)
    last_host TEXT,
    stamp TEXT NOT NULL  -- the state file as read (queue_entries.stamp_of; '': none)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT, position INTEGER, address TEXT, domain TEXT, destination TEXT,
    state TEXT, reply INTEGER NOT NULL, last_host TEXT,
    size INTEGER, birth REAL,  -- the message's, so the summary needs no join
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_by_domain ON recipients (domain);
CREATE INDEX IF NOT EXISTS recipients_by_address ON recipients (lower(address));
CREATE INDEX IF NOT EXISTS recipients_by_reply ON recipients (reply, message_id);
-- By time within a destination or a sender domain: the oldest of each is one seek.
CREATE INDEX IF NOT EXISTS recipients_waiting ON recipients (state, destination, birth);
CREATE INDEX IF NOT EXISTS messages_by_sender_domain ON messages (sender_domain, birth);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (lower(sender));
CREATE INDEX IF NOT EXISTS messages_by_state ON messages (state);
CREATE INDEX IF NOT EXISTS messages_by_birth ON messages (birth);
CREATE TEMP TABLE IF NOT EXISTS active_now (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS chosen_replies (id INTEGER PRIMARY KEY);
"""
    + queue_shape.SCHEMA
)
_FILES_SEEN = """
CREATE TEMP TABLE IF NOT EXISTS files_seen (id TEXT PRIMARY KEY, location TEXT) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS states_seen (id TEXT PRIMARY KEY, stamp TEXT) WITHOUT ROWID;
DELETE FROM files_seen;
DELETE FROM states_seen;
"""


@dataclass(frozen=True)
class QueueFilter:
    """What a search or a bulk action selects; empty fields select everything."""

    sender: str = ""  # an address, or a domain
    recipient: str = ""  # an address, or a domain
    destination: str = ""  # where a pending recipient waits to go (MX domain or route relay)
    state: str = ""  # new, active, deferred or held
    older_than: float | None = None  # seconds
    younger_than: float | None = None
    reply: str = ""  # a piece of a recipient's last remote reply
    kind: str = ""  # normal, bounce or double-bounce

    def is_empty(self) -> bool:
        return self == QueueFilter()


@dataclass(frozen=True)
class IndexStatus:
    """How far the index is from the files.

    - `current`: every change reported so far is in (`read` and `total`: what the last check
      read again);
    - `checking`: a start-up check compares it with the files; answers come from the index as
      it was, corrected as the check goes (at most `total` messages are behind);
    - `building`: it is built from the files (`reason` says why), `read` of `total` so far:
      lists and totals leave out the rest.
    """

    state: str
    read: int = 0
    total: int = 0
    reason: str = ""

    def to_document(self) -> dict[str, Any]:
        return {"state": self.state, "read": self.read, "total": self.total, "reason": self.reason}


def _address_or_domain(column: str, domain_column: str, value: str) -> tuple[str, list[str]]:
    """`user@example.com` matches the address; `example.com` or `@example.com` the domain."""
    value = value.strip().lower()
    if "@" in value.lstrip("@"):
        return f"lower({column}) = ?", [value]
    return f"{domain_column} = ?", [value.lstrip("@")]


class QueueIndex:
    def __init__(
        self,
        queue: Queue,
        routes: Callable[[], RouteTable],
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`path`: where the index is kept between runs; None keeps it in memory only (built
        at every start)."""
        self.queue = queue
        self.path = path
        self._routes = routes
        self._clock = clock
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one check at a time
        self._stop = threading.Event()
        self._checked = threading.Event()  # no check under way
        self._checked.set()
        self._closed = False
        self._unwritten = False  # a write failed: a check is due
        self._generation = 0  # a damaged file replaced: a check under way starts again
        self._status = IndexStatus("checking")
        self._rewritten = 0  # since the last sweep of unused replies
        self._reply_ids: dict[str, int] = {}
        self._connection: sqlite3.Connection | None = None  # opened when first needed
        # While a watcher follows the queue, this applies what it reported; without one, each
        # question compares the index with the files first.
        self._catch_up: Callable[[], None] | None = None
        self._summary: tuple[int, float, dict[str, Any]] | None = None  # limit, when, answer

    # -- the file ----------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        """The index, opened at its first use (a command line that asks nothing of the queue
        never opens it); callers hold the lock."""
        if self._connection is None:
            try:
                self._connection = self._open()
            except (OSError, sqlite3.OperationalError) as error:
                # Not on disk, then: built in memory at every start, as before the file.
                log.error(
                    "the queue index cannot be kept at %s (%s); kept in memory", self.path, error
                )
                self.path = None
                self._connection = self._connect(":memory:", f"kept in memory: {error}")
        return self._connection

    def _open(self) -> sqlite3.Connection:
        """The index as the last run left it, or a new one to build (and why)."""
        if self.path is None:
            return self._connect(":memory:", "kept in memory")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            return self._fresh("there was none", quietly=True)
        db: sqlite3.Connection | None = None
        try:
            db = self._connect(str(self.path), "")
            damage = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if damage != "ok":
                db.close()
                return self._fresh(f"it was damaged ({damage})")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as error:
            if db is not None:  # (_connect closes what it could not set up)
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            return self._fresh(f"it was damaged ({error})")
        if meta.get("format") != FORMAT:
            db.close()
            return self._fresh("it was written by another version")
        if meta.get("complete") != "1":
            self._status = IndexStatus("building", reason="the last build was interrupted")
        return db

    def _fresh(self, reason: str, *, quietly: bool = False) -> sqlite3.Connection:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        log.log(
            logging.INFO if quietly else logging.WARNING,
            "building the queue index from the queue files: %s",
            reason,
        )
        return self._connect(str(self.path), reason)

    def _connect(self, where: str, building: str) -> sqlite3.Connection:
        """`building`: why it starts empty ("" when opening the one kept)."""
        db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # derived data: a check repairs a loss
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # the OS caches the rest of the file
            # The questions' temporary tables (the messages being delivered, the replies
            # asked for) in memory: a full disk must not stop the answers.
            db.execute("PRAGMA temp_store=MEMORY")
            db.executescript(_SCHEMA)
            if building:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '0')")
                self._status = IndexStatus("building", reason=building)
        except BaseException:
            db.close()
            raise
        if where != ":memory:":
            os.chmod(where, 0o600)  # addresses and replies: the instance's owner only
        return db

    def _replace_damaged(self, error: sqlite3.DatabaseError) -> None:
        """An error while in use that is not a busy or closed file: the file is damaged. A new
        one is built (the caller holds the lock)."""
        log.error("the queue index is damaged (%s); building it again", error)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._reply_ids.clear()
        self._generation += 1
        self._connection = (
            self._fresh(f"it was damaged ({error})")
            if self.path is not None
            else self._connect(":memory:", "it was damaged")
        )

    def stop_checking(self) -> None:
        """A check under way ends after its chunk (the process is stopping); the next start
        goes on from there."""
        self._stop.set()

    def needs_check(self) -> bool:
        """A change could not be written: only a whole check brings the index back."""
        return self._unwritten

    def status(self) -> IndexStatus:
        if self._connection is None:
            with self._lock:
                self._db  # noqa: B018 - opening it tells whether it must be built
        return self._status

    def close(self) -> None:
        """Closed (its journal folded into the file); a check under way stops."""
        self._stop.set()
        with self._lock:
            self._closed = True
            if self._connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.close()

    # -- keeping it current ------------------------------------------------------------------

    def check(self) -> None:
        """Compare the index with the files and read again what differs: messages that came,
        went, moved from `new/` to `mess/`, or whose state file changed. From an empty index
        this builds it. Questions are answered between chunks meanwhile."""
        with self._checking:
            self._checked.clear()
            try:
                while not self._check_once():
                    pass  # the file was found damaged and replaced meanwhile: from the start
            finally:
                self._checked.set()

    def _check_once(self) -> bool:
        """One pass; False when the index was replaced under it (a new pass is needed)."""
        self._unwritten = False
        with self._lock:
            self._db  # noqa: B018 - opened: the state says whether it is being built
            generation = self._generation
        building = self._status.state == "building"
        try:
            changed = self._differences()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):
                raise
            with self._lock:
                self._replace_damaged(error)
            return False
        state = "building" if building else "checking"
        reason = self._status.reason if building else ""
        if len(changed) > BIG_CHECK:
            self._cache(BUILD_CACHE_KIB)  # many rows into big indexes: a bigger cache for it
        self._status = IndexStatus(state, 0, len(changed), reason)
        try:
            for start in range(0, len(changed), READ_CHUNK):
                if self._stop.is_set():
                    return True  # the process stops: the rest at the next start
                chunk = changed[start : start + READ_CHUNK]
                self.refresh(chunk)
                if self._generation != generation:
                    return False
                if self._unwritten:
                    return True  # not written: answers stay as they were; retried later
                self._status = IndexStatus(state, start + len(chunk), len(changed), reason)
        finally:
            self._cache(CACHE_KIB)
        with self._lock:
            if self._closed:
                return True
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")
        if changed:
            self._sweep()
            log.info("queue index: %d messages read again (%s)", len(changed), state)
        self._status = IndexStatus("current", len(changed), len(changed))
        return True

    def _cache(self, kibibytes: int) -> None:
        with self._lock:
            if not self._closed:
                self._db.execute(f"PRAGMA cache_size=-{kibibytes}")

    def _differences(self) -> list[str]:
        """The ids whose files differ from the index, found by SQL over a listing of the
        directories (one row per file, in temporary tables: nothing held in memory). On a
        connection of its own, so questions go on meanwhile (what changes under it is read
        again needlessly, never missed: the watcher started first)."""
        if self.path is None:
            with self._lock:
                return _differences(self._db, self.queue)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA temp_store=FILE")
            return _differences(db, self.queue)
        finally:
            db.close()

    def follow(self, catch_up: Callable[[], None] | None) -> None:
        """A watcher keeps the index current from now on (None: not any more); its first
        check is under way from now (questions about an index being built wait for it)."""
        if catch_up is not None:
            self._checked.clear()
        self._catch_up = catch_up

    def ensure_current(self) -> None:
        """Current before a question: a watched index applies what was reported so far;
        otherwise it is checked against the files (a command line asks once or twice in its
        life)."""
        if self._catch_up is not None:
            if self.status().state == "building":
                # Answers would leave out what is not read yet: a small queue is read in
                # a moment, so a question waits that long for it (a big one answers then).
                self._checked.wait(BUILDING_WAIT_SECONDS)
            self._catch_up()
        else:
            self.check()

    def refresh(self, ids: Iterable[str]) -> None:
        """Read these messages again: changed, gone, or new."""
        wanted = sorted({message_id for message_id in ids if is_message_id(message_id)})
        entries = [(message_id, read_entry(self.queue, message_id)) for message_id in wanted]
        routes = self._routes()
        with self._lock:
            if self._closed:
                return  # the process is stopping: the next start's check does this
            try:
                self._write(entries, routes)
            except sqlite3.OperationalError as error:
                # Cannot write (a full disk, a file another account owns): the answers stay
                # as they were until a check succeeds (the watcher retries).
                log.error("the queue index cannot be written (%s); checking again later", error)
                self._status = IndexStatus("checking", 0, len(entries), f"not written: {error}")
                self._unwritten = True
            except sqlite3.DatabaseError as error:
                self._replace_damaged(error)  # the next check reads everything
        self._rewritten += len(entries)
        if self._rewritten >= SWEEP_EVERY and self._checked.is_set():
            self._sweep()  # (a check under way sweeps at its end)

    def _write(self, entries: list[tuple[str, Entry | None]], routes: RouteTable) -> None:
        db = self._db
        shape = queue_shape.Shape()
        db.execute("BEGIN")
        try:
            for message_id, entry in entries:
                old = queue_shape.part_in_index(db, message_id)
                if old is not None:
                    shape.count(old, -1)
                    db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                    db.execute("DELETE FROM recipients WHERE message_id = ?", (message_id,))
                if entry is not None:
                    shape.count(self._insert(entry, routes), +1)
            shape.apply(db)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._reply_ids.clear()  # ids given in the transaction are gone with it
            raise

    def _sweep(self) -> None:
        """Replies no message uses any more go (with their text index): after a check that
        read messages again, and every SWEEP_EVERY messages rewritten between checks."""
        self._rewritten = 0
        with self._lock:
            if self._closed:
                return
            self._db.execute(
                "DELETE FROM replies WHERE id NOT IN (SELECT reply FROM recipients) "
                "AND id NOT IN (SELECT reply FROM messages)"
            )
            self._reply_ids.clear()

    def reroute(self) -> None:
        """The routes changed: where each pending recipient goes, again."""
        routes = self._routes()
        with self._lock:
            rows = self._db.execute(
                "SELECT message_id, position, address FROM recipients WHERE state = 'pending'"
            ).fetchall()
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE recipients SET destination = ? WHERE message_id = ? AND position = ?",
                ((_destination(address, routes), mid, pos) for mid, pos, address in rows),
            )
            queue_shape.recount(self._db)
            self._db.execute("COMMIT")

    def _reply_id(self, text: str) -> int:
        if not text:
            return 0
        known = self._reply_ids.get(text)
        if known is None:
            db = self._db
            db.execute("INSERT OR IGNORE INTO replies (text) VALUES (?)", (text,))
            known = int(db.execute("SELECT id FROM replies WHERE text = ?", (text,)).fetchone()[0])
            if len(self._reply_ids) > 10_000:
                self._reply_ids.clear()
            self._reply_ids[text] = known
        return known

    def _reply_text(self, reply: int) -> str:
        row = self._db.execute("SELECT text FROM replies WHERE id = ?", (reply,)).fetchone()
        return str(row[0]) if row else ""

    def _insert(self, entry: Entry, routes: RouteTable) -> queue_shape.Part:
        """The message's rows; its part in the queue's shape."""
        state, envelope = entry.state, entry.envelope
        if state.held:
            shown = "held"
        elif state.attempts or state.history:
            shown = "deferred"
        else:
            shown = "new"
        last_reply = last_host = ""
        if state.history:
            results = state.history[-1].results
            chosen = next((r for r in results if r.outcome != "delivered"), results[0])
            last_reply, last_host = chosen.reply, chosen.remote or ""
        elif state.last_errors:
            last_reply = next(iter(state.last_errors.values()))
        sender_domain = domain_of(envelope.sender).lower()
        self._db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.message_id,
                entry.location,
                envelope.sender,
                sender_domain,
                envelope.kind.value,
                envelope.birth,
                entry.size,
                state.attempts,
                state.next_attempt_at,
                shown,
                self._reply_id(last_reply),
                last_host,
                entry.stamp,
            ),
        )
        delivered = set(state.delivered)
        failed = {failure.recipient: failure for failure in state.failed}
        rows = []
        for position, address in enumerate(dict.fromkeys(envelope.recipients)):
            attempt = state.last_attempt(address)
            host = (attempt.remote or "") if attempt else ""
            if address in delivered:
                recipient_state, reply = "delivered", attempt.reply if attempt else ""
            elif address in failed:
                recipient_state, reply = "failed", failed[address].reply
                host = failed[address].remote or host
            else:
                recipient_state, reply = "pending", state.last_errors.get(address, "")
            rows.append(
                (
                    entry.message_id,
                    position,
                    address,
                    domain_of(address).lower(),
                    _destination(address, routes) if recipient_state == "pending" else "",
                    recipient_state,
                    self._reply_id(reply),
                    host,
                    entry.size,
                    envelope.birth,
                )
            )
        self._db.executemany("INSERT INTO recipients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        pending = [(row[4], row[6]) for row in rows if row[5] == "pending"]
        return shown, sender_domain, entry.size, pending

    # -- questions ---------------------------------------------------------------------------

    def _where(self, selection: QueueFilter, reply_mode: str) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        now = self._clock()
        if selection.sender:
            clause, args = _address_or_domain("sender", "sender_domain", selection.sender)
            clauses.append(clause)
            values += args
        # Uncorrelated subqueries: SQLite evaluates each once, with the recipients' indexes.
        if selection.recipient:
            clause, args = _address_or_domain("address", "domain", selection.recipient)
            clauses.append(f"m.id IN (SELECT message_id FROM recipients WHERE {clause})")
            values += args
        if selection.destination:
            clauses.append(
                "m.id IN (SELECT message_id FROM recipients "
                "WHERE destination = ? AND state = 'pending')"
            )
            values.append(selection.destination.strip().lower())
        if selection.state == "active":
            clauses.append("m.id IN (SELECT id FROM active_now)")
        elif selection.state:
            # `+state`: not by messages_by_state (the summary's), which most messages share;
            # the other filters narrow far better.
            clauses.append("+state = ? AND m.id NOT IN (SELECT id FROM active_now)")
            values.append(selection.state)
        if selection.older_than is not None:
            clauses.append("birth < ?")
            values.append(now - selection.older_than)
        if selection.younger_than is not None:
            clauses.append("birth > ?")
            values.append(now - selection.younger_than)
        if selection.reply and reply_mode == "near":
            clauses.append(
                "EXISTS (SELECT 1 FROM recipients x JOIN replies y ON y.id = x.reply "
                "WHERE x.message_id = m.id AND y.text LIKE ? ESCAPE '\\')"
            )
            values.append("%" + _escape_like(selection.reply) + "%")
        elif selection.reply and reply_mode == "many":
            # `+x.reply`: by the message's own rows (one seek), never by the reply index
            # (which would try each of the many replies for every message).
            clauses.append(
                "EXISTS (SELECT 1 FROM recipients x WHERE x.message_id = m.id "
                "AND +x.reply IN (SELECT id FROM chosen_replies))"
            )
        elif selection.reply:
            clauses.append(
                "m.id IN (SELECT message_id FROM recipients "
                "WHERE reply IN (SELECT id FROM chosen_replies))"
            )
        if selection.kind:
            clauses.append("kind = ?")
            values.append(selection.kind)
        return (" AND ".join(clauses) or "1"), values

    def _count(self, selection: QueueFilter, reply_mode: str, where: str, values: list[Any]) -> int:
        """How many match: the common questions from the queue's shape (no filter, or only a
        state: the Mail Queue page as it opens) or by the one index that answers them; any
        other by the query."""
        db = self._db
        alone = {name for name, value in vars(selection).items() if value not in ("", None)}
        if not alone:
            return int(
                db.execute("SELECT COALESCE(SUM(messages), 0) FROM shape_states").fetchone()[0]
            )
        if alone == {"state"} and selection.state != "active":
            (kept,) = db.execute(
                "SELECT COALESCE(SUM(messages), 0) FROM shape_states WHERE state = ?",
                (selection.state,),
            ).fetchone()
            (busy,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE id IN (SELECT id FROM active_now) "
                "AND state = ?",
                (selection.state,),
            ).fetchone()
            return int(kept) - int(busy)
        if alone == {"reply"} and reply_mode == "many":
            return int(
                db.execute(
                    "SELECT COUNT(DISTINCT message_id) FROM recipients "
                    "WHERE reply IN (SELECT id FROM chosen_replies)"
                ).fetchone()[0]
            )
        return int(
            db.execute(f"SELECT COUNT(*) FROM messages m WHERE {where}", values).fetchone()[0]
        )

    def _prepare(self, selection: QueueFilter, active: set[str]) -> str:
        """The temporary tables a question's clauses name: the messages being delivered now,
        and the replies that contain the text asked for (the trigram index finds them; under
        three characters, which it cannot look up, every distinct reply is read); and how the
        reply text is looked for (near, few, many: see NEAR_CANDIDATES), "" without one."""
        db = self._db
        db.execute("DELETE FROM active_now")
        db.executemany("INSERT INTO active_now VALUES (?)", ((i,) for i in active))
        db.execute("DELETE FROM chosen_replies")
        text = selection.reply
        if not text:
            return ""
        if selection.sender or selection.recipient or selection.destination:
            where, values = self._where(replace(selection, reply=""), "")
            (candidates,) = db.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM messages m WHERE {where} LIMIT ?)",
                [*values, NEAR_CANDIDATES + 1],
            ).fetchone()
            if candidates <= NEAR_CANDIDATES:
                return "near"
        if len(text) >= 3:
            db.execute(
                "INSERT INTO chosen_replies SELECT rowid FROM replies_text "
                "WHERE replies_text MATCH ?",
                ('"' + text.replace('"', '""') + '"',),
            )
        else:
            db.execute(
                "INSERT INTO chosen_replies SELECT id FROM replies WHERE text LIKE ? ESCAPE '\\'",
                ("%" + _escape_like(text) + "%",),
            )
        (using,) = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM recipients "
            "WHERE reply IN (SELECT id FROM chosen_replies) LIMIT ?)",
            (DENSE_REPLY,),
        ).fetchone()
        return "many" if int(using) >= DENSE_REPLY else "few"

    def search(
        self, selection: QueueFilter, active: set[str], limit: int, after: str = ""
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of messages, oldest first, after the id `after`; and how many match."""
        with self._lock:
            mode = self._prepare(selection, active)
            where, values = self._where(selection, mode)
            total = self._count(selection, mode, where, values)
            rows = self._db.execute(
                f"SELECT m.id, sender, kind, size, birth, attempts, next_attempt, state, "
                f"COALESCE(r.text, ''), last_host FROM messages m "
                f"LEFT JOIN replies r ON r.id = m.reply WHERE {where} AND m.id > ? "
                f"ORDER BY m.id LIMIT ?",
                [*values, after, limit],
            ).fetchall()
            recipients = self._recipients([row[0] for row in rows])
        now = self._clock()
        page = [
            {
                "id": message_id,
                "sender": sender,
                "kind": kind,
                "size": size,
                "age": int(max(0.0, now - birth)),
                "birth": birth,
                "attempts": attempts,
                "next_attempt_at": next_attempt,
                "state": "active" if message_id in active else state,
                "last_reply": last_reply,
                "last_host": last_host,
                "recipients": recipients.get(message_id, []),
            }
            for (
                message_id,
                sender,
                kind,
                size,
                birth,
                attempts,
                next_attempt,
                state,
                last_reply,
                last_host,
            ) in rows
        ]
        return page, int(total)

    def _recipients(self, ids: list[str]) -> dict[str, list[dict[str, str]]]:
        found: dict[str, list[dict[str, str]]] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for message_id, address, state, destination, reply, host in self._db.execute(
                f"SELECT message_id, address, state, destination, COALESCE(r.text, ''), "
                f"last_host FROM recipients LEFT JOIN replies r ON r.id = reply "
                f"WHERE message_id IN ({marks}) ORDER BY message_id, position",
                chunk,
            ):
                found.setdefault(message_id, []).append(
                    {
                        "address": address,
                        "state": state,
                        "destination": destination,
                        "last_reply": reply,
                        "last_host": host,
                    }
                )
        return found

    def matching_ids(self, selection: QueueFilter, active: set[str]) -> list[str]:
        with self._lock:
            mode = self._prepare(selection, active)
            where, values = self._where(selection, mode)
            rows = self._db.execute(
                f"SELECT m.id FROM messages m WHERE {where} ORDER BY m.id", values
            ).fetchall()
        return [row[0] for row in rows]

    def summary(self, active: set[str], limit: int = 50, max_age: float = 0.0) -> dict[str, Any]:
        """Postfix's qshape as a struct: totals by state, then where mail waits (each
        destination's most frequent last reply) and who sent it, biggest first. An answer
        younger than `max_age` seconds is given again (pages refreshing every few seconds need
        not regroup 100,000 rows each time); 0 asks for the queue as it is now."""
        now = self._clock()
        cached = self._summary
        if cached is not None and cached[0] == limit and 0 <= now - cached[1] < max_age:
            return cached[2]
        answer = self._summarise(active, limit, now)
        self._summary = (limit, now, answer)
        return answer

    def _summarise(self, active: set[str], limit: int, now: float) -> dict[str, Any]:
        with self._lock:
            self._prepare(QueueFilter(), active)
            return queue_shape.summarise(self._db, limit, now, self._reply_text)


def _differences(db: sqlite3.Connection, queue: Queue) -> list[str]:
    db.executescript(_FILES_SEEN)
    db.execute("BEGIN")
    try:
        db.executemany("INSERT OR REPLACE INTO files_seen VALUES (?, ?)", message_locations(queue))
        db.executemany("INSERT INTO states_seen VALUES (?, ?)", state_stamps(queue))
        rows = db.execute(
            "SELECT f.id FROM files_seen f LEFT JOIN states_seen s ON s.id = f.id "
            "LEFT JOIN messages m ON m.id = f.id "
            "WHERE m.id IS NULL OR m.location != f.location OR m.stamp != COALESCE(s.stamp, '') "
            "UNION ALL SELECT id FROM messages WHERE id NOT IN (SELECT id FROM files_seen)"
        ).fetchall()
    finally:
        db.execute("ROLLBACK")  # only temporary tables were written
    return sorted(row[0] for row in rows)


def _destination(address: str, routes: RouteTable) -> str:
    try:
        return str(destination_for(address, routes))
    except AddressError:
        return ""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
