"""The suppression list: addresses that mail is not attempted to, for a while, because
they are dead (Postal's rule). Kept in SQLite (WAL) under `<state>/suppression/`; the engine
adds addresses from what delivery taught it (engine/suppression.py) and takes them off when
mail to them is delivered; operators add, remove, search and export through the API, the
CLI and the page. Every change bumps a generation number, which is how the engine learns,
within a second, that someone else changed the list.

An entry says since when and until when, why (`hard_bounces`, `expired`, `operator`), the
reply that decided it (or the operator's note), and who added it. An entry past its `until`
is no longer in force and is pruned. Strikes are the hard bounces seen of an address not
(yet) suppressed: `strikes` within the window suppress it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressed (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    since REAL NOT NULL,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    added_by TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressed_domain ON suppressed (domain);
CREATE INDEX IF NOT EXISTS suppressed_since ON suppressed (since);
CREATE TABLE IF NOT EXISTS strikes (
    address TEXT NOT NULL,
    at REAL NOT NULL,
    reply TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS strikes_address ON strikes (address, at);
CREATE INDEX IF NOT EXISTS strikes_at ON strikes (at);
CREATE TABLE IF NOT EXISTS generation (only INTEGER PRIMARY KEY CHECK (only = 0), value INTEGER);
INSERT OR IGNORE INTO generation VALUES (0, 0);
"""
REASONS = ("hard_bounces", "expired", "operator")
_ENTRY = "address, since, until, reason, detail, added_by"  # a Suppression's fields, in order
MAX_PER_PAGE = 500
MAX_ADDRESS = 254  # RFC 5321's path limit, less its angle brackets
CSV_COLUMNS = ("address", "since", "until", "reason", "detail", "added_by")
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str
    since: float
    until: float
    reason: str
    detail: str = ""
    added_by: str = ""

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


class SuppressionError(Exception):
    """The list cannot be opened, read or written (damaged, locked for too long, read-only)."""


class SuppressionList(Protocol):
    """What the engine and the API ask of the list, kept here or in Redis
    (suppression_redis.py) when the sending policy shares its state across a cluster."""

    def generation(self) -> int: ...

    def in_force(self, now: float) -> tuple[dict[str, Suppression], set[str]]: ...

    def strike(
        self, address: str, at: float, reply: str, *, strikes: int, window: float, days: float
    ) -> Suppression | None: ...

    def add(self, *entries: Suppression) -> None: ...

    def remove(self, addresses: list[str]) -> list[str]: ...

    def prune(self, now: float, window: float) -> int: ...

    def search(
        self, text: str, reason: str, now: float, page: int = 1, per_page: int = 50
    ) -> tuple[list[Suppression], int]: ...

    def export_csv(self, now: float) -> str: ...


class ListChooser:
    """The list in force: in Redis at the policy's `redis_url` when it has one (each URL's
    client kept), else the SQLite file."""

    def __init__(self, path: Path, redis_url: Callable[[], str | None]) -> None:
        self.local = SuppressionStore(path)
        self._redis_url = redis_url
        self._shared: dict[str, SuppressionList] = {}

    def __call__(self) -> SuppressionList:
        url = self._redis_url()
        if not url:
            return self.local
        if url not in self._shared:
            from sendworx.shared.suppression_redis import RedisSuppressionStore

            self._shared[url] = RedisSuppressionStore(url)
        return self._shared[url]


