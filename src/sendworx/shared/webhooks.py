"""Webhooks' store: the endpoints, their outbound queue of events and the attempts made,
in one SQLite file (WAL) under `<state>/webhooks/`.

- The API, the CLI and the page add, edit and delete endpoints (`Endpoint`).
- The engine (engine/webhook_outbox.py) puts a delivery here for each event an endpoint
  wants, in batches off the delivery path: the event's JSON, fixed once, so every retry
  sends the same bytes under the same event id.
- The sender (`sendworx webhookd`, webhooks/sender.py) reads a batch of what is due, posts
  it, and settles each: a 2xx deletes it (its attempt stays on record), a failure sets when
  it is due again, a delivery past `webhooks.max_age_hours` becomes dead (kept, shown,
  redeliverable). Nothing marks a batch taken: there is one sender per instance (its pid
  lock) and it settles a batch before reading the next, so what it holds is what it has not
  settled yet; after a kill -9 the same deliveries are simply due and are sent again (at
  least once), never lost. (A mark, written and committed for each batch, was a third of
  the store's cost per event.)

Two processes write (the engine its batches, the sender its settlements): each transaction is
short, and `busy_timeout` lets one wait for the other.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'all',
    scope_value TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    old_secret TEXT NOT NULL DEFAULT '',
    old_secret_until REAL NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0,
    pauses INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    endpoint INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    queue_id TEXT NOT NULL DEFAULT '',
    body BLOB NOT NULL,
    created REAL NOT NULL,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    last_at REAL NOT NULL DEFAULT 0,
    last_result TEXT NOT NULL DEFAULT ''
);
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (endpoint, due)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries (endpoint, state, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    delivery INTEGER NOT NULL,
    endpoint INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    at REAL NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    reply TEXT NOT NULL DEFAULT '',
    milliseconds REAL NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_endpoint ON attempts (endpoint, id);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts (event_id);
"""
# What an endpoint may ask for (docs/api.md says when each is sent); `test` is only ever
# sent by the test action, to the endpoint tested.
EVENTS = (
    "accepted", "delivered", "deferred", "bounced", "expired", "held", "released",
    "suppressed", "deleted",
)  # fmt: skip
TEST_EVENT = "test"
SCOPES = ("all", "account", "domain")
STATES = ("pending", "dead")
OUTCOMES = ("done", "retry", "dead", "disabled")
ATTEMPTS_KEPT = 1000  # per endpoint; older ones are pruned
DEAD_KEPT_SECONDS = 7 * 86400
MAX_PER_PAGE = 500
_ENDPOINT = (
    "id, url, events, scope, scope_value, secret, old_secret, old_secret_until, enabled, "
    "disabled_reason, description, owner, created, failures, paused_until, pauses"
)
_DELIVERY = "id, endpoint, event_id, event, queue_id, body, created, attempts"


class WebhookStoreError(Exception):
    """The store cannot be opened, read or written."""


