"""Keeps a QueueIndex current in a long-running process (the panel): Linux inotify reports
which queue files changed, and only those messages are read again.

Names are enough: whatever happened to `<id>` (injected, claimed, its state rewritten,
removed), the index rereads that id and finds the truth on disk. A lost event (the kernel's
queue overflowed) means one check of the whole index against the files (QueueIndex.check:
seconds for a million), in the background; new routes reroute every pending recipient.

At start the watches are set first, then the index (kept from the last run) is checked in
the background: questions are answered from it meanwhile, and every change from the watches'
start on is applied as reported, so nothing is missed between the two.

The index catches up before every question too (`catch_up`, on the asking thread), so an
answer sees every change completed before it was asked, not only those a timer has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

from sendworx.shared.queue_index import QueueIndex
from sendworx.shared.settings import ROUTES_FILE

log = logging.getLogger("sendworx.queue")
_CHANGES = flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.CLOSE_WRITE | flags.CREATE
# Events arrive in bursts (a bulk hold rewrites thousands of state files): gather them a moment.
SETTLE_SECONDS = 0.05
RETRY_SECONDS = 60.0  # after the index could not be written


class QueueWatcher:
    def __init__(self, index: QueueIndex, control_dir: Path) -> None:
        self.index = index
        self._inotify = INotify()
        queue = index.queue
        for directory in (queue.new_dir, queue.messages_dir, queue.state_dir):
            self._inotify.add_watch(directory, _CHANGES)
        self._routes_watch = self._inotify.add_watch(control_dir, _CHANGES)
        self._lock = threading.Lock()  # the loop's timer and the threads answering questions
        # Events were lost: the whole index is checked (set from any thread that caught up).
        self._recheck: Callable[[], None] = lambda: None

    def catch_up(self) -> None:
        """Apply every change the kernel has reported so far."""
        with self._lock:
            changed: set[str] = set()
            rebuild = reroute = False
            for event in self._inotify.read(timeout=0):
                if event.mask & flags.Q_OVERFLOW:
                    rebuild = True
                elif event.wd == self._routes_watch:
                    reroute = reroute or event.name == ROUTES_FILE
                elif event.name and not event.name.startswith("."):
                    changed.add(event.name)
            if rebuild:
                log.warning("queue watch lost events; checking the whole queue index")
                self._recheck()
            elif changed:
                self.index.refresh(changed)
            if reroute:
                self.index.reroute()

    async def run(self) -> None:
        """Check the index against the files, and follow the changes until cancelled."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = self._inotify.fileno()

        def on_readable() -> None:
            loop.remove_reader(fd)  # until caught up: the fd stays readable until then
            readable.set()

        recheck = asyncio.Event()

        def ask_for_check() -> None:
            loop.call_soon_threadsafe(recheck.set)

        self._recheck = ask_for_check

        async def check_when_asked() -> None:
            while True:  # the first check, then one after each overflow or failed write
                try:
                    await asyncio.to_thread(self.index.check)
                except sqlite3.OperationalError as error:
                    log.error("the queue index cannot be checked (%s); again in a minute", error)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        recheck.wait(), RETRY_SECONDS if self.index.needs_check() else None
                    )
                recheck.clear()

        checks: asyncio.Task[None] | None = None
        try:
            # The watches are set: questions from now on catch up instead of checking it all.
            self.index.follow(self.catch_up)
            checks = asyncio.create_task(check_when_asked())
            loop.add_reader(fd, on_readable)
            while True:
                await readable.wait()
                readable.clear()
                await asyncio.sleep(SETTLE_SECONDS)
                await asyncio.to_thread(self.catch_up)
                if checks.done():
                    checks.result()  # a failed check is not silent
                loop.add_reader(fd, on_readable)
        finally:
            self._recheck = lambda: None
            if checks is not None:
                checks.cancel()
            self.index.stop_checking()  # a long build ends at its next chunk
            self.index.follow(None)
            loop.remove_reader(fd)
            self._inotify.close()
