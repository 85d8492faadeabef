"""`sendworx sendmail`: the sendmail-compatible injection command (`-t -f -F -i/-oi`).

Reads a message on stdin, completes missing headers, queues it durably, exits with sysexits.
"""

from __future__ import annotations

import email.utils
import os
import pwd
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from sendworx.shared.addresses import check_domain, has_control_characters
from sendworx.shared.admission import ask
from sendworx.shared.queue import Queue, QueueWriteError
from sendworx.shared.queue_format import Envelope, Origin, new_message_id
from sendworx.shared.settings import MailNames

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77

# Options real sendmail accepts that change nothing here; they must not be mistaken for
# recipients (-bm deliver mail, -od* delivery mode, -oe* error mode, -v verbose, ...).
_IGNORED_FLAGS = re.compile(r"^-(bm|od.|oe.|oem|oee|om|v|U|n|Am|Ac|B\S*|N\S*|R\S*|X\S*|L\S*)$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>\s]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BCC_HEADER = re.compile(rb"(?im)^bcc:.*(?:\r?\n[ \t].*)*\r?\n")
MAX_ADDRESS_LENGTH = 320


class UsageError(Exception):
    pass


@dataclass
class Invocation:
    sender: str | None = None
    full_name: str | None = None
    read_recipients: bool = False
    dot_ends_input: bool = True
    recipients: list[str] = field(default_factory=list)


def parse_arguments(arguments: Sequence[str]) -> Invocation:
    invocation = Invocation()
    iterator = iter(arguments)
    only_recipients = False
    for argument in iterator:
        if only_recipients or not argument.startswith("-") or argument == "-":
            invocation.recipients.append(argument)
        elif argument == "--":
            only_recipients = True
        elif argument in ("-t",):
            invocation.read_recipients = True
        elif argument in ("-i", "-oi"):
            invocation.dot_ends_input = False
        elif argument.startswith(("-f", "-r")):
            invocation.sender = argument[2:] or next(iterator, None)
            if invocation.sender is None:
                raise UsageError(f"{argument} needs an address")
        elif argument.startswith("-F"):
            invocation.full_name = argument[2:] or next(iterator, None)
            if invocation.full_name is None:
                raise UsageError("-F needs a name")
        elif (argument.startswith("-o") and len(argument) > 2) or _IGNORED_FLAGS.match(argument):
            continue
        else:
            raise UsageError(f"unsupported option {argument}")
    return invocation


def clean_address(address: str, default_domain: str) -> str:
    """Strip `<>`, refuse control characters, qualify a bare user name like qmail-inject."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if not address or len(address) > MAX_ADDRESS_LENGTH or _UNSAFE.search(address):
        raise ValueError(f"bad address {address[:80]!r}")
    if "@" not in address:
        address = f"{address}@{default_domain}"
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise ValueError(f"bad address {address[:80]!r}")
    check_domain(domain)  # AddressError, a ValueError: what the engine could not route
    return address


def read_message(stream: BinaryIO, dot_ends_input: bool) -> bytes:
    if not dot_ends_input:
        return stream.read()
    lines = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def split_message(content: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(content)
    if match is None:
        # Either all headers or no headers at all; a first line without a colon is body.
        first = content.split(b"\n", 1)[0]
        if b":" in first and not first.startswith((b" ", b"\t")):
            return content.rstrip(b"\r\n") + b"\n", b""
        return b"", content
    return content[: match.start()] + b"\n", content[match.end() :]


def header_recipients(headers: bytes) -> list[str]:
    parsed = BytesHeaderParser(policy=compat32).parsebytes(headers + b"\n")
    fields: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        fields.extend(str(value) for value in parsed.get_all(name, []))
    return [address for _, address in email.utils.getaddresses(fields) if address]


def complete_headers(
    headers: bytes,
    *,
    sender: str,
    full_name: str | None,
    message_id: str,
    host: str,
    now: float,
) -> bytes:
    """Drop Bcc and add Date, Message-ID and From where missing, as Postfix's cleanup does."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(headers + b"\n")
    added = []
    if parsed.get("Date") is None:
        added.append(f"Date: {email.utils.formatdate(now, localtime=True)}")
    if parsed.get("Message-ID") is None:
        added.append(f"Message-ID: <{message_id}@{host}>")
    if parsed.get("From") is None:
        added.append(f"From: {email.utils.formataddr((full_name or '', sender))}")
    cleaned = _BCC_HEADER.sub(b"", headers)
    return cleaned + "".join(f"{line}\n" for line in added).encode("utf-8")


def account_name(uid: int) -> str | None:
    """The account's name from the password database (never from $USER, which it sets)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class Refused(Exception):
    """The message is not queued: the sysexits status and why, for the caller's stderr."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def compose(
    invocation: Invocation,
    content: bytes,
    *,
    uid: int,
    names: MailNames,
    now: float,
    message_id: str,
) -> tuple[Envelope, bytes]:
    """The envelope of what `uid` handed in, and the message as it is queued (headers
    completed, Bcc dropped, our Received: on top). Bare user names get `@default_domain`;
    added headers name `me`. The account comes from `uid`, the kernel's word for who called:
    never from the caller's environment or arguments."""
    host = names.default_domain
    account = account_name(uid)
    headers, body = split_message(content)
    try:
        sender = (
            ""
            if invocation.sender in ("", "<>")
            else clean_address(invocation.sender or account or f"uid{uid}", host)
        )
        candidates = list(invocation.recipients)
        if invocation.read_recipients:
            candidates += header_recipients(headers)
        recipients = list(dict.fromkeys(clean_address(r, host) for r in candidates))
    except ValueError as error:
        raise Refused(EX_DATAERR, str(error)) from error
    if not recipients:
        raise Refused(EX_USAGE, "no recipients")
    if invocation.full_name is not None and has_control_characters(invocation.full_name):
        # A newline in -F would start a header line of the caller's choosing.
        raise Refused(EX_DATAERR, "-F name contains control characters")
    final_headers = complete_headers(
        headers,
        sender=sender or names.bounce_sender,
        full_name=invocation.full_name,
        message_id=message_id,
        host=names.me,
        now=now,
    )
    # As Postfix's pickup: the uid that ran sendmail, which the account cannot forge.
    received = (
        f"Received: by {names.me} (sendworx, from userid {uid})\n"
        f"\tid {message_id}; {email.utils.formatdate(now)}\n"
    )
    origin = Origin("sendmail", uid=uid, account=account)
    envelope = Envelope(sender, tuple(recipients), now, origin=origin)
    return envelope, received.encode() + final_headers + b"\n" + body