def normal_address(text: str) -> str:
    """An address as the list keeps it (lower case, no angle brackets); ValueError when it is
    not one."""
    address = text.strip().strip("<>").lower()
    if len(address) > MAX_ADDRESS or not _ADDRESS.fullmatch(address):
        raise ValueError("is not an email address (local-part@domain)")
    return address


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SuppressionStore:
    """One connection per call, so the engine's worker thread and the API's threads share
    nothing but the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connection(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            if write:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            elif not self.path.exists():
                with contextlib.closing(sqlite3.connect(":memory:")) as empty:
                    yield empty  # nothing suppressed yet: its questions find no table
                return
            db = sqlite3.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as error:
            raise SuppressionError(f"the suppression list cannot be opened: {error}") from error
        try:
            db.execute("PRAGMA busy_timeout=2000")
            if write:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("UPDATE generation SET value = value + 1")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        except sqlite3.Error as error:
            raise SuppressionError(f"the suppression list cannot be used: {error}") from error
        finally:
            db.close()

    # -- what the engine asks ----------------------------------------------------------------

    def generation(self) -> int:
        """Grows with every change, whoever made it (0: no list yet)."""
        with self._connection(write=False) as db:
            try:
                row = db.execute("SELECT value FROM generation").fetchone()
            except sqlite3.OperationalError:
                return 0  # no list yet
        return int(row[0]) if row else 0

    def in_force(self, now: float) -> tuple[dict[str, Suppression], set[str]]:
        """Every entry in force, by address, and the addresses with strikes since the window
        began (the engine keeps both in memory)."""
        with self._connection(write=False) as db:
            try:
                rows = db.execute(
                    f"SELECT {_ENTRY} FROM suppressed WHERE until > ?",
                    (now,),
                ).fetchall()
                struck = {row[0] for row in db.execute("SELECT DISTINCT address FROM strikes")}
            except sqlite3.OperationalError:
                return {}, set()
        return {row[0]: Suppression(*row) for row in rows}, struck

    def strike(
        self, address: str, at: float, reply: str, *, strikes: int, window: float, days: float
    ) -> Suppression | None:
        """A hard bounce of `address`: the entry made when it is the `strikes`th within
        `window` seconds (its strikes are then forgotten), or None."""
        with self._connection(write=True) as db:
            db.execute("INSERT INTO strikes VALUES (?, ?, ?)", (address, at, reply))
            count, first = db.execute(
                "SELECT count(*), min(at) FROM strikes WHERE address = ? AND at > ?",
                (address, at - window),
            ).fetchone()
            if count < strikes:
                return None
            entry = Suppression(
                address,
                at,
                at + days * 86400,
                "hard_bounces",
                f"{count} hard bounces since {_day(first)}, the last: {reply}",
                "engine",
            )
            self._put(db, entry)
            db.execute("DELETE FROM strikes WHERE address = ?", (address,))
        return entry

    def add(self, *entries: Suppression) -> None:
        """Each in force from its `since` to its `until`, replacing what was there (one
        transaction)."""
        with self._connection(write=True) as db:
            for entry in entries:
                self._put(db, entry)
                db.execute("DELETE FROM strikes WHERE address = ?", (entry.address,))

    @staticmethod
    def _put(db: sqlite3.Connection, entry: Suppression) -> None:
        db.execute(
            "INSERT OR REPLACE INTO suppressed VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.address,
                _domain(entry.address),
                entry.since,
                entry.until,
                entry.reason,
                entry.detail,
                entry.added_by,
            ),
        )

    def remove(self, addresses: list[str]) -> list[str]:
        """Off the list, strikes and all; the addresses that were on it."""
        removed = []
        with self._connection(write=True) as db:
            for address in addresses:
                if db.execute("DELETE FROM suppressed WHERE address = ?", (address,)).rowcount:
                    removed.append(address)
                db.execute("DELETE FROM strikes WHERE address = ?", (address,))
        return removed

    def prune(self, now: float, window: float) -> int:
        """Entries no longer in force and strikes older than the window."""
        with self._connection(write=True) as db:
            gone = db.execute("DELETE FROM suppressed WHERE until <= ?", (now,)).rowcount
            db.execute("DELETE FROM strikes WHERE at <= ?", (now - window,))
        return int(gone)

    # -- what operators ask ------------------------------------------------------------------

    def search(
        self, text: str, reason: str, now: float, page: int = 1, per_page: int = 50
    ) -> tuple[list[Suppression], int]:
        """One page of the entries in force, newest first: `text` is an address, a domain
        (`example.com` or `@example.com`) or a part of an address; and how many match."""
        clauses: list[str] = ["until > ?"]
        values: list[object] = [now]
        needle = text.strip().lower()
        if is_domain_search(needle):
            clauses.append("domain = ?")
            values.append(needle.lstrip("@"))
        elif needle:
            clauses.append("address LIKE ? ESCAPE '\\'")
            values.append(f"%{_escape_like(needle)}%")
        if reason:
            clauses.append("reason = ?")
            values.append(reason)
        where = " AND ".join(clauses)
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        with self._connection(write=False) as db:
            try:
                total = db.execute(f"SELECT count(*) FROM suppressed WHERE {where}", values)
                count = int(total.fetchone()[0])
                rows = db.execute(
                    f"SELECT {_ENTRY} FROM suppressed "
                    f"WHERE {where} ORDER BY since DESC, address LIMIT ? OFFSET ?",
                    [*values, per_page, (max(page, 1) - 1) * per_page],
                ).fetchall()
            except sqlite3.OperationalError:
                return [], 0
        return [Suppression(*row) for row in rows], count

    def export_csv(self, now: float) -> str:
        """Every entry in force, as CSV with a header line (times in UTC, ISO 8601)."""
        with self._connection(write=False) as db:
            try:
                rows = db.execute(
                    f"SELECT {_ENTRY} FROM suppressed WHERE until > ? ORDER BY address",
                    (now,),
                ).fetchall()
            except sqlite3.OperationalError:
                rows = []
        return csv_of(Suppression(*row) for row in rows)


def csv_of(entries: Iterable[Suppression]) -> str:
    """Entries as CSV with a header line (times in UTC, ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            (
                _csv_safe(entry.address),
                _iso(entry.since),
                _iso(entry.until),
                entry.reason,
                _csv_safe(entry.detail),
                entry.added_by,
            )
        )
    return out.getvalue()


def is_domain_search(needle: str) -> bool:
    """`@example.com`, or a name with a dot and no `@`: a domain, matched whole."""
    return needle.startswith("@") or ("@" not in needle and "." in needle and " " not in needle)


def matches(entry: Suppression, text: str, reason: str) -> bool:
    """`search`'s selection, for a list kept elsewhere than in SQLite."""
    needle = text.strip().lower()
    if reason and entry.reason != reason:
        return False
    if is_domain_search(needle):
        return _domain(entry.address) == needle.lstrip("@")
    return needle in entry.address


def _csv_safe(text: str) -> str:
    """No cell a spreadsheet would run as a formula (OWASP's CSV injection advice)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))
