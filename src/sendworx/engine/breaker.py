"""The circuit breaker's counters: what each watched sender sent in the breaker's window
(messages, distinct recipients) and how its recipients fared (delivered against deferred or
bounced). `count_message` and `count_results` answer why the breaker trips, or None.

Pure: the queue manager passes the time in (`when`, wall-clock seconds). A message counts at
its birth, so the queue read again after a restart adds only what is still inside the window.
`messages_reason` and `results_reason` judge counts wherever they were kept: here, or in
Redis for every engine of a cluster (`shared_state.py`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sendworx.shared.policy import BreakerRule


@dataclass(eq=False, slots=True)
class _Watch:
    messages: deque[float] = field(default_factory=deque)
    recipients: OrderedDict[str, float] = field(default_factory=OrderedDict)  # last seen
    results: deque[tuple[float, int, int]] = field(default_factory=deque)  # when, ok, failed
    ok: int = 0
    failed: int = 0

    def prune(self, since: float) -> None:
        while self.messages and self.messages[0] <= since:
            self.messages.popleft()
        while self.recipients:
            recipient, seen = next(iter(self.recipients.items()))
            if seen > since:
                break
            del self.recipients[recipient]
        while self.results and self.results[0][0] <= since:
            _, ok, failed = self.results.popleft()
            self.ok -= ok
            self.failed -= failed

    def empty(self) -> bool:
        return not (self.messages or self.recipients or self.results)


class Breakers:
    def __init__(self) -> None:
        self._watches: dict[tuple[str, str], _Watch] = {}

    def _watch(self, rule: BreakerRule, key: str, now: float) -> _Watch:
        watch = self._watches.setdefault((rule.name, key), _Watch())
        watch.prune(now - rule.window_minutes * 60)
        return watch

    def count_message(
        self, rule: BreakerRule, key: str, recipients: tuple[str, ...], when: float, now: float
    ) -> str | None:
        """A message handed in at `when`; why the breaker trips, if it does."""
        since = now - rule.window_minutes * 60
        if when <= since:
            return None  # older than the window (read again after a restart)
        watch = self._watch(rule, key, now)
        watch.messages.append(when)  # births arrive nearly in order; prune tolerates the rest
        for recipient in map(str.lower, recipients):
            watch.recipients[recipient] = max(when, watch.recipients.get(recipient, when))
            watch.recipients.move_to_end(recipient)
        return messages_reason(rule, len(watch.messages), len(watch.recipients))

    def count_results(
        self, rule: BreakerRule, key: str, delivered: int, failed: int, now: float
    ) -> str | None:
        """Recipients delivered and deferred or bounced by one attempt; why it trips, if so."""
        if not rule.failure_share or not (delivered or failed):
            return None
        watch = self._watch(rule, key, now)
        watch.results.append((now, delivered, failed))
        watch.ok += delivered
        watch.failed += failed
        return results_reason(rule, watch.ok, watch.failed)

    def forget(self, rule_name: str, key: str) -> None:
        """Start counting afresh (after a hold is released)."""
        self._watches.pop((rule_name, key), None)

    def forget_idle(self, now: float, windows: dict[str, float]) -> None:
        """Drop the watches with nothing left in their window (`windows`: rule -> minutes;
        a rule no longer in the policy loses its watches)."""
        for (name, key), watch in list(self._watches.items()):
            minutes = windows.get(name)
            if minutes is not None:
                watch.prune(now - minutes * 60)
            if minutes is None or watch.empty():
                del self._watches[(name, key)]


def messages_reason(rule: BreakerRule, messages: int, recipients: int) -> str | None:
    """Why a sender with these counts in the window trips `rule`, or None."""
    window = _minutes(rule.window_minutes)
    if rule.messages and messages > rule.messages:
        return f"more than {rule.messages} messages in {window}"
    if rule.recipients and recipients > rule.recipients:
        return f"more than {rule.recipients} distinct recipients in {window}"
    return None


def results_reason(rule: BreakerRule, delivered: int, failed: int) -> str | None:
    """Why recipients delivered and failed in the window trip `rule`, or None."""
    total = delivered + failed
    if total and total >= rule.min_attempts and failed / total >= rule.failure_share:
        return (
            f"{failed} of {total} recipients deferred or bounced in "
            f"{_minutes(rule.window_minutes)} (the limit is {rule.failure_share:.0%})"
        )
    return None


def _minutes(minutes: float) -> str:
    return f"{minutes:g} minute" + ("" if minutes == 1 else "s")