def _domain_in(domain: str, scope: str) -> bool:
    return domain == scope or domain.endswith("." + scope)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    events: tuple[str, ...]
    scope: str  # all, account (an origin account), domain (a sender domain and below)
    scope_value: str
    secret: str
    old_secret: str = ""
    old_secret_until: float = 0.0
    enabled: bool = True
    disabled_reason: str = ""
    description: str = ""
    owner: str = ""  # who added it
    created: float = 0.0
    failures: int = 0  # in a row
    paused_until: float = 0.0  # the circuit breaker's
    pauses: int = 0  # in a row: each pause is longer

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Endpoint:
        values = list(row)
        values[2] = tuple(event for event in str(values[2]).split(",") if event)
        values[8] = bool(values[8])
        return cls(*values)

    def wants(self, event: str, account: str, sender_domain: str) -> bool:
        if not self.enabled or event not in self.events:
            return False
        if self.scope == "account":
            return account == self.scope_value
        if self.scope == "domain":
            return _domain_in(sender_domain, self.scope_value)
        return True

    def secrets(self, now: float) -> list[str]:
        """The secrets to sign with: the current one, and the one it replaced while that is
        in its grace period."""
        if self.old_secret and now < self.old_secret_until:
            return [self.secret, self.old_secret]
        return [self.secret]

    def rotated(self, secret: str, grace_seconds: float, now: float) -> dict[str, Any]:
        """The changes (for `edit_endpoint`) by which `secret` signs from now on, and the one
        it replaces signs beside it for `grace_seconds`."""
        return {
            "secret": secret,
            "old_secret": self.secret,
            "old_secret_until": now + grace_seconds,
        }

    def state(self, now: float) -> str:
        if not self.enabled:
            return "disabled"
        if self.paused_until > now:
            return "paused"
        return "failing" if self.failures else "ok"

    def to_document(self, now: float, *, reveal: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "scope": self.scope,
            "scope_value": self.scope_value,
            "secret": self.secret if reveal else self.secret[:10] + "...",
            "old_secret_until": self.old_secret_until if self.old_secret_until > now else 0,
            "enabled": int(self.enabled),
            "state": self.state(now),
            "disabled_reason": self.disabled_reason,
            "description": self.description,
            "owner": self.owner,
            "created": self.created,
            "failures": self.failures,
            "paused_until": self.paused_until if self.paused_until > now else 0,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    endpoint: int
    event_id: str
    event: str
    queue_id: str
    body: bytes
    created: float
    attempts: int


@dataclass(frozen=True, slots=True)
class NewDelivery:
    endpoint: int
    event_id: str
    event: str
    queue_id: str
    body: bytes
    created: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one attempt of a delivery."""

    delivery: Delivery
    at: float
    status: int  # the HTTP status; 0: no answer
    reply: str  # the reply's start, or what went wrong
    milliseconds: float
    outcome: str  # done, retry (at `due`), dead, disabled (the endpoint, by a 410)
    due: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    delivery: int
    endpoint: int
    event_id: str
    event: str
    at: float
    status: int
    reply: str
    milliseconds: float
    outcome: str

    def to_document(self) -> dict[str, Any]:
        return {**asdict(self), "milliseconds": round(self.milliseconds, 1)}


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
    """A delivery not done, as the API lists it."""

    id: int
    endpoint: int
    event_id: str
    event: str
    queue_id: str
    created: float
    due: float
    attempts: int
    state: str
    last_at: float
    last_result: str

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


class WebhookStore:
    """One connection, opened at first use and shared by the threads of one process (a lock
    takes turns); every method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                db = self._open()
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except (sqlite3.Error, OSError) as error:
                self._forget()
                raise WebhookStoreError(f"the webhooks store cannot be opened: {error}") from error
            try:
                yield db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise WebhookStoreError(f"the webhooks store cannot be written: {error}") from error

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout=5000")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
                self.path.chmod(0o600)  # the secrets are in it
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _forget(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def data_version(self) -> int:
        """Changes when another connection commits: the cheap "anything new?"."""
        with self._lock:
            try:
                row = self._open().execute("PRAGMA data_version").fetchone()
            except (sqlite3.Error, OSError) as error:
                self._forget()
                raise WebhookStoreError(f"the webhooks store cannot be read: {error}") from error
        return int(row[0])

    # -- endpoints ---------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT {_ENDPOINT} FROM endpoints ORDER BY id").fetchall()
        return [Endpoint.from_row(row) for row in rows]

    def endpoint(self, endpoint_id: int) -> Endpoint | None:
        with self._transaction(write=False) as db:
            return _endpoint_in(db, endpoint_id)

    def add_endpoint(
        self,
        url: str,
        events: Iterable[str],
        scope: str,
        scope_value: str,
        secret: str,
        *,
        description: str = "",
        owner: str = "",
        now: float | None = None,
    ) -> Endpoint:
        created = time.time() if now is None else now
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO endpoints (url, events, scope, scope_value, secret, description, "
                "owner, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (url, ",".join(events), scope, scope_value, secret, description, owner, created),
            )
            endpoint = _endpoint_in(db, cursor.lastrowid)
        assert endpoint is not None  # written in this transaction
        return endpoint

    def edit_endpoint(self, endpoint_id: int, **changes: Any) -> Endpoint | None:
        """Sets the named columns (url, events, scope, scope_value, description, enabled,
        secret with old_secret and old_secret_until); enabling clears the breaker."""
        allowed = {
            "url", "events", "scope", "scope_value", "description", "enabled", "secret",
            "old_secret", "old_secret_until",
        }  # fmt: skip
        assert set(changes) <= allowed, set(changes) - allowed
        if "events" in changes:
            changes["events"] = ",".join(changes["events"])
        if changes.get("enabled"):
            changes.update(disabled_reason="", failures=0, paused_until=0, pauses=0)
        with self._transaction() as db:
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                db.execute(
                    f"UPDATE endpoints SET {assignments} WHERE id = ?",
                    (*changes.values(), endpoint_id),
                )
            return _endpoint_in(db, endpoint_id)

    def delete_endpoint(self, endpoint_id: int) -> bool:
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,)).rowcount
            db.execute("DELETE FROM deliveries WHERE endpoint = ?", (endpoint_id,))
            db.execute("DELETE FROM attempts WHERE endpoint = ?", (endpoint_id,))
        return deleted > 0

    def note_breaker(
        self, endpoint_id: int, failures: int, paused_until: float, pauses: int
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE endpoints SET failures = ?, paused_until = ?, pauses = ? WHERE id = ?",
                (failures, paused_until, pauses, endpoint_id),
            )

    # -- the outbound queue ------------------------------------------------------------------

    def enqueue(self, deliveries: Sequence[NewDelivery], *, due: float | None = None) -> None:
        """Each delivery, due at once (or at `due`), in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO deliveries (endpoint, event_id, event, queue_id, body, created, due) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item.endpoint,
                        item.event_id,
                        item.event,
                        item.queue_id,
                        item.body,
                        item.created,
                        item.created if due is None else due,
                    )
                    for item in deliveries
                ],
            )

    def due(
        self, endpoint_id: int, now: float, limit: int
    ) -> tuple[Endpoint | None, list[Delivery]]:
        """The endpoint as it is now (a secret rotated a moment ago signs this batch) and up
        to `limit` of its due deliveries, oldest due first; nothing while it is disabled or
        gone."""
        with self._transaction(write=False) as db:
            endpoint = _endpoint_in(db, endpoint_id)
            if endpoint is None or not endpoint.enabled:
                return endpoint, []
            rows = db.execute(
                f"SELECT {_DELIVERY} FROM deliveries INDEXED BY deliveries_pending "
                "WHERE endpoint = ? AND state = 'pending' AND due <= ? ORDER BY due, id LIMIT ?",
                (endpoint_id, now, limit),
            ).fetchall()
        return endpoint, [Delivery(*row) for row in rows]

    def settle(self, settlements: Sequence[Settlement]) -> None:
        """What became of each attempt, in one transaction."""
        done = [item.delivery.id for item in settlements if item.outcome == "done"]
        with self._transaction() as db:
            for start in range(0, len(done), 500):
                part = done[start : start + 500]
                db.execute(
                    f"DELETE FROM deliveries WHERE id IN ({','.join('?' * len(part))})", part
                )
            for item in settlements:
                delivery = item.delivery
                result = f"{item.status} {item.reply}" if item.status else item.reply
                if item.outcome == "done":
                    continue
                if item.outcome == "retry":
                    db.execute(
                        "UPDATE deliveries SET attempts = attempts + 1, due = ?, "
                        "last_at = ?, last_result = ? WHERE id = ?",
                        (item.due, item.at, result[:300], delivery.id),
                    )
                else:
                    db.execute(
                        "UPDATE deliveries SET attempts = attempts + 1, "
                        "state = 'dead', last_at = ?, last_result = ? WHERE id = ?",
                        (item.at, result[:300], delivery.id),
                    )
                if item.outcome == "disabled":
                    db.execute(
                        "UPDATE endpoints SET enabled = 0, disabled_reason = ? WHERE id = ?",
                        (f"{item.status} from the receiver at {_when(item.at)}", delivery.endpoint),
                    )
            db.executemany(
                "INSERT INTO attempts (delivery, endpoint, event_id, event, at, status, reply, "
                "milliseconds, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item.delivery.id,
                        item.delivery.endpoint,
                        item.delivery.event_id,
                        item.delivery.event,
                        item.at,
                        item.status,
                        item.reply[:1000],
                        item.milliseconds,
                        item.outcome,
                    )
                    for item in settlements
                ],
            )

    def hurry(self, endpoint_id: int, now: float) -> None:
        """The endpoint answers again: its waiting deliveries are due now."""
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET due = ? "
                "WHERE endpoint = ? AND state = 'pending' AND due > ?",
                (now, endpoint_id, now),
            )

    def redeliver(self, endpoint_id: int, delivery_ids: Sequence[int], now: float) -> int:
        """Dead deliveries (these, or all of the endpoint's) pending again, due now, with a
        new life."""
        with self._transaction() as db:
            if delivery_ids:
                return sum(
                    db.execute(
                        "UPDATE deliveries SET state = 'pending', due = ?, created = ? "
                        "WHERE id = ? AND endpoint = ? AND state = 'dead'",
                        (now, now, delivery_id, endpoint_id),
                    ).rowcount
                    for delivery_id in delivery_ids
                )
            return db.execute(
                "UPDATE deliveries SET state = 'pending', due = ?, created = ? "
                "WHERE endpoint = ? AND state = 'dead'",
                (now, now, endpoint_id),
            ).rowcount

    def prune(self, now: float, max_age: float) -> int:
        """Deliveries past their life dead (counted), old dead ones and old attempts gone."""
        with self._transaction() as db:
            died = db.execute(
                "UPDATE deliveries SET state = 'dead', last_at = ?, "
                "last_result = 'gave up: ' || last_result "
                "WHERE state = 'pending' AND created < ?",
                (now, now - max_age),
            ).rowcount
            db.execute(
                "DELETE FROM deliveries WHERE state = 'dead' AND last_at < ?",
                (now - DEAD_KEPT_SECONDS,),
            )
            for (endpoint_id,) in db.execute("SELECT id FROM endpoints").fetchall():
                db.execute(
                    "DELETE FROM attempts WHERE endpoint = ? AND id <= (SELECT id FROM attempts "
                    "WHERE endpoint = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (endpoint_id, endpoint_id, ATTEMPTS_KEPT),
                )
            db.execute("DELETE FROM attempts WHERE endpoint NOT IN (SELECT id FROM endpoints)")
        return died

    # -- what the API shows ------------------------------------------------------------------

    def counts(self) -> dict[int, dict[str, int]]:
        """Per endpoint: pending and dead deliveries."""
        found: dict[int, dict[str, int]] = {}
        with self._transaction(write=False) as db:
            for endpoint_id, state, count in db.execute(
                "SELECT endpoint, state, count(*) FROM deliveries GROUP BY 1, 2"
            ):
                found.setdefault(endpoint_id, {"pending": 0, "dead": 0})[state] = count
        return found

    def listed(self, wanted: Callable[[Endpoint], bool], now: float) -> list[dict[str, Any]]:
        """The endpoints `wanted` keeps, as the API lists them: each with its `pending` and
        `dead` counts. None while there is no store yet."""
        if not self.exists():
            return []
        counts = self.counts()
        rows = []
        for endpoint in self.endpoints():
            if wanted(endpoint):
                row = endpoint.to_document(now)
                row.update(counts.get(endpoint.id, {"pending": 0, "dead": 0}))
                rows.append(row)
        return rows

    def attempts(
        self,
        endpoint_id: int | None,
        page: int = 1,
        per_page: int = 50,
        *,
        event_id: str = "",
        failed_only: bool = False,
    ) -> tuple[list[Attempt], int]:
        """Attempts newest first, and how many there are."""
        where, arguments = ["1"], list[object]()
        if endpoint_id is not None:
            where.append("endpoint = ?")
            arguments.append(endpoint_id)
        if event_id:
            where.append("event_id = ?")
            arguments.append(event_id)
        if failed_only:
            where.append("outcome != 'done'")
        condition = " AND ".join(where)
        with self._transaction(write=False) as db:
            total = db.execute(f"SELECT count(*) FROM attempts WHERE {condition}", arguments)
            count = int(total.fetchone()[0])
            rows = db.execute(
                f"SELECT id, delivery, endpoint, event_id, event, at, status, reply, "
                f"milliseconds, outcome FROM attempts WHERE {condition} "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                [*arguments, per_page, (page - 1) * per_page],
            ).fetchall()
        return [Attempt(*row) for row in rows], count

    def queued(
        self, endpoint_id: int, state: str, page: int = 1, per_page: int = 50
    ) -> tuple[list[QueuedDelivery], int]:
        with self._transaction(write=False) as db:
            count = db.execute(
                "SELECT count(*) FROM deliveries WHERE endpoint = ? AND state = ?",
                (endpoint_id, state),
            ).fetchone()[0]
            rows = db.execute(
                "SELECT id, endpoint, event_id, event, queue_id, created, due, attempts, state, "
                "last_at, last_result FROM deliveries WHERE endpoint = ? AND state = ? "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (endpoint_id, state, per_page, (page - 1) * per_page),
            ).fetchall()
        return [QueuedDelivery(*row) for row in rows], int(count)


def _endpoint_in(db: sqlite3.Connection, endpoint_id: int | None) -> Endpoint | None:
    row = db.execute(f"SELECT {_ENDPOINT} FROM endpoints WHERE id = ?", (endpoint_id,)).fetchone()
    return Endpoint.from_row(row) if row else None


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
