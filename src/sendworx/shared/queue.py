"""The durable on-disk queue: one file per message, qmail-style, crash-safe at every step.

Injectors write `tmp/` -> fsync -> rename into `new/` -> fsync `new/`, then wake the engine.
The engine moves `new/` into `mess/`; `state/` holds the progress of deferred messages.

The file of a message the engine has finished with goes to `spare/` (while there are few
spares and it is small) instead of being deleted, and the next injection writes over it: the
filesystem then neither frees an inode and its block per delivery nor allocates new ones per
injection. On a journaled ext4 that is less work per message; without a journal (where each
new inode is looked for past every inode freed in the last half minute) and with online discard
(where an unlink waits for the device) it was most of the cost of a steady flow of mail
(docs/benchmarks.md has both).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from sendworx.shared.durable import (
    atomic_write,
    fsync_directory,
    overwrite_unsynced,
    write_all_synced,
    write_unsynced,
)
from sendworx.shared.queue_format import (
    MAGIC,
    DeliveryState,
    Envelope,
    decode_message,
    encode_message,
    header_notes,
    is_message_id,
    message_content,
    new_message_id,
)
from sendworx.shared.unix_sockets import send_datagram

# A stale temp file older than this was left by an injector that died mid-write.
STALE_TEMP_SECONDS = 3600
# `spare/` keeps at most this many files of at most this size (old mail the next injections
# write over; a larger file is deleted, so spares never hold more than 64 MB).
SPARE_LIMIT = 1024
SPARE_MAX_BYTES = 64 * 1024
# A full `spare/` is counted again at most this often (injectors take from it meanwhile).
SPARE_RECOUNT_SECONDS = 1.0


class QueueWriteError(OSError):
    """The queue could not durably store a message (disk full, I/O error, permissions)."""


def _write_error(error: OSError) -> QueueWriteError:
    return QueueWriteError(error.errno, f"cannot queue message: {error.strerror or error}")


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _check_id(message_id: str) -> None:
    """Refuse what is not a message id before it is joined to a directory (`../x`)."""
    if not is_message_id(message_id):
        raise ValueError(f"not a message id: {message_id!r}")


class Queue:
    """The queue directory of one instance; every method is safe to call from any process."""

    def __init__(
        self,
        path: Path,
        trigger: Path | None = None,
        signer: Callable[[Envelope, bytes], tuple[Envelope, bytes]] | None = None,
    ) -> None:
        """`trigger` is the socket a running engine listens on for wake-ups (None: the
        queue wakes nobody, and the engine finds new mail at its periodic rescan).
        `signer` turns what is injected into what is queued (DKIM: `dkim_signer.Signer`)."""
        self.path = path
        self.signer = signer
        self.tmp_dir = path / "tmp"
        self.new_dir = path / "new"
        self.messages_dir = path / "mess"
        self.state_dir = path / "state"
        self.corrupt_dir = path / "corrupt"
        self.spare_dir = path / "spare"
        self.trigger = trigger
        self.spare_limit = SPARE_LIMIT
        self._spare_names: list[str] = []  # an injector's view of `spare/`, taken one by one
        self._spares_kept = SPARE_LIMIT  # the engine's count of `spare/`: counted when full
        self._spares_counted_at = -SPARE_RECOUNT_SECONDS

    def ensure(self) -> Queue:
        for directory in (
            self.tmp_dir,
            self.new_dir,
            self.messages_dir,
            self.state_dir,
            self.corrupt_dir,
            self.spare_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    # -- injection -------------------------------------------------------------------------

    def inject(self, envelope: Envelope, content: bytes, message_id: str | None = None) -> str:
        """Store one message durably and wake the engine; return its id.

        When this returns, the message survives kill -9 and power loss. On failure
        QueueWriteError is raised and nothing half-written stays behind.
        """
        message_id = message_id or new_message_id()
        [outcome] = self.inject_batch([(message_id, self.encode(envelope, content))])
        if outcome is not None:
            raise outcome
        return message_id

    def encode(self, envelope: Envelope, content: bytes) -> bytes:
        """A message as its queue file holds it: signed (when a signer says so) once, here,
        at the door; never again on a retry."""
        if self.signer is not None:
            envelope, content = self.signer(envelope, content)
        message_id, subject = header_notes(content)
        envelope = replace(
            envelope, size=len(content), message_id_header=message_id, subject=subject
        )
        return encode_message(envelope, content)

    def inject_batch(self, items: list[tuple[str, bytes]]) -> list[QueueWriteError | None]:
        """Store several encoded messages with one directory fsync (group commit).

        All files are written before the first fsync, so one journal commit carries every
        new inode; then each file's data is synced, all are renamed into `new/`, and `new/`
        is synced once. Returns, per item, None (durable) or the error that refused it.
        """
        outcomes: list[QueueWriteError | None] = [None] * len(items)
        written: list[tuple[int, int, Path]] = []
        for index, (message_id, data) in enumerate(items):
            temporary = self.tmp_dir / message_id
            try:
                fd = self._write_over_spare(temporary, data)
                if fd is None:
                    fd = write_unsynced(temporary, data)
                written.append((index, fd, temporary))
            except OSError as error:
                outcomes[index] = _write_error(error)
                _discard(temporary)
        renamed = []
        for index, fd, temporary in written:
            try:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temporary, self.new_dir / temporary.name)
                renamed.append(index)
            except OSError as error:
                outcomes[index] = _write_error(error)
                _discard(temporary)
        if renamed:
            try:
                fsync_directory(self.new_dir)
            except OSError as error:
                # Not durable: take the files back so an error reply never hides a delivery.
                for index in renamed:
                    outcomes[index] = _write_error(error)
                    _discard(self.new_dir / items[index][0])
            self.wake_engine()
        return outcomes

    def _write_over_spare(self, temporary: Path, data: bytes) -> int | None:
        """Move a spare file to `temporary` and write `data` over it; return its fd to fsync,
        or None when there is no spare to take (the caller creates the file)."""
        while True:
            if not self._spare_names:
                try:
                    self._spare_names = os.listdir(self.spare_dir)
                except FileNotFoundError:
                    return None
                if not self._spare_names:
                    return None
            name = self._spare_names.pop()
            try:
                os.rename(f"{self.spare_dir}/{name}", temporary)
            except FileNotFoundError:
                continue  # another injector took it first
            try:
                return overwrite_unsynced(temporary, data)
            except OSError:
                # Not ours to write (`sendmail` run by another account), or amiss in another
                # way: drop it and create a file, whose own failure is the one that counts.
                _discard(temporary)
                return None

    def wake_engine(self) -> None:
        """Tell a running engine to look at `new/`; harmless and silent when none runs."""
        if self.trigger is not None:
            send_datagram(b"!", self.trigger)

    # -- engine side -----------------------------------------------------------------------

    def claim_new(self) -> list[str]:
        """Move freshly injected messages into `mess/` and return their ids, oldest first."""
        claimed = []
        new, messages = f"{self.new_dir}/", f"{self.messages_dir}/"  # text: no Path per file
        for name in sorted(os.listdir(self.new_dir)):
            if not is_message_id(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.rename(new + name, messages + name)
                claimed.append(name)
        return claimed

    def message_ids(self) -> list[str]:
        return sorted(name for name in os.listdir(self.messages_dir) if is_message_id(name))

    def pending_new_ids(self) -> list[str]:
        return sorted(name for name in os.listdir(self.new_dir) if is_message_id(name))

    def state_ids(self) -> Iterator[str]:
        return (name for name in os.listdir(self.state_dir) if is_message_id(name))

    def message_path(self, message_id: str) -> Path:
        _check_id(message_id)
        return self.messages_dir / message_id

    def _claimed_and_new(self, message_id: str) -> tuple[str, str]:
        """Where a message is once claimed and before, as text: the engine opens and removes
        every message on this path, and Path objects cost more."""
        _check_id(message_id)
        return f"{self.messages_dir}/{message_id}", f"{self.new_dir}/{message_id}"

    def open_message(self, message_id: str) -> BinaryIO:
        """Open a queued message wherever it is: claimed (`mess/`) or not yet (`new/`)."""
        claimed, new = self._claimed_and_new(message_id)
        try:
            return open(claimed, "rb")
        except FileNotFoundError:
            return open(new, "rb")

    def read(self, message_id: str) -> tuple[Envelope, bytes]:
        return decode_message(self.read_file(message_id))

    def read_file(self, message_id: str) -> bytes:
        """The message's file as it was while queued. Once the engine has retired a message,
        an injection may write over its file (`retire`): a reader that opened it just before
        gets FileNotFoundError, as for a message deleted, never another message's text."""
        with self.open_message(message_id) as handle:
            data = handle.read()
            inode = os.fstat(handle.fileno()).st_ino
        for path in self._claimed_and_new(message_id):  # claimed meanwhile: the same inode
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == inode:
                    return data
        raise FileNotFoundError(errno.ENOENT, "no longer queued", message_id)

    def read_content(self, message_id: str) -> bytes:
        """The message without its envelope, for a reader that has the envelope already
        (the engine, sending a message it started with `read_envelope`; it retires messages
        itself, so what it reads is never written over meanwhile: see `read_file`)."""
        with self.open_message(message_id) as handle:
            return message_content(handle.read())

    def read_envelope(self, message_id: str) -> Envelope:
        with self.open_message(message_id) as handle:
            head = handle.read(len(MAGIC))
            line = handle.readline()
        envelope, _ = decode_message(head + line)
        return envelope

    def message_size(self, message_id: str) -> int:
        with self.open_message(message_id) as handle:
            return os.fstat(handle.fileno()).st_size

    def read_state(self, message_id: str) -> DeliveryState | None:
        try:
            return DeliveryState.from_json((self.state_dir / message_id).read_bytes())
        except FileNotFoundError:
            return None

    def read_schedule(self, message_id: str) -> tuple[float, bool] | None:
        """When the message is due and whether it is held (None: no state file); plain
        system calls, as the engine reads this for every queued message at start."""
        try:
            fd = os.open(f"{self.state_dir}/{message_id}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, 65536)
            if len(data) == 65536:  # a long history: the rest (a short read is the end)
                while chunk := os.read(fd, 65536):
                    data += chunk
        finally:
            os.close(fd)
        return DeliveryState.schedule_from_json(data)

    def write_state(self, message_id: str, state: DeliveryState) -> None:
        atomic_write(self.state_dir / message_id, state.to_json(), mode=0o600)

    def remove(self, message_id: str, *, has_state: bool = True) -> bool:
        """Forget a finished (or deleted) message; True if it was still there. A message is
        in `mess/` or in `new/`, never both (claiming is a rename); `has_state=False` (the
        caller knows none was written) saves looking for a state file."""
        claimed, new = self._claimed_and_new(message_id)
        removed = True
        try:
            os.unlink(claimed)
        except FileNotFoundError:
            try:
                os.unlink(new)
            except FileNotFoundError:
                removed = False
        if has_state:
            self._remove_state(message_id)
        return removed

    def retire(self, message_id: str, *, has_state: bool = True) -> None:
        """Forget a message the engine has finished with, keeping its file in `spare/` for an
        injection to write over while there is room and it is small (see the module's note).
        An operator's delete goes through `delete`, which deletes for good."""
        if not self._keep_as_spare(message_id):
            self.remove(message_id, has_state=has_state)
        elif has_state:
            self._remove_state(message_id)

    def _keep_as_spare(self, message_id: str) -> bool:
        claimed, _ = self._claimed_and_new(message_id)
        if not self._spare_room():
            return False
        try:
            if os.stat(claimed).st_size > SPARE_MAX_BYTES:
                return False
            os.rename(claimed, f"{self.spare_dir}/{message_id}")
        except FileNotFoundError:
            return False  # not claimed yet (in `new/`), or gone: `remove` finds out
        self._spares_kept += 1
        return True

    def _remove_state(self, message_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.state_dir}/{message_id}")

    def _spare_room(self) -> bool:
        if self._spares_kept < self.spare_limit:
            return True
        now = time.monotonic()
        if now - self._spares_counted_at >= SPARE_RECOUNT_SECONDS:
            self._spares_counted_at = now
            with contextlib.suppress(FileNotFoundError):
                self._spares_kept = len(os.listdir(self.spare_dir))
        return self._spares_kept < self.spare_limit

    def exists(self, message_id: str) -> bool:
        """Queued, claimed or not (False for anything that is not a message id)."""
        if not is_message_id(message_id):
            return False
        # `new/` first: claimed between the two looks, a message is then seen in `mess/`;
        # the other way round it could be missed in both.
        return (self.new_dir / message_id).exists() or (self.messages_dir / message_id).exists()

    def edit_states(
        self,
        message_ids: Iterable[str],
        change: Callable[[DeliveryState], DeliveryState],
    ) -> tuple[list[str], list[str]]:
        """Apply `change` to the state of every message that exists (one without a state file
        starts from a fresh one) and write the states that changed as one batch: each file
        written and fsynced, then renamed into `state/`, then `state/` fsynced once. Returns
        the ids changed and the ids that are not in the queue."""
        changed: list[tuple[str, DeliveryState]] = []
        missing: list[str] = []
        for message_id in message_ids:
            if not self.exists(message_id):
                missing.append(message_id)
                continue
            try:
                state = self.read_state(message_id) or DeliveryState()
            except (ValueError, TypeError, KeyError):
                state = DeliveryState()  # unreadable: the engine would start it afresh too
            after = change(state)
            if after != state:
                changed.append((message_id, after))
        staged = [
            (self.state_dir / f".{message_id}.{secrets.token_hex(6)}.tmp", message_id, state)
            for message_id, state in changed
        ]
        # Every new state durable before any is renamed into place (fsyncs made together).
        write_all_synced([(temporary, state.to_json()) for temporary, _, state in staged])
        for temporary, message_id, _ in staged:
            os.replace(temporary, self.state_dir / message_id)
        if staged:
            fsync_directory(self.state_dir)
        return [message_id for message_id, _ in changed], missing

    def delete(self, message_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Remove messages for good, without a bounce. The directories are fsynced before this
        returns, so a power cut cannot bring a deleted message back to be delivered.
        Returns the ids removed and the ids that were not in the queue."""
        removed: list[str] = []
        missing: list[str] = []
        for message_id in message_ids:
            (removed if is_message_id(message_id) and self.remove(message_id) else missing).append(
                message_id
            )
        if removed:
            for directory in (self.messages_dir, self.new_dir, self.state_dir):
                fsync_directory(directory)
        return removed, missing

    def quarantine(self, message_id: str) -> None:
        """Set aside a file the engine cannot parse, for an operator to look at."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.message_path(message_id), self.corrupt_dir / message_id)
        self._remove_state(message_id)

    def remove_stale_temporaries(self, now: float) -> int:
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove_unfinished_state_writes(self) -> int:
        """Temp files in `state/` left by a writer killed mid-batch; only safe while holding
        the queue lock (no writer is at work)."""
        removed = 0
        for entry in os.scandir(self.state_dir):
            if entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove_orphan_states(self, message_ids: Iterable[str]) -> tuple[set[str], int]:
        """Drop state files whose message is gone (the engine died between two unlinks), with
        `message_ids` what `mess/` holds (the caller has just listed it: one listing of each
        directory, no look per message, a million of them at start). Returns the ids of the
        messages that have a state file, and how many orphans went. Only while holding the
        queue lock (nothing else writes `mess/` or `state/`)."""
        claimed = set(message_ids)
        states = set(self.state_ids())
        orphans = states - claimed
        for message_id in orphans:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.state_dir}/{message_id}")
        return states & claimed, len(orphans)
