"""The XML-RPC request decoder agrees with the standard library on every value it can see."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendworx.transports.xmlrpc import MalformedRequest, parse_call


def _xml_character(character: str) -> bool:
    """Characters XML 1.0 carries unchanged (any parser normalises \\r to \\n)."""
    code = ord(character)
    return character in "\t\n" or (0x20 <= code < 0xD800) or (0xE000 <= code <= 0xFFFD)


xml_text = st.text(alphabet=st.characters(min_codepoint=0x09).filter(_xml_character), max_size=40)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | xml_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(xml_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(auth=values, data=values)
def test_decoding_matches_the_standard_library(auth: Any, data: Any) -> None:
    body = xmlrpc.client.dumps(
        (auth, "/nodeworx/mail/send", "update", data), "iworx.route", allow_none=True
    )
    (expected_auth, _, _, expected_input), _ = xmlrpc.client.loads(body, use_builtin_types=True)
    call = parse_call(body.encode())
    assert (call.auth, call.input) == (expected_auth, expected_input)


def test_types_the_stdlib_client_never_sends_but_php_does() -> None:
    body = (
        b"<?xml version='1.0'?><methodCall><methodName>iworx.route</methodName><params>"
        b"<param><value>bare string key</value></param>"
        b"<param><value><string>/nodeworx/mail/send</string></value></param>"
        b"<param><value><string>update</string></value></param>"
        b"<param><value><struct>"
        b"<member><name>i4</name><value><i4> 7 </i4></value></member>"
        b"<member><name>b64</name><value><base64>aGk=</base64></value></member>"
        b"<member><name>when</name><value><dateTime.iso8601>20260101T00:00:00</dateTime.iso8601>"
        b"</value></member><!-- a comment --></struct></value></param></params></methodCall>"
    )
    call = parse_call(body)
    assert call.auth == "bare string key"
    assert call.input == {"i4": 7, "b64": b"hi", "when": "20260101T00:00:00"}


@pytest.mark.parametrize(
    "body",
    [
        b"<methodCall><methodName>iworx.route</methodName><params><param><value><int>x</int>"
        b"</value></param></params></methodCall>",
        b"<methodCall><methodName>iworx.route</methodName><params><param><value><boolean>2"
        b"</boolean></value></param></params></methodCall>",
        b"<methodCall><methodName>iworx.route</methodName><params><param><value><blob/>"
        b"</value></param></params></methodCall>",
        b"<methodResponse/>",
        b"<methodCall><methodName>iworx.route</methodName><params>"
        + b"<param><value><array><data><value>" * 300
        + b"</value></data></array></value></param>" * 300
        + b"</params></methodCall>",
    ],
)
def test_bad_values_and_absurd_nesting_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_call(body)
