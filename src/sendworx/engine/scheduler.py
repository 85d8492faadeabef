"""Who gets the next connection slot: the destination with mail waiting and the fewest
sessions, round-robin among equals (max-min fairness, as Postfix's qmgr hands out deliveries
round-robin across destinations).

`Waiting` is the list of destinations that could use one more session right now: they have
mail nobody has taken, hold fewer sessions than their caps allow and their pacing lets them
connect. It is bucketed by session count so that picking is cheap with thousands of them.
`should_yield` is the other half: a session between two messages gives its slot up when a
waiting destination has no session at all, or at least two fewer than its own; balanced
destinations never churn connections.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Waiting(Generic[T]):
    def __init__(self) -> None:
        self._buckets: dict[int, dict[T, None]] = {}  # session count -> lanes, oldest first
        self._where: dict[T, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, lane: object) -> bool:
        return lane in self._where

    def add(self, lane: T, sessions: int) -> None:
        """`lane` wants a session and holds `sessions`; joins the back of its bucket (a lane
        already waiting with the same count keeps its place)."""
        if self._where.get(lane) == sessions:
            return
        self.discard(lane)
        self._where[lane] = sessions
        self._buckets.setdefault(sessions, {})[lane] = None

    def discard(self, lane: T) -> None:
        sessions = self._where.pop(lane, None)
        if sessions is None:
            return
        bucket = self._buckets[sessions]
        del bucket[lane]
        if not bucket:
            del self._buckets[sessions]

    def fewest(self) -> int | None:
        """The fewest sessions any waiting lane holds, or None when none waits."""
        return min(self._buckets) if self._buckets else None

    def pop(self) -> T | None:
        """The lane to serve next: fewest sessions, longest waiting among those."""
        fewest = self.fewest()
        if fewest is None:
            return None
        lane = next(iter(self._buckets[fewest]))
        self.discard(lane)
        return lane


def should_yield(own_sessions: int, fewest_waiting: int | None) -> bool:
    """Whether a session of a destination holding `own_sessions` (itself included) hands its
    slot over between two messages, given the fewest sessions of any destination waiting."""
    if fewest_waiting is None:
        return False
    return fewest_waiting == 0 or fewest_waiting < own_sessions - 1
