"""The engine's side of the suppression list (shared/suppression.py): which recipients not
to attempt, and what delivery teaches the list.

The entries in force are kept in memory, so asking about a recipient costs a dictionary
lookup on the event loop. A task (`run`) wakes every second: in a worker thread it writes
what the announcements since gathered, prunes, and reloads the list when its generation
moved (an operator's change through the API or the CLI takes effect within a second).

What suppresses an address (Postal's rule, every number in `[suppression]`):
- a hard bounce (a failure of class `invalid_recipient` or `bad_domain`) for the
  `hard_bounces`th time within `window_hours`;
- a failure after the whole retry life (4.4.7) whose last error was the recipient's side
  (mailbox full, inactive, policy...), never ours: connection, TLS, routing and rate limits
  (`OUR_SIDE`) don't count.
A delivery to an address takes it off the list, with its strikes. When the list cannot be
written (disk, damage, Redis gone), mail flows on with the list as last read: what was
learnt meanwhile is lost, and said in the log. With the sending policy's `redis_url`, the
list is the cluster's, in Redis (shared/suppression_redis.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sendworx.engine.events import Fate, FateEvent
from sendworx.engine.metrics import EngineMetrics
from sendworx.shared.bounce_classes import OUR_SIDE, Classifier
from sendworx.shared.config import SuppressionConfig
from sendworx.shared.suppression import Suppression, SuppressionError, SuppressionList

log = logging.getLogger("sendworx.engine")
HARD = frozenset({"invalid_recipient", "bad_domain"})
SUPPRESSED_HOLD = "suppressed"  # the `held_by` of mail held for a suppressed recipient
EVERY_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0
COMPLAIN_EVERY_SECONDS = 60.0
MAX_PENDING = 10_000
EXPIRED_PREFIX = "last error: "


def suppressed_reply(entry: Suppression) -> str:
    """What the DSN and the history say of a recipient not attempted."""
    since = time.strftime("%Y-%m-%d", time.gmtime(entry.since))
    until = time.strftime("%Y-%m-%d", time.gmtime(entry.until))
    why = {
        "hard_bounces": "hard bounces",
        "expired": "delivery failed for its whole retry life",
        "operator": "the mail administrator's decision",
    }.get(entry.reason, entry.reason)
    reply = f"5.1.1 <{entry.address}>: recipient suppressed after {why} on {since} (until {until})"
    return f"{reply}: {entry.detail}" if entry.detail else reply


class Suppressions:
    def __init__(
        self,
        store: Callable[[], SuppressionList],
        config: SuppressionConfig,
        classifier: Classifier,
        metrics: EngineMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.holds = config.mode == "hold"
        self._config = config
        self._classifier = classifier
        self._metrics = metrics
        self._clock = clock
        self._entries: dict[str, Suppression] = {}
        self._struck: set[str] = set()
        self._pending: list[FateEvent] = []
        self._generation: tuple[int, int] = (0, -1)
        self._next_prune = 0.0
        self._next_complaint = 0.0
        metrics.suppression_list.set_function(lambda: len(self._entries))

    def check(self, address: str, now: float) -> Suppression | None:
        """The entry in force for `address`, if any (on the event loop: memory only)."""
        entry = self._entries.get(address.lower())
        return entry if entry is not None and entry.until > now else None

    def listen(self, event: FateEvent) -> None:
        """A failure to learn from, or a delivery that takes an address off (event loop)."""
        if event.recipient is None or len(self._pending) >= MAX_PENDING:
            return
        address = event.recipient.lower()
        if event.fate is Fate.FAILED or (
            event.fate is Fate.DELIVERED and (address in self._entries or address in self._struck)
        ):
            self._pending.append(event)

    async def run(self) -> None:
        """Every second: write what was learnt, then reload what changed (until cancelled)."""
        while True:
            await self.flush()
            await asyncio.sleep(EVERY_SECONDS)

    async def flush(self) -> None:
        """Write what was learnt (the engine stops: nothing is left behind)."""
        learnt, self._pending = self._pending, []
        await asyncio.to_thread(self._update, learnt, self._clock())

    def load(self) -> None:
        """The list as it is now (the engine's start: before the first message is taken)."""
        self._update([], self._clock())

    def _update(self, learnt: list[FateEvent], now: float) -> None:
        """In a worker thread."""
        store = self._store()
        try:
            for event in learnt:
                self._learn(store, event)
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_EVERY_SECONDS
                store.prune(now, self._config.window_hours * 3600)
            generation = (id(store), store.generation())  # another list: read afresh
            if generation != self._generation:
                self._entries, self._struck = store.in_force(now)
                self._generation = generation
        except SuppressionError as error:
            if now >= self._next_complaint:
                self._next_complaint = now + COMPLAIN_EVERY_SECONDS
                log.error("suppression list not updated (mail goes on): %s", error)

    def _learn(self, store: SuppressionList, event: FateEvent) -> None:
        address = (event.recipient or "").lower()
        config = self._config
        if event.fate is Fate.DELIVERED:
            if store.remove([address]):
                log.info("%s delivered: off the suppression list", address)
            return
        bounce_class = self._classifier.classify(event.status, event.reply)
        if bounce_class in HARD and not event.status.startswith("4"):
            entry = store.strike(
                address,
                event.at,
                event.reply,
                strikes=config.hard_bounces,
                window=config.window_hours * 3600,
                days=config.days,
            )
        elif bounce_class == "expired" and self._recipients_fault(event.reply):
            entry = Suppression(
                address, event.at, event.at + config.days * 86400, "expired", event.reply, "engine"
            )
            store.add(entry)
        else:
            return
        if entry is not None:
            self._metrics.suppressions_added.labels(reason=entry.reason).inc()
            log.info("%s suppressed until %s: %s", address, time.ctime(entry.until), entry.detail)

    def _recipients_fault(self, reply: str) -> bool:
        """Whether an expiry's last error was the recipient's side, not ours."""
        last = reply.partition(EXPIRED_PREFIX)[2]
        return bool(last) and self._classifier.classify("", last) not in OUR_SIDE
