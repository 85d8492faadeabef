"""Temporary and permanent failures: retries, lifetime expiry, bounces and double bounces."""

from __future__ import annotations

import asyncio
import email
import signal
import subprocess
import time
from email.message import Message
from typing import cast

from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import wait_for
from support.postfix_sink import PostfixSink
from support.raw_server import RawServer, scripted_smtp
from support.sink import Behaviour, RecordingSink

ORIGIN = "127.0.0.30"


def _origin_route(home: SendworxHome, port: int, *more: str) -> None:
    """Senders live at origin.test, whose mail (the bounces) goes to a sink of its own."""
    home.routes(f"origin.test:[{ORIGIN}]:{port}", *more)


def _parts(report: Message) -> list[str]:
    return [part.get_content_type() for part in report.get_payload()]  # type: ignore[union-attr]


def test_4xx_defers_on_qmails_schedule_and_keeps_the_message(home: SendworxHome) -> None:
    with PostfixSink("127.0.0.31", None, "-r", "RCPT") as sink:
        home.routes(f"soft.test:[127.0.0.31]:{sink.port}")
        home.start_engine()
        home.inject("u@soft.test")
        [line] = home.wait_for_delivery_lines(1)
    assert line["result"] == "deferred"
    assert line["reply"].startswith("450")
    [message_id] = home.queue_files()
    state = home.state(message_id)
    birth = _birth(home, message_id)
    # First retry: birth + (isqrt(0) + 20)^2 = 400 s, plus at most 5% jitter.
    assert birth + 400 <= state["next_attempt_at"] <= birth + 400 + 21
    assert state["attempts"] == 1


def _birth(home: SendworxHome, message_id: str) -> float:
    import json

    header = (home.home / "queue" / "mess" / message_id).read_bytes().split(b"\n")[1]
    return float(json.loads(header)["birth"])


