"""The local submission protocol, daemon side: any bytes in any pieces give the request and
the message that the whole stream gives, and the "." line ends input exactly where
`sendworx sendmail` reading a pipe ends it."""

from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.inject.sendmail import read_message
from sendworx.inject.submission_protocol import (
    MessageReader,
    ProtocolError,
    Request,
    decode_reply,
    encode_reply,
    encode_request,
    parse_header,
)

lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"a", b"", b" .", b".\r", b"x.y"]), max_size=12
).map(lambda parts: [part + end for part, end in zip(parts, [b"\n", b"\r\n"] * 12, strict=False)])


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(
    # What a C argv can hold: no NUL; no lone surrogates (not UTF-8).
    argv=st.lists(
        st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=30),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_a_header_cut_anywhere_reads_as_the_whole(argv: list[str], cuts: list[int]) -> None:
    data = encode_request(argv) + b"rest"
    buffer = bytearray()
    parsed = None
    for piece in _pieces(data, cuts):
        buffer += piece
        parsed = parse_header(buffer)
        if parsed is not None:
            break
    assert parsed is not None
    request, used = parsed
    assert request == Request(argv[0].rsplit("/", 1)[-1], tuple(argv[1:]))
    assert data[used:] == b"rest"


@pytest.mark.parametrize(
    "data",
    [
        b"HELO",
        b"SWX1\x00\x00\x00\x00",  # no argv[0]
        b"SWX1\x00\x01\x00\x00",  # too many arguments
        b"SWX1\x00\x00\x00\x01\x00\x01\x00\x00",  # an argument too long
        b"SWX1\x00\x00\x00\x01\x00\x00\x00\x02a\x00",  # a NUL in it
        b"SWX1\x00\x00\x00\x01\x00\x00\x00\x01\xff",  # not UTF-8
    ],
)
def test_a_bad_header_is_refused_not_waited_for(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_header(data)


@given(body=lines, cuts=st.lists(st.integers(0, 10_000), max_size=6), dot=st.booleans())
def test_the_message_ends_where_sendmail_reading_a_pipe_ends_it(
    body: list[bytes], cuts: list[int], dot: bool
) -> None:
    data = b"".join(body)
    reader = MessageReader(dot, limit=1 << 20)
    for piece in _pieces(data, cuts):
        if reader.feed(piece):
            break
    reader.finish()
    assert reader.content == read_message(io.BytesIO(data), dot)
    assert not reader.too_large


def test_a_message_over_the_limit_is_too_large_but_one_at_it_is_not() -> None:
    at_limit = MessageReader(False, limit=10)
    at_limit.feed(b"0123456789")
    at_limit.finish()
    assert not at_limit.too_large
    over = MessageReader(True, limit=10)
    assert over.feed(b"0123456789abcdef") and over.too_large


@given(status=st.integers(0, 255), out=st.text(max_size=50), err=st.text(max_size=50))
def test_a_reply_reads_back(status: int, out: str, err: str) -> None:
    assert decode_reply(encode_reply(status, out, err)) == (
        status,
        out.encode("utf-8", "replace"),
        err.encode("utf-8", "replace"),
    )
