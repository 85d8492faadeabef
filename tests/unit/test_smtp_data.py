"""The DATA reader (inject/smtp_data.py) against aiosmtpd's line-by-line rules, on random
streams cut into random pieces: the same content byte for byte, the same refusals, and the
bytes after the terminator (a pipelined command) left unread."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from sendworx.inject.smtp_data import DataState, read_data

LINE_LIMIT = 64
SIZE_LIMIT = 400


def reference(stream: bytes, size_limit: int, line_limit: int) -> tuple[bytes, bool, int]:
    """aiosmtpd's smtp_DATA, reduced to its rules: lines end at CRLF only; a line ".\\r\\n"
    ends the data; a line over `line_limit` or a total over `size_limit` refuses it; the
    leading dot of every line is removed. (content, refused, bytes consumed)"""
    lines, position, total, refused = [], 0, 0, False
    while True:
        end = stream.index(b"\r\n", position) + 2
        line = stream[position:end]
        position = end
        if line == b".\r\n":
            break
        total += len(line)
        if len(line) > line_limit or (size_limit and total > size_limit):
            refused = True
        lines.append(line[1:] if line.startswith(b".") else line)
    return (b"" if refused else b"".join(lines)), refused, position


async def ours(pieces: list[bytes]) -> tuple[bytes, DataState, bytes]:
    reader = asyncio.StreamReader(limit=LINE_LIMIT)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)

    feeding = asyncio.create_task(feed())
    content, state = await read_data(reader, SIZE_LIMIT, LINE_LIMIT)
    await feeding
    reader.feed_eof()
    return content, state, await reader.read()


fragments = st.sampled_from([b".", b"..", b"a", b"text", b"\r", b"\n", b"\r\n", b" ", b"x" * 30])


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(fragments, max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
)
def test_the_same_message_as_aiosmtpd_reads_line_by_line(body: bytes, cuts: list[int]) -> None:
    stream = body + (b"" if body.endswith(b"\r\n") or not body else b"\r\n") + b".\r\nQUIT\r\n"
    expected, refused, consumed = reference(stream, SIZE_LIMIT, LINE_LIMIT)
    pieces, position = [], 0
    for cut in cuts:
        pieces.append(stream[position : position + cut])
        position += cut
    pieces.append(stream[position:])
    content, state, rest = asyncio.run(ours([piece for piece in pieces if piece]))
    assert (state is not DataState.NOMINAL) == refused
    assert content == expected
    assert rest == stream[consumed:]


async def _read_all(stream: bytes, size_limit: int | None) -> tuple[bytes, DataState]:
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    reader.feed_data(stream)
    return await read_data(reader, size_limit, LINE_LIMIT)


def test_a_message_much_larger_than_the_stream_limit() -> None:
    """Many times the reader's limit, with dots at line starts and mid-line."""
    body = b"".join(b".line %d ends.\r\n" % n for n in range(2000))
    content, state = asyncio.run(_read_all(body + b".\r\nQUIT\r\n", None))
    assert state is DataState.NOMINAL
    assert content == body.replace(b"\r\n.", b"\r\n")[1:]


def test_an_empty_message_and_the_limits() -> None:
    for stream, expected in (
        (b".\r\n", (b"", DataState.NOMINAL)),
        (b"a" * 63 + b"\r\n.\r\n", (b"", DataState.TOO_LONG)),
        (b"a" * 62 + b"\r\n.\r\n", (b"a" * 62 + b"\r\n", DataState.NOMINAL)),
        ((b"b" * 50 + b"\r\n") * 9 + b".\r\n", (b"", DataState.TOO_MUCH)),
    ):
        assert asyncio.run(_read_all(stream, SIZE_LIMIT)) == expected
