"""One outbound SMTP connection: greeting, EHLO/HELO, opportunistic STARTTLS, pipelined
transactions carrying several recipients, and reuse for the next message.

Every read and write is bounded by `timeout_remote`; anything that means "this host is no
good right now" (timeout, reset, 421, garbage) raises `SessionLost` so the caller can move on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

from sendworx.engine.smtp_protocol import (
    ProtocolError,
    Reply,
    ReplyParser,
    encode_data,
    mail_command,
    needs_smtputf8,
    parse_extensions,
    rcpt_command,
)

_CHUNK = 64 * 1024


class SessionLost(Exception):
    """The connection can no longer be used; the caller tries the next host."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class TLSHandshakeFailed(SessionLost):
    """STARTTLS was offered but the handshake failed; plain text may still work."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    remote: float


@dataclass(slots=True)
class TransactionOutcome:
    """The final reply for each recipient of one transaction."""

    replies: dict[str, Reply] = field(default_factory=dict)


def opportunistic_tls_context() -> ssl.SSLContext:
    """Encrypt when offered, never verify: the RFC 3207 "may" policy of qmail-tls and Postfix."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def synthetic(code: int, text: str) -> Reply:
    return Reply(code, (text,))


class SMTPConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str,
        timeouts: Timeouts,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = ReplyParser()
        self._pending: list[Reply] = []
        self.remote = remote
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.encrypted = False

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        *,
        helo_name: str,
        timeouts: Timeouts,
        server_name: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> SMTPConnection:
        """Connect, read the greeting, EHLO (HELO fallback) and STARTTLS when offered."""
        remote = f"{server_name or address}[{address}]:{port}"
        try:
            async with asyncio.timeout(timeouts.connect):
                reader, writer = await asyncio.open_connection(address, port, limit=_CHUNK)
        except TimeoutError as error:
            raise SessionLost(f"connect to {remote} timed out") from error
        except OSError as error:
            raise SessionLost(f"connect to {remote} failed: {error.strerror or error}") from error
        except ValueError as error:  # an address the socket layer refuses (UnicodeError too)
            raise SessionLost(f"cannot connect to {remote}: {error}") from error
        connection = cls(reader, writer, remote, timeouts)
        try:
            await connection._handshake(helo_name, server_name, tls_context)
        except BaseException:
            connection.abort()
            raise
        return connection

    async def _handshake(
        self, helo_name: str, server_name: str | None, tls_context: ssl.SSLContext | None
    ) -> None:
        greeting = await self._read_reply()
        if not greeting.is_positive:
            raise SessionLost(f"{self.remote} greeted with {greeting}", greeting)
        await self._hello(helo_name)
        if tls_context is not None and "STARTTLS" in self.extensions:
            try:
                reply = await self._command(b"STARTTLS\r\n")
            except SessionLost as lost:
                raise TLSHandshakeFailed(f"STARTTLS with {self.remote}: {lost.reason}") from lost
            if reply.code != 220:
                return
            if self._pending or self._parser.holds_data:
                # Bytes before the handshake are a command-injection attempt (CVE-2011-0411
                # style): never act on them, and never let TLS start on top of them.
                raise TLSHandshakeFailed(f"{self.remote} sent data before the TLS handshake")
            try:
                async with asyncio.timeout(self.timeouts.remote):
                    await self._writer.start_tls(tls_context, server_hostname=server_name)
            except (TimeoutError, ssl.SSLError, OSError, ValueError) as error:
                # ValueError: a server name TLS cannot carry (from a hostile MX record)
                raise TLSHandshakeFailed(
                    f"TLS handshake with {self.remote} failed: {error}"
                ) from error
            self.encrypted = True
            await self._hello(helo_name)

    async def _hello(self, helo_name: str) -> None:
        reply = await self._command(f"EHLO {helo_name}\r\n".encode())
        if reply.is_positive:
            self.extensions = parse_extensions(reply)
            return
        reply = await self._command(f"HELO {helo_name}\r\n".encode())
        if not reply.is_positive:
            raise SessionLost(f"{self.remote} refused HELO: {reply}", reply)
        self.extensions = {}

    # -- transactions ------------------------------------------------------------------------

    async def send(self, sender: str, recipients: list[str], content: bytes) -> TransactionOutcome:
        """Deliver one message to `recipients`; return each recipient's final reply."""
        outcome = TransactionOutcome()
        refusal = self._refuse_before_sending(sender, recipients, content)
        if refusal is not None:
            outcome.replies = dict.fromkeys(recipients, refusal)
            return outcome
        mail = mail_command(sender, self._mail_parameters(sender, recipients, content))
        rcpts = [rcpt_command(recipient) for recipient in recipients]
        if "PIPELINING" in self.extensions:
            await self._write(b"".join([mail, *rcpts, b"DATA\r\n"]))
            mail_reply = await self._read_reply()
            rcpt_replies = [await self._read_reply() for _ in rcpts]
            data_reply = await self._read_reply()
        else:
            mail_reply = await self._command(mail)
            if not mail_reply.is_positive:
                outcome.replies = dict.fromkeys(recipients, mail_reply)
                await self._reset()
                return outcome
            rcpt_replies = [await self._command(command) for command in rcpts]
            if not any(reply.is_positive for reply in rcpt_replies):
                outcome.replies = dict(zip(recipients, rcpt_replies, strict=True))
                await self._reset()
                return outcome
            data_reply = await self._command(b"DATA\r\n")
        return await self._finish(
            outcome, recipients, mail_reply, rcpt_replies, data_reply, content
        )

    async def _finish(
        self,
        outcome: TransactionOutcome,
        recipients: list[str],
        mail_reply: Reply,
        rcpt_replies: list[Reply],
        data_reply: Reply,
        content: bytes,
    ) -> TransactionOutcome:
        accepted = []
        for recipient, reply in zip(recipients, rcpt_replies, strict=True):
            if not mail_reply.is_positive:
                outcome.replies[recipient] = mail_reply
            elif reply.is_positive:
                accepted.append(recipient)
            else:
                outcome.replies[recipient] = reply
        if data_reply.code == 354 and not accepted:
            # A server that says 354 with no valid recipient gets an empty message we abandon.
            await self._write(b".\r\n")
            await self._read_reply()
            await self._reset()
            return outcome
        if data_reply.code != 354:
            for recipient in accepted:
                outcome.replies[recipient] = data_reply
            await self._reset()
            return outcome
        payload = encode_data(content)
        for start in range(0, len(payload), _CHUNK):
            await self._write(payload[start : start + _CHUNK])
        final = await self._read_reply()
        for recipient in accepted:
            outcome.replies[recipient] = final
        return outcome

    def _refuse_before_sending(
        self, sender: str, recipients: list[str], content: bytes
    ) -> Reply | None:
        if needs_smtputf8(sender, recipients) and "SMTPUTF8" not in self.extensions:
            return synthetic(553, "5.6.7 remote server does not support SMTPUTF8 addresses")
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) > 0 and len(content) > int(limit):
            return synthetic(552, f"5.3.4 message size exceeds the remote limit of {limit}")
        return None

    def _mail_parameters(self, sender: str, recipients: list[str], content: bytes) -> list[str]:
        parameters = []
        if "SIZE" in self.extensions:
            parameters.append(f"SIZE={len(content)}")
        if not content.isascii() and "8BITMIME" in self.extensions:
            parameters.append("BODY=8BITMIME")
        if needs_smtputf8(sender, recipients):
            parameters.append("SMTPUTF8")
        return parameters

    async def _reset(self) -> None:
        reply = await self._command(b"RSET\r\n")
        if not reply.is_positive:
            raise SessionLost(f"{self.remote} refused RSET: {reply}", reply)

    async def quit(self) -> None:
        try:
            with contextlib.suppress(SessionLost, OSError, TimeoutError):
                async with asyncio.timeout(min(self.timeouts.remote, 5.0)):
                    await self._command(b"QUIT\r\n")
        finally:
            self.abort()

    def abort(self) -> None:
        self._writer.close()

    # -- wire ----------------------------------------------------------------------------

    async def _command(self, line: bytes) -> Reply:
        await self._write(line)
        return await self._read_reply()

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            async with asyncio.timeout(self.timeouts.remote):
                await self._writer.drain()
        except TimeoutError as error:
            raise SessionLost(f"timeout writing to {self.remote}") from error
        except OSError as error:
            raise SessionLost(f"connection to {self.remote} lost: {error}") from error

    async def _read_reply(self) -> Reply:
        while not self._pending:
            try:
                async with asyncio.timeout(self.timeouts.remote):
                    data = await self._reader.read(_CHUNK)
            except TimeoutError as error:
                raise SessionLost(f"timeout waiting for {self.remote}") from error
            except OSError as error:
                raise SessionLost(f"connection to {self.remote} lost: {error}") from error
            if not data:
                raise SessionLost(f"{self.remote} closed the connection")
            try:
                self._pending.extend(self._parser.feed(data))
            except ProtocolError as error:
                raise SessionLost(f"{self.remote} broke the protocol: {error}") from error
        reply = self._pending.pop(0)
        if reply.code == 421:
            raise SessionLost(f"{self.remote} is closing: {reply}", reply)
        return reply
