"""The suppression list shared by every node of a cluster, in the sending policy's Redis
(`redis_url` in policy.toml): what a node learns stops every node from trying a dead
address, and an operator's change on any node applies everywhere within a second. The same
questions as the SQLite store (suppression.py) answers, so the engine and the API use
either; the list lives in one hash, its strikes in one sorted set per address:

    sendworx:suppression                 address -> [since, until, reason, detail, added_by]
    sendworx:suppression:generation      grows with every change
    sendworx:suppression:strikes:ADDR    the hard bounces within the window (expires)

Searches and the export read the whole hash (a list of dead addresses is thousands, not
millions, of entries). Redis unreachable is a SuppressionError: the engine keeps the list
it has and mail goes on; the API says why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError

from sendworx.shared.suppression import (
    MAX_PER_PAGE,
    Suppression,
    SuppressionError,
    csv_of,
    matches,
)

LIST_KEY = "sendworx:suppression"
GENERATION_KEY = "sendworx:suppression:generation"
STRIKES_PREFIX = "sendworx:suppression:strikes:"
TIMEOUT_SECONDS = 2.0

# A hard bounce: counted in the window; the `strikes`th suppresses (and the strikes go).
_STRIKE = """
local key, at, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', at - window)
redis.call('ZADD', key, at, ARGV[3])
redis.call('EXPIRE', key, math.ceil(window) + 60)
local count = redis.call('ZCARD', key)
if count < tonumber(ARGV[4]) then return {count, 0} end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
redis.call('DEL', key)
return {count, first}
"""


class RedisSuppressionStore:
    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._clock = clock
        self._redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        self._strike = self._redis.register_script(_STRIKE)

    def _entries(self) -> dict[str, Suppression]:
        raw: dict[bytes, bytes] = self._ask(lambda: self._redis.hgetall(LIST_KEY))
        entries = {}
        for address, value in raw.items():
            try:
                since, until, reason, detail, added_by = json.loads(value)
                name = address.decode()
                entries[name] = Suppression(
                    name, float(since), float(until), str(reason), str(detail), str(added_by)
                )
            except (ValueError, TypeError, UnicodeDecodeError):
                continue  # not one of ours: skipped, never fatal
        return entries

    def _ask(self, question: Callable[[], Any]) -> Any:
        try:
            return question()
        except RedisError as error:
            raise SuppressionError(f"the shared suppression list ({self.url}): {error}") from error

    def _put(self, *entries: Suppression) -> None:
        pipe = self._redis.pipeline()
        for entry in entries:
            value = json.dumps(
                [entry.since, entry.until, entry.reason, entry.detail, entry.added_by],
                ensure_ascii=False,
            )
            pipe.hset(LIST_KEY, entry.address, value)
            pipe.delete(STRIKES_PREFIX + entry.address)
        pipe.incr(GENERATION_KEY)
        self._ask(pipe.execute)

    # -- what the engine asks ----------------------------------------------------------------

    def generation(self) -> int:
        value = self._ask(lambda: self._redis.get(GENERATION_KEY))
        return int(value) if value else 0

    def in_force(self, now: float) -> tuple[dict[str, Suppression], set[str]]:
        """The entries in force; strikes are not listed (they expire by themselves)."""
        return {a: e for a, e in self._entries().items() if e.until > now}, set()

    def strike(
        self, address: str, at: float, reply: str, *, strikes: int, window: float, days: float
    ) -> Suppression | None:
        member = f"{at:.6f}:{reply[:200]}"
        arguments: list[str | float] = [at, window, member, strikes]
        count, first = self._ask(
            lambda: self._strike(keys=[STRIKES_PREFIX + address], args=arguments)
        )
        if not first:
            return None
        day = time.strftime("%Y-%m-%d", time.gmtime(float(first)))
        detail = f"{int(count)} hard bounces since {day}, the last: {reply}"
        entry = Suppression(address, at, at + days * 86400, "hard_bounces", detail, "engine")
        self._put(entry)
        return entry

    def add(self, *entries: Suppression) -> None:
        self._put(*entries)

    def remove(self, addresses: list[str]) -> list[str]:
        pipe = self._redis.pipeline()
        for address in addresses:
            pipe.hdel(LIST_KEY, address)
            pipe.delete(STRIKES_PREFIX + address)
        pipe.incr(GENERATION_KEY)
        answers = self._ask(pipe.execute)
        return [address for address, gone in zip(addresses, answers[0:-1:2], strict=True) if gone]

    def prune(self, now: float, window: float) -> int:
        ended = [a for a, e in self._entries().items() if e.until <= now]
        if ended:
            pipe = self._redis.pipeline()
            pipe.hdel(LIST_KEY, *ended)
            pipe.incr(GENERATION_KEY)
            self._ask(pipe.execute)
        return len(ended)

    # -- what operators ask ------------------------------------------------------------------

    def search(
        self, text: str, reason: str, now: float, page: int = 1, per_page: int = 50
    ) -> tuple[list[Suppression], int]:
        found = [
            entry
            for entry in self._entries().values()
            if entry.until > now and matches(entry, text, reason)
        ]
        found.sort(key=lambda entry: (-entry.since, entry.address))
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        start = (max(page, 1) - 1) * per_page
        return found[start : start + per_page], len(found)

    def export_csv(self, now: float) -> str:
        entries = sorted(
            (e for e in self._entries().values() if e.until > now), key=lambda e: e.address
        )
        return csv_of(entries)
