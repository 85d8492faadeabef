"""Writes the delivery history (shared/history.py) from the engine's announcements, never in
the way of delivery: the listener only appends a row to memory; a thread of its own writes
what gathered, one transaction a batch, every `history.flush_seconds` (sooner past a
thousand rows), and prunes what is older than `history.retention_days` a slice at a time.

When the store cannot be written (read-only, full disk, damaged, locked), mail flows on: the
batch is dropped and counted (`sendworx_history_dropped_events_total`), one log line a
minute says so, and the store is opened again at the next batch, so it recovers by itself.
At most MAX_PENDING rows wait in memory; beyond, new ones are dropped and counted.

With `history.json_lines_file`, each batch is also appended to that file as lines of JSON
(for log shippers), before the store, whatever becomes of the store.

Durability: a batch is in SQLite's WAL once committed; what was announced in the last
`flush_seconds` before a kill -9 or a power loss is lost (a stop writes it first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from prometheus_client import Counter

from sendworx.engine.batches import Batches
from sendworx.engine.events import Fate, FateEvent
from sendworx.shared.bounce_classes import Classifier
from sendworx.shared.history import HistoryEvent, HistoryWriter

log = logging.getLogger("sendworx.history")
MAX_PENDING = 100_000
BATCH_SOON = 1000  # rows that wake the writer before its interval
PRUNE_EVERY_SECONDS = 60.0
COMPLAIN_EVERY_SECONDS = 60.0
CLASSIFIED = frozenset({"deferred", "failed"})


def history_event(event: FateEvent) -> HistoryEvent:
    """The row of one announcement."""
    envelope = event.envelope
    origin = envelope.origin if envelope is not None else None
    detail = event.detail
    if event.fate is Fate.BOUNCED and event.related:
        detail = f"{event.detail} report {event.related}"
    return HistoryEvent(
        at=event.at,
        event=event.fate.value,
        queue_id=event.message_id,
        message_id_header=envelope.message_id_header if envelope else "",
        sender=envelope.sender.lower() if envelope else "",
        recipient=(event.recipient or "").lower(),
        account=(origin.account or "") if origin else "",
        origin=(origin.peer or origin.via) if origin else "",
        relay=event.relay,
        tls=event.tls,
        status=event.status,
        reply=event.reply,
        attempt=event.attempt,
        size=envelope.size if envelope else 0,
        queued_seconds=max(0.0, event.at - envelope.birth) if envelope else 0.0,
        detail=detail,
    )


def _iso(at: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    return f"{whole}.{int(at % 1 * 1000):03d}Z"


class HistoryRecorder:
    def __init__(
        self,
        path: Path,
        *,
        retention_seconds: float,
        flush_seconds: float,
        dropped: Counter,
        classifier: Classifier,
        classes: Counter,
        json_lines: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.json_lines = json_lines
        self._classifier = classifier
        self._classes = classes
        self._retention = retention_seconds
        self._dropped = dropped
        self._clock = clock
        self._writer: HistoryWriter | None = None
        self._next_prune = 0.0
        self._next_complaint = 0.0
        self._next_json_complaint = 0.0
        self._batches: Batches[HistoryEvent] = Batches(
            "history",
            self._flush,
            flush_seconds=flush_seconds,
            soon=BATCH_SOON,
            most=MAX_PENDING,
            dropped=dropped,
            after=self._forget_writer,
        )

    def start(self) -> None:
        self._batches.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop (the engine stops)."""
        self._batches.close(timeout)

    def listen(self, event: FateEvent) -> None:
        """An announcement (on the event loop): a row in memory, nothing more."""
        self._batches.add(history_event(event))

    def _flush(self, batch: list[HistoryEvent]) -> None:
        batch = [self._classified(event) for event in batch]
        if batch and self.json_lines is not None:
            self._append_json_lines(batch)
        try:
            writer = self._open()
            if batch:
                writer.append(batch)
            now = self._clock()
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_EVERY_SECONDS
                writer.prune(now - self._retention)
        except (sqlite3.Error, OSError) as error:
            self._dropped.inc(len(batch))
            self._forget_writer()
            now = self._clock()
            if now >= self._next_complaint:
                self._next_complaint = now + COMPLAIN_EVERY_SECONDS
                log.error(
                    "delivery history not written (%d events dropped; mail goes on): %s",
                    len(batch),
                    error,
                )

    def _append_json_lines(self, batch: list[HistoryEvent]) -> None:
        """The batch as lines of JSON at the end of the file, opened anew each time, so a
        log rotation that moves it away is followed at once. Failing only logs."""
        assert self.json_lines is not None
        text = "".join(
            json.dumps({"time": _iso(event.at), **event.to_document()}, ensure_ascii=False) + "\n"
            for event in batch
        )
        try:
            with open(self.json_lines, "a", encoding="utf-8") as out:
                out.write(text)
        except OSError as error:
            now = self._clock()
            if now >= self._next_json_complaint:
                self._next_json_complaint = now + COMPLAIN_EVERY_SECONDS
                log.error("history events not written to %s: %s", self.json_lines, error)

    def _classified(self, event: HistoryEvent) -> HistoryEvent:
        """Deferrals and failures with their class (here, off the event loop)."""
        if event.event not in CLASSIFIED:
            return event
        found = self._classifier.classify(event.status, event.reply)
        self._classes.labels(event=event.event, bounce_class=found).inc()
        return replace(event, bounce_class=found)

    def _open(self) -> HistoryWriter:
        if self._writer is None:
            self._writer = HistoryWriter(self.path)
        return self._writer

    def _forget_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None
