"""Group commit for an injector serving many clients at once (the SMTP listener).

One thread owns the queue writes: whatever arrived while it was syncing becomes the next
batch. A client still gets its 250 only after its own message is durable.
"""

from __future__ import annotations

import asyncio
import queue as thread_queue
import threading

from sendworx.shared.queue import Queue, QueueWriteError
from sendworx.shared.queue_format import Envelope

_Pending = tuple[str, tuple[Envelope, bytes], asyncio.Future[None]]


class GroupCommitter:
    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._loop = asyncio.get_running_loop()
        self._inbox: thread_queue.SimpleQueue[_Pending | None] = thread_queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="queue-committer", daemon=True)
        self._thread.start()

    async def inject(self, envelope: Envelope, content: bytes, message_id: str) -> None:
        """Return once the message is durable; raise QueueWriteError if it could not be."""
        done: asyncio.Future[None] = self._loop.create_future()
        # Encoded (and DKIM-signed) in the committer's thread: OpenSSL signs without the
        # GIL, so the event loop keeps serving meanwhile.
        self._inbox.put((message_id, (envelope, content), done))
        await done

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    item = self._inbox.get_nowait()
                except thread_queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            outcomes = self._queue.inject_batch(
                [(message_id, self._queue.encode(*message)) for message_id, message, _ in batch]
            )
            self._loop.call_soon_threadsafe(_settle, [future for _, _, future in batch], outcomes)
            if stop:
                return


def _settle(futures: list[asyncio.Future[None]], outcomes: list[QueueWriteError | None]) -> None:
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue  # the client hung up while we were syncing
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
