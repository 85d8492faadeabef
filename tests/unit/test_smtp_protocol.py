"""SMTP client pieces without I/O: reply parsing and the DATA encoding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.engine.smtp_protocol import (
    ProtocolError,
    Reply,
    ReplyParser,
    encode_data,
    parse_extensions,
)


def test_multiline_reply_arriving_in_pieces() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-mx.test hello\r\n250-PIPE") == []
    assert parser.feed(b"LINING\r\n250 8BITMIME\r\n220 next") == [
        Reply(250, ("mx.test hello", "PIPELINING", "8BITMIME"))
    ]
    assert parser.feed(b"\r\n") == [Reply(220, ("next",))]


def test_extensions_are_keyed_upper_case() -> None:
    reply = Reply(250, ("mx hello", "size 1000", "PIPELINING", "starttls"))
    assert parse_extensions(reply) == {"SIZE": "1000", "PIPELINING": "", "STARTTLS": ""}


@pytest.mark.parametrize(
    "garbage",
    [b"HTTP/1.1 400 Bad\r\n", b"25\r\n", b"250x\r\n", b"250-a\r\n550 b\r\n", b"9" * 3000],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(garbage)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(550, ("5.1.1 no such user",)), "5.1.1"),
        (Reply(451, ("4.7.1 greylisted",)), "4.7.1"),
        (Reply(550, ("no enhanced code",)), "5.0.0"),
        (Reply(550, ("4.1.1 mismatched class",)), "5.0.0"),
    ],
)
def test_enhanced_status_comes_from_the_reply_or_its_class(reply: Reply, status: str) -> None:
    assert reply.enhanced_status == status


def _decode(wire: bytes) -> bytes:
    assert wire == b".\r\n" or wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")]
    return re.sub(rb"(?m)^\.\.", b".", body)


@given(st.binary(max_size=2000))
def test_data_round_trips_with_crlf_line_ends(content: bytes) -> None:
    wire = encode_data(content)
    normalized = re.sub(rb"(?<!\r)\n", b"\r\n", content)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    assert _decode(wire) == normalized
    # The only line that is a lone dot is the terminator.
    assert wire.split(b"\r\n")[:-2].count(b".") == 0


def test_lone_dot_lines_are_stuffed() -> None:
    assert encode_data(b".\n..x\nok") == b"..\r\n...x\r\nok\r\n.\r\n"
