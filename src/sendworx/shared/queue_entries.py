"""What the queue index keeps of each message, read from its files (which stay the truth):
the envelope (the message file's first line), the size, the delivery state, and a stamp of
the state file as read, by which a later look sees whether it changed since.

Plain system calls throughout: a million of these may be read to build an index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import (
    MAGIC,
    CorruptMessageError,
    DeliveryState,
    Envelope,
    decode_message,
    is_message_id,
)

_HEAD_BYTES = 4096
NO_STATE = ""  # the stamp of a message without a state file


@dataclass(frozen=True, slots=True)
class Entry:
    """One message as the files show it."""

    message_id: str
    location: str  # mess (claimed) or new (not yet)
    envelope: Envelope
    size: int
    state: DeliveryState
    stamp: str  # the state file's, as read (NO_STATE: none)


def stamp_of(status: os.stat_result) -> str:
    """A state file's identity: rewritten, it is a new file (written aside and renamed), so
    its inode, its time (to the nanosecond) or its size differ."""
    return f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"


def read_entry(queue: Queue, message_id: str) -> Entry | None:
    """The message's entry; None when it is gone or unreadable (the engine sets those
    aside)."""
    location = "mess"
    try:
        fd = os.open(f"{queue.messages_dir}/{message_id}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        location = "new"
        try:
            fd = os.open(f"{queue.new_dir}/{message_id}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
    try:
        size = os.fstat(fd).st_size
        head = os.read(fd, _HEAD_BYTES)
        while b"\n" not in head[len(MAGIC) :] and len(head) < size:
            head += os.read(fd, _HEAD_BYTES)  # many recipients: a long envelope line
        envelope, _ = decode_message(head)
        state, stamp = _read_state(f"{queue.state_dir}/{message_id}")
    except (OSError, CorruptMessageError, ValueError, TypeError, KeyError, AttributeError):
        return None
    finally:
        os.close(fd)
    return Entry(message_id, location, envelope, size, state, stamp)


def _read_state(path: str) -> tuple[DeliveryState, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return DeliveryState(), NO_STATE
    try:
        stamp = stamp_of(os.fstat(fd))
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return DeliveryState.from_json(b"".join(chunks)), stamp


def state_stamps(queue: Queue) -> Iterator[tuple[str, str]]:
    """(id, stamp) of every state file now, streamed (a million need not be held at once)."""
    for entry in os.scandir(queue.state_dir):
        if is_message_id(entry.name):
            try:
                yield entry.name, stamp_of(entry.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue


def message_locations(queue: Queue) -> Iterator[tuple[str, str]]:
    """(id, location) of every queued message now, streamed. `new/` first: a message claimed
    meanwhile (renamed into `mess/`) is then seen once or twice, never missed."""
    for location, directory in (("new", queue.new_dir), ("mess", queue.messages_dir)):
        for entry in os.scandir(directory):
            if is_message_id(entry.name):
                yield entry.name, location
