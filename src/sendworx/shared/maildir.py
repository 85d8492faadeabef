"""Local mailboxes: mail for this host itself (postmaster, root, a bounce to a local sender)
is delivered to a Maildir per local user under the instance, `<home>/mailboxes/<user>/`,
never dropped. `sendworx mailbox` reads them.

The Maildir format (D. J. Bernstein's, as qmail-local writes it): a message is written and
fsynced in `tmp/` under a unique name, then renamed into `new/` and `new/` fsynced; a reader
lists `new/` and `cur/`. `Return-Path:` and `Delivered-To:` are prepended, as qmail-local
does. Which mailbox a name delivers to is the aliases file's to say (`aliases.py`).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from sendworx.shared.durable import fsync_directory, write_synced

_MAILBOX = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_counter = itertools.count()


class NoMailbox(ValueError):
    """A local part that cannot name a mailbox (the message bounces: 5.1.1)."""


def mailbox_for(local_part: str) -> str:
    """The mailbox a (local, already expanded) name delivers to: lower case, checked."""
    name = local_part.lower()
    if not _MAILBOX.match(name) or ".." in name:
        raise NoMailbox(f"no mailbox here by that name ({local_part[:64]!r})")
    return name


def deliver(mailboxes: Path, mailbox: str, sender: str, recipient: str, content: bytes) -> str:
    """Write one message durably into `mailbox`'s Maildir; its file name."""
    maildir = mailboxes / mailbox
    for folder in ("tmp", "new", "cur"):
        (maildir / folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    seconds, micros = int(now), int((now % 1) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    unique = f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{host}"
    trace = f"Return-Path: <{sender}>\nDelivered-To: {recipient}\n".encode()
    temporary = maildir / "tmp" / unique
    try:
        write_synced(temporary, trace + content)
        os.replace(temporary, maildir / "new" / unique)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(maildir / "new")
    return unique


@dataclass(frozen=True)
class StoredMessage:
    name: str  # the file's unique name: the message's id in `sendworx mailbox`
    path: Path
    received: float
    sender: str
    subject: str
    size: int
    seen: bool  # in cur/ (a mail client read it)


def messages(mailboxes: Path, mailbox: str) -> list[StoredMessage]:
    """The messages of `mailbox`, oldest first ([] for a mailbox nothing was delivered to)."""
    found = []
    for folder in ("new", "cur"):
        directory = mailboxes / mailbox / folder
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            path = directory / name
            try:
                with path.open("rb") as handle:
                    head = handle.read(64 * 1024)
                    size = os.fstat(handle.fileno()).st_size
                    received = os.fstat(handle.fileno()).st_mtime
            except FileNotFoundError:
                continue  # moved by a reader meanwhile
            header_end = head.find(b"\n\n")
            headers = BytesHeaderParser(policy=compat32).parsebytes(
                head[: header_end if header_end != -1 else len(head)]
            )
            found.append(
                StoredMessage(
                    name.split(":", 1)[0],
                    path,
                    received,
                    str(headers.get("Return-Path", "")).strip("<>"),
                    str(headers.get("Subject", "")),
                    size,
                    folder == "cur",
                )
            )
    return sorted(found, key=lambda message: (message.received, message.name))


def mailbox_names(mailboxes: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in mailboxes.iterdir() if (entry / "new").is_dir())
    except FileNotFoundError:
        return []
