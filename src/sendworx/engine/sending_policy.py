"""The sending policy as the engine applies it, apart from the queue files: who a message
counts against, its limits' counters (here or in Redis), its breakers and the holds in
force. The queue manager asks and acts on the files; this module decides and remembers.

- Limits: a `defer` limit is counted when a message is first started (`admit`); a `reject`
  limit when an injector asks before queueing (`admit_injection`), never twice.
- Breakers count a message once, at its birth, and every attempt's results (in Redis when
  shared, so a sender injecting on several nodes meets one threshold); a trip makes a
  `Hold`, recorded in `holds.json` (and Redis) before any mail is held (`record`).
- Bounces (the null sender) and the server's own postmaster are never limited nor held.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.breaker import Breakers
from sendworx.engine.events import Fate, FateEvent
from sendworx.engine.limits import SendingLimits
from sendworx.engine.metrics import EngineMetrics
from sendworx.shared.holds import Hold, hold_id_for, read_holds, write_holds
from sendworx.shared.instance import Instance
from sendworx.shared.policy import (
    BreakerRule,
    Identity,
    LimitRule,
    Policy,
    SenderScope,
    load_policy,
)
from sendworx.shared.queue_format import Envelope, MessageKind
from sendworx.shared.settings import MailNames

if TYPE_CHECKING:
    from sendworx.engine.shared_state import SharedState

log = logging.getLogger("sendworx.engine")
Found = tuple[LimitRule, str]  # a limit and the key its counters go by
Watched = tuple[BreakerRule, str]  # a breaker and the key its counters go by


class SendingPolicy:
    def __init__(
        self,
        instance: Instance,
        names: Callable[[], MailNames],
        metrics: EngineMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.instance = instance
        self._names = names
        self._metrics = metrics
        self._clock = clock
        self.rules: Policy = load_policy(instance.policy_path)
        self.limits = SendingLimits()
        self.breakers = Breakers()
        self.holds = read_holds(instance.holds_path)  # by hold id
        self.shared: SharedState | None = None  # Redis, with redis_url (`share`)
        self._counted: set[str] = set()  # never-tried messages the breakers have counted
        self._limit_logged: dict[tuple[str, str], float] = {}  # until when it was said

    def reload(self) -> None:
        """Reread the file (ConfigError: the policy in force stays)."""
        self.rules = load_policy(self.instance.policy_path)

    @property
    def shared_url(self) -> str | None:
        return self.shared.url if self.shared is not None else None

    def share(self, url: str | None) -> SharedState | None:
        """Use Redis at `url` from now on (None: alone); the one replaced, to be closed."""
        old = self.shared
        self.shared = None
        if url is not None:
            # redis-py loads only for a policy that names a Redis (60 ms of every start).
            from sendworx.engine.shared_state import SharedState

            self.shared = SharedState(url, self.limits, self.breakers)
        return old

    # -- who counts ------------------------------------------------------------------------

    def limitable(self, envelope: Envelope) -> bool:
        return envelope.kind is MessageKind.NORMAL and self.limitable_sender(envelope.sender)

    def limitable_sender(self, sender: str) -> bool:
        if not sender:
            return False
        if sender[:11].lower() != "postmaster@":
            return True
        names = self._names()
        domain = sender[11:].lower()
        return domain not in (names.me.lower(), names.default_domain.lower())

    # -- limits ----------------------------------------------------------------------------

    def deferring_limit(self, envelope: Envelope) -> Found | None:
        """The `defer` limit a message never tried counts against, if any."""
        if not self.rules.limit:
            return None
        found = self.rules.limit_for(Identity.of(envelope)) if self.limitable(envelope) else None
        return None if found is None or found[0].action == "reject" else found

    def admit_here(self, found: Found, recipients: int, now: float) -> float:
        """0 when it may go now (counted); else when it may. This engine's counters."""
        return self.limits.admit(found[0], found[1], recipients, now)

    async def admit(self, found: Found, recipients: int, now: float) -> float:
        """As `admit_here`, in Redis when shared (local counters while it does not answer)."""
        if self.shared is None:
            return self.admit_here(found, recipients, now)
        return await self.shared.admit(found[0], found[1], recipients, now)

    def waits(self, found: Found, free_at: float) -> None:
        """Count and say (once per sender and window) that mail waits for a limit."""
        rule, key = found
        now = self._clock()
        self._metrics.limited.labels(rule.name).inc()
        if self._limit_logged.get((rule.name, key), 0.0) < now:
            self._limit_logged[(rule.name, key)] = free_at
            log.info(
                "limit %s reached for %s %s: its mail waits until %s",
                rule.name,
                rule.scope,
                json.dumps(key),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(free_at)),
            )

    async def admit_injection(self, uid: int, request: dict[str, Any]) -> dict[str, object]:
        """An injector asks whether a message may be queued (`shared/admission.py`): refused
        when its sender is over a `reject` limit; counted when it is let through. The account
        is the caller's own unless the caller is this instance's owner (smtpd) or root."""
        sender = str(request.get("sender") or "").lower()
        recipients = request.get("recipients")
        if not isinstance(recipients, int) or isinstance(recipients, bool) or recipients < 1:
            return {"error": "recipients: a positive integer"}
        if uid in (0, os.getuid()):
            account = request.get("account")
            account = account if isinstance(account, str) else None
        else:
            account = _account_of(uid)
        identity = Identity(sender, account, sender.rpartition("@")[2] or None)
        found = self.rules.limit_for(identity) if self.limitable_sender(sender) else None
        if found is None or found[0].action != "reject":
            return {}
        free_at = await self.admit(found, recipients, self._clock())
        if not free_at:
            return {}
        rule, key = found
        self._metrics.limited.labels(rule.name).inc()
        log.info("limit %s refused a message from %s %s", rule.name, rule.scope, json.dumps(key))
        return {"rule": rule.name, "code": rule.reject_code, "until": free_at}

    # -- breakers and holds ----------------------------------------------------------------

    def hold_for(self, envelope: Envelope) -> str | None:
        if not self.holds or not self.limitable(envelope):
            return None
        return hold_id_for(Identity.of(envelope), self.holds)

    def breaker_watching(self, message_id: str, envelope: Envelope) -> Watched | None:
        """The breaker that counts a message never tried, once (None: none, or counted)."""
        if not self.rules.breaker or message_id in self._counted or not self.limitable(envelope):
            return None
        self._counted.add(message_id)
        return self.rules.breaker_for(Identity.of(envelope))

    def count_message_here(self, watched: Watched, envelope: Envelope) -> str | None:
        """The message counted by this engine's breaker: why it trips, if it does."""
        rule, key = watched
        now = self._clock()
        return self.breakers.count_message(rule, key, envelope.recipients, envelope.birth, now)

    async def count_message(
        self, watched: Watched, message_id: str, envelope: Envelope
    ) -> str | None:
        """As `count_message_here`, in Redis when shared (here while it does not answer)."""
        if self.shared is None:
            return self.count_message_here(watched, envelope)
        rule, key = watched
        return await self.shared.count_message(
            rule, key, message_id, envelope.recipients, envelope.birth, self._clock()
        )

    def trip(self, watched: Watched, reason: str) -> Hold:
        """The hold a breaker's trip puts its sender on."""
        rule, key = watched
        return self._trip(rule.scope, key, rule.name, reason)

    async def count_results(
        self, envelope: Envelope, results: Sequence[RecipientResult]
    ) -> Hold | None:
        """An attempt's results, counted by its sender's breaker (in Redis when shared): the
        hold it trips."""
        if not self.rules.breaker or not self.limitable(envelope):
            return None
        if self.hold_for(envelope) is not None:
            return None
        found = self.rules.breaker_for(Identity.of(envelope))
        if found is None:
            return None
        rule, key = found
        delivered = sum(result.outcome is Outcome.DELIVERED for result in results)
        failed = len(results) - delivered
        now = self._clock()
        if self.shared is None:
            reason = self.breakers.count_results(rule, key, delivered, failed, now)
        else:
            reason = await self.shared.count_results(rule, key, delivered, failed, now)
        if reason is None or self.hold_for(envelope) is not None:
            return None
        return self._trip(rule.scope, key, rule.name, reason)

    def _trip(self, scope: SenderScope, key: str, rule: str, reason: str) -> Hold:
        hold = Hold(scope, key, rule, reason, self._clock())
        self.holds[hold.hold_id] = hold
        self._metrics.breaker_trips.labels(rule).inc()
        return hold

    def notify_address(self, hold: Hold) -> str | None:
        """Where the breaker that made `hold` sends its notice, if anywhere."""
        rule = next((rule for rule in self.rules.breaker if rule.name == hold.rule), None)
        return rule.notify if rule is not None else None

    def add(self, hold: Hold) -> bool:
        """An operator's (or another node's) hold; False when the sender is held already."""
        if hold.hold_id in self.holds:
            return False
        self.holds[hold.hold_id] = hold
        return True

    async def record(self, hold: Hold, publish: bool = True) -> None:
        """Write the holds in force (before any mail is held), and tell the other nodes."""
        await asyncio.to_thread(write_holds, self.instance.holds_path, self.holds.values())
        if self.shared is not None and publish:
            await self.shared.publish_hold(hold)
        log.warning(
            "sender on hold: %s %s (rule %s: %s); its mail is kept, not attempted, until "
            "an operator releases it",
            hold.scope,
            json.dumps(hold.key),
            hold.rule,
            hold.reason,
        )

    async def end(self, hold_id: str) -> Hold | None:
        """The hold leaves the file (and Redis) and its breaker counts afresh."""
        hold = self.holds.pop(hold_id, None)
        if hold is not None:
            await asyncio.to_thread(write_holds, self.instance.holds_path, self.holds.values())
            self.breakers.forget(hold.rule, hold.key)
            if self.shared is not None:
                await self.shared.forget_hold(hold_id)
                await self.shared.forget_breaker(hold.rule, hold.key)
        return hold

    async def holds_of_other_nodes(self) -> list[Hold]:
        """Holds recorded in Redis by other engines, now ours too (not yet recorded here)."""
        if self.shared is None:
            return []
        adopted = [hold for hold in await self.shared.holds() if self.add(hold)]
        for hold in adopted:
            log.info("hold on %s recorded by another node adopted", hold.hold_id)
        return adopted

    def forget_message(self, message_id: str) -> None:
        self._counted.discard(message_id)

    def on_fate(self, event: FateEvent) -> None:
        """A listener of the engine's events (`events.py`): a deleted message is forgotten."""
        if event.fate is Fate.DELETED:
            self.forget_message(event.message_id)

    def forget_spent(self) -> None:
        now = self._clock()
        self.limits.forget_idle(now)
        self.breakers.forget_idle(
            now, {rule.name: rule.window_minutes for rule in self.rules.breaker}
        )
        for key in [key for key, until in self._limit_logged.items() if until < now]:
            del self._limit_logged[key]


def _account_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
