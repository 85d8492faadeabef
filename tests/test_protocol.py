"""What goes over the wire: pipelining, recipients per transaction, connection reuse,
STARTTLS, HELO fallback, 8BITMIME and SMTPUTF8 — against real servers."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess

import pytest
import trustme
from support.instance import SendworxHome
from support.net import wait_for
from support.raw_server import RawServer, scripted_smtp
from support.sink import Behaviour, RecordingSink


def test_pipelining_sends_mail_rcpts_and_data_in_one_write(home: SendworxHome) -> None:
    reads: list[bytes] = []

    async def pipelining_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 pipe ESMTP\r\n")
        await writer.drain()
        await reader.readline()  # EHLO
        writer.write(b"250-pipe\r\n250 PIPELINING\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # let a pipelining client send everything up to DATA
        reads.append(await reader.read(65536))
        writer.write(b"250 sender ok\r\n250 rcpt ok\r\n250 rcpt ok\r\n354 go\r\n")
        await writer.drain()
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            data += await reader.read(65536)
        writer.write(b"250 queued\r\n")
        await writer.drain()
        await reader.read()

    with RawServer(pipelining_server, "127.0.0.50") as server:
        home.routes(f"pipe.test:[127.0.0.50]:{server.port}")
        home.start_engine()
        home.inject("a@pipe.test", "b@pipe.test")
        home.wait_for_delivery_lines(2)
    # No SIZE or 8BITMIME advertised, so no parameters: the whole envelope in one read.
    assert reads == [
        b"MAIL FROM:<sender@origin.test>\r\nRCPT TO:<a@pipe.test>\r\n"
        b"RCPT TO:<b@pipe.test>\r\nDATA\r\n"
    ]
    assert {line["result"] for line in home.deliveries()} == {"delivered"}


def test_recipients_for_one_destination_share_a_transaction(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.51") as sink:
        home.routes(f":[127.0.0.51]:{sink.port}")
        home.start_engine()
        home.inject(*(f"user{n}@one.test" for n in range(7)), "x@other.test")
        wait_for(home.queue_empty)
    [transaction] = sink.received()
    assert len(transaction.recipients) == 8


def test_recipients_beyond_the_per_transaction_limit_are_split(home: SendworxHome) -> None:
    home.write_config(delivery={"recipients_per_transaction": 3})
    with RecordingSink("127.0.0.52") as sink:
        home.routes(f":[127.0.0.52]:{sink.port}")
        home.start_engine()
        home.inject(*(f"user{n}@split.test" for n in range(7)))
        wait_for(home.queue_empty)
    assert sorted(len(message.recipients) for message in sink.received()) == [1, 3, 3]


def test_connection_is_reused_while_the_destination_has_mail(home: SendworxHome) -> None:
    home.write_config(delivery={"destination_concurrency": 1, "idle_connection_seconds": 2.0})
    with RecordingSink("127.0.0.53") as sink:
        home.routes(f":[127.0.0.53]:{sink.port}")
        home.start_engine()
        for number in range(5):
            home.inject(f"u{number}@reuse.test")
        sink.wait_for_messages(5)
    assert sink.stats.connections == 1


def _tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("tls.test").configure_cert(context)
    return context


def _delivered_over(home: SendworxHome) -> str:
    """The TLS of the delivery as the history recorded it (once it is written)."""

    def delivered() -> list[dict[str, str]]:
        command = home.command("history", "--json", "--event", "delivered")
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        events: list[dict[str, str]] = json.loads(done.stdout)["events"] if done.stdout else []
        return events

    wait_for(lambda: len(delivered()) == 1)
    return delivered()[0]["tls"]


def test_starttls_is_used_when_offered_with_a_self_signed_certificate(home: SendworxHome) -> None:
    home.write_config(history={"flush_seconds": 0.1})
    with RecordingSink("127.0.0.54", tls_context=_tls_context(trustme.CA())) as sink:
        home.routes(f"tls.test:[127.0.0.54]:{sink.port}")
        home.start_engine()
        home.inject("u@tls.test")
        [message] = sink.wait_for_messages(1)
        tls = _delivered_over(home)
    assert message.encrypted
    assert tls.startswith("TLSv1.") and len(tls.split()) == 2  # protocol and cipher


def test_starttls_can_be_switched_off(home: SendworxHome) -> None:
    home.write_config(delivery={"starttls": False}, history={"flush_seconds": 0.1})
    with RecordingSink("127.0.0.55", tls_context=_tls_context(trustme.CA())) as sink:
        home.routes(f"tls.test:[127.0.0.55]:{sink.port}")
        home.start_engine()
        home.inject("u@tls.test")
        [message] = sink.wait_for_messages(1)
        tls = _delivered_over(home)
    assert not message.encrypted and tls == ""


@pytest.mark.parametrize("one_write", [False, True], ids=["separate-writes", "one-write"])
def test_failed_tls_handshake_falls_back_to_plain_text(home: SendworxHome, one_write: bool) -> None:
    async def garbage_after_starttls(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        garbage = b"this is not a TLS record at all\r\n" * 4
        if one_write:  # 220 and garbage in one segment: the client must not parse the garbage
            writer.write(b"220 go ahead\r\n" + garbage)
        else:
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            writer.write(garbage)
        await writer.drain()
        return True

    async def broken_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted_smtp(
            reader,
            writer,
            extensions=(b"STARTTLS",),
            verbs={b"STAR": garbage_after_starttls},
            final_reply=b"250 plain text accepted",
        )

    with RawServer(broken_tls, "127.0.0.56") as server:
        home.routes(f"tls.test:[127.0.0.56]:{server.port}")
        home.start_engine()
        home.inject("u@tls.test")
        [line] = home.wait_for_delivery_lines(1)
    assert line["result"] == "delivered"
    assert line["reply"] == "250 plain text accepted"
    assert server.connections == 2


def test_helo_is_used_when_ehlo_is_refused(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.57", behaviour=Behaviour(refuse_ehlo=True)) as sink:
        home.routes(f"old.test:[127.0.0.57]:{sink.port}")
        home.start_engine()
        home.inject("u@old.test")
        [message] = sink.wait_for_messages(1)
    assert message.mail_options == ()


def test_eight_bit_body_is_declared_when_the_server_supports_8bitmime(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.58") as sink:
        home.routes(f"eight.test:[127.0.0.58]:{sink.port}")
        home.start_engine()
        body = "Grüße aus Köln"
        home.inject("u@eight.test", body=body)
        [message] = sink.wait_for_messages(1)
    assert "BODY=8BITMIME" in message.mail_options
    assert body.encode() in message.content


def test_utf8_address_uses_smtputf8(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.59") as sink:
        home.routes(f":[127.0.0.59]:{sink.port}")
        home.start_engine()
        home.inject("jürgen@umlaut.test")
        [message] = sink.wait_for_messages(1)
    assert "SMTPUTF8" in message.mail_options
    assert message.recipients == ("jürgen@umlaut.test",)


def test_utf8_address_to_a_server_without_smtputf8_fails_permanently(home: SendworxHome) -> None:
    async def ascii_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted_smtp(reader, writer, extensions=(b"8BITMIME",))

    with RawServer(ascii_only, "127.0.0.60") as server, RecordingSink("127.0.0.61") as origin:
        home.routes(
            f"ascii.test:[127.0.0.60]:{server.port}", f"origin.test:[127.0.0.61]:{origin.port}"
        )
        home.start_engine()
        home.inject("jürgen@ascii.test")
        bounce = origin.wait_for_messages(1)[0]
    assert "5.6.7" in bounce.content.decode()


def test_dot_at_line_start_is_stuffed_and_arrives_intact(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.62") as sink:
        home.routes(f":[127.0.0.62]:{sink.port}")
        home.start_engine()
        body = "line one\n.\n..two dots\n.leading"
        result = home.sendmail(
            "-i", "-f", "s@origin.test", "u@dots.test", message=f"Subject: d\n\n{body}\n".encode()
        )
        assert result.returncode == 0
        [message] = sink.wait_for_messages(1)
    assert b"\r\n.\r\n..two dots\r\n.leading\r\n" in message.content
