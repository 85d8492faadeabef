"""Crash-safe file writes: temp file, fsync, rename, fsync of the directory.

Everything that must survive `kill -9` or a power cut goes through here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_unsynced(path: Path, data: bytes, mode: int = 0o600) -> int:
    """Create `path` (not yet visible to readers) with `data`; return the open fd to fsync.

    Callers batch these and fsync afterwards, so one journal commit covers many files.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    _write_all(fd, data)
    return fd


def overwrite_unsynced(path: Path, data: bytes) -> int:
    """Write `data` over the existing file `path` (not visible to readers), cut to its length;
    return the open fd to fsync. Reusing a file spares the filesystem an inode to free and
    another to allocate (see `Queue.retire`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    _write_all(fd, data)
    try:
        os.ftruncate(fd, len(data))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`; close `fd` if that fails."""
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        raise


def write_synced(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` (which must not be visible to readers yet) with `data` and fsync it."""
    fd = write_unsynced(path, data, mode)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix.

    The temp file lives beside the target so the rename stays on one filesystem; it is
    removed again if anything fails, so an error never leaves a half-written file behind.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_synced(temporary, data, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


def replace_together(directory: Path, files: Mapping[str, bytes | None]) -> None:
    """Replace several files of one directory as one change, as far as POSIX allows: every
    new file is written and fsynced before the first rename, so a failure while writing
    changes nothing; then the renames (and removals, for None) follow each other at once,
    and the directory is fsynced once."""
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            if data is not None:
                target = directory / name
                temporary = directory / f".{name}.{secrets.token_hex(6)}.tmp"
                staged.append((temporary, target))
                write_synced(temporary, data, 0o644)
    except BaseException:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    for name, data in files.items():
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
    fsync_directory(directory)


SYNC_WORKERS = 16


def write_all_synced(files: Sequence[tuple[Path, bytes]], mode: int = 0o600) -> None:
    """`write_synced` for many files, the fsyncs made by several threads at once: the
    filesystem commits concurrent fsyncs together (ext4: 2,000 state files in 0.35 s
    instead of 0.88 s here). Returns once every file is durable; if any write fails, those
    written are removed and the error raised."""
    try:
        if len(files) < 2 * SYNC_WORKERS:
            for path, data in files:
                write_synced(path, data, mode)
            return
        with ThreadPoolExecutor(SYNC_WORKERS, thread_name_prefix="fsync") as workers:
            outcomes = [workers.submit(write_synced, path, data, mode) for path, data in files]
        for outcome in outcomes:
            outcome.result()  # the first failure, raised
    except BaseException:
        for path, _ in files:  # fresh names: none of them was there before
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
