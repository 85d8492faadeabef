"""The local submission protocol: what `/usr/sbin/sendmail` (the small compiled client in
`sendmail-client/`, or `submit_client.py`) and the submission daemon (`submitd.py`) say over
`run/submit.sock`. Pure: bytes in, requests and replies out; the daemon does the I/O.

The client carries its argv and its standard input, nothing else; every decision is the
daemon's, made in Python, and who the caller is comes from the kernel (SO_PEERCRED), never
from these bytes.

    request := "SWX1" argc:u32 (length:u32 argument-bytes){argc} standard-input...
    reply   := status:u8 stdout-length:u32 stdout-bytes stderr-bytes...

Integers are big-endian. argv[0] is the program's name as called (`sendmail`, `mailq`,
`newaliases`); the arguments are UTF-8. The input runs until the client shuts its side down,
or until the daemon has what it needs (sendmail's "." line): the daemon may answer before the
input ends, and the client then stops sending. `status` is the exit status, sysexits.h.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"SWX1"
MAX_ARGUMENTS = 1024
MAX_ARGUMENT_BYTES = 16 * 1024
MAX_HEADER_BYTES = 256 * 1024
_U32 = struct.Struct(">I")
_REPLY_HEAD = struct.Struct(">BI")


class ProtocolError(ValueError):
    """Not a request this daemon understands; the message says what is wrong."""


@dataclass(frozen=True)
class Request:
    program: str  # argv[0]'s base name
    arguments: tuple[str, ...]  # argv[1:]


def parse_header(buffer: bytes | bytearray) -> tuple[Request, int] | None:
    """The request header at the start of `buffer` and its length; None: more bytes needed."""
    if len(buffer) < len(MAGIC):
        if not MAGIC.startswith(bytes(buffer)):
            raise ProtocolError("not a sendworx submission")
        return None
    if buffer[: len(MAGIC)] != MAGIC:
        raise ProtocolError("not a sendworx submission")
    position = len(MAGIC)
    if len(buffer) < position + _U32.size:
        return None
    (count,) = _U32.unpack_from(buffer, position)
    position += _U32.size
    if not 1 <= count <= MAX_ARGUMENTS:
        raise ProtocolError(f"between 1 and {MAX_ARGUMENTS} arguments, not {count}")
    words = []
    for _ in range(count):
        if len(buffer) < position + _U32.size:
            return None
        (length,) = _U32.unpack_from(buffer, position)
        position += _U32.size
        if length > MAX_ARGUMENT_BYTES or position + length > MAX_HEADER_BYTES:
            raise ProtocolError("an argument is too long")
        if len(buffer) < position + length:
            return None
        raw = bytes(buffer[position : position + length])
        position += length
        if b"\0" in raw:
            raise ProtocolError("an argument contains a NUL byte")
        try:
            words.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ProtocolError("arguments must be UTF-8") from error
    program = words[0].rsplit("/", 1)[-1]
    return Request(program, tuple(words[1:])), position


def encode_request(argv: list[str]) -> bytes:
    """What a client sends before its standard input (the Python client, the tests)."""
    parts = [MAGIC, _U32.pack(len(argv))]
    for word in argv:
        raw = word.encode("utf-8")
        parts += [_U32.pack(len(raw)), raw]
    return b"".join(parts)


def encode_reply(status: int, stdout: str = "", stderr: str = "") -> bytes:
    out = stdout.encode("utf-8", "replace")
    return _REPLY_HEAD.pack(status, len(out)) + out + stderr.encode("utf-8", "replace")


def decode_reply(data: bytes) -> tuple[int, bytes, bytes]:
    """Status, stdout and stderr of a whole reply; ProtocolError if it is cut short."""
    if len(data) < _REPLY_HEAD.size:
        raise ProtocolError("the reply is cut short")
    status, length = _REPLY_HEAD.unpack_from(data)
    body = data[_REPLY_HEAD.size :]
    if len(body) < length:
        raise ProtocolError("the reply is cut short")
    return status, body[:length], body[length:]


class MessageReader:
    """A message's bytes as they arrive: to the end of the input, or (sendmail without -i)
    to a line that is a lone ".", as `sendmail.read_message` reads a pipe."""

    def __init__(self, dot_ends_input: bool, limit: int) -> None:
        self._dot = dot_ends_input
        self._limit = limit
        self._data = bytearray()
        self._line_start = 0  # where the line not yet seen whole starts
        self.done = False
        self.too_large = False

    def feed(self, chunk: bytes) -> bool:
        """Take more input; True once the message is complete (or over the limit)."""
        if self.done:
            return True
        self._data += chunk
        if self._dot:
            self._find_dot_line()
        if len(self._data) > self._limit + (0 if self.done else 3):  # room for a last ".\r\n"
            self.too_large = self.done = True
        return self.done

    def finish(self) -> None:
        """The input ended: a last line without a newline is a line too."""
        if self._dot and not self.done:
            tail = self._data[self._line_start :]
            if tail.rstrip(b"\r\n") == b".":
                del self._data[self._line_start :]
        self.done = True
        if len(self._data) > self._limit:
            self.too_large = True

    def _find_dot_line(self) -> None:
        data = self._data
        while True:
            end = data.find(b"\n", self._line_start)
            if end == -1:
                return
            if data[self._line_start : end + 1].rstrip(b"\r\n") == b".":
                del data[self._line_start :]
                self.done = True
                return
            self._line_start = end + 1

    @property
    def content(self) -> bytes:
        return bytes(self._data)
