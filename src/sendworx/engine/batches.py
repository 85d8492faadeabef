"""What the engine's store writers share (the delivery history, webhooks' outbox): items kept
in memory by the event loop, handed in batches to a thread of their own every
`flush_seconds` (sooner past `soon` items), so that no disk write is ever on the delivery
path. At most `most` items wait; beyond, new ones are dropped and counted. A stop hands over
what is pending first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import Counter

Item = TypeVar("Item")


class Batches(Generic[Item]):
    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], None],
        *,
        flush_seconds: float,
        soon: int,
        most: int,
        dropped: Counter,
        before: Callable[[], None] = lambda: None,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        """`write(batch)` runs in the thread, after `before()` at every turn (even with nothing
        to write); `after()` once the last batch is written."""
        self._write = write
        self._before = before
        self._after = after
        self._flush_seconds = flush_seconds
        self._soon = soon
        self._most = most
        self._dropped = dropped
        self._pending: list[Item] = []
        self._lock = threading.Lock()  # the loop appends, the thread takes
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, item: Item) -> None:
        """On the event loop: the item in memory, nothing more."""
        with self._lock:
            if len(self._pending) >= self._most:
                self._dropped.inc()
                return
            self._pending.append(item)
            soon = len(self._pending) >= self._soon
        if soon:
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop (the engine stops)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stopping
            self._before()
            with self._lock:
                batch, self._pending = self._pending, []
            self._write(batch)
            if stopping:
                break
        self._after()
