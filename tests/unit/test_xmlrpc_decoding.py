"""The XML-RPC reader and writer: the standard library's results, faster, and what they refuse."""

from __future__ import annotations

import xmlrpc.client
from datetime import datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sendworx.shared.xmlrpc_reader import NotXmlRpc, read_response
from sendworx.transports.route_call import FAULT_METHOD, FAULT_PARAMS, FAULT_PARSE, MalformedRequest
from sendworx.transports.xmlrpc import encode_reply, parse_request

SEND = "/nodeworx/mail/send"

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
    request = parse_request(body)
    assert request.auth == "bare string key"
    assert request.call.input == {"i4": 7, "b64": b"hi", "nil": None}


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
        parse_request(body)
    assert refused.value.code == code


# Whitespace at the edges matters (a reader must not strip it); the other control characters
# and the noncharacters U+FFFE and U+FFFF cannot appear in XML 1.0 at all (Expat refuses them).
XML_CHARACTERS = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"
) | st.sampled_from(" \t\n\r")


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(XML_CHARACTERS), children, max_size=4
    )


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda moment: moment.replace(microsecond=0)
    )
    | st.text(XML_CHARACTERS),
    lambda children: _containers(children),
    max_leaves=20,
)


@given(value=wire_values)
@example(value=" padded\n\t ")
@example(value={" name ": ["\r\nline\n", "", " "]})
def test_every_value_python_sends_decodes_as_the_standard_library_decodes_it(value: Any) -> None:
    body = xmlrpc.client.dumps(("key", SEND, "update", value), "iworx.route", allow_none=True)
    (expected, _) = xmlrpc.client.loads(body, use_builtin_types=True)
    assert parse_request(body.encode()).call.input == expected[3]


@given(value=wire_values)
def test_replies_are_byte_for_byte_what_the_standard_library_writes(value: object) -> None:
    reply = {"status": 0, "payload": value, "reply_code": 205}
    expected = xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True).encode()
    assert encode_reply(0, value, 205) == expected


def test_replies_refuse_what_xml_rpc_cannot_carry() -> None:
    looped: list[object] = []
    looped.append(looped)
    for payload, error in [(2**60, OverflowError), (looped, TypeError), ({1: "x"}, TypeError)]:
        with pytest.raises(error):
            encode_reply(0, payload, 205)


def test_integers_past_32_bits_go_as_doubles_every_client_reads() -> None:
    """A million queued messages hold more than 2 GB: the summary's byte counts."""
    reply = encode_reply(0, {"bytes": 2_171_266_890, "small": -(2**31)}, 205)
    (decoded,), _ = xmlrpc.client.loads(reply)
    assert isinstance(decoded, dict)
    assert decoded["payload"] == {"bytes": 2_171_266_890.0, "small": -(2**31)}
    assert b"<double>2171266890.0</double>" in reply


def test_apache_extension_tags_and_arrays_without_data_are_read() -> None:
    body = _params(
        b"k",
        b"<string>c</string>",
        b"<string>a</string>",
        b'<struct xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions">'
        b"<member><name>n</name><value><ex:nil/></value></member>"
        b"<member><name>big</name><value><ex:i8>5000000000</ex:i8></value></member>"
        b"<member><name>list</name><value><array><value>x</value></array></value></member>"
        b"</struct>",
    )
    assert parse_request(body).call.input == {"n": None, "big": 5_000_000_000, "list": ["x"]}


UTF16_BOMB = (
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE methodCall ['
    '<!ENTITY a0 "aaaaaaaaaa">'
    + "".join(f'<!ENTITY a{level} "{f"&a{level - 1};" * 10}">' for level in range(1, 10))
    + "]><methodCall><methodName>&a9;</methodName><params/></methodCall>"
).encode("utf-16")


@pytest.mark.parametrize(
    "body",
    [
        UTF16_BOMB,  # a DTD the byte check cannot see: refused after parsing, never expanded
        _params(b"<value>nested</value>", b"<string>c</string>", b"<string>a</string>"),
        _params(b"<string>a</string><string>b</string>", b"<string>c</string>", b"a"),
        _params(b"<script>x</script>", b"<string>c</string>", b"<string>a</string>"),
        _params(b"<string>a<b>c</b></string>", b"<string>c</string>", b"<string>a</string>"),
        _params(b"<struct><member><name>n</name></member></struct>", b"c", b"a"),
        b"<methodCall><methodName>iworx.route</methodName></methodCall>",
        b"",
        b"\xff\xfe",
    ],
)
def test_what_is_not_a_clean_xml_rpc_call_is_a_parse_fault(body: bytes) -> None:
    with pytest.raises(MalformedRequest) as refused:
        parse_request(body)
    assert refused.value.code == FAULT_PARSE


def test_a_refused_body_leaves_the_reused_parser_clean() -> None:
    with pytest.raises(MalformedRequest):
        parse_request(b"<methodCall><methodName>iworx.route</methodName><params><param>")
    request = parse_request(_params(b"k", b"c", b"isRunning"))
    assert (request.auth, request.call.controller, request.call.action) == ("k", "c", "isRunning")


@pytest.mark.parametrize(
    "value",
    [
        b" untyped, spaced \n",
        b"",
        b"<string/>",
        b"<struct/>",
        b"<array><data/></array>",
        b"<i4> 42 </i4>",
        b"<double>1e3</double>",
        b"<base64>aGVs\nbG8=</base64>",
        b"<dateTime.iso8601>20261124T10:15:31</dateTime.iso8601>",
    ],
)
def test_hand_written_values_decode_as_the_standard_library_decodes_them(value: bytes) -> None:
    body = _params(b"k", b"c", b"a", value)
    (expected, _) = xmlrpc.client.loads(body, use_builtin_types=True)
    assert parse_request(body).call.input == expected[3]


def test_a_member_naming_itself_after_its_value_keeps_name_and_value_apart() -> None:
    # The stdlib reader pairs by position and would answer {1: "late name"}.
    member = b"<struct><member><value><int>1</int></value><name>late</name></member></struct>"
    assert parse_request(_params(b"k", b"c", b"a", member)).call.input == {"late": 1}


@given(value=wire_values)
def test_responses_decode_as_the_standard_library_decodes_them(value: Any) -> None:
    body = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()
    (expected,), _ = xmlrpc.client.loads(body, use_builtin_types=True)
    assert read_response(body) == (expected,)


def test_a_fault_response_raises_the_fault() -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(-32700, "bad"), methodresponse=True)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        read_response(body.encode())
    assert (fault.value.faultCode, fault.value.faultString) == (-32700, "bad")


@pytest.mark.parametrize(
    "body",
    [
        UTF16_BOMB,
        _params(b"k", b"c", b"a"),  # a call is not a response
        b"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
        b"<methodResponse/>",
    ],
)
def test_what_a_node_must_not_answer_is_refused(body: bytes) -> None:
    with pytest.raises(NotXmlRpc):
        read_response(body)


VALID = _params(b"key", b"<string>/nodeworx/mail/send</string>", b"update", b"<struct/>")


@given(
    body=st.binary(max_size=300)
    | st.tuples(st.integers(0, len(VALID)), st.integers(0, len(VALID)), st.binary(max_size=8)).map(
        lambda cut: VALID[: cut[0]] + cut[2] + VALID[cut[1] :]
    )
)
def test_any_bytes_are_a_call_or_a_malformed_request_never_a_crash(body: bytes) -> None:
    try:
        parse_request(body)
    except MalformedRequest as refused:
        assert refused.code in (FAULT_PARSE, FAULT_METHOD, FAULT_PARAMS)
