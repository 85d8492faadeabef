"""The SMTP client protocol with no I/O: reply parsing, DATA encoding, and the mail
transaction as a state machine (h11's shape: bytes to send out, replies in, outcomes out).

`smtp_client.py` only moves bytes under timeouts; every decision a transaction takes (what to
pipeline, which reply belongs to which recipient, when to reset, what to do with a 354 and
no accepted recipient, which MAIL parameters to send) is here, where tests call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto

MAX_REPLY_LINE = 2048
MAX_REPLY_LINES = 200
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class ProtocolError(Exception):
    """The remote side sent something that is not SMTP."""


@dataclass(frozen=True, slots=True)
class SMTPReply:
    code: int
    lines: tuple[str, ...]

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    @property
    def enhanced_status(self) -> str:
        """The RFC 3463 code from the reply, or one derived from the basic code."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        if match and match.group(1) == str(self.code)[0]:
            return match.group(0)
        return f"{str(self.code)[0]}.0.0"


class ReplyParser:
    """Turns a byte stream into complete (possibly multi-line) replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None

    @property
    def holds_data(self) -> bool:
        """True if bytes beyond the last complete reply are waiting."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[SMTPReply]:
        self._buffer += data
        replies: list[SMTPReply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end == -1:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return replies
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            reply = self._line(raw)
            if reply is not None:
                replies.append(reply)

    def _line(self, raw: bytes) -> SMTPReply | None:
        if len(raw) < 3 or not raw[:3].isdigit() or (len(raw) > 3 and raw[3:4] not in b" -"):
            raise ProtocolError(f"not an SMTP reply: {raw[:60]!r}")
        code = int(raw[:3])
        if self._code is not None and code != self._code:
            raise ProtocolError("reply code changed inside a multi-line reply")
        self._code = code
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("reply has too many lines")
        if raw[3:4] == b"-":
            return None
        reply = SMTPReply(code, tuple(self._lines))
        self._lines, self._code = [], None
        return reply


def parse_extensions(reply: SMTPReply) -> dict[str, str]:
    """EHLO keywords (upper-case) mapped to their parameters; the first line is the greeting."""
    extensions = {}
    for line in reply.lines[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = parameters
    return extensions


def encode_data(content: bytes) -> bytes:
    """The DATA payload: CRLF line ends (a bare LF or a bare CR, which RFC 5321 forbids a
    client to send, becomes one), no NUL, dot-stuffed, ending with CRLF.CRLF."""
    if b"\0" in content:
        content = content.replace(b"\0", b"")
    if b"\r" not in content:  # LF line ends only (what sendmail queues)
        normalized = content.replace(b"\n", b"\r\n")
    elif content.count(b"\r") == content.count(b"\n") == content.count(b"\r\n"):
        normalized = content  # CRLF throughout (what smtpd queues): counted in C, no regex
    else:
        normalized = _LINE_END.sub(b"\r\n", content)
    # A dot at the start of a line: at the very start, or after a line end.
    stuffed = normalized.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def mail_command(sender: str, parameters: list[str]) -> bytes:
    tail = "".join(f" {parameter}" for parameter in parameters)
    return f"MAIL FROM:<{sender}>{tail}\r\n".encode()


def rcpt_command(recipient: str) -> bytes:
    return f"RCPT TO:<{recipient}>\r\n".encode()


def needs_smtputf8(sender: str, recipients: list[str]) -> bool:
    return not (sender.isascii() and all(recipient.isascii() for recipient in recipients))


def synthetic(code: int, text: str) -> SMTPReply:
    """A reply we make up for a recipient the server was never asked about."""
    return SMTPReply(code, (text,))


RSET = b"RSET\r\n"
DATA = b"DATA\r\n"
ABANDON = b".\r\n"  # ends an empty message nobody will receive


class ResetRefused(ProtocolError):
    """The server refused RSET: the connection's state is unknown and it must not be reused."""

    def __init__(self, reply: SMTPReply) -> None:
        super().__init__(f"refused RSET: {reply}")
        self.reply = reply


class _Awaiting(Enum):
    MAIL = auto()
    RCPT = auto()
    DATA = auto()
    FINAL = auto()  # the reply to the message itself
    ABANDONED = auto()  # the reply to the empty message we ended at once
    RESET = auto()
    NOTHING = auto()  # finished


class Transaction:
    """One mail transaction on an open, greeted connection.

        transaction = Transaction(sender, recipients, content, extensions)
        outgoing = transaction.start()
        while True:
            send(outgoing)                         # may be b""
            if transaction.finished: break
            outgoing = transaction.receive(next_reply())
        transaction.replies                        # {recipient: its final reply}

    Every recipient ends with exactly one reply: the server's refusal of MAIL, of its RCPT or
    of DATA, the reply to the message, or one made up when the message cannot be offered at
    all (SIZE, SMTPUTF8). A transaction that did not end with the message accepted ends with
    RSET, so the connection can carry the next one; a refused RSET raises ResetRefused.
    """

    def __init__(
        self, sender: str, recipients: list[str], content: bytes, extensions: Mapping[str, str]
    ) -> None:
        if not recipients:
            raise ValueError("a transaction needs at least one recipient")
        self.sender = sender
        self.recipients = list(recipients)
        self.content = content
        self.extensions = extensions
        self.pipelining = "PIPELINING" in extensions
        self.replies: dict[str, SMTPReply] = {}
        self._awaiting = _Awaiting.MAIL
        self._mail_reply: SMTPReply | None = None
        self._rcpt_replies: list[SMTPReply] = []
        self._accepted: list[str] = []

    @property
    def finished(self) -> bool:
        return self._awaiting is _Awaiting.NOTHING

    def start(self) -> bytes:
        """The first bytes to send: MAIL, or with PIPELINING MAIL, every RCPT and DATA at
        once. b"" (and finished) when the message cannot be offered to this server at all."""
        refusal = self._refusal()
        if refusal is not None:
            self.replies = dict.fromkeys(self.recipients, refusal)
            self._awaiting = _Awaiting.NOTHING
            return b""
        mail = mail_command(self.sender, self.mail_parameters())
        if self.pipelining:
            return b"".join([mail, *map(rcpt_command, self.recipients), DATA])
        return mail

    def receive(self, reply: SMTPReply) -> bytes:
        """Take the server's next reply; return the bytes to send next (b"" for none yet)."""
        match self._awaiting:
            case _Awaiting.MAIL:
                return self._after_mail(reply)
            case _Awaiting.RCPT:
                return self._after_rcpt(reply)
            case _Awaiting.DATA:
                return self._after_data(reply)
            case _Awaiting.FINAL:
                self.replies.update(dict.fromkeys(self._accepted, reply))
                self._awaiting = _Awaiting.NOTHING
                return b""
            case _Awaiting.ABANDONED:
                return self._reset()
            case _Awaiting.RESET:
                if not reply.is_positive:
                    raise ResetRefused(reply)
                self._awaiting = _Awaiting.NOTHING
                return b""
            case _Awaiting.NOTHING:
                raise ProtocolError(f"a reply after the transaction ended: {reply}")

    def mail_parameters(self) -> list[str]:
        parameters = []
        if "SIZE" in self.extensions:
            parameters.append(f"SIZE={len(self.content)}")
        if not self.content.isascii() and "8BITMIME" in self.extensions:
            parameters.append("BODY=8BITMIME")
        if needs_smtputf8(self.sender, self.recipients):
            parameters.append("SMTPUTF8")
        return parameters

    # -- steps --------------------------------------------------------------------------------

    def _refusal(self) -> SMTPReply | None:
        if needs_smtputf8(self.sender, self.recipients) and "SMTPUTF8" not in self.extensions:
            return synthetic(553, "5.6.7 remote server does not support SMTPUTF8 addresses")
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) > 0 and len(self.content) > int(limit):
            return synthetic(552, f"5.3.4 message size exceeds the remote limit of {limit}")
        return None

    def _after_mail(self, reply: SMTPReply) -> bytes:
        self._mail_reply = reply
        self._awaiting = _Awaiting.RCPT
        if self.pipelining:
            return b""  # the RCPTs and DATA are on their way already
        if not reply.is_positive:
            self.replies = dict.fromkeys(self.recipients, reply)
            return self._reset()
        return rcpt_command(self.recipients[0])

    def _after_rcpt(self, reply: SMTPReply) -> bytes:
        self._rcpt_replies.append(reply)
        done = len(self._rcpt_replies)
        if done < len(self.recipients):
            return b"" if self.pipelining else rcpt_command(self.recipients[done])
        self._awaiting = _Awaiting.DATA
        if self.pipelining:
            return b""
        if not any(rcpt.is_positive for rcpt in self._rcpt_replies):
            self.replies = dict(zip(self.recipients, self._rcpt_replies, strict=True))
            return self._reset()
        return DATA

    def _after_data(self, reply: SMTPReply) -> bytes:
        assert self._mail_reply is not None
        for recipient, rcpt in zip(self.recipients, self._rcpt_replies, strict=True):
            if not self._mail_reply.is_positive:
                self.replies[recipient] = self._mail_reply
            elif rcpt.is_positive:
                self._accepted.append(recipient)
            else:
                self.replies[recipient] = rcpt
        if reply.code == 354 and not self._accepted:
            # A server that says 354 with no valid recipient gets an empty message we abandon.
            self._awaiting = _Awaiting.ABANDONED
            return ABANDON
        if reply.code != 354:
            self.replies.update(dict.fromkeys(self._accepted, reply))
            return self._reset()
        self._awaiting = _Awaiting.FINAL
        data, self.content = encode_data(self.content), b""  # not held while the server decides
        return data

    def _reset(self) -> bytes:
        self._awaiting = _Awaiting.RESET
        return RSET