def run(
    arguments: Sequence[str],
    queue: Queue,
    names: MailNames,
    stdin: BinaryIO | None = None,
    admission: Path | None = None,
) -> int:
    """`sendworx sendmail` writing the queue itself (its owner, or root). `admission` is
    where a running engine says whether the sender is over a `reject` limit."""
    try:
        invocation = parse_arguments(arguments)
    except UsageError as error:
        print(f"sendmail: {error}", file=sys.stderr)
        return EX_USAGE
    content = read_message(stdin or sys.stdin.buffer, invocation.dot_ends_input)
    now, message_id = time.time(), new_message_id()
    try:
        envelope, message = compose(
            invocation, content, uid=os.getuid(), names=names, now=now, message_id=message_id
        )
    except Refused as refused:
        print(f"sendmail: {refused.text}", file=sys.stderr)
        return refused.status
    if admission is not None and envelope.sender:
        account = envelope.origin.account if envelope.origin is not None else None
        refusal = ask(admission, envelope.sender, account, len(envelope.recipients))
        if refusal is not None:
            print(f"sendmail: {refusal.text()}; not queued", file=sys.stderr)
            return EX_TEMPFAIL if refusal.code == 451 else EX_NOPERM
    try:
        queue.inject(envelope, message, message_id)
    except QueueWriteError as error:
        print(f"sendmail: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    return EX_OK