def test_sigalrm_retries_deferred_mail_now(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.32", behaviour=Behaviour(refuse_rcpt="451 4.7.1 later")) as sink:
        home.routes(f"later.test:[127.0.0.32]:{sink.port}")
        engine = home.start_engine()
        home.inject("u@later.test")
        home.wait_for_delivery_lines(1)
        sink.behaviour.refuse_rcpt = None
        engine.send_signal(signal.SIGALRM)
        sink.wait_for_messages(1)
        wait_for(home.queue_empty)
    assert [line["result"] for line in home.deliveries()] == ["deferred", "delivered"]
    assert home.deliveries()[1]["attempt"] == "2"


def test_queue_retry_command_works_with_and_without_a_running_engine(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.33", behaviour=Behaviour(refuse_rcpt="451 4.7.1 later")) as sink:
        home.routes(f"later.test:[127.0.0.33]:{sink.port}")
        engine = home.start_engine()
        home.inject("a@later.test")
        home.wait_for_delivery_lines(1)
        assert home.stop(engine) == 0
        result = subprocess.run(home.command("queue", "retry"), capture_output=True, text=True)
        assert "will be tried as soon as it starts" in result.stdout
        sink.behaviour.refuse_rcpt = None
        home.start_engine()
        sink.wait_for_messages(1)
        sink.behaviour.refuse_rcpt = "451 4.7.1 later"
        home.inject("b@later.test")
        home.wait_for_delivery_lines(3)
        sink.behaviour.refuse_rcpt = None
        result = subprocess.run(home.command("queue", "retry"), capture_output=True, text=True)
        assert "asked the engine" in result.stdout
        sink.wait_for_messages(2)
        wait_for(home.queue_empty)


def test_permanent_failure_bounces_only_the_failed_recipient(home: SendworxHome) -> None:
    behaviour = Behaviour(
        rcpt_reply=lambda rcpt: "550 5.1.1 no such user" if rcpt.startswith("bad") else None
    )
    with (
        RecordingSink("127.0.0.34", behaviour=behaviour) as remote,
        RecordingSink(ORIGIN) as origin,
    ):
        _origin_route(home, origin.port, f"remote.test:[127.0.0.34]:{remote.port}")
        home.start_engine()
        body = "the original text"
        home.inject("good@remote.test", "bad@remote.test", sender="author@origin.test", body=body)
        assert remote.wait_for_messages(1)[0].recipients == ("good@remote.test",)
        bounce = origin.wait_for_messages(1)[0]
        wait_for(home.queue_empty)
    assert (bounce.mail_from, bounce.recipients) == ("", ("author@origin.test",))
    report = email.message_from_bytes(bounce.content)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert _parts(report) == ["text/plain", "message/delivery-status", "message/rfc822"]
    status = report.get_payload(1)
    assert isinstance(status, Message)
    blocks = cast(list[Message], status.get_payload())
    assert blocks[0]["Reporting-MTA"] == "dns; sendworx.test"
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822; bad@remote.test"]
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.1.1"
    assert "550 5.1.1 no such user" in blocks[1]["Diagnostic-Code"]
    assert body in bounce.content.decode()
    assert "good@remote.test" not in str(blocks[1:])


def test_smtp_sink_hard_reject_at_data_bounces(home: SendworxHome) -> None:
    with PostfixSink("127.0.0.35", None, "-f", "DATA") as sink, RecordingSink(ORIGIN) as origin:
        _origin_route(home, origin.port, f"hard.test:[127.0.0.35]:{sink.port}")
        home.start_engine()
        home.inject("x@hard.test", "y@hard.test", sender="author@origin.test")
        bounce = origin.wait_for_messages(1)[0]
    text = bounce.content.decode()
    assert "Final-Recipient: rfc822; x@hard.test" in text
    assert "Final-Recipient: rfc822; y@hard.test" in text
    # One report per message, however many recipients failed.
    assert len(origin.received()) == 1


def test_expired_message_bounces_at_its_next_temporary_failure(home: SendworxHome) -> None:
    home.set_control("queuelifetime", "1\n")
    with PostfixSink("127.0.0.36", None, "-r", "RCPT") as sink, RecordingSink(ORIGIN) as origin:
        _origin_route(home, origin.port, f"slow.test:[127.0.0.36]:{sink.port}")
        engine = home.start_engine()
        home.inject("x@slow.test", sender="author@origin.test")
        assert home.wait_for_delivery_lines(1)[0]["result"] == "deferred"
        assert origin.received() == []
        time.sleep(1.2)
        engine.send_signal(signal.SIGALRM)
        bounce = origin.wait_for_messages(1)[0]
        wait_for(home.queue_empty)
    text = bounce.content.decode()
    assert "Status: 4.4.7" in text
    assert "delivery time expired; last error: 450" in text
    # The bounce may be delivered (and logged) before the original's failure is logged.
    mine = [line for line in home.deliveries() if line["rcpt"] == "x@slow.test"]
    assert [line["result"] for line in mine] == ["deferred", "failed"]


def test_failed_null_sender_message_goes_to_postmaster_once(home: SendworxHome) -> None:
    """postmaster@ helo_name is this host: the double bounce lands in its local mailbox."""
    reject = Behaviour(rcpt_reply=lambda rcpt: "550 5.7.1 go away")
    with RecordingSink("127.0.0.37", behaviour=reject) as remote:
        home.routes(f"remote.test:[127.0.0.37]:{remote.port}")
        home.start_engine()
        result = home.sendmail("-f", "", "x@remote.test", message=b"Subject: a bounce\n\nbody\n")
        assert result.returncode == 0
        new = home.home / "mailboxes" / "postmaster" / "new"
        wait_for(lambda: new.exists() and any(new.iterdir()))
        wait_for(home.queue_empty)
    [double] = [path.read_bytes().decode() for path in new.iterdir()]
    assert double.startswith("Return-Path: <>\nDelivered-To: postmaster@sendworx.test\n")
    assert "x@remote.test" in double


def test_bounce_that_fails_becomes_a_double_bounce_and_that_is_never_bounced(
    home: SendworxHome,
) -> None:
    reject_all = Behaviour(rcpt_reply=lambda rcpt: "550 5.1.1 nobody here")
    with (
        RecordingSink("127.0.0.38", behaviour=reject_all) as everything_rejected,
        RecordingSink(ORIGIN, behaviour=reject_all) as origin_rejects_too,
    ):
        port = everything_rejected.port
        home.routes(
            f"remote.test:[127.0.0.38]:{port}",
            f"origin.test:[127.0.0.38]:{port}",
            f"ops.test:[{ORIGIN}]:{origin_rejects_too.port}",
        )
        home.set_control("doublebounceto", "postmaster@ops.test\n")  # not this host: it can fail
        home.start_engine()
        home.inject("x@remote.test", sender="author@origin.test")
        # message fails -> bounce to author fails -> double bounce to postmaster fails -> dropped
        wait_for(lambda: "no triple bounces" in home.log_text(), timeout=20)
        wait_for(home.queue_empty)
    failed = [line["rcpt"] for line in home.deliveries() if line["result"] == "failed"]
    assert failed == ["x@remote.test", "author@origin.test", "postmaster@ops.test"]


def test_421_after_rcpt_moves_on_to_the_next_mx(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx(
        "flaky.test", (10, "a.flaky.test", "127.0.0.40"), (20, "b.flaky.test", "127.0.0.41")
    )
    with (
        PostfixSink("127.0.0.40", sink_port, "-Q", "RCPT") as closing,
        RecordingSink("127.0.0.41", sink_port) as second,
    ):
        home.start_engine()
        home.inject("u@flaky.test")
        second.wait_for_messages(1)
    assert closing.transactions() == []


def test_server_that_never_greets_times_out_and_the_next_mx_gets_the_mail(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    home.set_control("timeoutremote", "1\n")
    dns_server.mx("mute.test", (10, "a.mute.test", "127.0.0.42"), (20, "b.mute.test", "127.0.0.43"))

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    with (
        RawServer(silent, "127.0.0.42", sink_port) as mute,
        RecordingSink("127.0.0.43", sink_port) as second,
    ):
        home.start_engine()
        started = time.monotonic()
        home.inject("u@mute.test")
        second.wait_for_messages(1)
        assert 0.9 < time.monotonic() - started < 10
    assert mute.connections == 1


def test_a_greeting_trickled_a_byte_at_a_time_is_cut_at_the_deadline(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    """Each byte arrives well within timeout_remote, the greeting never ends: the whole reply
    has one deadline, so the next MX gets the mail after about a second, not never."""
    home.set_control("timeoutremote", "1\n")
    dns_server.mx("drip.test", (10, "a.drip.test", "127.0.0.46"), (20, "b.drip.test", "127.0.0.47"))

    async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.2)

    with (
        RawServer(dripping, "127.0.0.46", sink_port),
        RecordingSink("127.0.0.47", sink_port) as second,
    ):
        home.start_engine()
        started = time.monotonic()
        home.inject("u@drip.test")
        second.wait_for_messages(1, timeout=10)
        assert time.monotonic() - started < 5


def test_connection_dropped_mid_data_is_retried_on_the_next_mx(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx("drop.test", (10, "a.drop.test", "127.0.0.44"), (20, "b.drop.test", "127.0.0.45"))

    async def hang_up_halfway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"354 go ahead\r\n")
        await writer.drain()
        await reader.read(100)
        return True

    async def drops_in_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted_smtp(reader, writer, verbs={b"DATA": hang_up_halfway})

    with (
        RawServer(drops_in_data, "127.0.0.44", sink_port) as dropper,
        RecordingSink("127.0.0.45", sink_port) as second,
    ):
        home.start_engine()
        home.inject("u@drop.test")
        second.wait_for_messages(1)
    assert dropper.connections == 1


def test_slow_server_beyond_timeout_remote_defers(home: SendworxHome) -> None:
    home.set_control("timeoutremote", "1\n")
    with PostfixSink("127.0.0.46", None, "-W", "DATA:3") as slow:
        home.routes(f"slow.test:[127.0.0.46]:{slow.port}")
        home.start_engine()
        home.inject("u@slow.test")
        [line] = home.wait_for_delivery_lines(1, timeout=20)
    assert line["result"] == "deferred"
    assert "timeout" in line["reply"]
    assert len(home.queue_files()) == 1


def test_unreachable_destination_defers_every_message_queued_for_it(home: SendworxHome) -> None:
    home.routes("down.test:[127.0.0.47]:9")  # nothing listens on the discard port
    home.start_engine()
    for number in range(3):
        home.inject(f"u{number}@down.test")
    lines = home.wait_for_delivery_lines(3)
    assert {line["result"] for line in lines} == {"deferred"}
    assert all("refused" in line["reply"] or "failed" in line["reply"] for line in lines)
    assert len(home.queue_files("state")) == 3
