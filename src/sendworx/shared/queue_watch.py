"""Keeps a QueueIndex current in a long-running process (the panel): Linux inotify reports
which queue files changed, and only those messages are read again.

Names are enough: whatever happened to `<id>` (injected, claimed, its state rewritten,
removed), the index rereads that id and finds the truth on disk. A lost event (the kernel's
queue overflowed) means one full rebuild; new routes reroute every pending recipient.

The index catches up before every question too (`catch_up`, on the asking thread), so an
answer sees every change completed before it was asked, not only those a timer has seen.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from inotify_simple import INotify, flags

from sendworx.shared.queue_index import QueueIndex
from sendworx.shared.settings import ROUTES_FILE

log = logging.getLogger("sendworx.queue")
_CHANGES = flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.CLOSE_WRITE | flags.CREATE
# Events arrive in bursts (a bulk hold rewrites thousands of state files): gather them a moment.
SETTLE_SECONDS = 0.05


class QueueWatcher:
    def __init__(self, index: QueueIndex, control_dir: Path) -> None:
        self.index = index
        self._inotify = INotify()
        queue = index.queue
        for directory in (queue.new_dir, queue.messages_dir, queue.state_dir):
            self._inotify.add_watch(directory, _CHANGES)
        self._routes_watch = self._inotify.add_watch(control_dir, _CHANGES)
        self._lock = threading.Lock()  # the loop's timer and the threads answering questions

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
                log.warning("queue watch lost events; rebuilding the queue index")
                self.index.rebuild()
            elif changed:
                self.index.refresh(changed)
            if reroute:
                self.index.reroute()

    def _first_build(self) -> None:
        with self._lock:  # after the watches were added: no change is missed
            self.index.rebuild()

    async def run(self) -> None:
        """Build the index, then follow the changes until cancelled."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = self._inotify.fileno()

        def on_readable() -> None:
            loop.remove_reader(fd)  # until caught up: the fd stays readable until then
            readable.set()

        try:
            # Questions from now on wait for this one build instead of starting their own.
            self.index.follow(self.catch_up)
            await asyncio.to_thread(self._first_build)
            loop.add_reader(fd, on_readable)
            while True:
                await readable.wait()
                readable.clear()
                await asyncio.sleep(SETTLE_SECONDS)
                await asyncio.to_thread(self.catch_up)
                loop.add_reader(fd, on_readable)
        finally:
            self.index.follow(None)
            loop.remove_reader(fd)
            self._inotify.close()
