"""SMTP client protocol pieces with no I/O: reply parsing, command building, DATA encoding.

The delivery connection feeds bytes in and gets `Reply` values out; tests call these directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPLY_LINE = 2048
MAX_REPLY_LINES = 200
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class ProtocolError(Exception):
    """The remote side sent something that is not SMTP."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

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

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
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

    def _line(self, raw: bytes) -> Reply | None:
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
        reply = Reply(code, tuple(self._lines))
        self._lines, self._code = [], None
        return reply


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper-case) mapped to their parameters; the first line is the greeting."""
    extensions = {}
    for line in reply.lines[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = parameters
    return extensions


def encode_data(content: bytes) -> bytes:
    """The DATA payload: CRLF line ends, dot-stuffed, ending with CRLF.CRLF."""
    normalized = _BARE_LF.sub(b"\r\n", content)
    stuffed = _LEADING_DOT.sub(b"..", normalized)
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


def is_eight_bit(content: bytes) -> bool:
    return not content.isascii()
