"""Small pieces with rules of their own: sendmail arguments, DSNs,
the queue file format, the pid lock and the instance config."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path
from typing import cast

import pytest

from sendworx.engine.bounces import build_bounce
from sendworx.inject.sendmail import UsageError, parse_arguments, split_message
from sendworx.shared.config import ConfigError, load_config
from sendworx.shared.pidfile import AlreadyRunning, PidFile, running_pid
from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import (
    CorruptMessageError,
    Envelope,
    MessageKind,
    Origin,
    RecipientFailure,
    decode_message,
    encode_message,
)


@pytest.mark.parametrize(
    ("arguments", "sender", "recipients", "read_headers", "dot_ends"),
    [
        (["-t", "-i"], None, [], True, False),
        (["-oi", "-f", "a@b", "x@y"], "a@b", ["x@y"], False, False),
        (["-fa@b", "-Fname", "--", "-odd@y"], "a@b", ["-odd@y"], False, True),
        (["-odi", "-oem", "-bm", "-v", "x@y"], None, ["x@y"], False, True),
    ],
)
def test_sendmail_arguments(
    arguments: list[str],
    sender: str | None,
    recipients: list[str],
    read_headers: bool,
    dot_ends: bool,
) -> None:
    invocation = parse_arguments(arguments)
    assert invocation.sender == sender
    assert invocation.recipients == recipients
    assert invocation.read_recipients is read_headers
    assert invocation.dot_ends_input is dot_ends


@pytest.mark.parametrize("arguments", [["-bs"], ["-f"], ["-F"], ["-q1h"]])
def test_sendmail_refuses_what_it_cannot_do(arguments: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_arguments(arguments)


def test_split_message_handles_headerless_and_bodyless_input() -> None:
    assert split_message(b"Subject: a\n\nbody\n") == (b"Subject: a\n", b"body\n")
    assert split_message(b"just text\n") == (b"", b"just text\n")
    assert split_message(b"Subject: only\n") == (b"Subject: only\n", b"")


def test_bounce_is_a_valid_multipart_report_with_every_failure() -> None:
    original = Envelope("author@origin.test", ("a@x.test", "b@x.test"), 1_700_000_000.0)
    failures = [
        RecipientFailure("a@x.test", "550 5.1.1 unknown", "5.1.1", "mx.x.test[192.0.2.1]:25"),
        RecipientFailure("b@x.test", "delivery time expired; last error: 451", "4.4.7"),
    ]
    data = build_bounce(
        original=original,
        original_content=b"Subject: hello\r\n\r\nbody\r\n",
        failures=failures,
        notify="author@origin.test",
        reporting_mta="mta.test",
        sender="MAILER-DAEMON@mta.test",
        now=1_700_000_100.0,
    )
    report = email.message_from_bytes(data)
    assert report["To"] == "author@origin.test"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    text, status, returned = cast(list[Message], report.get_payload())
    assert "<a@x.test>: 550 5.1.1 unknown" in text.get_payload()
    blocks = cast(list[Message], status.get_payload())
    assert blocks[0]["Reporting-MTA"] == "dns; mta.test"
    assert [block["Status"] for block in blocks[1:]] == ["5.1.1", "4.4.7"]
    assert blocks[1]["Remote-MTA"] == "dns; mx.x.test[192.0.2.1]:25"
    assert blocks[2]["Remote-MTA"] is None
    assert returned.get_content_type() == "message/rfc822"


def test_bounce_of_a_large_message_returns_only_its_headers() -> None:
    data = build_bounce(
        original=Envelope("a@o.test", ("b@x.test",), 0.0),
        original_content=b"Subject: big\r\n\r\n" + b"x" * 100_000,
        failures=[RecipientFailure("b@x.test", "552 too big", "5.3.4")],
        notify="a@o.test",
        reporting_mta="mta.test",
        sender="MAILER-DAEMON@mta.test",
        now=0.0,
    )
    assert b"text/rfc822-headers" in data and len(data) < 10_000


def test_queue_file_round_trip_and_corruption() -> None:
    envelope = Envelope("", ("ü@x.test",), 1.5, MessageKind.BOUNCE)
    assert decode_message(encode_message(envelope, b"body\n")) == (envelope, b"body\n")
    for broken in (b"", b"sendworx-queue 1\n{", b"sendworx-queue 1\n{}\nbody", b"garbage"):
        with pytest.raises(CorruptMessageError):
            decode_message(broken)


def test_queue_inject_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue").ensure()
    queue.new_dir.rmdir()  # the rename into new/ will fail
    with pytest.raises(OSError):
        queue.inject(Envelope("a@b", ("c@d",), 0.0), b"x")
    assert list(queue.tmp_dir.iterdir()) == []


def test_pid_lock_is_exclusive_and_reports_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "run" / "send.pid"
    assert running_pid(path) is None
    holder = PidFile(path)
    holder.acquire()
    assert running_pid(path) is not None
    with pytest.raises(AlreadyRunning):
        PidFile(path).acquire()
    holder.release()
    assert running_pid(path) is None


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "sendworx.toml"
    path.write_text('helo_name = "bad name"\n[smtpd]\nrelay_networks = ["nope"]\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "helo_name" in str(error.value) and "smtpd.relay_networks" in str(error.value)
    path.write_text("[resolver]\nnameservers = ['127.0.0.1']\nport = 5353\n")
    assert load_config(path).resolver.port == 5353


def test_the_envelope_keeps_who_handed_the_message_in() -> None:
    origin = Origin("sendmail", uid=1000, account="alice")
    envelope = Envelope("a@b.test", ("c@d.test",), 1.5, origin=origin)
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert b'"origin":{"via":"sendmail","uid":1000,"account":"alice"}' in envelope.to_json()
    # Files written before the origin was recorded, and nonsense in its place.
    assert Envelope.from_json(b'{"sender":"","recipients":[],"birth":1}').origin is None
    hostile = b'{"sender":"","recipients":[],"birth":1,"origin":{"via":"x","uid":true,"peer":[1]}}'
    assert Envelope.from_json(hostile).origin == Origin("x")
    assert Envelope.from_json(hostile.replace(b'"via":"x"', b'"via":7')).origin is None
