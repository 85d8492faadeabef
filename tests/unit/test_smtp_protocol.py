"""SMTP client pieces without I/O: reply parsing and the DATA encoding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.engine.smtp_protocol import (
    ProtocolError,
    ReplyParser,
    ResetRefused,
    SMTPReply,
    Transaction,
    encode_data,
    parse_extensions,
)


def test_multiline_reply_arriving_in_pieces() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-mx.test hello\r\n250-PIPE") == []
    assert parser.feed(b"LINING\r\n250 8BITMIME\r\n220 next") == [
        SMTPReply(250, ("mx.test hello", "PIPELINING", "8BITMIME"))
    ]
    assert parser.feed(b"\r\n") == [SMTPReply(220, ("next",))]


def test_extensions_are_keyed_upper_case() -> None:
    reply = SMTPReply(250, ("mx hello", "size 1000", "PIPELINING", "starttls"))
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
        (SMTPReply(550, ("5.1.1 no such user",)), "5.1.1"),
        (SMTPReply(451, ("4.7.1 greylisted",)), "4.7.1"),
        (SMTPReply(550, ("no enhanced code",)), "5.0.0"),
        (SMTPReply(550, ("4.1.1 mismatched class",)), "5.0.0"),
    ],
)
def test_enhanced_status_comes_from_the_reply_or_its_class(reply: SMTPReply, status: str) -> None:
    assert reply.enhanced_status == status


def _decode(wire: bytes) -> bytes:
    assert wire == b".\r\n" or wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")]
    return re.sub(rb"(?m)^\.\.", b".", body)


@given(st.binary(max_size=2000))
def test_data_round_trips_with_crlf_line_ends(content: bytes) -> None:
    wire = encode_data(content)
    # Every line end (CRLF, bare LF, bare CR) becomes CRLF; NUL bytes are dropped.
    normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", content.replace(b"\x00", b""))
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    assert _decode(wire) == normalized
    # The only line that is a lone dot is the terminator.
    assert wire.split(b"\r\n")[:-2].count(b".") == 0


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\x00"])).map(b"".join))
def test_data_is_encoded_as_the_regular_expressions_encode_it(content: bytes) -> None:
    """The fast paths (CRLF already, LF only, stuffing by replace) against the plain rules:
    every line end becomes CRLF, NUL goes, a dot starting a line is doubled."""
    normalized = re.sub(rb"\r\n|\r|\n", b"\r\n", content.replace(b"\x00", b""))
    stuffed = re.sub(rb"(?m)^\.", b"..", normalized)
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    assert encode_data(content) == stuffed + b".\r\n"


def test_lone_dot_lines_are_stuffed() -> None:
    assert encode_data(b".\n..x\nok") == b"..\r\n...x\r\nok\r\n.\r\n"


# -- the mail transaction, without a socket ---------------------------------------------------

PIPELINING = {"PIPELINING": "", "8BITMIME": "", "SIZE": "1000000"}
ONE_AT_A_TIME = {"8BITMIME": ""}
OK = SMTPReply(250, ("2.0.0 ok",))
GO_AHEAD = SMTPReply(354, ("go ahead",))


def _reply(code: int) -> SMTPReply:
    return SMTPReply(code, (f"{code // 100}.0.0 reply {code}",))


def _run(transaction: Transaction, replies: list[SMTPReply]) -> list[bytes]:
    """Every write the transaction asks for, feeding it `replies` in order."""
    writes = [transaction.start()]
    feed = iter(replies)
    while not transaction.finished:
        writes.append(transaction.receive(next(feed)))
    assert next(feed, None) is None, "replies left over"
    return [write for write in writes if write]


def test_pipelining_sends_mail_every_rcpt_and_data_in_one_write() -> None:
    transaction = Transaction("s@o.test", ["a@x.test", "b@x.test"], b"hi\n", PIPELINING)
    writes = _run(transaction, [OK, OK, _reply(550), GO_AHEAD, OK])
    assert writes == [
        b"MAIL FROM:<s@o.test> SIZE=3\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
        b"hi\r\n.\r\n",
    ]
    assert transaction.replies == {"a@x.test": OK, "b@x.test": _reply(550)}


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    transaction = Transaction("s@o.test", ["a@x.test", "b@x.test"], b"hi\n", ONE_AT_A_TIME)
    assert transaction.start() == b"MAIL FROM:<s@o.test>\r\n"
    assert transaction.receive(OK) == b"RCPT TO:<a@x.test>\r\n"
    assert transaction.receive(_reply(450)) == b"RCPT TO:<b@x.test>\r\n"
    assert transaction.receive(OK) == b"DATA\r\n"
    assert transaction.receive(GO_AHEAD) == b"hi\r\n.\r\n"
    assert transaction.receive(OK) == b"" and transaction.finished
    assert transaction.replies == {"a@x.test": _reply(450), "b@x.test": OK}


def test_a_refused_sender_answers_for_every_recipient_and_resets() -> None:
    transaction = Transaction("s@o.test", ["a@x.test", "b@x.test"], b"hi", ONE_AT_A_TIME)
    writes = _run(transaction, [_reply(553), OK])
    assert writes == [b"MAIL FROM:<s@o.test>\r\n", b"RSET\r\n"]
    assert transaction.replies == dict.fromkeys(["a@x.test", "b@x.test"], _reply(553))


def test_pipelined_refused_sender_answers_for_every_recipient() -> None:
    transaction = Transaction("s@o.test", ["a@x.test"], b"hi", PIPELINING)
    writes = _run(transaction, [_reply(553), _reply(503), _reply(503), OK])
    assert writes[-1] == b"RSET\r\n"
    assert transaction.replies == {"a@x.test": _reply(553)}


def test_no_accepted_recipient_means_no_data_and_a_reset() -> None:
    transaction = Transaction("s@o.test", ["a@x.test", "b@x.test"], b"hi", ONE_AT_A_TIME)
    writes = _run(transaction, [OK, _reply(550), _reply(450), OK])
    assert b"DATA\r\n" not in writes and writes[-1] == b"RSET\r\n"
    assert transaction.replies == {"a@x.test": _reply(550), "b@x.test": _reply(450)}


def test_354_without_an_accepted_recipient_gets_an_empty_message_abandoned() -> None:
    transaction = Transaction("s@o.test", ["a@x.test"], b"secret", PIPELINING)
    writes = _run(transaction, [OK, _reply(550), GO_AHEAD, _reply(554), OK])
    assert writes[1:] == [b".\r\n", b"RSET\r\n"]
    assert transaction.replies == {"a@x.test": _reply(550)}


def test_a_refused_data_answers_for_the_accepted_recipients() -> None:
    transaction = Transaction("s@o.test", ["a@x.test", "b@x.test"], b"hi", PIPELINING)
    _run(transaction, [OK, OK, _reply(551), _reply(451), OK])
    assert transaction.replies == {"a@x.test": _reply(451), "b@x.test": _reply(551)}


def test_a_refused_reset_makes_the_connection_unusable() -> None:
    transaction = Transaction("s@o.test", ["a@x.test"], b"hi", ONE_AT_A_TIME)
    transaction.start()
    assert transaction.receive(_reply(550)) == b"RSET\r\n"
    with pytest.raises(ResetRefused):
        transaction.receive(_reply(500))


def test_messages_the_server_cannot_take_are_refused_without_a_byte_sent() -> None:
    too_big = Transaction("s@o.test", ["a@x.test"], b"x" * 2_000_000, PIPELINING)
    assert too_big.start() == b"" and too_big.finished
    assert too_big.replies["a@x.test"].enhanced_status == "5.3.4"
    international = Transaction("s@o.test", ["\u00fc@x.test"], b"hi", PIPELINING)
    assert international.start() == b""
    assert international.replies["\u00fc@x.test"].enhanced_status == "5.6.7"


@pytest.mark.parametrize(
    ("content", "extensions", "recipient", "parameters"),
    [
        (b"plain", {"SIZE": "0"}, "a@x.test", ["SIZE=5"]),
        (b"caf\xc3\xa9", {"8BITMIME": ""}, "a@x.test", ["BODY=8BITMIME"]),
        (b"caf\xc3\xa9", {}, "a@x.test", []),
        (b"hi", {"SMTPUTF8": ""}, "\u00fc@x.test", ["SMTPUTF8"]),
    ],
)
def test_mail_parameters_follow_what_the_server_offers(
    content: bytes, extensions: dict[str, str], recipient: str, parameters: list[str]
) -> None:
    assert Transaction("s@o.test", [recipient], content, extensions).mail_parameters() == parameters


codes = st.sampled_from([250, 251, 354, 421, 450, 451, 452, 500, 503, 550, 551, 552, 554])


@given(
    recipients=st.lists(st.from_regex(r"[a-d]@x\.test", fullmatch=True), min_size=1, max_size=4),
    pipelining=st.booleans(),
    codes=st.lists(codes, min_size=8, max_size=8),  # the most replies a transaction takes
)
def test_every_recipient_gets_exactly_one_reply_and_the_body_only_after_354(
    recipients: list[str], pipelining: bool, codes: list[int]
) -> None:
    extensions = PIPELINING if pipelining else ONE_AT_A_TIME
    transaction = Transaction("s@o.test", recipients, b"body", extensions)
    writes = [transaction.start()]
    feed = iter(codes)
    sent_data_after = None
    try:
        while not transaction.finished:
            code = next(feed)
            outgoing = transaction.receive(_reply(code))
            if outgoing == b"body\r\n.\r\n":
                sent_data_after = code
            writes.append(outgoing)
    except ResetRefused:
        return  # the connection is dropped; the caller defers the recipients
    assert set(transaction.replies) == set(recipients)
    assert sent_data_after in (None, 354)
    if pipelining:
        assert writes[0].count(b"RCPT TO:") == len(recipients)  # everything in the first write


def test_bare_cr_and_nul_never_go_out_in_a_body() -> None:
    assert encode_data(b"a\rb\x00c\r\nd\ne") == b"a\r\nbc\r\nd\r\ne\r\n.\r\n"
    assert encode_data(b"x\r\r\n.y\r") == b"x\r\n\r\n..y\r\n.\r\n"
