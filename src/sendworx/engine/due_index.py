"""Which queued messages are due: an in-memory index of next-attempt times.

Pure bookkeeping (a heap with lazy deletion); the engine supplies the clock.
"""

from __future__ import annotations

import heapq


class DueIndex:
    def __init__(self) -> None:
        self._due_at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._active: set[str] = set()

    def __len__(self) -> int:
        return len(self._due_at)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._due_at

    @property
    def active_count(self) -> int:
        return len(self._active)

    def schedule(self, message_id: str, at: float) -> None:
        """Add a message or move it; an active message waits until it is released."""
        self._due_at[message_id] = at
        self._active.discard(message_id)
        heapq.heappush(self._heap, (at, message_id))

    def forget(self, message_id: str) -> None:
        self._due_at.pop(message_id, None)
        self._active.discard(message_id)

    def take_due(self, now: float, limit: int) -> list[str]:
        """Mark up to `limit` due messages active and return them, earliest first."""
        taken: list[str] = []
        while self._heap and len(taken) < limit:
            at, message_id = self._heap[0]
            if at > now:
                break
            heapq.heappop(self._heap)
            if self._due_at.get(message_id) != at or message_id in self._active:
                continue  # stale heap entry
            self._active.add(message_id)
            taken.append(message_id)
        return taken

    def next_due_at(self) -> float | None:
        while self._heap:
            at, message_id = self._heap[0]
            if self._due_at.get(message_id) == at and message_id not in self._active:
                return at
            heapq.heappop(self._heap)
        return None

    def waiting_ids(self) -> list[str]:
        """The messages queued and not being delivered now."""
        return [message_id for message_id in self._due_at if message_id not in self._active]

    def make_all_due(self, now: float) -> int:
        """SIGALRM / `queue retry`: everything waiting becomes due now."""
        waiting = self.waiting_ids()
        for message_id in waiting:
            self.schedule(message_id, now)
        return len(waiting)
