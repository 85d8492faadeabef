"""The server side of an SMTP submission session, as a state machine without I/O.

Bytes go in (`receive`), replies come out with, at most, one finished message to queue; the
caller answers that message (`answered`) and the session goes on with whatever the client
pipelined behind it. No socket, no event loop, no clock: the listener (`smtpd.py`) moves the
bytes, and the rules here are tested on byte streams cut anywhere (`tests/unit/`).

It replaced aiosmtpd, whose per-command coroutine and line-by-line reads were most of the
listener's CPU per message. Where aiosmtpd and Postfix differ we follow Postfix, the server
our users' clients are used to: lines of up to 64 KiB in DATA, `PIPELINING`, enhanced status
codes in every reply, a client that keeps sending nonsense is cut off.

Lines end at LF (a CR before it is dropped); DATA lines end only at CRLF, a bare CR or LF is
content, the leading dot of every line is removed, a line `.` ends the data. What a client
may make the session hold is bounded: a command line by `COMMAND_LIMIT`, the data by the size
limit (past it, only the last four bytes are kept, to find the end).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from sendworx.shared.addresses import AddressError, check_domain, domain_of, has_control_characters

COMMAND_LIMIT = 2048  # Postfix's line_length_limit; RFC 5321 asks for 512 plus extensions
ERROR_LIMIT = 10  # protocol errors (unknown commands, bad syntax) before the session is cut
TERMINATOR = b"\r\n.\r\n"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    hostname: str  # the banner's and EHLO's name: `me`
    max_message_bytes: int
    max_recipients: int
    line_limit: int = 64 * 1024  # a DATA line and its CRLF; longer ones get 500


@dataclass(frozen=True, slots=True)
class Message:
    """A transaction the client finished: it gets the reply `answered` is given."""

    helo: str
    extended: bool  # EHLO, not HELO: "ESMTP" in the Received header
    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    content: bytes  # as the client meant it: dots unstuffed, the terminator not included


@dataclass(frozen=True, slots=True)
class Step:
    output: bytes = b""  # replies to send, in order
    message: Message | None = None  # queue it, then call `answered`
    close: bool = False  # close once `output` is sent


class _Phase(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    WAITING = "waiting"  # a message was handed out and not answered yet
    CLOSED = "closed"


class _Refusal(enum.Enum):
    TOO_MUCH = b"552 5.3.4 Message size exceeds fixed limit\r\n"
    TOO_LONG = b"500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)\r\n"


# A forward-path or reverse-path (RFC 5321 4.1.2): an optional source route (ignored, as the
# RFC asks), then a mailbox whose local part may be quoted; what follows is the parameters.
_PATH = re.compile(
    r"""<(?:@[^,:<>\s]+(?:,@[^,:<>\s]+)*:)?
    (?P<mailbox>(?:"(?:[^"\\]|\\.)*"|[^<>"\s\\])*)>
    (?P<rest>(?:\s.*)?)$""",
    re.VERBOSE | re.DOTALL,
)
_PARAMETER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def parse_path(text: str) -> tuple[str, list[str]] | None:
    """(mailbox, parameters) from what follows `MAIL FROM:` or `RCPT TO:`; None when it is no
    path. The mailbox is "" for `<>`; a bare address without brackets is taken, as Postfix
    takes it from broken clients."""
    text = text.lstrip()
    if text.startswith("<"):
        match = _PATH.match(text)
        if match is None:
            return None
        return match["mailbox"], match["rest"].split()
    mailbox, *parameters = text.split()
    if not mailbox or "<" in mailbox or ">" in mailbox:
        return None
    return mailbox, parameters


def _parameters(words: list[str]) -> dict[str, str | None] | None:
    """ESMTP parameters by upper-cased keyword (None: no value); None when one is malformed."""
    parameters: dict[str, str | None] = {}
    for word in words:
        keyword, equals, value = word.partition("=")
        if not _PARAMETER.fullmatch(keyword) or (equals and not value):
            return None
        parameters[keyword.upper()] = value if equals else None
    return parameters


def _deliverable(address: str) -> bool:
    try:
        check_domain(domain_of(address))
    except AddressError:
        return False
    return True


class ServerSession:
    """One client connection's SMTP conversation. `may_relay`: whether this client may send
    to any domain (it is in `relay_networks`)."""

    def __init__(self, settings: SessionSettings, *, may_relay: bool) -> None:
        self._settings = settings
        self._may_relay = may_relay
        self._phase = _Phase.COMMAND
        self._input = bytearray()  # received, not yet taken as a command or as data
        self._skipping_line = False  # a command line over COMMAND_LIMIT is being thrown away
        self._errors = 0
        self._helo: str | None = None
        self._extended = False
        self._sender: str | None = None  # None: no MAIL yet; "" the null sender
        self._recipients: list[str] = []
        # DATA: `_data` starts with a CRLF of our own, so the first line starts after a CRLF
        # like every other one and one search finds the terminator.
        self._data = bytearray()
        self._searched = 0  # where the next terminator search starts
        self._line_start = 0  # the start of the data line not ended yet
        self._refusal: _Refusal | None = None

    def greeting(self) -> bytes:
        return f"220 {self._settings.hostname} sendworx ESMTP\r\n".encode()

    def receive(self, data: bytes) -> Step:
        """Take bytes from the client; while a message waits for its answer they are kept."""
        if self._phase is _Phase.CLOSED:
            return Step()
        self._input += data
        if self._phase is _Phase.WAITING:
            return Step()
        return self._run([])

    def answered(self, reply: str) -> Step:
        """The reply to the message `receive` handed out (`250 ...` once it is queued)."""
        if self._phase is not _Phase.WAITING:
            raise RuntimeError("no message is waiting for its answer")
        self._phase = _Phase.COMMAND
        return self._run([reply.encode() + b"\r\n"])

    @property
    def held_bytes(self) -> int:
        """What the client has made the session keep: a command line, data, or what was
        pipelined behind a message waiting for its answer."""
        return len(self._input) + len(self._data)

    def timed_out(self) -> Step:
        self._phase = _Phase.CLOSED
        reply = f"421 4.4.2 {self._settings.hostname} Error: timeout exceeded\r\n"
        return Step(reply.encode(), close=True)

    # -- the loop: commands until the input runs out, data until its terminator ------------

    def _run(self, out: list[bytes]) -> Step:
        while True:
            if self._phase is _Phase.DATA:
                message = self._take_data(out)
                if message is not None:
                    self._phase = _Phase.WAITING
                    return Step(b"".join(out), message)
                if self._phase is _Phase.DATA:
                    return Step(b"".join(out))  # the rest of the data is still to come
            if self._phase is _Phase.CLOSED:
                return Step(b"".join(out), close=True)
            line = self._take_line(out)
            if line is None:
                return Step(b"".join(out))
            if line:
                self._command(line, out)

    def _take_line(self, out: list[bytes]) -> bytes | None:
        """The next command line without its line end, b"" for one already answered, None
        when no whole line has arrived."""
        end = self._input.find(b"\n")
        if end < 0:
            if len(self._input) > COMMAND_LIMIT:
                self._skipping_line = True
                self._input.clear()
            return None
        line = bytes(self._input[:end])
        del self._input[: end + 1]
        if self._skipping_line:
            self._skipping_line = False
            self._protocol_error(out, "500 5.5.2 Error: command line too long")
            return b""
        if len(line) > COMMAND_LIMIT:
            self._protocol_error(out, "500 5.5.2 Error: command line too long")
            return b""
        line = line.rstrip(b"\r")
        if not line.strip():
            self._protocol_error(out, "500 5.5.2 Error: bad syntax")
            return b""
        return line

    def _protocol_error(self, out: list[bytes], reply: str) -> None:
        self._answer(out, self._syntax_error(reply))

    def _syntax_error(self, reply: str) -> str:
        """A reply to a command the client should not have sent so: counted, and past
        ERROR_LIMIT of them the session ends (a client that cannot speak SMTP, or a probe)."""
        self._errors += 1
        return reply

    def _answer(self, out: list[bytes], reply: str) -> None:
        out.append(reply.encode() + b"\r\n")
        if self._errors >= ERROR_LIMIT and self._phase is not _Phase.CLOSED:
            out.append(f"421 4.7.0 {self._settings.hostname} Error: too many errors\r\n".encode())
            self._phase = _Phase.CLOSED

    # -- commands -------------------------------------------------------------------------

    def _command(self, line: bytes, out: list[bytes]) -> None:
        verb_bytes, _, argument_bytes = line.strip().partition(b" ")
        verb = verb_bytes.upper().decode("ascii", "replace")
        handler = _COMMANDS.get(verb)
        if handler is None:
            self._protocol_error(out, "500 5.5.2 Error: command not recognized")
            return
        try:  # UTF-8 (SMTPUTF8) or ASCII; other bytes could not be queued, logged or relayed
            argument = argument_bytes.strip().decode("utf-8")
        except UnicodeDecodeError:
            self._protocol_error(out, "500 5.5.2 Error: bad UTF-8 syntax")  # as Postfix
            return
        self._answer(out, handler(self, argument))

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []

    def _helo_command(self, argument: str) -> str:
        if not argument:
            return self._syntax_error("501 5.5.4 Syntax: HELO hostname")
        self._reset()
        self._helo, self._extended = argument, False
        return f"250 {self._settings.hostname}"

    def _ehlo_command(self, argument: str) -> str:
        if not argument:
            return self._syntax_error("501 5.5.4 Syntax: EHLO hostname")
        self._reset()
        self._helo, self._extended = argument, True
        return (
            f"250-{self._settings.hostname}\r\n"
            "250-PIPELINING\r\n"
            f"250-SIZE {self._settings.max_message_bytes}\r\n"
            "250-8BITMIME\r\n"
            "250-ENHANCEDSTATUSCODES\r\n"
            "250 SMTPUTF8"
        )

    def _path(self, keyword: str, argument: str) -> tuple[str, dict[str, str | None]] | str:
        """The address and parameters after `keyword`, or the reply refusing them."""
        syntax = f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}:<address>"
        if argument[: len(keyword)].upper() != keyword:
            return self._syntax_error(syntax)
        argument = argument[len(keyword) :]
        if has_control_characters(argument):
            what = "Sender" if keyword == "FROM:" else "Recipient"
            code = "5.1.7" if keyword == "FROM:" else "5.1.3"
            return f"501 {code} {what} address contains control characters"
        parsed = parse_path(argument)
        if parsed is None:
            return self._syntax_error(syntax)
        address, words = parsed
        parameters = _parameters(words)
        if parameters is None or (parameters and not self._extended):
            return self._syntax_error(syntax)
        return address, parameters

    def _mail_command(self, argument: str) -> str:
        if self._helo is None:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if self._sender is not None:
            return "503 5.5.1 Error: nested MAIL command"
        parsed = self._path("FROM:", argument)
        if isinstance(parsed, str):
            return parsed
        address, parameters = parsed
        body = parameters.pop("BODY", "7BIT") or ""
        if body.upper() not in ("7BIT", "8BITMIME"):
            return "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"
        if "SMTPUTF8" in parameters and parameters.pop("SMTPUTF8") is not None:
            return "501 5.5.4 Error: SMTPUTF8 takes no value"
        size = parameters.pop("SIZE", None)
        if size is not None:
            if not size.isdigit() or not size.isascii():
                return "501 5.5.4 Bad message size syntax"
            if int(size) > self._settings.max_message_bytes:
                return "552 5.3.4 Message size exceeds fixed limit"
        if parameters:
            return "555 5.5.4 Unsupported option: " + next(iter(parameters))[:40]
        if address and "@" in address and not _deliverable(address):
            # Bounces to it could go nowhere; the address is never echoed (it is hostile).
            return "501 5.1.7 Sender domain is not a host name or an address literal"
        self._sender = address
        return "250 2.1.0 Ok"

    def _rcpt_command(self, argument: str) -> str:
        if self._helo is None:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if self._sender is None:
            return "503 5.5.1 Error: need MAIL command"
        parsed = self._path("TO:", argument)
        if isinstance(parsed, str):
            return parsed
        address, parameters = parsed
        if parameters:
            return "555 5.5.4 Unsupported option: " + next(iter(parameters))[:40]
        if not self._may_relay:
            return "554 5.7.1 Relay access denied"
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            return "553 5.1.3 Recipient address must be user@domain"
        if not _deliverable(address):
            return "501 5.1.3 Recipient domain is not a host name or an address literal"
        if len(self._recipients) >= self._settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        self._recipients.append(address)
        return "250 2.1.5 Ok"

    def _data_command(self, argument: str) -> str:
        if self._helo is None:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if not self._recipients:
            return "503 5.5.1 Error: need RCPT command"
        if argument:
            return self._syntax_error("501 5.5.4 Syntax: DATA")
        self._phase = _Phase.DATA
        self._data = bytearray(b"\r\n")
        self._searched = 0
        self._line_start = 2
        self._refusal = None
        return "354 End data with <CR><LF>.<CR><LF>"

    def _rset_command(self, argument: str) -> str:
        self._reset()
        return "250 2.0.0 Ok"

    def _noop_command(self, argument: str) -> str:
        return "250 2.0.0 Ok"

    def _quit_command(self, argument: str) -> str:
        self._phase = _Phase.CLOSED
        return "221 2.0.0 Bye"

    def _vrfy_command(self, argument: str) -> str:
        if not argument:
            return "501 5.5.4 Syntax: VRFY address"
        return "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"

    def _help_command(self, argument: str) -> str:
        return "214 2.0.0 Commands: " + " ".join(sorted(_COMMANDS))

    def _not_implemented(self, argument: str) -> str:
        return "502 5.5.1 Error: command not implemented"

    # -- DATA -----------------------------------------------------------------------------

    def _take_data(self, out: list[bytes]) -> Message | None:
        """Move input into the data; the message once its terminator is in (or, for data
        refused, its reply in `out` and the session back at commands)."""
        data = self._data
        data += self._input
        self._input.clear()
        end = data.find(TERMINATOR, self._searched)
        limit = self._settings.max_message_bytes
        if end < 0:
            self._searched = max(len(data) - len(TERMINATOR) + 1, 0)
            if self._refusal is None and len(data) - len(TERMINATOR) > limit:
                self._refusal = _Refusal.TOO_MUCH
            if self._refusal is None:
                self._check_lines(len(data))
            if self._refusal is not None:  # keep only what could start the terminator
                del data[: -len(TERMINATOR) + 1]
                self._searched = 0
            return None
        self._input = data[end + len(TERMINATOR) :]  # pipelined commands after the data
        if self._refusal is None and end > limit:
            self._refusal = _Refusal.TOO_MUCH
        if self._refusal is None:
            self._check_lines(end + 2)
        refusal, sender, recipients = self._refusal, self._sender or "", tuple(self._recipients)
        self._reset()
        self._data = bytearray()
        if refusal is not None:
            out.append(refusal.value)
            self._phase = _Phase.COMMAND
            return None
        content = bytes(data[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        assert self._helo is not None  # DATA is refused before HELO/EHLO
        return Message(self._helo, self._extended, sender, recipients, content)

    def _check_lines(self, upto: int) -> None:
        """Refuse the data when a line in data[_line_start:upto] is longer than the limit,
        the line not ended yet included (whatever ends it, it is already too long)."""
        limit = self._settings.line_limit
        data, start = self._data, self._line_start
        if upto - start > limit - 2:  # only then can a line in it be too long
            *ended, unfinished = bytes(data[start:upto]).split(b"\r\n")
            # A line and its CRLF fit in the limit; a CR at the end may start the CRLF.
            room = limit - (1 if unfinished.endswith(b"\r") else 2)
            if max(map(len, ended), default=0) + 2 > limit or len(unfinished) > room:
                self._refusal = _Refusal.TOO_LONG
                return
        last = data.rfind(b"\r\n", start, upto)
        if last >= 0:
            self._line_start = last + 2


_Command = Callable[[ServerSession, str], str]
_COMMANDS: dict[str, _Command] = {
    "HELO": ServerSession._helo_command,
    "EHLO": ServerSession._ehlo_command,
    "MAIL": ServerSession._mail_command,
    "RCPT": ServerSession._rcpt_command,
    "DATA": ServerSession._data_command,
    "RSET": ServerSession._rset_command,
    "NOOP": ServerSession._noop_command,
    "QUIT": ServerSession._quit_command,
    "VRFY": ServerSession._vrfy_command,
    "HELP": ServerSession._help_command,
    "EXPN": ServerSession._not_implemented,
    "ETRN": ServerSession._not_implemented,
    "STARTTLS": ServerSession._not_implemented,
    "AUTH": ServerSession._not_implemented,
    "BDAT": ServerSession._not_implemented,
}
