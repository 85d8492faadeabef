"""The SMTP server session (inject/smtp_session.py) without sockets: the same replies and
messages however the client's bytes are cut, DATA byte for byte as RFC 5321's line rules
read it, the limits, and what a hostile client can make it hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sendworx.inject.smtp_session import (
    COMMAND_LIMIT,
    ERROR_LIMIT,
    Message,
    ServerSession,
    SessionSettings,
    parse_path,
)

LINE_LIMIT = 64
SIZE_LIMIT = 400
SETTINGS = SessionSettings("mx.test", SIZE_LIMIT, 3, LINE_LIMIT)
OPENING = b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\nRCPT TO:<b@far.test>\r\nDATA\r\n"


def converse(pieces: list[bytes], *, may_relay: bool = True) -> tuple[list[bytes], list[Message]]:
    """Feed the pieces in order, answering each message 250; every reply line, and the
    messages handed out."""
    session = ServerSession(SETTINGS, may_relay=may_relay)
    output, messages = [session.greeting()], []
    for piece in pieces:
        step = session.receive(piece)
        output.append(step.output)
        while step.message is not None:
            messages.append(step.message)
            step = session.answered("250 2.0.0 Ok: queued")
            output.append(step.output)
    return b"".join(output).splitlines(), messages


def cut(stream: bytes, sizes: list[int]) -> list[bytes]:
    pieces, position = [], 0
    for size in sizes:
        pieces.append(stream[position : position + size])
        position += size
    return [piece for piece in [*pieces, stream[position:]] if piece]


def reference(stream: bytes) -> tuple[bytes, bool]:
    """RFC 5321's DATA, line by line: lines end at CRLF only; a line ".\\r\\n" ends the data;
    a line over LINE_LIMIT or a total over SIZE_LIMIT refuses it; a leading dot is removed."""
    lines, position, total, refused = [], 0, 0, False
    while True:
        end = stream.index(b"\r\n", position) + 2
        line = stream[position:end]
        position = end
        if line == b".\r\n":
            break
        total += len(line)
        if len(line) > LINE_LIMIT or total > SIZE_LIMIT:
            refused = True
        lines.append(line[1:] if line.startswith(b".") else line)
    return (b"" if refused else b"".join(lines)), refused


fragments = st.sampled_from([b".", b"..", b"a", b"text", b"\r", b"\n", b"\r\n", b" ", b"x" * 30])


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(fragments, max_size=60).map(b"".join),
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
)
def test_data_is_read_as_rfc_5321_reads_it_however_it_is_cut(body: bytes, sizes: list[int]) -> None:
    data = body + (b"" if body.endswith(b"\r\n") or not body else b"\r\n") + b".\r\n"
    expected, refused = reference(data)
    replies, messages = converse(cut(OPENING + data + b"QUIT\r\n", sizes))
    answer = replies[replies.index(b"354 End data with <CR><LF>.<CR><LF>") + 1]
    if refused:
        assert messages == []
        assert answer[:3] in (b"552", b"500")
    else:
        [message] = messages
        assert message.content == expected
        assert (message.sender, message.recipients) == ("a@origin.test", ("b@far.test",))
        assert answer == b"250 2.0.0 Ok: queued"
    # What follows the first terminator is commands again (a body of "." ends at its line;
    # enough lines after it are nonsense enough to be cut off).
    assert replies[-1] == b"221 2.0.0 Bye" or replies[-1].endswith(b"too many errors")


CONVERSATION = (
    b"HELO old.test\r\nMAIL FROM:<a@origin.test> SIZE=10\r\nEHLO client.test\r\n"
    b"NOOP\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME\r\nMAIL FROM:<x@origin.test>\r\n"
    b"RCPT TO:<b@far.test>\r\nRCPT TO:<nodomain>\r\nRCPT TO:<c@[a..b]>\r\n"
    b'RCPT TO:<"quoted local"@far.test>\r\nDATA\r\n.leading dot\r\n..\r\n.\r\n'
    b"RSET\r\nBOGUS\r\nVRFY x\r\nMAIL FROM:<a@origin.test> SIZE=401\r\nQUIT\r\nNOOP\r\n"
)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_the_same_replies_however_the_client_cuts_or_pipelines(sizes: list[int]) -> None:
    replies, messages = converse(cut(CONVERSATION, sizes))
    codes = [reply[:4] for reply in replies if reply[3:4] == b" "]
    assert codes == [
        b"220 ", b"250 ", b"501 ", b"250 ", b"250 ", b"250 ", b"503 ", b"250 ", b"553 ",
        b"501 ", b"250 ", b"354 ", b"250 ", b"250 ", b"500 ", b"252 ", b"552 ", b"221 ",
    ]  # fmt: skip
    [message] = messages
    assert message.sender == ""  # the null sender, and the nested MAIL changed nothing
    assert message.recipients == ("b@far.test", '"quoted local"@far.test')
    assert message.content == b"leading dot\r\n.\r\n"


def test_ehlo_offers_pipelining_and_the_size_limit() -> None:
    replies, _ = converse([b"EHLO client.test\r\n"])
    assert b"250-PIPELINING" in replies and b"250-SIZE 400" in replies
    assert replies[-1] == b"250 SMTPUTF8"


def test_commands_need_their_order() -> None:
    replies, _ = converse(
        [b"MAIL FROM:<a@o.test>\r\nHELO c.test\r\nRCPT TO:<b@f.test>\r\nDATA\r\nDATA x\r\n"]
    )
    assert [reply[:3] for reply in replies[1:]] == [b"503", b"250", b"503", b"503", b"503"]


def test_recipients_outside_relay_networks_and_over_the_limit() -> None:
    rcpts = b"".join(b"RCPT TO:<r%d@far.test>\r\n" % n for n in range(4))
    opening = b"EHLO c.test\r\nMAIL FROM:<a@origin.test>\r\n"
    replies, _ = converse([opening + rcpts])
    assert [reply[:3] for reply in replies[-4:]] == [b"250", b"250", b"250", b"452"]
    replies, _ = converse([opening + rcpts], may_relay=False)
    assert replies[-1] == b"554 5.7.1 Relay access denied"


def test_control_characters_and_parameters_in_addresses() -> None:
    replies, _ = converse(
        [
            b"EHLO c.test\r\nMAIL FROM:<a\rb@origin.test>\r\nMAIL FROM:<a\x00@origin.test>\r\n"
            b"MAIL FROM:<a@origin.test> FOO=1\r\nMAIL FROM:<a@origin.test> BODY=BINARY\r\n"
            b"MAIL FROM:<a@origin.test> SIZE=x\r\nMAIL FROM:<a@origin.test> SMTPUTF8\r\n"
            b"RCPT TO:<b@far.test> NOTIFY=NEVER\r\nRCPT TO:<b\x00@far.test>\r\n"
        ]
    )
    codes = [reply[:3] for reply in replies if reply[3:4] == b" "]
    assert codes == [b"220", b"250", b"501", b"501", b"555", b"501", b"501", b"250", b"555", b"501"]


def test_arguments_that_are_not_utf_8_are_refused_before_they_reach_the_queue() -> None:
    """Bytes that are not UTF-8 could be neither written in the queue file's JSON envelope
    nor relayed; refused at the command, as Postfix refuses them."""
    replies, messages = converse(
        [
            b"EHLO \xffclient.test\r\nEHLO client.test\r\nMAIL FROM:<\xff@origin.test>\r\n"
            b"MAIL FROM:<\xc3\xa9@origin.test>\r\nRCPT TO:<b\xc3@far.test>\r\n"
            b"RCPT TO:<b@far.test>\r\nDATA\r\n\xff\r\n.\r\n"
        ]
    )
    codes = [reply[:3] for reply in replies if reply[3:4] == b" "]
    assert codes == [b"220", b"500", b"250", b"500", b"250", b"500", b"250", b"354", b"250"]
    [message] = messages
    assert message.sender == "\u00e9@origin.test" and message.content == b"\xff\r\n"


def test_a_line_of_any_length_is_held_only_up_to_the_command_limit() -> None:
    session = ServerSession(SETTINGS, may_relay=True)
    for _ in range(100):
        assert session.receive(b"x" * 10_000).output == b""
        assert session.held_bytes <= COMMAND_LIMIT + 10_000
    step = session.receive(b"\r\nNOOP\r\n")
    assert step.output == b"500 5.5.2 Error: command line too long\r\n250 2.0.0 Ok\r\n"


def test_data_over_the_limit_is_read_to_its_end_and_not_kept() -> None:
    session = ServerSession(SETTINGS, may_relay=True)
    session.receive(OPENING)
    for _ in range(100):
        session.receive(b"y" * 50 + b"\r\n")
        assert session.held_bytes < SIZE_LIMIT + 60
    step = session.receive(b".\r\nRSET\r\n")
    assert step.output == b"552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n"
    assert step.message is None and session.held_bytes == 0


def test_a_line_too_long_in_data_is_refused_with_500() -> None:
    replies, messages = converse([OPENING, b"z" * 63, b"\r\n.\r\n"])
    assert messages == [] and replies[-1].startswith(b"500 5.5.2 Line too long")
    replies, messages = converse([OPENING, b"z" * 62, b"\r\n.\r\n"])
    assert messages[0].content == b"z" * 62 + b"\r\n"


def test_input_behind_a_waiting_message_waits_with_it() -> None:
    session = ServerSession(SETTINGS, may_relay=True)
    step = session.receive(OPENING + b"hello\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert step.message is not None and step.output.endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert session.receive(b"NOOP\r\n") == type(step)()  # kept, not answered yet
    after = session.answered("452 4.3.1 Insufficient system storage")
    assert after.output == (
        b"452 4.3.1 Insufficient system storage\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
    )
    assert after.close and session.receive(b"NOOP\r\n").output == b""


def test_a_client_that_keeps_sending_nonsense_is_cut_off() -> None:
    replies, _ = converse([b"BOGUS\r\n" * (ERROR_LIMIT + 5)])
    assert replies[-1] == b"421 4.7.0 mx.test Error: too many errors"
    assert len(replies) == 1 + ERROR_LIMIT + 1


def test_a_timeout_says_421_and_closes() -> None:
    session = ServerSession(SETTINGS, may_relay=True)
    step = session.timed_out()
    assert step.close and step.output.startswith(b"421 4.4.2 mx.test")


def test_paths() -> None:
    assert parse_path("<a@b.test>") == ("a@b.test", [])
    assert parse_path(" <a@b.test> SIZE=10 BODY=8BITMIME") == (
        "a@b.test",
        ["SIZE=10", "BODY=8BITMIME"],
    )
    assert parse_path("<>") == ("", [])
    assert parse_path("<@relay.test,@other.test:a@b.test>") == ("a@b.test", [])
    assert parse_path('<"a > b"@c.test>') == ('"a > b"@c.test', [])
    assert parse_path("a@b.test SIZE=1") == ("a@b.test", ["SIZE=1"])  # Postfix takes it too
    for bad in ("<a@b.test", "<a@b.test>x", "<a <b>@c.test>", "a>b@c.test", "<a b@c.test>"):
        assert parse_path(bad) is None, bad


def test_a_bare_lf_dot_lf_is_content_not_the_end_of_the_data() -> None:
    """SMTP smuggling: `<LF>.<LF>` (or `<CR>.<CR>`) followed by a second transaction stays
    inside the first message; only CRLF . CRLF ends the data."""
    smuggled = b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<e@evil.test>\r\nRCPT TO:<v@far.test>\r\n"
    replies, messages = converse([OPENING + smuggled + b"\r.\rDATA\r\n.\r\nQUIT\r\n"])
    [message] = messages
    assert b"MAIL FROM:<e@evil.test>" in message.content and b"\r.\rDATA" in message.content
    assert replies[-2:] == [b"250 2.0.0 Ok: queued", b"221 2.0.0 Bye"]
