"""A searchable index of the queue: filters, pages and summaries without reading every queue
file per request. It is derived from the files, which stay the truth: `rebuild` reads them
all, `refresh` rereads some ids (what changed, as a watcher reports it).

SQLite in memory holds it (one row per message, one per recipient): the filters, the paging
and the per-destination summary are queries, not loops. One connection, used from worker
threads under a lock, so the event loop never waits on a query.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sendworx.shared.addresses import AddressError, domain_of
from sendworx.shared.destinations import destination_for
from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import (
    MAGIC,
    CorruptMessageError,
    DeliveryState,
    Envelope,
    decode_message,
    is_message_id,
)
from sendworx.shared.routes import RouteTable

MESSAGE_STATES = ("new", "active", "deferred", "held")
_HEAD_BYTES = 4096
_SCHEMA = """
CREATE TABLE messages (
    id TEXT PRIMARY KEY, location TEXT, sender TEXT, sender_domain TEXT, kind TEXT,
    birth REAL, size INTEGER, attempts INTEGER, next_attempt REAL, state TEXT,
    last_reply TEXT, last_host TEXT
);
CREATE TABLE recipients (
    message_id TEXT, position INTEGER, address TEXT, domain TEXT, destination TEXT,
    state TEXT, last_reply TEXT, last_host TEXT,
    size INTEGER, birth REAL,  -- the message's, so the summary needs no join
    PRIMARY KEY (message_id, position)
);
CREATE INDEX recipients_by_domain ON recipients (domain);
CREATE INDEX recipients_by_address ON recipients (address);
-- Covering indexes: the summary groups 100,000 rows by reading these in order, no sort.
CREATE INDEX recipients_waiting ON recipients (state, destination, message_id, size, birth);
CREATE INDEX recipients_replies ON recipients (state, destination, last_reply);
CREATE INDEX messages_by_sender_domain ON messages (sender_domain, size, birth);
CREATE INDEX messages_by_state ON messages (state);
CREATE TEMP TABLE active_now (id TEXT PRIMARY KEY);
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
    reply: str = ""  # a piece of the last remote reply
    kind: str = ""  # normal, bounce or double-bounce

    def is_empty(self) -> bool:
        return self == QueueFilter()


