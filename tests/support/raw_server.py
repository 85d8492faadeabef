"""A scripted TCP server on loopback for protocol-level faults aiosmtpd cannot produce:
never greeting, dropping mid-DATA, recording how commands arrive (pipelining).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping

from support.net import free_port

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self, script: Script, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.connections = 0
        self._script = script
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # peers hanging up and teardown are part of these scripts
        finally:
            writer.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, self.port), self._loop
        ).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        server = self._server
        if server is not None:

            async def close() -> None:
                server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


VerbHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_message(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while not data.endswith(b"\r\n.\r\n"):
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("client left during DATA")
        data += chunk
    return data


async def scripted_smtp(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    extensions: tuple[bytes, ...] = (b"8BITMIME",),
    verbs: Mapping[bytes, VerbHandler] | None = None,
    final_reply: bytes = b"250 accepted",
) -> None:
    """A minimal SMTP server: EHLO lists `extensions`, DATA takes a message and answers
    `final_reply`, everything else gets 250. `verbs` overrides a command (first four
    letters); a handler returning True ends the session."""
    writer.write(b"220 scripted ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        handler = (verbs or {}).get(verb)
        if handler is not None:
            if await handler(reader, writer):
                return
        elif verb == b"EHLO":
            lines = [b"scripted", *extensions]
            writer.write(b"".join(b"250-" + item + b"\r\n" for item in lines[:-1]))
            writer.write(b"250 " + lines[-1] + b"\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            await read_message(reader)
            writer.write(final_reply + b"\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            await writer.drain()
            return
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()
