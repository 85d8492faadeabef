"""What the XML-RPC request parser refuses, and what it accepts that only PHP clients send."""

from __future__ import annotations

import pytest

from sendworx.transports.route_call import FAULT_METHOD, FAULT_PARSE, MalformedRequest
from sendworx.transports.xmlrpc import parse_call

CALL = (
    b"<?xml version='1.0'?><methodCall><methodName>iworx.route</methodName>"
    b"<params>%s</params></methodCall>"
)


def _params(*values: bytes) -> bytes:
    return CALL % b"".join(b"<param><value>" + value + b"</value></param>" for value in values)


def test_php_style_values_decode_like_the_standard_library() -> None:
    body = _params(
        b"bare string key",
        b"<string>/nodeworx/mail/send</string>",
        b"<string>update</string>",
        b"<struct><member><name>i4</name><value><i4>7</i4></value></member>"
        b"<member><name>b64</name><value><base64>aGk=</base64></value></member>"
        b"<member><name>nil</name><value><nil/></value></member></struct>",
    )
    call = parse_call(body)
    assert call.auth == "bare string key"
    assert call.input == {"i4": 7, "b64": b"hi", "nil": None}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_params(b"<int>x</int>", b"<string>c</string>", b"<string>a</string>"), FAULT_PARSE),
        (
            _params(b"<boolean>2</boolean>", b"<string>c</string>", b"<string>a</string>"),
            FAULT_PARSE,
        ),
        (b"<methodResponse><params/></methodResponse>", FAULT_METHOD),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall/>", FAULT_PARSE),
    ],
)
def test_bad_values_are_malformed_requests(body: bytes, code: int) -> None:
    with pytest.raises(MalformedRequest) as refused:
        parse_call(body)
    assert refused.value.code == code
