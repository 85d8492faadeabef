"""The delivery client holds a message's text only while it has to: once written, a server
that takes its time over the final reply (content scanning) costs no memory for it."""

from __future__ import annotations

import asyncio
import os
import tracemalloc

from sendworx.engine.smtp_client import SMTPConnection, Timeouts

SIZE = 16 * 1024 * 1024


def _message() -> bytes:
    """A fresh message, referenced by nobody but the caller."""
    return b"Subject: big\r\n\r\n" + (os.urandom(SIZE // 2).hex().encode() + b"\r\n")


async def _slow_final_reply(
    received: asyncio.Event, release: asyncio.Event
) -> tuple[int, asyncio.Server]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test\r\n")
        await reader.readline()
        writer.write(b"250-slow.test\r\n250 PIPELINING\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        tail = b""
        while not tail.endswith(b"\r\n.\r\n"):  # read and forget, as a scanner spooling it
            tail = (tail + await reader.read(65536))[-5:]
        received.set()
        await release.wait()
        writer.write(b"250 2.0.0 queued after a long look\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return port, server


def test_a_sent_message_is_not_held_while_the_server_decides() -> None:
    async def scenario() -> tuple[int, int]:
        received, release = asyncio.Event(), asyncio.Event()
        port, server = await _slow_final_reply(received, release)
        connection = await SMTPConnection.open(
            "127.0.0.1", port, helo_name="client.test", timeouts=Timeouts(10.0, 10.0)
        )
        tracemalloc.start()
        try:
            sending = asyncio.create_task(
                connection.send("a@sender.test", ["b@slow.test"], _message())
            )
            await received.wait()
            await asyncio.sleep(0.05)
            during, peak = tracemalloc.get_traced_memory()
            release.set()
            replies = await sending
        finally:
            tracemalloc.stop()
            await connection.quit()
            server.close()
        assert replies["b@slow.test"].code == 250
        return during, peak

    during, peak = asyncio.run(scenario())
    assert peak >= SIZE  # the message was there, and written
    assert during < SIZE // 8, f"{during} bytes still held while waiting for the final reply"
