"""One outbound SMTP connection: greeting, EHLO/HELO, opportunistic STARTTLS, then the mail
transactions `smtp_protocol.Transaction` decides, one after the other on the same connection.

This module moves bytes under timeouts and nothing more. Every reply (however it trickles
in) and every write of a chunk is bounded by `timeout_remote`; anything that means "this
host is no good right now" (timeout, reset, 421, garbage, a refused RSET) raises
`SessionLost` so the caller can move on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from sendworx.engine.smtp_protocol import (
    ProtocolError,
    ReplyParser,
    ResetRefused,
    SMTPReply,
    Transaction,
    parse_extensions,
)

_CHUNK = 64 * 1024


class SessionLost(Exception):
    """The connection can no longer be used; the caller tries the next host."""

    def __init__(self, reason: str, reply: SMTPReply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class TLSHandshakeFailed(SessionLost):
    """STARTTLS was offered but the handshake failed; plain text may still work."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    remote: float


def opportunistic_tls_context() -> ssl.SSLContext:
    """Encrypt when offered, never verify: the RFC 3207 "may" policy of qmail-tls and Postfix."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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
        self._pending: list[SMTPReply] = []
        self.remote = remote
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.tls = ""  # after STARTTLS: the protocol and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384")

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
            tls = self._writer.get_extra_info("ssl_object")
            if isinstance(tls, ssl.SSLObject):
                cipher = tls.cipher()
                self.tls = f"{tls.version() or 'TLS'} {cipher[0] if cipher else ''}".strip()
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

    async def send(
        self, sender: str, recipients: list[str], content: bytes
    ) -> dict[str, SMTPReply]:
        """Offer one message to `recipients`; return each recipient's final reply.

        The message is held only until it is written: a server may take long over its final
        reply (content scanning), and a thousand connections waiting on such servers must
        not each keep a copy (the caller must not keep one either)."""
        transaction = Transaction(sender, recipients, content, self.extensions)
        del content
        outgoing = transaction.start()
        while True:
            await self._write(outgoing)
            outgoing = b""
            if transaction.finished:
                return transaction.replies
            reply = await self._read_reply()
            try:
                outgoing = transaction.receive(reply)
            except ResetRefused as refused:
                raise SessionLost(f"{self.remote} {refused}", refused.reply) from refused
            except ProtocolError as error:
                raise SessionLost(f"{self.remote} broke the protocol: {error}", reply) from error

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

    async def _command(self, line: bytes) -> SMTPReply:
        await self._write(line)
        return await self._read_reply()

    async def _write(self, data: bytes) -> None:
        """Send `data` in pieces, each within `timeout_remote` (a message may be megabytes)."""
        try:
            for start in range(0, len(data), _CHUNK):
                self._writer.write(data[start : start + _CHUNK])
                if not self._writer.transport.get_write_buffer_size():
                    await self._writer.drain()  # all with the kernel: drain cannot wait
                    continue
                async with asyncio.timeout(self.timeouts.remote):
                    await self._writer.drain()
        except TimeoutError as error:
            raise SessionLost(f"timeout writing to {self.remote}") from error
        except OSError as error:
            raise SessionLost(f"connection to {self.remote} lost: {error}") from error

    async def _read_reply(self) -> SMTPReply:
        """The next reply, whole within `timeout_remote` (one deadline per reply, as Postfix
        has: a server trickling a byte at a time cannot keep a session for ever)."""
        if self._pending:  # already read (pipelined replies come together): no wait, no timer
            return self._next_reply()
        try:
            async with asyncio.timeout(self.timeouts.remote):
                while not self._pending:
                    data = await self._reader.read(_CHUNK)
                    if not data:
                        raise SessionLost(f"{self.remote} closed the connection")
                    try:
                        self._pending.extend(self._parser.feed(data))
                    except ProtocolError as error:
                        raise SessionLost(f"{self.remote} broke the protocol: {error}") from error
        except TimeoutError as error:
            raise SessionLost(f"timeout waiting for {self.remote}") from error
        except OSError as error:
            raise SessionLost(f"connection to {self.remote} lost: {error}") from error
        return self._next_reply()

    def _next_reply(self) -> SMTPReply:
        reply = self._pending.pop(0)
        if reply.code == 421:
            raise SessionLost(f"{self.remote} is closing: {reply}", reply)
        return reply