@dataclass(frozen=True)
class _Entry:
    """One message as the files show it."""

    message_id: str
    location: str
    envelope: Envelope
    size: int
    state: DeliveryState


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self._routes = routes
        self._clock = clock
        self._messages, self._new, self._states = (
            queue.messages_dir,
            queue.new_dir,
            queue.state_dir,
        )
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        # While a watcher follows the queue, this applies what it reported; without one, each
        # question reads the whole queue again.
        self._catch_up: Callable[[], None] | None = None
        self._summary: tuple[int, float, dict[str, Any]] | None = None  # limit, when, answer

    # -- keeping it current ------------------------------------------------------------------

    def rebuild(self) -> None:
        """Read every queued message again (the index starts empty)."""
        ids = set(self.queue.message_ids()) | set(self.queue.pending_new_ids())
        entries = [entry for entry in map(self._read, sorted(ids)) if entry is not None]
        routes = self._routes()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM messages")
            self._db.execute("DELETE FROM recipients")
            for entry in entries:
                self._insert(entry, routes)
            self._db.execute("COMMIT")

    def follow(self, catch_up: Callable[[], None] | None) -> None:
        """A watcher keeps the index current from now on (None: not any more)."""
        self._catch_up = catch_up

    def ensure_current(self) -> None:
        """Current before a question: a watched index applies what was reported so far;
        otherwise it reads the queue again (a command line asks once or twice in its life)."""
        if self._catch_up is not None:
            self._catch_up()
        else:
            self.rebuild()

    def refresh(self, ids: Iterable[str]) -> None:
        """Read these messages again: changed, gone, or new."""
        wanted = sorted({message_id for message_id in ids if is_message_id(message_id)})
        entries = [(message_id, self._read(message_id)) for message_id in wanted]
        routes = self._routes()
        with self._lock:
            self._db.execute("BEGIN")
            for message_id, entry in entries:
                self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                self._db.execute("DELETE FROM recipients WHERE message_id = ?", (message_id,))
                if entry is not None:
                    self._insert(entry, routes)
            self._db.execute("COMMIT")

    def reroute(self) -> None:
        """The routes changed: where each pending recipient goes, again."""
        routes = self._routes()
        with self._lock:
            rows = self._db.execute(
                "SELECT message_id, position, address FROM recipients"
            ).fetchall()
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE recipients SET destination = ? WHERE message_id = ? AND position = ?",
                ((_destination(address, routes), mid, pos) for mid, pos, address in rows),
            )
            self._db.execute("COMMIT")

    def _read(self, message_id: str) -> _Entry | None:
        """The message's envelope (its first lines), size and state; None when it is gone or
        unreadable (the engine sets those aside). Plain system calls: 100,000 of these build
        the index."""
        location = "mess"
        try:
            fd = os.open(self._messages / message_id, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            location = "new"
            try:
                fd = os.open(self._new / message_id, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
        try:
            size = os.fstat(fd).st_size
            head = os.read(fd, _HEAD_BYTES)
            while b"\n" not in head[len(MAGIC) :] and len(head) < size:
                head += os.read(fd, _HEAD_BYTES)  # many recipients: a long envelope line
            envelope, _ = decode_message(head)
            state = _read_state(self._states / message_id)
        except (OSError, CorruptMessageError, ValueError, TypeError, KeyError):
            return None
        finally:
            os.close(fd)
        return _Entry(message_id, location, envelope, size, state)

    def _insert(self, entry: _Entry, routes: RouteTable) -> None:
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
        self._db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.message_id,
                entry.location,
                envelope.sender,
                domain_of(envelope.sender).lower(),
                envelope.kind.value,
                envelope.birth,
                entry.size,
                state.attempts,
                state.next_attempt_at,
                shown,
                last_reply,
                last_host,
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
                    reply,
                    host,
                    entry.size,
                    envelope.birth,
                )
            )
        self._db.executemany("INSERT INTO recipients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    # -- questions ---------------------------------------------------------------------------

    def _where(self, selection: QueueFilter) -> tuple[str, list[Any]]:
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
            clauses.append(f"id IN (SELECT message_id FROM recipients WHERE {clause})")
            values += args
        if selection.destination:
            clauses.append(
                "id IN (SELECT message_id FROM recipients "
                "WHERE destination = ? AND state = 'pending')"
            )
            values.append(selection.destination.strip().lower())
        if selection.state == "active":
            clauses.append("id IN (SELECT id FROM active_now)")
        elif selection.state:
            # `+state`: not by messages_by_state (the summary's), which most messages share;
            # the other filters narrow far better.
            clauses.append("+state = ? AND id NOT IN (SELECT id FROM active_now)")
            values.append(selection.state)
        if selection.older_than is not None:
            clauses.append("birth < ?")
            values.append(now - selection.older_than)
        if selection.younger_than is not None:
            clauses.append("birth > ?")
            values.append(now - selection.younger_than)
        if selection.reply:
            pattern = "%" + _escape_like(selection.reply) + "%"
            clauses.append(
                "(last_reply LIKE ? ESCAPE '\\' OR id IN (SELECT message_id FROM recipients "
                "WHERE last_reply LIKE ? ESCAPE '\\'))"
            )
            values += [pattern, pattern]
        if selection.kind:
            clauses.append("kind = ?")
            values.append(selection.kind)
        return (" AND ".join(clauses) or "1"), values

    def _set_active(self, active: set[str]) -> None:
        self._db.execute("DELETE FROM active_now")
        self._db.executemany("INSERT INTO active_now VALUES (?)", ((i,) for i in active))

    def search(
        self, selection: QueueFilter, active: set[str], limit: int, after: str = ""
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of messages, oldest first, after the id `after`; and how many match."""
        where, values = self._where(selection)
        with self._lock:
            self._set_active(active)
            total = self._db.execute(
                f"SELECT COUNT(*) FROM messages m WHERE {where}", values
            ).fetchone()[0]
            rows = self._db.execute(
                f"SELECT id, sender, kind, size, birth, attempts, next_attempt, state, "
                f"last_reply, last_host FROM messages m WHERE {where} AND id > ? "
                f"ORDER BY id LIMIT ?",
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
                f"SELECT message_id, address, state, destination, last_reply, last_host "
                f"FROM recipients WHERE message_id IN ({marks}) ORDER BY message_id, position",
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
        where, values = self._where(selection)
        with self._lock:
            self._set_active(active)
            rows = self._db.execute(
                f"SELECT id FROM messages m WHERE {where} ORDER BY id", values
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
            self._set_active(active)
            totals = {state: 0 for state in MESSAGE_STATES}
            for state, count in self._db.execute(
                "SELECT state, COUNT(*) FROM messages GROUP BY state"
            ):
                totals[state] = count
            # Messages being delivered are counted as active, not as what their files say.
            for state, count in self._db.execute(
                "SELECT state, COUNT(*) FROM messages "
                "WHERE id IN (SELECT id FROM active_now) GROUP BY state"
            ):
                totals[state] -= count
                totals["active"] += count
            messages, size, oldest = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(birth) FROM messages"
            ).fetchone()
            destinations = self._db.execute(
                "SELECT destination, COUNT(DISTINCT message_id), COUNT(*), SUM(size), "
                "MIN(birth) FROM recipients WHERE state = 'pending' GROUP BY destination "
                "ORDER BY 2 DESC, 1 LIMIT ?",
                (limit,),
            ).fetchall()
            replies: dict[str, tuple[str, int]] = {}
            for destination, reply, count in self._db.execute(
                "SELECT destination, last_reply, COUNT(*) FROM recipients "
                "WHERE state = 'pending' AND last_reply != '' GROUP BY 1, 2"
            ):
                if count > replies.get(destination, ("", 0))[1]:
                    replies[destination] = (reply, count)
            senders = self._db.execute(
                "SELECT sender_domain, COUNT(*), SUM(size), MIN(birth) FROM messages "
                "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
                (limit,),
            ).fetchall()
        return {
            "totals": {
                "messages": messages,
                "bytes": size,
                "oldest_age": int(max(0.0, now - oldest)) if oldest is not None else 0,
                **totals,
            },
            "destinations": [
                {
                    "destination": destination,
                    "messages": count,
                    "recipients": recipients,
                    "bytes": total,
                    "oldest_age": int(max(0.0, now - oldest)),
                    "top_reply": replies.get(destination, ("", 0))[0],
                    "top_reply_count": replies.get(destination, ("", 0))[1],
                }
                for destination, count, recipients, total, oldest in destinations
            ],
            "sender_domains": [
                {
                    "domain": domain,
                    "messages": count,
                    "bytes": total,
                    "oldest_age": int(max(0.0, now - oldest)),
                }
                for domain, count, total, oldest in senders
            ],
        }


def _read_state(path: Path) -> DeliveryState:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return DeliveryState()
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return DeliveryState.from_json(b"".join(chunks))


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
